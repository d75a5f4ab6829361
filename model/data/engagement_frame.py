"""Engagement training rows and the one mapping from a feature schema to ``EngagementNetConfig``.

``schema_config`` is the single place that decides which column feeds which branch, so adding a
feature to a Feast view changes the config a checkpoint records, not code:

- ``*last5_durations`` -> sequence branch; ``*embedding`` (a 384-vector) -> embedding branch;
- ``movie_graph__*`` (or a bare graph name) -> graph branch;
- string columns -> categorical (vocabulary recorded in the config's cardinalities and in
  ``FrameEncoder.vocab``); everything else -> numeric.

``local_frame`` builds the same columns (Feast's ``view__feature`` full names) straight from
the systems of record with point-in-time semantics (only events strictly before each row),
for ``marquee train --features local`` and when Feast's service is not there yet
(``model.data.point_in_time`` is the Feast path: ``get_historical_features``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sqlalchemy import text
from torch import Tensor

from model.data.interactions import Interactions
from model.networks.engagement import EngagementNetConfig
from sources.errors import MarqueeError
from sources.feature_store.names import MOVIE_GRAPH_VIEW
from sources.stores import mongo_scan
from sources.stores.clients import Stores

LABEL = "rating"
# keys, time and labels: never features (model.data.point_in_time adds "engagement" = (rating - 1) / 4)
ENTITY_COLUMNS = ("user_id", "movie_id", "event_timestamp", LABEL, "engagement", "label")

GRAPH_NAMES = ("rated_degree", "watched_degree", "genre_count", "people_count", "actor_count", "director_count",
               "pagerank")  # fmt: skip
SEQUENCE_LENGTH = 5
#: bytes the training process holds per label at its peak (the frame, its split, the encoded
#: rows), measured at 1M and 5M: docs/scale.md, "At 25M"
BYTES_PER_LABEL = 1_900


def _base(name: str) -> str:
    return name.split("__", 1)[-1].split(":", 1)[-1]


def _view(name: str) -> str:
    for sep in ("__", ":"):
        if sep in name:
            return name.split(sep, 1)[0]
    return ""


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """Feature columns of a training frame: everything but entity keys, time and label."""
    return [c for c in frame.columns if c not in ENTITY_COLUMNS and not c.startswith("__")]


def _is_list_column(column: pd.Series) -> bool:
    first = column.dropna()
    return len(first) > 0 and isinstance(first.iloc[0], list | tuple | np.ndarray)


def expanded_slot(name: str) -> tuple[str, int] | None:
    """``"view__col[3]"`` -> ``("view__col", 3)``: one slot of a list-valued feature."""
    if name.endswith("]") and "[" in name:
        base, index = name[:-1].rsplit("[", 1)
        if index.isdigit():
            return base, int(index)
    return None


def base_column(name: str) -> str:
    """The frame column a feature name reads: ``"view__col[3]"`` -> ``"view__col"``."""
    slot = expanded_slot(name)
    return name if slot is None else slot[0]


def numeric_matrix(frame: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """``(rows, len(names))`` float32; a ``col[i]`` name reads slot i of list column ``col``; nulls -> 0."""
    out = np.zeros((len(frame), len(names)), dtype=np.float32)
    lists: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        slot = expanded_slot(name)
        if slot is None:
            out[:, j] = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float32, na_value=np.nan)
            continue
        base, i = slot
        if base not in lists:
            slots = [expanded_slot(n) for n in names]
            width = max(x[1] for x in slots if x is not None and x[0] == base) + 1
            lists[base] = (
                np.stack([_padded(v, width) for v in frame[base].tolist()]) if len(frame) else np.zeros((0, width))
            )
        out[:, j] = lists[base][:, i]
    return np.nan_to_num(out, nan=0.0)


def _padded(value: Any, width: int) -> np.ndarray:
    arr = np.zeros(width, dtype=np.float32)
    if isinstance(value, list | tuple | np.ndarray):
        vals = np.asarray(value, dtype=np.float32)[:width]
        arr[: len(vals)] = vals
    return arr


@dataclass
class FrameEncoder:
    """Turns frame rows into the net's batch tensors; holds the categorical vocabularies."""

    config: EngagementNetConfig
    vocab: dict[str, list[str]] = field(default_factory=dict)
    user_index: dict[int, int] = field(default_factory=dict)
    movie_index: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "vocab": self.vocab,
            "user_ids": list(self.user_index),
            "movie_ids": list(self.movie_index),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameEncoder:
        return cls(
            EngagementNetConfig.from_dict(data["config"]),
            {k: list(v) for k, v in data["vocab"].items()},
            {int(u): i for i, u in enumerate(data["user_ids"])},
            {int(m): i for i, m in enumerate(data["movie_ids"])},
        )

    @property
    def features(self) -> list[str]:
        """Every feature column this encoder reads, in branch order."""
        c = self.config
        return [*c.numeric_features, *c.categorical_features, c.sequence_feature, c.embedding_feature,
                *c.graph_features]  # fmt: skip

    def encode(self, frame: pd.DataFrame) -> dict[str, Tensor]:
        """``frame`` (rows with every feature column) -> batch dict of CPU tensors."""
        return self.encode_rows(frame).take(slice(None))

    def encode_rows(self, frame: pd.DataFrame) -> EncodedRows:
        """``frame`` as the net reads it, each distinct title embedding stored once (see ``EncodedRows``)."""
        c = self.config
        missing = [f for f in self.features if base_column(f) not in frame.columns]
        if missing:
            raise KeyError(f"frame lacks feature columns {missing}")
        table, index = shared_rows(frame[c.embedding_feature].tolist(), c.embedding_dim)
        columns = {
            "numeric": torch.tensor(numeric_matrix(frame, c.numeric_features)),
            "sequence": torch.tensor(np.stack(frame[c.sequence_feature].map(fixed_list).to_numpy()))
            if len(frame)
            else torch.zeros(0, SEQUENCE_LENGTH),
            "graph": torch.tensor(numeric_matrix(frame, c.graph_features)),
        }
        if c.categorical_features:
            cols = []
            for name in c.categorical_features:
                lookup = {v: i + 1 for i, v in enumerate(self.vocab[name])}  # 0: unseen or missing
                cols.append(frame[name].map(lambda v, lk=lookup: lk.get(str(v), 0)).to_numpy(np.int64))
            columns["categorical"] = torch.tensor(np.stack(cols, axis=1))
        if c.factor_dim:
            columns["user"] = torch.tensor(frame["user_id"].map(self.user_index).to_numpy(np.int64))
            columns["movie"] = torch.tensor(frame["movie_id"].map(self.movie_index).to_numpy(np.int64))
        return EncodedRows(columns, torch.from_numpy(table), torch.from_numpy(index))


@dataclass(frozen=True)
class EncodedRows:
    """Rows as the net reads them, with the embedding column stored as a table and an index.

    ``columns`` holds one tensor per batch key (one row per frame row) except ``"embedding"``;
    row i's embedding is ``embedding_table[embedding_index[i]]``. A title's embedding repeats
    for every rating of the title, so a frame of 1M ratings of 3,706 titles keeps 3,707
    vectors (row 0: zeros, for a movie without one yet), not 1M; ``take`` gathers a batch.
    """

    columns: dict[str, Tensor]
    embedding_table: Tensor  # (distinct, dim) float32
    embedding_index: Tensor  # (rows,) int64

    def __len__(self) -> int:
        return len(self.embedding_index)

    def take(self, rows: slice | Tensor) -> dict[str, Tensor]:
        """The batch dict (every key, ``"embedding"`` gathered) of ``rows`` (a slice or indices)."""
        batch = {k: v[rows] for k, v in self.columns.items()}
        batch["embedding"] = self.embedding_table[self.embedding_index[rows]]
        return batch


def shared_rows(values: list[Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectors (or None) -> ``(table, index)``: each distinct object once, row 0 zeros.

    Objects are told apart by identity, which ``point_in_time.SharedValues`` and the local frame
    make equal to value for repeated titles; a frame of unshared vectors gets one table row per
    row, as before."""
    slots: dict[int, int] = {}
    table: list[np.ndarray] = [np.zeros(dim, dtype=np.float32)]
    index = np.zeros(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        slot = slots.get(id(value))
        if slot is None:
            slot = slots[id(value)] = len(table)
            table.append(np.asarray(value, dtype=np.float32))
        index[i] = slot
    return np.stack(table), index


def fixed_list(value: Any) -> np.ndarray:
    """A list feature as ``(SEQUENCE_LENGTH,)`` float32: its last entries, right-aligned, zeros
    in front; a missing value gives all zeros."""
    arr = np.zeros(SEQUENCE_LENGTH, dtype=np.float32)
    if value is not None and not (isinstance(value, float) and np.isnan(value)):
        seq = np.asarray(value, dtype=np.float32)[-SEQUENCE_LENGTH:]
        arr[SEQUENCE_LENGTH - len(seq) :] = seq  # right-aligned: the LSTM ends on the latest
    return arr


def schema_config(
    frame: pd.DataFrame,
    *,
    user_ids: Sequence[int] | np.ndarray = (),
    movie_ids: Sequence[int] | np.ndarray = (),
    factor_dim: int = 0,
    **sizes: Any,
) -> FrameEncoder:
    """The one feature-schema -> ``EngagementNetConfig`` mapping (see the module docstring)."""
    names = feature_columns(frame)
    sequence = [n for n in names if _base(n).endswith("last5_durations")]
    embedding = [n for n in names if _base(n) == "embedding" or _base(n).endswith("_embedding")]
    if len(sequence) != 1 or len(embedding) != 1:
        raise ValueError(f"need exactly one *last5_durations and one *embedding column, got {sequence}, {embedding}")
    graph = [n for n in names if _view(n) == MOVIE_GRAPH_VIEW or (not _view(n) and n in GRAPH_NAMES)]
    rest: list[str] = []
    categorical: list[str] = []
    for n in names:
        if n in {sequence[0], embedding[0], *graph}:
            continue
        if _is_list_column(frame[n]):  # e.g. a genre multi-hot: one numeric per slot
            width = int(frame[n].dropna().map(len).max())
            rest += [f"{n}[{i}]" for i in range(width)]
        elif pd.api.types.is_numeric_dtype(frame[n]) or pd.api.types.is_bool_dtype(frame[n]):
            rest.append(n)
        else:
            categorical.append(n)
            rest.append(n)
    vocab = {n: sorted({str(v) for v in frame[n].dropna().unique()}) for n in categorical}
    config = EngagementNetConfig.from_feature_names(
        rest,
        sequence_feature=sequence[0],
        embedding_feature=embedding[0],
        graph_features=graph,
        categorical_features={n: len(vocab[n]) + 1 for n in categorical},
        sequence_length=SEQUENCE_LENGTH,
        embedding_dim=len(np.asarray(frame[embedding[0]].iloc[0])),
        n_users=len(user_ids) if factor_dim else 0,
        n_movies=len(movie_ids) if factor_dim else 0,
        factor_dim=factor_dim,
        **sizes,
    )
    return FrameEncoder(
        config,
        vocab,
        {int(u): i for i, u in enumerate(user_ids)},
        {int(m): i for i, m in enumerate(movie_ids)},
    )


# the local frame (no feature store) ----------------------------------------------------------------


def _prior_stats(events: pd.DataFrame, key: str, prefix: str) -> pd.DataFrame:
    """Per event: count, mean rating and days since the previous event of ``key``, using only
    events strictly earlier in time (events at the same second do not see each other)."""
    g = events.groupby([key, "ts"]).rating.agg(["sum", "count"])
    cum = g.groupby(level=0).cumsum() - g
    prev_ts = g.reset_index().groupby(key).ts.shift(1).to_numpy()
    out = pd.DataFrame(
        {
            f"{prefix}__review_count": cum["count"].to_numpy(np.float64),
            f"{prefix}__mean_rating": (cum["sum"] / cum["count"].where(cum["count"] > 0)).to_numpy(),
            f"{prefix}__days_since_previous": (g.index.get_level_values("ts").to_numpy() - prev_ts) / 86400.0,
        },
        index=g.index,
    )
    return events[[key, "ts"]].join(out, on=[key, "ts"]).drop(columns=[key, "ts"])


@dataclass(frozen=True)
class SideInfo:
    """What the frame joins onto events, read once from the stores."""

    users: pd.DataFrame  # index user_id, user_profile__* columns
    movies: pd.DataFrame  # index movie_id, movie_profile__* and movie_graph__* columns
    embeddings: pd.Series  # movie_id -> (384,) float32
    sessions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # user -> (starts, durations, movie ids)


def pg_vector(value: Any) -> np.ndarray:
    """A pgvector value read through raw SQL arrives as its text form ``'[0.1,...]'``."""
    if isinstance(value, str):
        return np.asarray(json.loads(value), dtype=np.float32)
    return np.asarray(value, dtype=np.float32)


def load_side_info(stores: Stores) -> SideInfo:
    """Users, movies, title embeddings and playback sessions from the stores, for ``local_frame``."""
    with stores.pg.connect() as conn:
        users = pd.read_sql(
            text(
                "SELECT u.id AS user_id, u.age, u.gender, u.occupation, u.city, t.name AS tier, "
                "t.monthly_price::float AS monthly_price FROM users u "
                "LEFT JOIN LATERAL (SELECT tier_id FROM subscriptions s WHERE s.user_id = u.id "
                "ORDER BY started_at DESC LIMIT 1) s ON true LEFT JOIN subscription_tiers t ON t.id = s.tier_id"
            ),
            conn,
        )
        movies = pd.read_sql(text("SELECT id AS movie_id, year::float AS year FROM movies"), conn)
        emb = conn.execute(text("SELECT movie_id, embedding FROM movie_embeddings")).all()
    graph = pd.DataFrame(
        stores.graph.read(
            "MATCH (m:Movie) OPTIONAL MATCH (m)-[:HAS_GENRE]->(g:Genre) WITH m, count(g) AS genre_count "
            "OPTIONAL MATCH (p:Person)-[r]->(m) WITH m, genre_count, count(DISTINCT p) AS people_count, "
            "sum(CASE WHEN type(r) = 'ACTED_IN' THEN 1 ELSE 0 END) AS actor_count, "
            "sum(CASE WHEN type(r) = 'DIRECTED' THEN 1 ELSE 0 END) AS director_count "
            "RETURN m.id AS movie_id, genre_count, people_count, actor_count, director_count"
        )
    )
    graph = graph.set_index("movie_id").astype(np.float64).add_prefix(f"{MOVIE_GRAPH_VIEW}__")
    movies = movies.set_index("movie_id").add_prefix("movie_profile__").join(graph)
    sessions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for doc in mongo_scan.scan(stores, "playback_logs", batch_size=100):
        ordered = sorted(doc["sessions"], key=lambda s: (s["timestamp"], s["movie_id"]))
        sessions[int(doc["user_id"])] = (
            np.array([s["timestamp"].timestamp() for s in ordered]),
            np.array([s["duration_seconds"] for s in ordered], dtype=np.float32),
            np.array([s["movie_id"] for s in ordered], dtype=np.int64),
        )
    return SideInfo(
        users.set_index("user_id").add_prefix("user_profile__"),
        movies,
        pd.Series({int(m): pg_vector(e) for m, e in emb}, name="movie_embedding__title_embedding"),
        sessions,
    )


def _last_durations(side: SideInfo, events: pd.DataFrame, seen: pd.DataFrame) -> pd.Series:
    """Per event, the durations of the user's 5 latest playback sessions that started before it.

    Only sessions of movies in ``seen`` (the user's known events) count, and an event's own
    session never does: its length follows the rating, a label leak.
    """
    seen_pairs = set(zip(seen.user_id.tolist(), seen.movie_id.tolist(), strict=True))
    allowed: dict[int, np.ndarray] = {}
    out: list[list[float]] = []
    for uid, mid, ts in zip(events.user_id.tolist(), events.movie_id.tolist(), events.ts.tolist(), strict=True):
        if uid not in side.sessions:
            out.append([])
            continue
        starts, durations, movies = side.sessions[uid]
        if uid not in allowed:
            allowed[uid] = np.array([(uid, m) in seen_pairs for m in movies.tolist()], dtype=bool)
        ok = allowed[uid] & (starts < ts) & (movies != mid)
        out.append(durations[ok][-SEQUENCE_LENGTH:].tolist())
    return pd.Series(out, index=events.index)


def _frame(side: SideInfo, events: pd.DataFrame, seen: pd.DataFrame) -> pd.DataFrame:
    """``events`` (user_id, movie_id, rating (NaN for a candidate), ts) with every feature column."""
    frame = events.join(side.users, on="user_id").join(side.movies, on="movie_id")
    frame = frame.join(side.embeddings, on="movie_id")
    frame = pd.concat(
        [frame, _prior_stats(events, "user_id", "user_reviews"), _prior_stats(events, "movie_id", "movie_reviews")],
        axis=1,
    )
    frame["user_playback__last5_durations"] = _last_durations(side, events, seen)
    missing = frame["movie_embedding__title_embedding"].isna()
    if missing.any():
        zero = np.zeros(len(side.embeddings.iloc[0]), dtype=np.float32)
        frame.loc[missing, "movie_embedding__title_embedding"] = pd.Series([zero] * int(missing.sum()),
                                                                     index=frame.index[missing])  # fmt: skip
    frame["event_timestamp"] = pd.to_datetime(frame.pop("ts"), unit="s", utc=True)
    return frame


def _events(data: Interactions) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": data.user_ids[data.users],
            "movie_id": data.movie_ids[data.items],
            "rating": data.ratings,
            "ts": data.ts,
        }
    )


def local_frame(side: SideInfo, data: Interactions) -> pd.DataFrame:
    """One row per interaction with user/movie/review/playback/graph features as of its time."""
    events = _events(data)
    return _frame(side, events, events)


def pair_frame(
    side: SideInfo, history: Interactions, user_ids: np.ndarray, movie_ids: np.ndarray, at_ts: np.ndarray
) -> pd.DataFrame:
    """Feature rows for candidate (user, movie) pairs as of ``at_ts``, computed from ``history`` only
    (what an online store would hold then). Ratings of the candidate rows are NaN."""
    seen = _events(history)
    n = len(user_ids)
    events = pd.DataFrame(
        {
            "user_id": np.concatenate([seen.user_id.to_numpy(), np.asarray(user_ids, dtype=np.int64)]),
            "movie_id": np.concatenate([seen.movie_id.to_numpy(), np.asarray(movie_ids, dtype=np.int64)]),
            "rating": np.concatenate([seen.rating.to_numpy(np.float64), np.full(n, np.nan)]),
            "ts": np.concatenate([seen.ts.to_numpy(), np.asarray(at_ts, dtype=np.int64)]),
        }
    )
    return _frame(side, events, seen).iloc[len(seen) :].reset_index(drop=True)


def check_frame_size(data: Interactions, max_labels: int) -> None:
    """Refuse, before any work, an engagement frame of more than ``max_labels`` labels (one per
    rating in ``data``; 0 = no limit): its memory grows ~``BYTES_PER_LABEL`` a label, so the
    ML-25M shape's whole history would need ~48 GB and die of it an hour in. The message names
    the training window that holds the newest ``max_labels`` ratings."""
    if max_labels <= 0 or len(data) <= max_labels:
        return
    stamps = np.partition(data.ts, len(data) - max_labels)
    cut, newest = int(stamps[len(data) - max_labels]), int(data.ts.max())
    days = max(1, (newest - cut) // 86_400)
    raise MarqueeError(
        f"the engagement net's training frame would hold {len(data):,} labels "
        f"(~{len(data) * BYTES_PER_LABEL / 1e9:.0f} GB), past MARQUEE_ENGAGEMENT_MAX_LABELS ({max_labels:,}); "
        f"train on a recent window: MARQUEE_TRAIN_WINDOW_DAYS={days} holds about the newest {max_labels:,} "
        "ratings (or raise the limit where memory allows; 0 = none)"
    )
