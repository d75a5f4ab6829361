"""The cache of ranked lists (api/recommendations/kept_lists.py): what it keeps, for how long, and
that a rating through any worker reaches every worker's lists (real Mongo mutation log)."""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pymongo import MongoClient
from starlette.testclient import TestClient

from api.app import create_app
from api.context import Services
from api.recommendations.contract import (
    Outcome,
    RecommendationRequest,
    RecommendationResult,
    Recommended,
    Recommender,
)
from api.recommendations.fallback import FallbackRecommender
from api.recommendations.kept_lists import CachedRecommender, MutationFeed
from api.serving import plug_kept_lists
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores import mongo
from sources.stores.clients import Stores


class Formula(Recommender):
    """Ranks movies 1..k for anyone (explanations name the user) and records who it was asked."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.degraded_for: set[int] = set()
        self.failing_for: set[int] = set()

    def recommend(self, user_id: int, k: int, exclude_seen: bool = True) -> RecommendationResult:
        raise AssertionError("the cache must ask through recommend_many")

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        self.asked += [r.user_id for r in requests]
        out: list[Outcome] = []
        for r in requests:
            if r.user_id in self.failing_for:
                out.append(RuntimeError(f"user {r.user_id} is newer than the model"))
                continue
            items = [Recommended(m, 1 / m, m, f"movie {m} for user {r.user_id}, seen={r.exclude_seen}")
                     for m in range(1, r.k + 1)]  # fmt: skip
            out.append(RecommendationResult(items, "formula-v1", degraded=r.user_id in self.degraded_for))
        return out


class Meanwhile(Formula):
    """``Formula`` that first runs ``event`` for the user it ranks: a change during a ranking."""

    def __init__(self, event: Callable[[int], None]) -> None:
        super().__init__()
        self.event = event

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        self.event(requests[0].user_id)
        return super().recommend_many(requests)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_kept_list_answers_again_and_a_shorter_first_gets_its_prefix() -> None:
    inner = Formula()
    cache = CachedRecommender(inner, ttl_s=60)
    first = cache.recommend(1, 20)
    assert cache.recommend(1, 20) == first and inner.asked == [1]
    assert cache.recommend(1, 5) == RecommendationResult(first.items[:5], "formula-v1")
    assert inner.asked == [1] and (cache.hits, cache.misses) == (2, 1)
    cache.recommend(1, 30)  # more than was kept: ranked again, and kept at 30
    assert inner.asked == [1, 1] and len(cache.recommend(1, 30).items) == 30
    without_seen = cache.recommend(1, 5, exclude_seen=False)  # another list
    assert inner.asked == [1, 1, 1] and "seen=False" in without_seen.items[0].explanation


def test_in_a_batch_only_the_missing_lists_are_ranked() -> None:
    inner = Formula()
    cache = CachedRecommender(inner, ttl_s=60)
    cache.recommend(2, 10)
    outcomes = cache.recommend_many([RecommendationRequest(u, 10) for u in (1, 2, 3)])
    assert inner.asked == [2, 1, 3]
    assert [o.items[0].explanation for o in outcomes if isinstance(o, RecommendationResult)] == [
        f"movie 1 for user {u}, seen=True" for u in (1, 2, 3)
    ]


def test_a_slow_ranking_never_replaces_a_list_ranked_after_it_began() -> None:
    """A background batch that began before a request ranked the same user, and finished after
    it, must not replace the list the request was served (the served-app race: two requests of
    one user got different lists)."""
    clock = Clock()
    rankings: list[str] = []

    class Versioned(Formula):
        def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
            rankings.append(f"ranking {len(rankings) + 1}")
            label = rankings[-1]
            if label == "ranking 1":  # the slow background batch: a request comes meanwhile
                clock.now += 1
                served.append(cache.recommend(7, 5))
            return [RecommendationResult([Recommended(1, 1.0, 1, label)], label) for _ in requests]

    served: list[RecommendationResult] = []
    cache = CachedRecommender(Versioned(), ttl_s=60, clock=clock)
    cache.rank([RecommendationRequest(7, 5)])  # began first, finishes last
    assert served[0].model_version == "ranking 2"
    assert cache.recommend(7, 5) == served[0]  # the list served is the list kept


def test_lists_expire_after_ttl() -> None:
    inner, clock = Formula(), Clock()
    cache = CachedRecommender(inner, ttl_s=60, clock=clock)
    cache.recommend(1, 10)
    clock.now += 59.9
    cache.recommend(1, 10)
    assert inner.asked == [1]
    clock.now += 0.2
    cache.recommend(1, 10)
    assert inner.asked == [1, 1]


def test_degraded_and_failed_answers_are_not_kept() -> None:
    inner = Formula()
    inner.degraded_for, inner.failing_for = {1}, {2}
    cache = CachedRecommender(inner, ttl_s=60)
    for _ in range(2):
        degraded, failed = cache.recommend_many([RecommendationRequest(1, 5), RecommendationRequest(2, 5)])
        assert isinstance(degraded, RecommendationResult) and degraded.degraded
        assert isinstance(failed, RuntimeError)
    assert inner.asked == [1, 2, 1, 2] and len(cache) == 0


def test_forget_drops_a_user_and_a_ranking_under_way_is_not_kept() -> None:
    inner = Formula()
    cache = CachedRecommender(inner, ttl_s=60)
    cache.recommend(1, 10)
    cache.recommend(1, 10, exclude_seen=False)
    cache.forget(1)
    assert len(cache) == 0

    racing = Meanwhile(cache.forget)  # the user rates a movie while their list is being ranked
    cache.inner = racing
    cache.recommend(1, 10)
    cache.recommend(1, 10)
    assert racing.asked == [1, 1], "a list ranked before the forget must not be kept"

    lost = Meanwhile(lambda user_id: cache.clear())  # the mutation log became unreadable meanwhile
    cache.inner = lost
    cache.recommend(2, 10)
    cache.recommend(2, 10)
    assert lost.asked == [2, 2], "a list ranked before a clear must not be kept"


def test_capacity_keeps_the_most_recently_used_lists() -> None:
    inner = Formula()
    cache = CachedRecommender(inner, ttl_s=60, capacity=2)
    for user in (1, 2):
        cache.recommend(user, 5)
    cache.recommend(1, 5)  # 1 is now the most recent
    cache.recommend(3, 5)  # evicts 2
    inner.asked.clear()
    cache.recommend(1, 5)
    cache.recommend(2, 5)
    assert inner.asked == [2] and len(cache) == 2


def test_kept_lists_are_not_tracked_by_the_cyclic_gc() -> None:
    """A full cache must not bring back the full-collection pauses gc.freeze() removed: the
    collections that meet a kept list stop tracking it (a nesting level per pass)."""
    cache = CachedRecommender(Formula(), ttl_s=60)
    for user in range(1, 51):
        cache.recommend(user, 10)
    for _ in range(3):
        gc.collect()
    assert not any(gc.is_tracked(entry) for entry in cache._lists.values())


def test_an_unreadable_mutation_log_empties_the_cache(stores: Stores) -> None:
    """When the change feed cannot be read, any kept list may be stale: none is served."""
    dead: MongoClient[dict[str, Any]] = MongoClient("mongodb://127.0.0.1:1", serverSelectionTimeoutMS=200)
    cache = CachedRecommender(Formula(), ttl_s=60)
    cache.recommend(1, 10)
    feed = MutationFeed(dead["marquee"], cache.forget, cache.clear, poll_s=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while feed.failing is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert feed.failing is not None and len(cache) == 0
    finally:
        feed.close()
        dead.close()


RECOMMEND = "query($u: Int!) { recommendations(userId: $u, first: 5) { items { movie { movieId } } } }"
RATE = """mutation($u: Int!, $m: Int!, $c: String!) {
  rateMovie(userId: $u, movieId: $m, rating: 4, clientMutationId: $c) { __typename } }"""


def _ids(client: TestClient, user: int) -> list[int]:
    body = client.post("/graphql", json={"query": RECOMMEND, "variables": {"u": user}}).json()
    assert "errors" not in body, body
    return [item["movie"]["movieId"] for item in body["data"]["recommendations"]["items"]]


def test_a_rating_through_one_worker_reaches_every_workers_kept_lists(
    settings: Settings, stores: Stores, loaded: IngestReport
) -> None:
    """Two app instances on the same stores stand for two Uvicorn workers. A rating through A
    is excluded at once from A's list (this process's mutation) and, within a few polls of
    the mutation log, from B's list (another process's)."""
    user, caches = 7, {}

    def plugged(name: str, poll_s: float) -> Any:
        def plug(services: Services) -> None:
            cached = plug_kept_lists(services, ttl_s=600, poll_s=poll_s)
            assert cached is not None
            caches[name] = cached

        return plug

    # A's feed would not poll within the test: only its own mutation can make it forget.
    a_app = create_app(settings, stores=stores, configure=plugged("a", poll_s=600))
    b_app = create_app(settings, stores=stores, configure=plugged("b", poll_s=0.1))
    with TestClient(a_app) as a, TestClient(b_app) as b:
        before = _ids(b, user)
        assert _ids(b, user) == before and caches["b"].hits == 1  # B answers from its cache
        status = b.get("/readyz").json()["serving"]["recommendation_cache"]
        background = {"queued": 0, "ranked": 0, "error": None}  # no warm-up asked, nothing old yet
        assert status == {"ok": True, "error": None, "lists": 1, "hits": 1, "misses": 1, "background": background}
        assert _ids(a, user) == before
        rated = before[0]
        client_id = f"cache-test-{uuid.uuid4()}"
        try:
            answer = a.post("/graphql", json={"query": RATE, "variables": {"u": user, "m": rated, "c": client_id}})
            assert answer.json()["data"]["rateMovie"]["__typename"] == "RatingRecorded", answer.text
            assert rated not in _ids(a, user)  # A forgot the user as soon as its mutation was done
            deadline = time.monotonic() + 5
            while rated in (b_ids := _ids(b, user)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert rated not in b_ids, "B kept serving a list from before the rating"
            assert b_ids == [i.movie_id for i in FallbackRecommender(stores).recommend(user, 5).items]
        finally:
            mongo.live(stores.mongo, "reviews").delete_many({"user_id": user, "movie_id": rated})
            stores.mongo[mongo.MUTATION_LOG].delete_many({"_id": client_id})
