"""The users' loaded ratings (the graph's RATED edges), kept in memory for a while.

Every ranked recommendation needs the user's history. The graph answers in a millisecond,
but its client parses every value of the answer in Python: for a batch of 32 users (~3,400
ratings) that parsing was a third of the batch's CPU, in a process whose throughput is bound
by its GIL. Those edges only change when ``marquee load`` / ``ingest`` runs; ratings made
through the API are in the mutation log, which the caller still reads on every request. So
each user's loaded ratings are kept for ``ttl_s`` and a new load reaches recommendations
within that time, as it reaches the kept ranked lists (api/recommendation_cache.py).

Entries are tuples of ints and floats, which CPython's collector stops tracking, so a full
cache adds nothing to collection pauses; ``capacity`` bounds memory (~16 bytes a rating).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from api.kept_entries import KeptEntries
from sources.graph import GraphStore

#: (movie ids, scores, epoch seconds), one position per rating
History = tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]
_EMPTY: History = ((), (), ())


class LoadedRatings:
    """``read(user_ids)``: each user's RATED edges, from memory when read less than ``ttl_s`` ago."""

    def __init__(self, graph: GraphStore, *, ttl_s: float = 60.0, capacity: int = 20_000,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.graph, self.ttl_s, self._clock = graph, ttl_s, clock
        self._kept: KeptEntries[int, History] = KeptEntries(ttl_s, capacity)  # user -> (read at, history)
        self._lock = threading.Lock()

    def read(self, user_ids: Sequence[int]) -> dict[int, History]:
        """Every user's history (empty for a user with none); one graph query for those not kept.
        Raises what the graph raises when a user not kept cannot be read."""
        now = self._clock()
        found: dict[int, History] = {}
        with self._lock:
            for user_id in user_ids:
                if (kept := self._kept.get(user_id, now)) is not None:
                    found[user_id] = kept[1]
        missing = [u for u in dict.fromkeys(user_ids) if u not in found]
        if not missing:
            return found
        # One row per user with three lists: a third less parsing than a row per rating.
        rows = self.graph.read(
            "MATCH (u:User)-[r:RATED]->(m:Movie) WHERE u.id IN $users "
            "RETURN u.id AS user, collect(m.id) AS movies, collect(r.score) AS scores, collect(r.ts) AS ts",
            {"users": missing},
        )
        fresh = dict.fromkeys(missing, _EMPTY)
        for row in rows:
            fresh[int(row["user"])] = (
                tuple(int(m) for m in row["movies"]),
                tuple(float(s) for s in row["scores"]),
                tuple(float(t) for t in row["ts"]),
            )
        if self.ttl_s > 0:
            with self._lock:
                for user_id, history in fresh.items():
                    self._kept.put(user_id, history, now)
        return found | fresh

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    def __len__(self) -> int:
        return len(self._kept)
