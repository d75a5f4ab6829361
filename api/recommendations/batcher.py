"""Concurrent recommendation requests of one process, ranked together (dynamic batching).

``await RecommendationBatcher.recommend(request) -> Answer``. Most of a ranking's cost is per
call, not per user (docs/performance.md), so the first request starts a batch at once (a lone
request waits for nothing) and those arriving while a batch is ranked queue up and go together
in the next one, up to ``max_batch``; under load the batches grow by themselves.

The API's own reads around a recommendation are batched the same way: whether each user
exists (``UnknownUser`` otherwise, before any ranking) and the recommended movies' rows, one
PostgreSQL query each per batch; the rows go back with each answer for the request's loaders.
Each request gets its own outcome: one unknown user or one failure does not fail the others.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from anyio.to_thread import run_sync

from api.queries import reads
from api.recommendations.contract import RecommendationRequest, RecommendationResult, Recommender, UnknownUser
from sources.stores import deadline
from sources.stores.clients import Stores

MAX_BATCH = 32


@dataclass(frozen=True)
class Answer:
    """One request's recommendations with the rows the API shows them with."""

    result: RecommendationResult
    user: reads.UserRow
    movies: dict[int, reads.MovieRow]  # the recommended movies that exist


@dataclass
class _Queue:
    """One event loop's waiting requests and the task ranking them."""

    pending: list[tuple[RecommendationRequest, asyncio.Future[Answer]]] = field(default_factory=list)
    draining: asyncio.Task[None] | None = None


class RecommendationBatcher:
    """``await recommend(request)``; see the module docstring. ``recommender`` gives the
    recommender plugged in now (plug-ins swap it after the batcher is built)."""

    def __init__(self, stores: Stores, recommender: Callable[[], Recommender], max_batch: int = MAX_BATCH) -> None:
        self.stores, self.recommender, self.max_batch = stores, recommender, max_batch
        #: batch size → how many batches had it (what ``marquee bench serve`` reports)
        self.batch_sizes: Counter[int] = Counter()
        # Futures belong to one event loop; a process normally has one, tests may have several.
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()

    async def recommend(self, request: RecommendationRequest) -> Answer:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        future: asyncio.Future[Answer] = loop.create_future()
        queue.pending.append((request, future))
        if queue.draining is None or queue.draining.done():
            queue.draining = loop.create_task(self._drain(queue))
        return await future

    async def _drain(self, queue: _Queue) -> None:
        with deadline.unbounded():  # a batch serves many requests: no one request's budget bounds it
            await self._drain_budgetless(queue)

    async def _drain_budgetless(self, queue: _Queue) -> None:
        while queue.pending:
            batch, queue.pending = queue.pending[: self.max_batch], queue.pending[self.max_batch :]
            self.batch_sizes[len(batch)] += 1
            try:
                answers = await run_sync(self._answer, [request for request, _ in batch])
            except Exception as exc:  # the whole batch failed: every request says why
                answers = [exc] * len(batch)
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():  # its request was cancelled (client went away)
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    def _answer(self, requests: list[RecommendationRequest]) -> list[Answer | Exception]:
        """In a worker thread: the users checked, the known ones ranked, the movies read."""
        pg = self.stores.pg_reads
        with self.stores.call("postgres"):
            users = reads.users_by_id(pg=pg, ids=sorted({r.user_id for r in requests}))
        known = [r for r in requests if r.user_id in users]
        ranked = iter(self.recommender().recommend_many(known) if known else [])
        outcomes = [next(ranked) if r.user_id in users else UnknownUser(r.user_id) for r in requests]
        wanted = {item.movie_id for o in outcomes if isinstance(o, RecommendationResult) for item in o.items}
        with self.stores.call("postgres"):
            movies = reads.movies_by_id(pg=pg, ids=sorted(wanted)) if wanted else {}
        return [
            Answer(o, users[r.user_id], {i.movie_id: movies[i.movie_id] for i in o.items if i.movie_id in movies})
            if isinstance(o, RecommendationResult)
            else o
            for r, o in zip(requests, outcomes, strict=True)
        ]
