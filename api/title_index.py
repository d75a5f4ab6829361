"""Semantic search from memory: every title's embedding held by the serving process.

``similarMovies`` and ``searchMovies`` ask for a title's nearest neighbours by cosine. pgvector's
HNSW index answers that inside PostgreSQL, one round trip per search; on a small machine the
slowest of those are the two processes' scheduling, not the walk (docs/scale.md, "Search at
catalogue size"). This index answers in the serving process instead, in two stages:

1. every title is scored on a projection of the embeddings onto their ``DIMS`` principal
   directions (fitted at load), and the ``CANDIDATES`` best are kept;
2. those are scored by their exact cosine, and the ``k`` best returned.

A catalogue of at most ``CANDIDATES`` titles is searched exactly. PostgreSQL stays the record:
the index is loaded from ``movie_embeddings`` at start-up and ``refresh`` reads the titles
added since (the serving tick, and this process's own ``addMovie`` at once); a title the
index does not hold yet is answered by pgvector (``api/loaders.py``). Readers take the arrays
of one moment: an addition swaps them whole, so a search sees the old catalogue or the new.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine

from api.queries import reads
from sources.errors import first_line

log = logging.getLogger(__name__)
DIMS = 64  # principal directions the first stage scores on
CANDIDATES = 1024  # titles the first stage keeps for the exact second
FIT_ROWS = 20_000  # embeddings the projection is fitted on (evenly spaced through the catalogue)
REFRESH_S = 5.0  # how often a serving process reads the titles added elsewhere (``TitleRefresher``)


@dataclass(frozen=True)
class Projection:
    """The first stage's projection: ``(x - mean) @ components``."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (d, dims)

    @classmethod
    def fit(cls, unit: np.ndarray, dims: int) -> Projection:
        """The top ``dims`` principal directions of ``unit`` (at most ``FIT_ROWS`` rows of it):
        eigenvectors of their ``d × d`` covariance, cheaper than an SVD of the rows."""
        sample = unit[:: max(1, len(unit) // FIT_ROWS)].astype(np.float64)
        mean = sample.mean(axis=0)
        centred = sample - mean
        _, vectors = np.linalg.eigh(centred.T @ centred)  # eigenvalues ascending
        top = vectors[:, ::-1][:, :dims]
        return cls(mean.astype(np.float32), np.ascontiguousarray(top, dtype=np.float32))

    def apply(self, unit: np.ndarray) -> np.ndarray:
        reduced: np.ndarray = (unit - self.mean) @ self.components
        return reduced.astype(np.float32, copy=False)


@dataclass(frozen=True)
class _Arrays:
    """One moment of the catalogue: ids, unit vectors, their projections and the projection."""

    ids: np.ndarray  # (n,) int64 movie ids
    unit: np.ndarray  # (n, d) float32 embeddings scaled to length 1
    projection: Projection | None  # None for an empty catalogue
    reduced: np.ndarray  # (n, dims) float32: projection.apply(unit)
    row: dict[int, int]  # movie id -> row

    @classmethod
    def of(cls, ids: np.ndarray, unit: np.ndarray, projection: Projection | None, dims: int) -> _Arrays:
        """``projection`` kept, or fitted on ``unit`` when None."""
        if projection is None and len(ids):
            projection = Projection.fit(unit, min(dims, unit.shape[1]))
        reduced = projection.apply(unit) if projection is not None else np.zeros((len(ids), 0), np.float32)
        return cls(ids, unit, projection, reduced, {int(m): i for i, m in enumerate(ids.tolist())})

    def extended(self, ids: np.ndarray, unit: np.ndarray, dims: int) -> _Arrays:
        """These arrays plus new titles: only the new rows are projected and indexed."""
        if self.projection is None:  # an empty catalogue's first titles fit the projection
            return _Arrays.of(ids, unit, None, dims)
        row = dict(self.row)
        row.update({int(m): len(self.ids) + i for i, m in enumerate(ids.tolist())})
        return _Arrays(np.concatenate([self.ids, ids]), np.concatenate([self.unit, unit]), self.projection,
                       np.concatenate([self.reduced, self.projection.apply(unit)]), row)  # fmt: skip


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (n, d) scaled to length 1 (a zero vector stays zero: it matches nothing)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = vectors / np.maximum(norms, 1e-12)
    return unit


class TitleIndex:
    """Every title's embedding, searched by cosine in two stages (see the module docstring)."""

    def __init__(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray, *, dims: int = DIMS,
                 candidates: int = CANDIDATES) -> None:  # fmt: skip
        """``ids`` (n,) and their embeddings ``vectors`` (n, d), in any order."""
        self.candidates, self.dims = candidates, dims
        self._arrays = _Arrays.of(*_checked(ids, vectors), None, dims)
        self._writing = threading.Lock()

    @classmethod
    def load(cls, pg: Engine, *, dims: int = DIMS, candidates: int = CANDIDATES) -> TitleIndex:
        """Every title embedding in PostgreSQL (read a page at a time)."""
        ids, vectors = reads.title_embeddings(pg=pg)
        return cls(ids, vectors, dims=dims, candidates=candidates)

    def __len__(self) -> int:
        return len(self._arrays.ids)

    def __contains__(self, movie_id: object) -> bool:
        return movie_id in self._arrays.row

    @property
    def newest(self) -> int:
        """The highest movie id held (0 when empty): ``refresh`` reads the ones after it."""
        return int(self._arrays.ids.max()) if len(self) else 0

    def nearest(self, vector: Sequence[float] | np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` titles nearest ``vector`` by cosine, best first: (movie id, similarity)."""
        query = unit_rows(np.asarray(vector, dtype=np.float32)[None, :])[0]
        return self._search(self._arrays, query, k, skip=-1)

    def similar(self, movie_id: int, k: int) -> list[tuple[int, float]] | None:
        """The ``k`` titles nearest ``movie_id``'s, itself left out; None when not held."""
        arrays = self._arrays
        row = arrays.row.get(int(movie_id))
        return None if row is None else self._search(arrays, arrays.unit[row], k, skip=row)

    def _search(self, arrays: _Arrays, query: np.ndarray, k: int, skip: int) -> list[tuple[int, float]]:
        """Stage 1 keeps ``candidates`` rows (all of a small catalogue), stage 2 orders them by
        exact cosine, ties by the lower movie id; row ``skip`` (>= 0) is left out."""
        if k <= 0 or arrays.projection is None:
            return []
        if len(arrays.ids) > self.candidates:
            coarse = arrays.reduced @ arrays.projection.apply(query[None, :])[0]
            rows = np.argpartition(-coarse, self.candidates)[: self.candidates]
        else:
            rows = np.arange(len(arrays.ids))
        rows = rows[rows != skip]
        exact = arrays.unit[rows] @ query
        best = np.lexsort((arrays.ids[rows], -exact))[:k]
        return [(int(arrays.ids[rows[i]]), float(exact[i])) for i in best]

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> int:
        """Titles not held yet (projected as fitted at load); returns how many were added."""
        ids, vectors = _checked(ids, vectors)
        with self._writing:
            arrays = self._arrays
            fresh = np.array([int(m) not in arrays.row for m in ids.tolist()], dtype=bool)
            if not fresh.any():
                return 0
            self._arrays = arrays.extended(ids[fresh], vectors[fresh], self.dims)
            return int(fresh.sum())

    def refresh(self, pg: Engine) -> int:
        """Catch up with PostgreSQL: the titles past ``newest`` (added since) are added; when the
        count still differs (titles removed, or added below ``newest``), everything is read again
        and swapped in. Returns the change in the number of titles held."""
        before = len(self)
        ids, vectors = reads.title_embeddings(pg=pg, after=self.newest)
        if len(ids):
            self.add(ids, vectors)
        if reads.title_count(pg=pg) != len(self):
            ids, vectors = reads.title_embeddings(pg=pg)
            with self._writing:
                self._arrays = _Arrays.of(*_checked(ids, vectors), None, self.dims)
        return len(self) - before


class TitleRefresher:
    """``index.refresh(pg)`` every ``every_s`` seconds in a daemon thread until ``close``; the
    last failure is kept for ``/readyz`` (searches go on over what the index holds)."""

    def __init__(self, index: TitleIndex, pg: Engine, every_s: float = REFRESH_S) -> None:
        self.index, self.pg, self.every_s = index, pg, every_s
        self.failing: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="title-refresher", daemon=True)

    def start(self) -> TitleRefresher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.index.refresh(self.pg)
                self.failing = None
            except Exception as exc:  # PostgreSQL down: the next tick tries again
                self.failing = first_line(exc)
                log.warning("title index not refreshed: %s", self.failing)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def report(self) -> dict[str, Any]:
        return {"ok": self.failing is None, "error": self.failing, "titles": len(self.index)}


def _checked(ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` as int64 and ``vectors`` as unit float32 rows, one per id."""
    ids = np.asarray(ids, dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(ids) and (vectors.ndim != 2 or len(vectors) != len(ids)):
        raise ValueError(f"{len(ids)} ids need ({len(ids)}, d) vectors, got {vectors.shape}")
    return ids, unit_rows(vectors) if len(ids) else vectors.reshape(0, vectors.shape[-1] if vectors.ndim == 2 else 0)
