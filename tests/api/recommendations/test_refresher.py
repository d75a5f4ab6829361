"""Lists ranked in the background (api/recommendations/refresher.py): refresh-ahead of lists getting old,
the start-up warm-up, and that a change during a background ranking is not kept."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from api.recommendations.contract import Outcome, RecommendationRequest
from api.recommendations.kept_lists import CachedRecommender
from api.recommendations.refresher import ListRefresher
from tests.api.recommendations.test_kept_lists import Clock, Formula, Meanwhile


def _wait(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition(), "the background thread did not get there in time"


def test_a_list_past_half_its_ttl_is_ranked_again_before_it_expires() -> None:
    inner, clock = Formula(), Clock()
    cache = CachedRecommender(inner, ttl_s=60, clock=clock)
    refresher = ListRefresher(cache)  # not started: run_once ranks in this thread
    cache.on_old = refresher.ahead
    cache.recommend(1, 20)
    clock.now += 20
    cache.recommend(1, 5)
    assert refresher.pending == 0, "a list younger than half its TTL is left alone"
    clock.now += 11
    cache.recommend(1, 5)  # answered from the kept list, which is now asked for again
    assert refresher.pending == 1 and inner.asked == [1]
    assert refresher.run_once() == 1 and inner.asked == [1, 1] and refresher.ranked == 1
    clock.now += 44  # 75 s after the first ranking, 44 s after the background one
    assert len(cache.recommend(1, 20).items) == 20, "ranked again at the longest first kept"
    assert inner.asked == [1, 1] and (cache.hits, cache.misses) == (3, 1)

    without = CachedRecommender(Formula(), ttl_s=60, clock=clock)  # no refresher: it just expires
    without.recommend(1, 5)
    clock.now += 31
    without.recommend(1, 5)
    clock.now += 30
    without.recommend(1, 5)
    assert without.misses == 2


def test_warm_up_ranks_lists_before_they_are_asked_for_refresh_ahead_first() -> None:
    inner = Formula()
    cache = CachedRecommender(inner, ttl_s=60)
    refresher = ListRefresher(cache, batch=32)
    refresher.warm([RecommendationRequest(u, 10) for u in range(1, 41)])
    refresher.ahead([RecommendationRequest(99, 10), RecommendationRequest(99, 20)])  # one list, longest first
    assert refresher.pending == 41
    assert refresher.run_once() == 32 and inner.asked == [99, *range(1, 32)]
    assert refresher.run_once() == 9 and refresher.run_once() == 0 and refresher.pending == 0
    cache.recommend_many([RecommendationRequest(u, 10) for u in range(1, 41)])
    assert len(cache.recommend(99, 20).items) == 20
    assert (cache.hits, cache.misses) == (41, 0)


def test_a_degraded_batch_ends_the_warm_up() -> None:
    """With a store away every answer is the fallback's: slow, never kept, so not worth ranking."""
    inner = Formula()
    inner.degraded_for = set(range(1, 41))
    cache = CachedRecommender(inner, ttl_s=60)
    refresher = ListRefresher(cache, batch=32)
    refresher.warm([RecommendationRequest(u, 10) for u in range(1, 41)])
    assert refresher.run_once() == 32 and refresher.pending == 0 and len(inner.asked) == 32
    inner.degraded_for = {1}  # a batch with one good list goes on
    refresher.warm([RecommendationRequest(u, 10) for u in range(1, 41)])
    refresher.run_once()
    assert refresher.pending == 8


def test_a_change_during_a_background_ranking_is_not_kept() -> None:
    racing = Meanwhile(lambda user_id: cache.forget(user_id))  # the user rates while being ranked
    cache = CachedRecommender(racing, ttl_s=60)
    refresher = ListRefresher(cache)
    refresher.warm([RecommendationRequest(1, 10)])
    refresher.run_once()
    cache.recommend(1, 10)
    assert racing.asked == [1, 1] and cache.misses == 1


class Broken(Formula):
    """``Formula`` whose whole batch fails while ``broken``."""

    broken = True

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        if self.broken:
            raise RuntimeError("feature store away")
        return super().recommend_many(requests)


def test_the_background_thread_survives_a_failed_batch_and_stops_on_close() -> None:
    inner = Broken()
    cache = CachedRecommender(inner, ttl_s=60)
    refresher = ListRefresher(cache).start()
    try:
        refresher.warm([RecommendationRequest(u, 10) for u in (1, 2)])
        _wait(lambda: refresher.failing is not None)
        assert refresher.failing == "feature store away" and len(cache) == 0
        inner.broken = False
        refresher.warm([RecommendationRequest(u, 10) for u in (3, 4)])
        _wait(lambda: len(cache) == 2)
        _wait(lambda: refresher.failing is None)
    finally:
        refresher.close()
    assert not refresher._thread.is_alive()


def test_the_warm_up_skips_a_list_a_request_already_had_ranked() -> None:
    inner = Formula()
    cache = CachedRecommender(inner, ttl_s=60)
    cache.recommend(2, 10)  # a request came first
    refresher = ListRefresher(cache)
    refresher.warm([RecommendationRequest(u, 10) for u in (1, 2, 3)])
    assert refresher.run_once() == 2 and inner.asked == [2, 1, 3]
