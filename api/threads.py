"""Worker threads for store calls, at most a few per request.

Resolvers run their blocking store calls through ``in_thread``. Inside a request
(``request_threads``, entered by api/bounds.py) the calls share that request's own limiter,
so a query with hundreds of store calls runs them a few at a time instead of filling the
process's shared thread queue, where every other request's calls would wait behind them.
Outside a request, anyio's process-wide limiter applies.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

P = ParamSpec("P")
T = TypeVar("T")

#: store calls one request may have in worker threads at once
REQUEST_THREADS = 4

_LIMITER: ContextVar[CapacityLimiter | None] = ContextVar("marquee_request_threads", default=None)


@contextmanager
def request_threads(n: int = REQUEST_THREADS) -> Iterator[CapacityLimiter]:
    """Give the block (and the tasks it creates) a limiter of its own with ``n`` threads."""
    limiter = CapacityLimiter(n)
    token = _LIMITER.set(limiter)
    try:
        yield limiter
    finally:
        _LIMITER.reset(token)


def current_request_threads() -> CapacityLimiter | None:
    """The current request's limiter (None outside a request)."""
    return _LIMITER.get()


async def in_thread(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``func(*args, **kwargs)`` in a worker thread, within the current request's limiter."""
    return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs), limiter=_LIMITER.get())
