"""The one recommender contract every part of the serving path implements.

``Recommender.recommend_many(requests) -> list[Outcome]`` answers several users at once, in
order, each with its own outcome: a ``RecommendationResult`` or the error that request alone
raised, so one unknown user or one failure never fails the others. ``recommend`` is a batch
of one. Implementations are synchronous; the API calls them in a worker thread
(``batcher.py``). The chain as served (``api/serving.py`` builds it)::

    CachedRecommender (kept_lists.py)      kept lists, forgotten when a user changes
      └─ WithFallback (fallback.py)        the model path, else the fallback marked degraded
           ├─ RankerRecommender (ranked.py)    two-tower candidates re-ranked by the engagement net
           └─ FallbackRecommender (fallback.py) graph and popularity, no model
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Recommended:
    movie_id: int
    score: float
    rank: int
    explanation: str


@dataclass(frozen=True)
class RecommendationResult:
    items: list[Recommended]
    model_version: str
    #: True when a store or the model was unavailable and a simpler path answered
    degraded: bool = False


@dataclass(frozen=True)
class RecommendationRequest:
    user_id: int
    k: int
    exclude_seen: bool = True


#: What one request of a batch comes to: its answer, or the error it alone raised.
Outcome = RecommendationResult | Exception


class UnknownUser(LookupError):
    """No user with this id: the GraphQL layer answers ``NOT_FOUND``."""

    def __init__(self, user_id: int) -> None:
        super().__init__(f"no user with id {user_id}")
        self.user_id = user_id


class Recommender(ABC):
    """Ranks movies for users; see the module docstring."""

    @abstractmethod
    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        """One outcome per request, in order; an error raised here fails the whole batch."""

    def recommend(self, user_id: int, k: int, exclude_seen: bool = True) -> RecommendationResult:
        """One user's list: ``recommend_many`` of one request; its error is raised."""
        outcome = self.recommend_many([RecommendationRequest(user_id, k, exclude_seen)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
