"""The users' loaded ratings (the graph's RATED edges), kept in memory for a while.

Every ranked recommendation needs the user's history. The graph answers in a millisecond,
but its client parses every value of the answer in Python, a large share of a batch's CPU
in a process whose throughput is bound by its GIL (docs/performance.md). Those edges only
change when ``marquee ingest`` runs; ratings made through the API are in the mutation log,
which the caller still reads on every request. So each user's loaded ratings are kept for
``ttl_s`` and a new load reaches recommendations within that time, as it reaches the kept
ranked lists (api/recommendations/kept_lists.py).

Entries are tuples of ints and floats, which CPython's collector stops tracking, so a full
cache adds nothing to collection pauses; ``capacity`` bounds memory (~16 bytes a rating).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from api.queries import taste
from api.recommendations.kept_entries import KeptEntries
from sources.stores.graph import GraphStore

#: (movie ids, scores, epoch seconds), one position per rating
History = taste.UserRatings
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
        fresh = dict.fromkeys(missing, _EMPTY) | taste.loaded_ratings(graph=self.graph, user_ids=missing)
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
