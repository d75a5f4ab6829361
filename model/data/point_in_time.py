"""Point-in-time training sets: every rating is a label, its features are read as of just before it.

    label_events(stores)            ratings from MongoDB → (user_id, movie_id, event_timestamp, rating, engagement)
    training_frame(store, labels)   + the engagement_training_v1 features through Feast's get_historical_features
    time_split(frame)               train / validation / test by global time
    recbole_split(interactions)     per-user chronological 80/10/10 (RecBole's "TO" + "RS" ordering)

No leakage: the feature tables hold values as of each event, that event included, and Feast
joins features with ``feature.event_timestamp <= label time``. A rating's own review (and
every other event at the very same instant, e.g. a playback session logged in the same second)
must not be in its features, so the label time Feast sees is shifted back by one microsecond
(``LEAKAGE_GUARD``; PostgreSQL keeps microseconds): features are strictly before the rating.
The frame keeps the label's true time in ``event_timestamp``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sources.errors import MarqueeError
from sources.feature_store.names import TRAINING_SERVICE
from sources.stores import mongo_scan

if TYPE_CHECKING:
    from feast import FeatureStore

    from sources.stores.clients import Stores

ENTITY_COLUMNS = ("user_id", "movie_id")
LABEL_COLUMNS = ("user_id", "movie_id", "event_timestamp")
LEAKAGE_GUARD = timedelta(microseconds=1)
ROW = "__label_row"  # carries each label's position through Feast (it does not keep row order)
LABEL_CHUNK = 100_000  # reviews per typed chunk in label_events


class LabelFrameError(MarqueeError):
    """A label frame cannot be joined point-in-time (missing columns, bad timestamps, duplicates)."""


def engagement(rating: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
    """The model's target in [0, 1]: a 1-5 star rating mapped linearly, 1 star → 0, 5 stars → 1."""
    return (rating - 1.0) / 4.0


def label_events(stores: Stores, *, batch_size: int = 10_000, since: datetime | None = None) -> pd.DataFrame:
    """Every rating of movie m by user u at time t, from the MongoDB reviews (the system of record).

    Columns: user_id int64, movie_id int64, event_timestamp datetime64[ns, UTC], rating float64,
    engagement float64 = (rating - 1) / 4. Sorted by (event_timestamp, user_id, movie_id).
    ``since`` keeps the reviews at or after it (the training window, as ``from_stores``).
    Read by a scan in bounded memory (``sources.stores.mongo_scan``; the embedded server's
    aggregation engine is not trusted, docs/embedded-stores.md) into typed arrays
    ``LABEL_CHUNK`` reviews at a time: no Python object per review outlives its chunk.
    """
    cursor = mongo_scan.scan(stores, "reviews", field="ts" if since else None, since=since, batch_size=batch_size)
    parts = []
    while docs := list(islice(cursor, LABEL_CHUNK)):
        parts.append(_label_chunk(docs))
    frame = pd.concat(parts, ignore_index=True) if parts else _label_chunk([])
    frame["engagement"] = engagement(frame["rating"])
    return frame.sort_values(["event_timestamp", "user_id", "movie_id"], ignore_index=True)


def _label_chunk(docs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.fromiter((d["user_id"] for d in docs), dtype=np.int64, count=len(docs)),
            "movie_id": np.fromiter((d["movie_id"] for d in docs), dtype=np.int64, count=len(docs)),
            "event_timestamp": pd.to_datetime([d["ts"] for d in docs], utc=True),
            "rating": np.fromiter((d["rating"] for d in docs), dtype=np.float64, count=len(docs)),
        }
    )


def validate_labels(labels: pd.DataFrame) -> None:
    """Raise LabelFrameError unless ``labels`` can be joined point-in-time.

    Needs user_id and movie_id (integers, no nulls) and a timezone-aware event_timestamp with
    no nulls; no two rows may share (user_id, movie_id, event_timestamp). Ids unknown to the
    stores are allowed: their features come back null, as they would for a new user online.
    """
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise LabelFrameError(f"label frame lacks column(s) {', '.join(missing)}")
    if ROW in labels.columns:
        raise LabelFrameError(f"label frame may not have a column named {ROW}")
    for column in ENTITY_COLUMNS:
        if labels[column].isna().any():
            raise LabelFrameError(f"label frame has {int(labels[column].isna().sum())} row(s) without a {column}")
        if not pd.api.types.is_integer_dtype(labels[column]):
            raise LabelFrameError(f"label frame's {column} must be integers, not {labels[column].dtype}")
    stamps = labels["event_timestamp"]
    if not isinstance(stamps.dtype, pd.DatetimeTZDtype):
        raise LabelFrameError(
            f"label frame's event_timestamp must be timezone-aware datetimes (got {stamps.dtype}); "
            "a naive time is ambiguous: localize it, e.g. pd.to_datetime(..., utc=True)"
        )
    if stamps.isna().any():
        raise LabelFrameError(f"label frame has {int(stamps.isna().sum())} row(s) without an event_timestamp")
    duplicated = labels.duplicated(list(LABEL_COLUMNS))
    if duplicated.any():
        raise LabelFrameError(
            f"label frame has {int(duplicated.sum())} duplicate (user_id, movie_id, event_timestamp) row(s); "
            "drop them (labels.drop_duplicates) or aggregate them first"
        )


def training_frame(
    store: FeatureStore, labels: pd.DataFrame, service: str = TRAINING_SERVICE, *, chunk_rows: int = 25_000
) -> pd.DataFrame:
    """``labels`` with the feature service's features as of strictly before each label's time.

    Feature columns are named ``<view>__<feature>``. Rows come back in ``labels``' order with
    its columns unchanged; features a label has no value for yet (or unknown ids) are null.
    Labels are joined ``chunk_rows`` at a time: Feast's Spark store collects a whole result in
    the driver (100,000 ML-100K labels with their 384-float embeddings overflowed a 4 GB heap).
    Each chunk is made compact as it arrives (``SharedValues``): list features become read-only
    float32 arrays and a value that repeats (a title's embedding, for every rating of the
    title) is kept once, so the frame holds a pointer per row, not 384 floats.
    """
    validate_labels(labels)
    feature_service = store.get_feature_service(service)
    entity_df = labels[list(LABEL_COLUMNS)].reset_index(drop=True)  # only what the join needs travels
    entity_df[ROW] = np.arange(len(entity_df), dtype=np.int64)
    entity_df["event_timestamp"] = entity_df["event_timestamp"].dt.tz_convert("UTC") - LEAKAGE_GUARD
    shared: dict[str, SharedValues] = {}
    parts = []
    for start in range(0, max(len(entity_df), 1), chunk_rows):
        part = store.get_historical_features(
            entity_df=entity_df.iloc[start : start + chunk_rows], features=feature_service, full_feature_names=True
        ).to_df()
        for column in [c for c in part.columns if "__" in c and c != ROW and part[c].dtype == object]:
            part[column] = shared.setdefault(column, SharedValues()).column(part[column].tolist())
        parts.append(part)
    joined = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    del parts
    joined = joined.sort_values(ROW, ignore_index=True)
    if len(joined) != len(labels):  # Feast's join must be one row per label
        raise MarqueeError(f"point-in-time join returned {len(joined)} rows for {len(labels)} labels")
    features = [c for c in joined.columns if "__" in c and c != ROW]
    frame = labels.reset_index(drop=True).copy()
    for column in features:
        frame[column] = joined[column].to_numpy()
    return frame


class SharedValues:
    """One column's object values, each distinct one kept once while values keep repeating.

    A list becomes a read-only float32 array (what the encoder reads), a string stays a string;
    equal values (same bytes) share one object. A column whose values mostly differ (a user's
    last five session lengths) stops being pooled after a chunk shows it: a pool of unique
    values would only cost memory.
    """

    def __init__(self) -> None:
        self.pool: dict[bytes | str, Any] = {}
        self.rows = 0
        self.pooling = True

    def column(self, values: list[Any]) -> list[Any]:
        """``values`` with lists as float32 arrays and repeats replaced by the kept copy."""
        out = [self.value(v) for v in values]
        self.rows += len(values)
        if self.pooling and len(self.pool) > self.rows // 2:
            self.pooling = False
            self.pool.clear()
        return out

    def value(self, value: Any) -> Any:
        if isinstance(value, list | tuple | np.ndarray):
            # a copy that owns its memory: Feast hands out views into each chunk's Arrow buffer,
            # and one kept view would keep its whole chunk alive
            array = np.array(value, dtype=np.float32)
            if not self.pooling:
                array.flags.writeable = False
                return array
            kept = self.pool.setdefault(array.tobytes(), array)
            kept.flags.writeable = False
            return kept
        if isinstance(value, str) and self.pooling:
            return self.pool.setdefault(value, value)
        return value


def time_split(
    frame: pd.DataFrame, val: float = 0.1, test: float = 0.1
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train / validation / test by global time: the last ``test`` share of events (by time) is
    the test set, the ``val`` share before it validation. Ties at a cut go to the earlier side,
    so no test event happens before a training event."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val={val} and test={test} must be shares in [0, 1) summing below 1")
    ordered = frame.sort_values("event_timestamp", kind="stable", ignore_index=True)
    stamps = ordered["event_timestamp"]
    n = len(ordered)
    if n == 0:
        return ordered, ordered.copy(), ordered.copy()
    test_cut = stamps.iloc[min(n - 1, int(np.floor(n * (1 - test))))] if test > 0 else None
    val_cut = stamps.iloc[min(n - 1, int(np.floor(n * (1 - test - val))))] if val > 0 else None
    in_test = stamps > test_cut if test_cut is not None else pd.Series(False, index=ordered.index)
    in_val = (stamps > val_cut) & ~in_test if val_cut is not None else pd.Series(False, index=ordered.index)
    return ordered[~in_val & ~in_test], ordered[in_val], ordered[in_test]


def recbole_split(
    interactions: pd.DataFrame, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-user chronological split, as RecBole's ``eval_args: {order: TO, split: {RS: [.8,.1,.1]}}``:
    each user's interactions sorted by time, the first 80% train, next 10% validation, last 10% test.

    Per user of n interactions, RecBole's counts (``_calcu_split_ids``): validation int(0.1 n),
    test int(0.1 n), train the rest; a share that rounds to 0 but is not 0 gets one interaction
    from train while train keeps more than one. Ties in time keep the input order.
    """
    if abs(sum(ratios) - 1.0) > 1e-9 or min(ratios) < 0:
        raise ValueError(f"ratios {ratios} must be non-negative and sum to 1")
    ordered = interactions.sort_values(["user_id", "event_timestamp"], kind="stable", ignore_index=True)
    position = ordered.groupby("user_id").cumcount().to_numpy()
    size = ordered.groupby("user_id")["user_id"].transform("size").to_numpy().astype(np.float64)
    n_val = (ratios[1] * size).astype(np.int64)
    n_test = (ratios[2] * size).astype(np.int64)
    n_train = size.astype(np.int64) - n_val - n_test
    for share, counts in ((ratios[2] * size, n_test), (ratios[1] * size, n_val)):  # test first, as RecBole
        bump = (n_train > 1) & (share > 0) & (share < 1)
        counts += bump
        n_train -= bump
    part = np.where(position < n_train, 0, np.where(position < n_train + n_val, 1, 2))
    return ordered[part == 0], ordered[part == 1], ordered[part == 2]
