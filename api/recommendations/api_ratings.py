"""Ratings made through the API, per user, kept in memory and fed as they happen.

Every ranked recommendation needs the user's ratings made since the stores were loaded (the
mutation log, api/queries/writes.py). Reading the log on every request cost what the log
holds on the embedded Mongo server (its ``find`` scanned every record: docs/performance.md).
Here a user's API ratings are read once, by one indexed query on the log's ``user_id``
(``writes.api_ratings``), then kept and kept current by ``add``, which this process's
mutations call at their acknowledgement and the change feed (kept_lists.py ``MutationFeed``)
calls for every worker's. A request then reads no store for them at all, and a read costs
what that user has, whatever the log holds.

A rating acknowledged while its user's read is in flight is not lost: ``add`` keeps it aside
and the read merges it. An entry lives ``ttl_s`` (a reload of the stores clears the log, and
a poll that failed may have missed some), ``capacity`` bounds memory (LRU).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from api.queries import writes
from api.queries.writes import MongoDb
from api.recommendations.kept_entries import KeptEntries

#: movie id → (epoch seconds, rating): a user's latest rating of each movie rated through the API
Rated = dict[int, tuple[float, float]]

KEEP_S = 300.0
CAPACITY = 100_000


class ApiRatings:
    """``read(user_ids)`` → user → ``Rated``; ``add`` a rating as it is acknowledged or polled."""

    def __init__(self, db: MongoDb, *, ttl_s: float = KEEP_S, capacity: int = CAPACITY,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.db, self._clock = db, clock
        self._kept: KeptEntries[int, Rated] = KeptEntries(ttl_s, capacity)
        self._loading: dict[int, int] = {}  # user → reads in flight
        self._aside: dict[int, Rated] = {}  # ratings added while the user's read was in flight
        self._lock = threading.Lock()
        self.reads = 0  # users read from the log since start (each an indexed query)

    def read(self, user_ids: Sequence[int]) -> dict[int, Rated]:
        """Each user's API ratings; one indexed log query per user not kept. Raises what Mongo
        raises (``StoreDown``) when a user not kept cannot be read."""
        now = self._clock()
        found: dict[int, Rated] = {}
        with self._lock:
            for user_id in dict.fromkeys(user_ids):
                kept = self._kept.get(user_id, now)
                if kept is not None:
                    found[user_id] = dict(kept[1])
                else:
                    self._loading[user_id] = self._loading.get(user_id, 0) + 1
        missing = [u for u in dict.fromkeys(user_ids) if u not in found]
        if not missing:
            return found
        try:
            fresh = writes.api_ratings(self.db, missing)
        except BaseException:
            with self._lock:
                for user_id in missing:
                    self._finish_loading(user_id)
            raise
        with self._lock:  # one block: an ``add`` lands either aside (merged here) or in the kept entry
            self.reads += len(missing)
            for user_id in missing:
                rated = {m: (at.timestamp(), r) for m, (at, r) in fresh.get(user_id, {}).items()}
                for movie_id, (ts, rating) in self._finish_loading(user_id).items():
                    _keep(rated, movie_id, ts, rating)
                self._kept.put(user_id, rated, now)
                found[user_id] = dict(rated)
        return found

    def add(self, user_id: int, movie_id: int, at: datetime, rating: float) -> None:
        """A rating acknowledged (this process) or polled (any process): counted from now on."""
        ts = at.timestamp()
        with self._lock:
            kept = self._kept.get(user_id, self._clock())
            if kept is not None:
                _keep(kept[1], movie_id, ts, rating)
            if user_id in self._loading:
                _keep(self._aside.setdefault(user_id, {}), movie_id, ts, rating)

    def saw(self, change: writes.Change) -> None:
        """The change feed's hook: ratings are added, playbacks change nothing here."""
        if change.rating is not None:
            self.add(change.user_id, change.movie_id, change.at, change.rating)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    def __len__(self) -> int:
        return len(self._kept)

    def _finish_loading(self, user_id: int) -> Rated:
        left = self._loading.get(user_id, 1) - 1
        if left > 0:
            self._loading[user_id] = left
            return dict(self._aside.get(user_id, {}))
        self._loading.pop(user_id, None)
        return self._aside.pop(user_id, {})


def _keep(rated: Rated, movie_id: int, ts: float, rating: float) -> None:
    if movie_id not in rated or ts >= rated[movie_id][0]:
        rated[movie_id] = (ts, rating)
