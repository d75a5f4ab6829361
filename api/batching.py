"""Concurrent requests of one process handled together (dynamic batching, group commit).

``await Batcher(handle).submit(item) -> outcome``. When most of a call's cost is per round trip
rather than per item (a ranking, a store check, a log insert), the first item starts a batch at
once (a lone request waits for nothing) and those arriving while a batch is handled queue up
and go together in the next one, up to ``max_batch``; under load the batches grow by
themselves. ``handle`` runs in a worker thread and returns one outcome per item, in order: an
exception in that list fails only its own request, an exception raised by ``handle`` fails
every request of the batch.

Used by api/recommendations/batcher.py (rankings) and api/mutation_batcher.py (writes).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from anyio.to_thread import run_sync

from sources.stores import deadline

Item = TypeVar("Item")
Out = TypeVar("Out")


@dataclass
class _Queue(Generic[Item, Out]):
    """One event loop's waiting items and the task handling them."""

    pending: list[tuple[Item, asyncio.Future[Out]]] = field(default_factory=list)
    draining: asyncio.Task[None] | None = None


class Batcher(Generic[Item, Out]):
    """``await submit(item)``; see the module docstring."""

    def __init__(self, handle: Callable[[list[Item]], Sequence[Out | Exception]], max_batch: int) -> None:
        self.handle, self.max_batch = handle, max_batch
        #: batch size → how many batches had it (what ``marquee bench`` reports)
        self.batch_sizes: Counter[int] = Counter()
        # Futures belong to one event loop; a process normally has one, tests may have several.
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue[Item, Out]] = (
            weakref.WeakKeyDictionary()
        )

    async def submit(self, item: Item) -> Out:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        future: asyncio.Future[Out] = loop.create_future()
        queue.pending.append((item, future))
        if queue.draining is None or queue.draining.done():
            queue.draining = loop.create_task(self._drain(queue))
        return await future

    async def _drain(self, queue: _Queue[Item, Out]) -> None:
        with deadline.unbounded():  # a batch serves many requests: no one request's budget bounds it
            while queue.pending:
                batch, queue.pending = queue.pending[: self.max_batch], queue.pending[self.max_batch :]
                self.batch_sizes[len(batch)] += 1
                try:
                    outcomes: Sequence[Out | Exception] = await run_sync(self.handle, [item for item, _ in batch])
                except Exception as exc:  # the whole batch failed: every request says why
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its request was cancelled (client went away)
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
