"""What the served API plugs in at start-up: Feast online features and the trained ranker.

``plug_serving`` is the ``create_app(configure=…)`` hook ``marquee serve`` uses. Each part is
optional: without an applied feature repository the API serves everything but online
features; without a compatible checkpoint ``recommendations`` answers from the graph and
popularity fallback. A checkpoint trained on another feature list is refused (logged), never
scored with misread columns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from api.credits import CreditIndex
from api.feast_features import FeastUserFeatures, plug_feature_store
from api.list_refresher import ListRefresher
from api.recommend import (
    BatchRecommender,
    FallbackRecommender,
    Outcome,
    RecommendationRequest,
    RecommendationResult,
    Recommended,
    WithFallback,
)
from api.recommendation_cache import CachedRecommender, MutationFeed
from sources.errors import first_line
from sources.stores import Stores

if TYPE_CHECKING:
    from api.context import Services
    from model.score import PairFeatures, Ranker, RankRequest, Scored

log = logging.getLogger(__name__)
WARM_FIRST = 10  # the length of a list ranked at start: the schema's default ``first``


class RankerRecommender(BatchRecommender):
    """Two-tower candidates re-ranked by the engagement net (model/score.py), as a Recommender."""

    def __init__(self, stores: Stores, ranker: Ranker, features: PairFeatures | None, history: FallbackRecommender):
        self.ranker, self.features, self._history = ranker, features, history
        self.credits = CreditIndex(stores)

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        """Several users in one pass: one history read per store, then ``Ranker.rank_many``."""
        from model.score import RankRequest

        # The users' ratings from the graph plus the API's own recent ones: milliseconds, where
        # a scan of reviews on the embedded Mongo takes ~0.2 s.
        ratings, degraded = self._history.user_ratings_many([r.user_id for r in requests])
        asks = []
        for r in requests:
            history = sorted(ratings[r.user_id])
            asks.append(RankRequest(r.user_id, history, r.k, set(history) if r.exclude_seen else set()))
        out: list[Outcome] = []
        for ask, outcome in zip(asks, self.ranker.rank_many(asks, features=self.features), strict=True):
            if isinstance(outcome, Exception):  # this user alone (e.g. newer than the checkpoint)
                out.append(outcome)
                continue
            scored, features_degraded = outcome
            out.append(self._result(ask, ratings[ask.user_id], scored, degraded or features_degraded))
        return out

    def warm(self) -> None:
        """Load now what the first request would wait for: the movie features, the credits index,
        torch's lazy state. A failure here is only logged; requests will try again."""
        try:
            self.recommend(next(iter(self.ranker.user_index)), 10)
        except Exception as exc:
            log.warning("serving warm-up failed (%s); the first requests will load what it would have", first_line(exc))

    def _result(
        self, ask: RankRequest, ratings: dict[int, float], scored: list[Scored], degraded: bool
    ) -> RecommendationResult:
        reasons = self.credits.explain(ratings, [s.movie_id for s in scored])
        items = []
        for rank, s in enumerate(scored, start=1):
            why = reasons.get(s.movie_id) or f"two-tower match {s.retriever:.2f} with your {len(ask.history)} ratings"
            if s.rating is not None:
                why += f"; predicted rating {s.rating:.1f}"
            items.append(Recommended(s.movie_id, round(float(s.score), 6), rank, why))
        return RecommendationResult(items, self.ranker.version, degraded)


def catalogue_ids(stores: Stores) -> list[int]:
    from sqlalchemy import text

    with stores.pg.connect() as conn:
        return [int(m) for m in conn.execute(text("SELECT id FROM movies ORDER BY id")).scalars()]


def plug_serving(services: Services) -> None:
    """Feast features when the repository is applied; the trained ranker when its checkpoints fit."""
    plug_feature_store(services)
    if not isinstance(services.online_features, FeastUserFeatures):
        return
    store: Any = services.online_features.store
    try:
        from model.score import Ranker, service_features
        from model.serving_features import CachedPairFeatures

        ranker = Ranker.load(services.settings.models_dir, expected_features=service_features(store))
        pair_features = CachedPairFeatures(store, catalogue_ids(services.stores))
    except Exception as exc:  # no checkpoint yet, or one for other features: serve the fallback
        log.warning("model recommendations unavailable: %s", first_line(exc))
        return
    fallback = services.recommender
    assert isinstance(fallback, FallbackRecommender)
    services.on_close.append(pair_features.close)
    services.reports["movie_features"] = lambda: {"ok": pair_features.refresh_error is None,
                                                  "error": pair_features.refresh_error}  # fmt: skip
    primary = RankerRecommender(services.stores, ranker, pair_features, fallback)
    primary.warm()
    services.recommender = WithFallback(primary, fallback)
    warm = list(ranker.user_index)[: services.settings.recommendation_warm_users]
    plug_cache(services, services.settings.recommendation_cache_s, warm=warm)


def plug_cache(
    services: Services, ttl_s: float, poll_s: float = 1.0, warm: Sequence[int] = ()
) -> CachedRecommender | None:
    """Keep the plugged-in recommender's answers for ``ttl_s`` (api/recommendation_cache.py),
    forgotten on this process's mutations and, through the mutation log, on other processes';
    lists getting old, and those of the ``warm`` users, are ranked in the background
    (api/list_refresher.py)."""
    if ttl_s <= 0:
        return None
    cached = CachedRecommender(services.recommender, ttl_s=ttl_s)
    feed = MutationFeed(services.stores.mongo, cached.forget, cached.clear, poll_s=poll_s).start()
    refresher = ListRefresher(cached).start()
    cached.on_old = refresher.ahead
    refresher.warm([RecommendationRequest(user_id, WARM_FIRST) for user_id in warm])
    services.recommender = cached
    services.on_user_changed.append(cached.forget)
    services.on_close[:0] = [refresher.close]  # before what its rankings read is closed
    services.on_close.append(feed.close)
    services.reports["recommendation_cache"] = lambda: {
        "ok": feed.failing is None,  # else nothing kept is served until the mutation log reads again
        "error": feed.failing,
        "lists": len(cached),
        "hits": cached.hits,
        "misses": cached.misses,
        "background": {"queued": refresher.pending, "ranked": refresher.ranked, "error": refresher.failing},
    }
    return cached
