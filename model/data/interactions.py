"""(user, movie, rating, time) interactions with dense id maps, and the splits models train on.

Splits (every one gives train / valid / test; valid drives early stopping):

- ``recbole_split``: RecBole's protocol (``order: TO, split: RS [0.8, 0.1, 0.1], group_by: user``):
  each user's events in time order, the first 80% train, next 10% valid, last 10% test,
  with RecBole's own rounding (``_calcu_split_ids``), so numbers can sit beside RecBole's.
- ``random_split``: a seeded random 80/20 train/test split, as Surprise's published ML-100K
  RMSEs use (SVD 0.934, SVD++ 0.919); an eighth of the 80% is held back as valid.
- ``time_split``: one global cut in time: the last 10% of events are the held-out test period,
  the 10% before it valid. Users or movies first seen after the cut are cold-start.

Ids are dense indices (``0..n_users-1``, ``0..n_movies-1``) over the whole catalogue, not only
movies that were rated, so a model scores every movie; ``user_ids``/``movie_ids`` map back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import text

from sources.datasets.movielens import Dataset
from sources.errors import DatasetError
from sources.stores import mongo, mongo_scan
from sources.stores.clients import Stores

SPLITS = ("recbole", "random", "time")


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays, one row per event; ids are dense indices into ``user_ids``/``movie_ids``."""

    users: np.ndarray  # (n,) int64
    items: np.ndarray  # (n,) int64
    ratings: np.ndarray  # (n,) float32, 1..5
    ts: np.ndarray  # (n,) int64 epoch seconds
    user_ids: np.ndarray  # (n_users,) external user id of each dense index
    movie_ids: np.ndarray  # (n_movies,) external movie id of each dense index

    def __post_init__(self) -> None:
        n = len(self.users)
        if not (len(self.items) == len(self.ratings) == len(self.ts) == n):
            raise ValueError("interaction arrays differ in length")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_movies(self) -> int:
        return len(self.movie_ids)

    @property
    def max_ts(self) -> int:
        return int(self.ts.max()) if len(self) else 0

    def take(self, rows: np.ndarray | slice) -> Interactions:
        """The events at ``rows`` (indices or a bool mask: copies; a slice: views of these
        arrays, no copy), same id maps."""
        return Interactions(
            self.users[rows], self.items[rows], self.ratings[rows], self.ts[rows], self.user_ids, self.movie_ids
        )

    def of_users(self, users: np.ndarray) -> Interactions:
        """The events of ``users`` (sorted dense ids) only, renumbered: user ``i`` here is
        ``users[i]`` there, and ``user_ids`` follow, so external ids still map back."""
        rows = np.isin(self.users, users)
        return Interactions(np.searchsorted(users, self.users[rows]).astype(np.int64), self.items[rows],
                            self.ratings[rows], self.ts[rows], self.user_ids[users], self.movie_ids)  # fmt: skip

    def user_index(self) -> dict[int, int]:
        return {int(u): i for i, u in enumerate(self.user_ids)}

    def movie_index(self) -> dict[int, int]:
        return {int(m): i for i, m in enumerate(self.movie_ids)}

    def per_user_items(self) -> list[set[int]]:
        """``n_users`` sets of dense movie ids."""
        out: list[set[int]] = [set() for _ in range(self.n_users)]
        for u, i in zip(self.users.tolist(), self.items.tolist(), strict=True):
            out[u].add(i)
        return out

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.n_users)

    def movie_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_movies)


def _build(arr: np.ndarray, user_ids: list[int], movie_ids: list[int], where: str) -> Interactions:
    """``arr``: (n, 4) float64 rows of (user id, movie id, rating, epoch seconds).

    Vectorised (sorted id arrays and ``searchsorted``, no per-row Python), so 25M rows cost
    a few copies of the array, not gigabytes of Python objects."""
    if not len(arr):
        raise DatasetError(f"no interactions in {where}: load a dataset first (marquee ingest)")
    known_u = np.unique(np.asarray(user_ids, dtype=np.int64))
    known_m = np.unique(np.asarray(movie_ids, dtype=np.int64))
    raw_u, raw_m = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
    unknown_u = np.unique(raw_u[~np.isin(raw_u, known_u)])
    unknown_m = np.unique(raw_m[~np.isin(raw_m, known_m)])
    if len(unknown_u) or len(unknown_m):  # a review of a user or movie the catalogue lacks: stores disagree
        raise DatasetError(
            f"{where}: {len(unknown_u)} user ids and {len(unknown_m)} movie ids are not in the catalogue"
        )
    # chronological, ties by user then movie: a deterministic order every split relies on
    order = np.lexsort((arr[:, 1], arr[:, 0], arr[:, 3]))
    return Interactions(
        users=np.searchsorted(known_u, raw_u[order]).astype(np.int64),
        items=np.searchsorted(known_m, raw_m[order]).astype(np.int64),
        ratings=arr[order, 2].astype(np.float32),
        ts=arr[order, 3].astype(np.int64),
        user_ids=known_u,
        movie_ids=known_m,
    )


def _rows_to_array(rows: Iterator[tuple[int, int, float, int]], chunk: int) -> np.ndarray:
    """Rows into one (n, 4) float64 array, converted ``chunk`` rows at a time (never a list of all)."""
    parts, batch = [], []
    for row in rows:
        batch.append(row)
        if len(batch) >= chunk:
            parts.append(np.array(batch, dtype=np.float64))
            batch = []
    if batch:
        parts.append(np.array(batch, dtype=np.float64))
    return np.concatenate(parts) if parts else np.empty((0, 4), dtype=np.float64)


def from_dataset(dataset: Dataset) -> Interactions:
    """Interactions straight from a dataset's files (no stores): tests and quick experiments."""
    rows = ((u, r.movie_id, r.rating, r.ts) for u, block in dataset.rating_blocks() for r in block)
    arr = _rows_to_array(rows, 100_000)
    return _build(arr, [u.id for u in dataset.users], [m.id for m in dataset.movies], dataset.name)


def window_start(stores: Stores, days: int) -> datetime | None:
    """The start of the last ``days`` days of reviews (counted back from the newest review,
    not from today: datasets are historical); None for 0 days or no reviews, meaning all."""
    if days <= 0:
        return None
    newest = mongo.live(stores.mongo, "reviews").find_one({}, {"_id": 0, "ts": 1}, sort=[("ts", -1)])
    if newest is None:
        return None
    start: datetime = newest["ts"] - timedelta(days=days)
    return start


def from_stores(stores: Stores, *, batch_size: int = 10_000, since: datetime | None = None) -> Interactions:
    """Reviews from MongoDB (the system of record), catalogue ids from PostgreSQL.

    Read by a scan in bounded memory (``sources.stores.mongo_scan``; the embedded server's
    aggregation is not trusted), converted to arrays chunk by chunk. ``since`` keeps only the
    reviews at or after it: a recent window, for large datasets where training on all of
    history would take too long.
    """
    docs = mongo_scan.scan(stores, "reviews", field="ts" if since else None, since=since, batch_size=batch_size)
    rows = ((int(d["user_id"]), int(d["movie_id"]), float(d["rating"]), int(d["ts"].timestamp())) for d in docs)
    arr = _rows_to_array(rows, 100_000)
    with stores.pg.connect() as conn:
        user_ids = [int(u) for u in conn.execute(text("SELECT id FROM users")).scalars()]
        movie_ids = [int(m) for m in conn.execute(text("SELECT id FROM movies")).scalars()]
    where = "the stores" if since is None else f"the stores since {since:%Y-%m-%d}"
    return _build(arr, user_ids, movie_ids, where)


def combined(parts: Sequence[Interactions]) -> Interactions:
    """The events of ``parts`` (same id maps) in one set, e.g. a split's train and valid parts."""
    if not parts:
        raise ValueError("nothing to combine")
    first = parts[0]
    if any(p.user_ids is not first.user_ids and not np.array_equal(p.user_ids, first.user_ids) for p in parts) or any(
        p.movie_ids is not first.movie_ids and not np.array_equal(p.movie_ids, first.movie_ids) for p in parts
    ):
        raise ValueError("interactions with different id maps cannot be combined")
    users, items, ratings, ts = (
        np.concatenate([getattr(p, f) for p in parts]) for f in ("users", "items", "ratings", "ts")
    )
    return Interactions(users, items, ratings, ts, first.user_ids, first.movie_ids)


# splits ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """One split's three parts; ``name`` is ``time``, ``recbole`` or ``random``."""

    name: str
    train: Interactions
    valid: Interactions
    test: Interactions

    def describe(self) -> dict[str, Any]:
        """Sizes and the training part's last event time, as recorded in a checkpoint."""
        return {
            "name": self.name,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
            "train_max_ts": self.train.max_ts,
        }


def sample_test_users(split: Split, n: int, seed: int) -> tuple[np.ndarray, int]:
    """A seeded sample of ``n`` of the split's held-out users (sorted dense ids; all of them when
    ``n`` is at least their number) and how many there were."""
    if n < 1:
        raise ValueError(f"a sample needs at least one user, got {n}")
    held_out = np.unique(split.test.users)
    if n >= len(held_out):
        return held_out, len(held_out)
    return np.sort(np.random.default_rng([seed, 29]).choice(held_out, size=n, replace=False)), len(held_out)


def users_view(split: Split, users: np.ndarray) -> Split:
    """The split cut to ``users`` (sorted dense ids) and renumbered (``Interactions.of_users``):
    every part keeps all their events, and a matrix over the view has ``len(users)`` rows."""
    return Split(split.name, *(getattr(split, part).of_users(users) for part in ("train", "valid", "test")))


def recbole_counts(total: int, ratios: tuple[float, ...] = (0.8, 0.1, 0.1)) -> list[int]:
    """RecBole 1.2.1's ``Dataset._calcu_split_ids`` as counts: how many of a user's events go where."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def recbole_file_order(data: Interactions) -> np.ndarray | None:
    """Each row's line in the shipped ``ml-100k.inter``, or None when a row is not in it (other data).

    RecBole orders a user's events with a stable sort on the timestamp, so events with the same
    timestamp keep the file's order; about 4% of ML-100K's test events sit on such a tie at a
    user's 80/10/10 boundary, and ordering ties by movie id instead moves them across it."""
    from sources.datasets.movielens import recbole_ml100k_dir

    try:
        lines = (recbole_ml100k_dir() / "ml-100k.inter").read_text(encoding="utf-8").splitlines()[1:]
    except (DatasetError, OSError):
        return None
    position: dict[tuple[int, int], int] = {}
    for n, line in enumerate(lines):
        user, movie = line.split("\t")[:2]
        position.setdefault((int(user), int(movie)), n)
    keys = zip(data.user_ids[data.users].tolist(), data.movie_ids[data.items].tolist(), strict=True)
    found = [position.get(k, -1) for k in keys]
    return None if -1 in found else np.asarray(found, dtype=np.int64)


def recbole_split(
    data: Interactions, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), *, tie_order: np.ndarray | None = None
) -> Split:
    """Per user, in time order: first 80% train, next 10% valid, last 10% test (RecBole's rounding).

    ``tie_order`` (one key per row, e.g. ``recbole_file_order``) orders events with the same
    timestamp; without it they keep the rows' order (by movie id)."""
    part = np.empty(len(data), dtype=np.int8)
    ties = np.arange(len(data)) if tie_order is None else tie_order
    order = np.lexsort((ties, data.ts, data.users))  # by user, then time, then the tie order
    starts = np.searchsorted(data.users[order], np.arange(data.n_users + 1))
    for u in range(data.n_users):
        rows = order[starts[u] : starts[u + 1]]
        n_train, n_valid, _ = recbole_counts(len(rows), ratios)
        part[rows[:n_train]] = 0
        part[rows[n_train : n_train + n_valid]] = 1
        part[rows[n_train + n_valid :]] = 2
    return Split("recbole", data.take(part == 0), data.take(part == 1), data.take(part == 2))


def random_split(data: Interactions, *, test: float = 0.2, seed: int = 42) -> Split:
    """Seeded random 80/20; valid is 1/8 of the 80% (so 70/10/20 of the events)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data))
    n_test = round(test * len(data))
    n_valid = round((len(data) - n_test) / 8)
    part = np.zeros(len(data), dtype=np.int8)
    part[perm[:n_test]] = 2
    part[perm[n_test : n_test + n_valid]] = 1
    return Split("random", data.take(part == 0), data.take(part == 1), data.take(part == 2))


def time_split(data: Interactions, *, valid: float = 0.1, test: float = 0.1) -> Split:
    """One global cut: the last ``test`` share of events (in time) is the held-out test period.

    The rows are in time order already, so the parts are slices: views of ``data``'s arrays,
    not copies: 28 bytes an event saved in every job that splits."""
    n = len(data)
    n_test, n_valid = round(test * n), round(valid * n)
    cut_valid, cut_test = n - n_test - n_valid, n - n_test
    return Split("time", data.take(slice(0, cut_valid)), data.take(slice(cut_valid, cut_test)),
                 data.take(slice(cut_test, n)))  # fmt: skip


def make_split(data: Interactions, name: str, *, seed: int = 42) -> Split:
    """The split called ``name`` (one of ``SPLITS``); ``seed`` is read by ``random`` only."""
    if name == "recbole":
        return recbole_split(data, tie_order=recbole_file_order(data))
    if name == "random":
        return random_split(data, seed=seed)
    if name == "time":
        return time_split(data)
    raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
