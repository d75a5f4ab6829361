"""The model path as a ``Recommender``: the best retriever's candidates re-ranked by the engagement net.

``RankerRecommender`` reads the users' histories for the whole batch (``history.py``), asks
``model.serve.ranker.Ranker`` to rank them on online features, and explains each item through
the in-memory credits index (``explanations.py``). ``api/serving.py`` plugs it in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from api.recommendations.contract import (
    Outcome,
    RecommendationRequest,
    RecommendationResult,
    Recommended,
    Recommender,
)
from api.recommendations.explanations import CreditIndex
from api.recommendations.history import RatingHistory
from sources.errors import first_line
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from model.serve.pair_features import PairFeatures
    from model.serve.ranker import Ranker, RankRequest, Scored

log = logging.getLogger(__name__)


class RankerRecommender(Recommender):
    """The retriever's candidates re-ranked by the engagement net (model/serve/ranker.py), as a Recommender."""

    def __init__(self, stores: Stores, ranker: Ranker, features: PairFeatures | None, history: RatingHistory):
        self.ranker, self.features, self._history = ranker, features, history
        self.credits = CreditIndex(stores)

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        """Several users in one pass: one history read per store, then ``Ranker.rank_many``."""
        from model.serve.ranker import RankRequest

        # The users' ratings from the graph plus the API's own recent ones: milliseconds, where
        # a scan of reviews on the embedded Mongo takes ~0.2 s.
        ratings, degraded = self._history.user_ratings_many([r.user_id for r in requests])
        asks = []
        for r in requests:
            history = list(ratings[r.user_id])  # oldest first
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
        matched = "two-tower match" if self.ranker.retriever_kind == "two_tower" else "EASE score"
        items = []
        for rank, s in enumerate(scored, start=1):
            why = reasons.get(s.movie_id) or f"{matched} {s.retriever:.2f} with your {len(ask.history)} ratings"
            if s.rating is not None:
                why += f"; predicted rating {s.rating:.1f}"
            items.append(Recommended(s.movie_id, round(float(s.score), 6), rank, why))
        return RecommendationResult(items, self.ranker.version, degraded)
