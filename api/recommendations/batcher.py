"""Concurrent recommendation requests of one process, ranked together (dynamic batching, api/batching.py).

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

from collections.abc import Callable
from dataclasses import dataclass

from api.batching import Batcher
from api.queries import reads
from api.recommendations.contract import RecommendationRequest, RecommendationResult, Recommender, UnknownUser
from sources.stores.clients import Stores

MAX_BATCH = 32


@dataclass(frozen=True)
class Answer:
    """One request's recommendations with the rows the API shows them with."""

    result: RecommendationResult
    user: reads.UserRow
    movies: dict[int, reads.MovieRow]  # the recommended movies that exist


class RecommendationBatcher(Batcher[RecommendationRequest, Answer]):
    """``await recommend(request)``; see the module docstring. ``recommender`` gives the
    recommender plugged in now (plug-ins swap it after the batcher is built)."""

    def __init__(self, stores: Stores, recommender: Callable[[], Recommender], max_batch: int = MAX_BATCH) -> None:
        super().__init__(self._answer, max_batch)
        self.stores, self.recommender = stores, recommender

    async def recommend(self, request: RecommendationRequest) -> Answer:
        return await self.submit(request)

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
