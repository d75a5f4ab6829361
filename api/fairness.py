"""Each client's share of the server: a budget of query cost, refilled at a steady rate.

A query's cost (api/cost.py) is charged to its client before it runs: the API key when keys
are configured (``MARQUEE_API_KEYS``), else the client's address. A client's budget refills at
``MARQUEE_CLIENT_COST_PER_S`` up to ``burst``; a query is admitted while the budget is not in
debt, and its whole cost is taken (so one expensive query is always possible, and is paid off
before the next). A query that is not admitted gets HTTP 429 with ``Retry-After``, before any
resolver runs, so one client's heavy queries cannot take the server from everyone else.
``0`` (the default) turns the budgets off.

Admitted operations that cost ``EXPENSIVE_COST`` or more also take turns: one at a time per
process, each with ``EXPENSIVE_THREADS`` worker threads (api/cost.py), so a few of them never
occupy the whole process.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from graphql import GraphQLError

#: an operation at least this costly runs only while no other such operation does
EXPENSIVE_COST = 1_000
#: the worker threads an expensive operation may use at once
EXPENSIVE_THREADS = 2


class CostBudgets:
    """Per-client token buckets of query cost (``take`` is thread-safe); ``capacity`` bounds the
    clients remembered (the least recently seen are dropped, i.e. start again full)."""

    def __init__(self, rate_per_s: float, burst: float, *, capacity: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.rate_per_s, self.burst, self.capacity, self._clock = rate_per_s, burst, capacity, clock
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (level, at)
        self._lock = threading.Lock()
        self.refused = 0

    def take(self, client: str, cost: float) -> float:
        """0.0 when the query is admitted (its cost taken); else the seconds until it would be."""
        now = self._clock()
        with self._lock:
            level, at = self._levels.pop(client, (self.burst, now))
            level = min(self.burst, level + (now - at) * self.rate_per_s)
            if level < 0:  # still paying off an earlier query
                self._levels[client] = (level, now)
                self.refused += 1
                return -level / self.rate_per_s
            self._levels[client] = (level - cost, now)
            while len(self._levels) > self.capacity:
                self._levels.popitem(last=False)
            return 0.0


def rate_limited(cost: int, wait_s: float) -> GraphQLError:
    retry = max(1, math.ceil(wait_s))
    return GraphQLError(
        f"this client's query budget is spent; retry in {retry} s",
        extensions={"code": "RATE_LIMITED", "cost": cost, "retryAfter": retry},
    )
