"""Online features of (user, candidate) pairs for the serving hot path, already encoded.

Two readers behind one protocol, ``PairFeatures``:

- ``FeastPairFeatures``: Feast's ``get_online_features`` on ``engagement_serving_v1`` for every
  pair, then ``FrameEncoder.encode``. The reference: simple and slow (most of its time is
  the SDK's per-entity work and pandas; figures in docs/performance.md).
- ``CachedPairFeatures``: the movie side of the service (profile, embedding, reviews, graph)
  is read for the whole catalogue once and kept *encoded* in memory; a batch of requests reads
  only its users' rows (one Feast call), encodes them in plain Python, runs the repository's
  registered on-demand transformation once over every candidate row and writes the users' and
  the on-demand columns into copies of the candidates' movie rows.
  The result equals ``FeastPairFeatures`` (tests compare the frames and the encoded tensors).

The movie side follows the online store: every ``refresh_s`` (5 s) a background thread asks
PostgreSQL which movies' rows were written since its last look (model/serve/online_changes.py: a
materialization or a push alike) and re-reads and re-encodes only those, so a movie's review
statistics lag a rating by a few seconds and an unchanged catalogue costs one scan inside
PostgreSQL, not a re-read of every movie in this process. With an online store other than Feast's
``postgres`` the whole catalogue is re-read every 60 s instead.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from model.data.engagement_frame import FrameEncoder, base_column, expanded_slot, fixed_list, numeric_matrix
from model.serve.online_changes import OnlineChanges
from sources.feature_store.names import SERVING_SERVICE

log = logging.getLogger(__name__)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class PairFeatures(Protocol):
    """What the ranker reads; both readers below also offer ``pairs`` (one user's raw frame)."""

    def encoded_many(self, pairs: Sequence[tuple[int, Sequence[int]]], encoder: FrameEncoder) -> dict[str, Tensor]:
        """Rows for each (user, candidates) in order: what encoding each user's ``pairs`` frame,
        concatenated, would give."""
        ...


class FeastPairFeatures:
    """Online features of (user, movie) pairs from Feast (``full_feature_names``: view__feature)."""

    def __init__(self, store: Any, service: str = SERVING_SERVICE) -> None:
        self.store = store
        self.service = store.get_feature_service(service)

    def pairs(self, user_id: int, movie_ids: Sequence[int]) -> pd.DataFrame:
        rows = [{"user_id": int(user_id), "movie_id": int(m)} for m in movie_ids]
        return self.store.get_online_features(features=self.service, entity_rows=rows, full_feature_names=True).to_df()

    def encoded_many(self, pairs: Sequence[tuple[int, Sequence[int]]], encoder: FrameEncoder) -> dict[str, Tensor]:
        frame = pd.concat([self.pairs(user_id, movie_ids) for user_id, movie_ids in pairs], ignore_index=True)
        return encoder.encode(frame)


def numeric_value(value: Any, slot: int | None = None) -> float:
    """One cell as ``numeric_matrix`` reads it (``pd.to_numeric(errors="coerce")``, float32,
    nulls -> 0, ±inf -> ±float32 max), without building a frame for a single row."""
    if slot is not None:
        if not isinstance(value, list | tuple | np.ndarray) or slot >= len(value):
            return 0.0
        value = value[slot]
    if value is None or isinstance(value, list | tuple | np.ndarray | dict):
        return 0.0
    try:
        number = float(np.float32(float(value)))
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if math.isnan(number):
        return 0.0
    if math.isinf(number):
        return math.copysign(_FLOAT32_MAX, number)
    return number


def _column(values: list[Any]) -> np.ndarray:
    """One value per user as a 1-d array: typed when the values are plain numbers or strings,
    objects when they are lists (``np.array`` would make those a 2-d array)."""
    if not any(isinstance(v, list | tuple | np.ndarray) for v in values):
        return np.array(values)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


@dataclass(frozen=True)
class _Layout:
    """Which encoded positions come from the user's row and which from the on-demand view."""

    user_numeric: list[tuple[int, str, int | None]]  # (position, column, list slot)
    pair_numeric: list[tuple[int, str]]
    user_categorical: list[tuple[int, str]]
    pair_categorical: list[tuple[int, str]]
    codes: dict[str, dict[str, int]]  # categorical column -> value -> code (0: unseen or missing)


@dataclass(frozen=True)
class _MovieBlock:
    """The catalogue's movie-side features, encoded once per refresh."""

    row: dict[int, int]  # movie id -> row in the tensors
    inputs: dict[str, np.ndarray]  # the on-demand views' movie-side inputs, by row
    batch: dict[str, Tensor]  # encoder output with the user / on-demand positions left neutral


#: (the movie frame a block was built from, the block, the layout, the encoder)
_Built = tuple[pd.DataFrame, _MovieBlock, _Layout, FrameEncoder]


class CachedPairFeatures:
    """See the module docstring: movie features held encoded in memory, one user row per request."""

    def __init__(self, store: Any, movie_ids: Sequence[int], service: str = SERVING_SERVICE,
                 refresh_s: float | None = None) -> None:  # fmt: skip
        self.store, self.movie_ids = store, [int(m) for m in movie_ids]
        self._clock = time.monotonic
        self._lock = threading.Lock()
        on_demand = {view.name: view for view in store.list_on_demand_feature_views()}
        self.user_refs: list[str] = []
        self.movie_refs: list[str] = []
        self.on_demand: list[Any] = []
        for projection in store.get_feature_service(service).feature_view_projections:
            name = projection.name_to_use()
            if name in on_demand:
                if on_demand[name].mode != "pandas":
                    # Feast 0.67's own online read drops python-mode outputs under full feature
                    # names (its output keys are short), so only pandas mode is served.
                    raise ValueError(f"on-demand view {name!r} is in mode {on_demand[name].mode!r}; serve pandas mode")
                self.on_demand.append(on_demand[name])
                continue
            refs = [f"{name}:{f.name}" for f in projection.features]
            entities = store.get_feature_view(name).entities
            (self.user_refs if "user" in entities else self.movie_refs).extend(refs)
        self.user_columns = {ref.replace(":", "__", 1) for ref in self.user_refs}
        self.pair_columns = {f"{view.name}__{f.name}" for view in self.on_demand for f in view.features}
        # What the on-demand views read: they may only use their declared sources.
        self.pair_inputs = [
            f"{projection.name_to_use()}__{f.name}"
            for view in self.on_demand
            for projection in view.source_feature_view_projections.values()
            for f in projection.features
        ]
        movie_views = sorted({ref.split(":", 1)[0] for ref in self.movie_refs})
        self._changes = OnlineChanges.for_store(store, movie_views)
        self.refresh_s = refresh_s if refresh_s is not None else (5.0 if self._changes is not None else 60.0)
        self._movies: pd.DataFrame | None = None
        self._loaded_at = 0.0
        self._refreshing = False
        self._refresher: threading.Thread | None = None
        self._closed = False
        self.refresh_error: str | None = None  # why the last background re-read failed, if it did
        self._blocks: dict[int, _Built] = {}  # id(encoder) -> what was built for it

    # raw frames -----------------------------------------------------------------------------
    def _movie_frame(self) -> pd.DataFrame:
        """The catalogue's movie features: read once, then brought up to date every
        ``refresh_s`` by a background thread while requests keep using the current frame."""
        with self._lock:
            if self._movies is None:
                mark = self._changes.look().mark if self._changes is not None else None
                self._movies, self._loaded_at = self._read_movies(), self._clock()
                if self._changes is not None:
                    self._changes.mark = mark  # taken before the read: a write during it is seen next
            elif self._clock() - self._loaded_at > self.refresh_s and not self._refreshing and not self._closed:
                self._refreshing = True
                self._refresher = threading.Thread(target=self._refresh, name="movie-features-refresh", daemon=True)
                self._refresher.start()
            return self._movies

    def close(self) -> None:
        """No more re-reads; waits for one under way, so none is cut off when the process exits."""
        with self._lock:
            self._closed, refresher = True, self._refresher
        if refresher is not None:
            refresher.join(timeout=30)

    def _read_movies(self, movie_ids: Sequence[int] | None = None) -> pd.DataFrame:
        rows = [{"movie_id": m} for m in (self.movie_ids if movie_ids is None else movie_ids)]
        found = self.store.get_online_features(features=self.movie_refs, entity_rows=rows, full_feature_names=True)
        return found.to_df().set_index("movie_id")

    def _refresh(self) -> None:
        """Re-read what changed since the last look (everything when that is unknown); the look
        is only marked done once its changes are applied, so a failed re-read is retried."""
        try:
            changes = self._changes.look() if self._changes is not None else None
            with self._lock:
                current, built = self._movies, list(self._blocks.values())
            assert current is not None
            if changes is None or changes.keys is None:
                movies = self._read_movies()
                self._install(movies, {id(e): (movies, self._build_block(movies, e), layout, e)
                                       for _, _, layout, e in built})  # fmt: skip
            elif changed := sorted(m for m in changes.keys if m in current.index):  # others are not served
                fresh = self._read_movies(changed)
                movies = pd.concat([current.drop(index=changed), fresh[current.columns]]).reindex(current.index)
                self._install(movies, {id(e): (movies, self._patched_block(block, fresh, e), layout, e)
                                       for frame, block, layout, e in built if frame is current})  # fmt: skip
            if changes is not None and self._changes is not None:
                self._changes.mark = changes.mark
            if self.refresh_error is not None:
                log.info("movie features refresh works again")
            self.refresh_error = None
        except Exception as exc:  # keep serving the last good frame; try again after refresh_s
            if self.refresh_error is None:  # said once per outage, not every refresh_s
                log.warning("movie features refresh failed (%s); serving the previous ones", exc)
            self.refresh_error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._loaded_at, self._refreshing = self._clock(), False

    def _user_rows(self, user_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The users' rows of the service (``view__feature`` → value), one Feast read for all."""
        found = self.store.get_online_features(
            features=self.user_refs, entity_rows=[{"user_id": int(u)} for u in user_ids], full_feature_names=True
        ).to_dict()
        columns = [name for name in found if name != "user_id"]
        return [{name: found[name][i] for name in columns} for i in range(len(user_ids))]

    def _on_demand(self, columns: dict[str, Any]) -> pd.DataFrame:
        """The registered on-demand transformations over ``columns`` (the views' inputs, one list
        or array per ``view__feature``): one column per ``view__feature`` they output."""
        inputs = pd.DataFrame(columns)
        out = {}
        for view in self.on_demand:
            frame = view.feature_transformation.transform(inputs)
            out.update({f"{view.name}__{f.name}": frame[f.name].to_numpy() for f in view.features})
        return pd.DataFrame(out)

    def pairs(self, user_id: int, movie_ids: Sequence[int]) -> pd.DataFrame:
        frame = self._movie_frame().reindex([int(m) for m in movie_ids]).reset_index()
        frame.insert(0, "user_id", int(user_id))
        for name, value in self._user_rows([user_id])[0].items():
            frame[name] = pd.Series([value] * len(frame), dtype=object)
        inputs = {column: frame[column].tolist() for column in self.pair_inputs}
        pair = self._on_demand(inputs)
        return frame.assign(**{name: pair[name] for name in pair.columns})

    # encoded --------------------------------------------------------------------------------
    def _block(self, encoder: FrameEncoder) -> tuple[_MovieBlock, _Layout]:
        movies = self._movie_frame()
        with self._lock:
            cached = self._blocks.get(id(encoder))
            if cached is not None and cached[0] is movies:
                return cached[1], cached[2]
        block, layout = self._build_block(movies, encoder), self._layout(encoder)
        with self._lock:
            self._blocks[id(encoder)] = (movies, block, layout, encoder)
        return block, layout

    def _build_block(self, movies: pd.DataFrame, encoder: FrameEncoder) -> _MovieBlock:
        ids = [m for m in movies.index.tolist() if not encoder.config.factor_dim or m in encoder.movie_index]
        frame = movies.loc[ids].reset_index()
        # Any known user fills the user slots here; requests overwrite them with their own row.
        frame.insert(0, "user_id", next(iter(encoder.user_index), 0))
        for column in self.user_columns | self.pair_columns:
            frame[column] = None
        inputs = {column: frame[column].to_numpy() for column in self.pair_inputs if column not in self.user_columns}
        return _MovieBlock({int(m): i for i, m in enumerate(ids)}, inputs, encoder.encode(frame))

    def _install(self, movies: pd.DataFrame, blocks: dict[int, _Built]) -> None:
        with self._lock:
            self._movies, self._blocks = movies, blocks

    def _patched_block(self, block: _MovieBlock, fresh: pd.DataFrame, encoder: FrameEncoder) -> _MovieBlock:
        """``block`` with the rows of the movies in ``fresh`` encoded again (encoding is row by
        row, so this equals encoding the whole updated frame; a test compares the two)."""
        part = self._build_block(fresh, encoder)
        rows = [block.row[m] for m in part.row]  # part.row lists its movies in its row order
        batch = {name: tensor.clone() for name, tensor in block.batch.items()}
        for name, tensor in batch.items():
            tensor[rows] = part.batch[name]
        inputs = {name: values.copy() for name, values in block.inputs.items()}
        for name, values in inputs.items():
            values[rows] = part.inputs[name]
        return _MovieBlock(block.row, inputs, batch)

    def _layout(self, encoder: FrameEncoder) -> _Layout:
        c = encoder.config
        user_numeric, pair_numeric = [], []
        for j, name in enumerate(c.numeric_features):
            column, slot = base_column(name), (expanded_slot(name) or (name, None))[1]
            if column in self.user_columns:
                user_numeric.append((j, column, slot))
            elif column in self.pair_columns:
                pair_numeric.append((j, column))
        user_categorical = [(j, n) for j, n in enumerate(c.categorical_features) if n in self.user_columns]
        pair_categorical = [(j, n) for j, n in enumerate(c.categorical_features) if n in self.pair_columns]
        codes = {name: {v: i + 1 for i, v in enumerate(encoder.vocab[name])} for name in c.categorical_features}
        return _Layout(user_numeric, pair_numeric, user_categorical, pair_categorical, codes)

    def encoded(self, user_id: int, movie_ids: Sequence[int], encoder: FrameEncoder) -> dict[str, Tensor]:
        return self.encoded_many([(user_id, movie_ids)], encoder)

    def encoded_many(self, pairs: Sequence[tuple[int, Sequence[int]]], encoder: FrameEncoder) -> dict[str, Tensor]:
        """Several users' candidates at once, rows in order: one user-row read for all of them
        and one on-demand call over every row (both cost about the same for 1 or 32 users)."""
        block, layout = self._block(encoder)
        counts = [len(movie_ids) for _, movie_ids in pairs]
        picked = [block.row[int(m)] for _, movie_ids in pairs for m in movie_ids]
        rows = torch.tensor(picked, dtype=torch.long)
        users = self._user_rows([user_id for user_id, _ in pairs])
        batch = {name: tensor.index_select(0, rows) for name, tensor in block.batch.items()}  # copies: safe to write
        repeat = torch.tensor(counts)
        c = encoder.config
        # One indexed write per group, not one per column: each torch write costs microseconds.
        if layout.user_numeric:
            values = [
                [numeric_value(user.get(column), slot) for _, column, slot in layout.user_numeric] for user in users
            ]
            per_user = torch.tensor(values, dtype=batch["numeric"].dtype).reshape(len(users), -1)
            batch["numeric"][:, [j for j, _, _ in layout.user_numeric]] = per_user.repeat_interleave(repeat, dim=0)
        if layout.user_categorical:
            codes = [[layout.codes[column].get(str(user.get(column)), 0) for _, column in layout.user_categorical]
                     for user in users]  # fmt: skip
            per_user = torch.tensor(codes, dtype=torch.long).reshape(len(users), -1)
            batch["categorical"][:, [j for j, _ in layout.user_categorical]] = per_user.repeat_interleave(repeat, dim=0)
        if layout.pair_numeric or layout.pair_categorical:
            # Arrays, not lists: pandas infers a type for every element of a list; an array's
            # type is already known.
            inputs = {
                column: np.repeat(_column([user.get(column) for user in users]), counts)
                if column in self.user_columns
                else block.inputs[column][rows.numpy()]
                for column in self.pair_inputs
            }
            pair = self._on_demand(inputs)
            if layout.pair_numeric:  # read as the encoder reads numbers
                matrix = numeric_matrix(pair, [column for _, column in layout.pair_numeric])
                batch["numeric"][:, [j for j, _ in layout.pair_numeric]] = torch.from_numpy(matrix)
            for j, column in layout.pair_categorical:
                pair_codes = [layout.codes[column].get(str(v), 0) for v in pair[column].tolist()]
                batch["categorical"][:, j] = torch.tensor(pair_codes)
        if c.sequence_feature in self.user_columns:
            sequences = torch.stack([torch.from_numpy(fixed_list(user.get(c.sequence_feature))) for user in users])
            batch["sequence"] = sequences.repeat_interleave(repeat, dim=0)
        if c.factor_dim:
            ids = torch.tensor([encoder.user_index[int(user_id)] for user_id, _ in pairs], dtype=torch.long)
            batch["user"] = ids.repeat_interleave(repeat)
        return batch
