"""Values kept for a while, at most ``capacity`` of them, the least recently used going first.

The mechanism under the serving caches (ranked lists in api/recommendations/kept_lists.py, loaded
ratings in api/recommendations/loaded_ratings.py). Not locked: each owner holds its own lock around it.
The times are held apart from the values, so a value of plain numbers and strings is stored
as it is and CPython's cyclic GC stops tracking it after a collection (a nesting level per
collection: wrapping it in one more tuple would take one more).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class KeptEntries(Generic[K, V]):
    """``get(key, now)`` → ``(kept at, value)`` while younger than ``ttl_s``; ``put`` evicts the
    least recently used beyond ``capacity``."""

    def __init__(self, ttl_s: float, capacity: int) -> None:
        self.ttl_s, self.capacity = ttl_s, capacity
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._kept_at: dict[K, float] = {}

    def get(self, key: K, now: float) -> tuple[float, V] | None:
        kept_at = self._kept_at.get(key)
        if kept_at is None:
            return None
        if now - kept_at >= self.ttl_s:
            self.pop(key)
            return None
        self._entries.move_to_end(key)
        return kept_at, self._entries[key]

    def put(self, key: K, value: V, at: float) -> None:
        self._entries[key], self._kept_at[key] = value, at
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            oldest, _ = self._entries.popitem(last=False)
            del self._kept_at[oldest]

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)
        self._kept_at.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        self._kept_at.clear()

    def values(self) -> Iterator[V]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
