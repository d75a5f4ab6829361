"""Recommendations with no trained model, and the switch to them when the model path fails.

- ``FallbackRecommender``: candidates are movies that share people (through the graph) with
  the user's top-rated movies, plus the most-rated movies (boosted when they share genres with
  them); each carries an explanation naming the link ("shares director m.0xyz with Star Wars
  (1977), which you rated 5"). What the user has seen comes from ``RatingHistory``, so a
  rating made a moment ago is already excluded.
- ``WithFallback(primary, fallback)``: asks ``primary`` and answers the requests it failed from
  ``fallback`` with ``degraded=True``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from api.queries import taste
from api.queries.taste import Popularity
from api.recommendations.contract import Outcome, RecommendationRequest, RecommendationResult, Recommended, Recommender
from api.recommendations.history import RatingHistory
from sources.stores.clients import Stores
from sources.stores.failures import StoreDown
from sources.vocabulary import ROLE_NAMES

log = logging.getLogger(__name__)

FALLBACK_VERSION = "fallback-graph-popularity-v1"
# How much one shared person / genre / popularity counts; people say more about taste than genres.
PERSON_WEIGHT, GENRE_WEIGHT = 1.0, 0.15
GRAPH_SHARE = 0.5  # of the final score; popularity has the rest
AFFINITY_SCALE = 2.0  # summed link weight at which graph affinity reaches 63%
TOP_RATED = 10  # the user's liked movies that seed graph candidates
POPULAR_POOL = 300  # most-rated movies kept in memory


@dataclass(frozen=True)
class _Catalogue:
    titles: dict[int, str]
    genres: dict[int, frozenset[str]]


class FallbackRecommender(Recommender):
    """Graph and popularity candidates; no trained model involved."""

    def __init__(
        self, stores: Stores, history: RatingHistory | None = None, *, popularity_ttl_s: float = 600.0
    ) -> None:
        self.stores = stores
        self.history = history if history is not None else RatingHistory(stores)
        self.popularity_ttl_s = popularity_ttl_s
        self._popular: list[Popularity] = []
        self._popular_at = float("-inf")
        self._lock = threading.RLock()
        self._movies: _Catalogue | None = None

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        """One request at a time (the candidates are per user); each request's error is its own."""
        out: list[Outcome] = []
        for r in requests:
            try:
                out.append(self._recommend_one(r.user_id, r.k, r.exclude_seen))
            except Exception as exc:  # this request's own failure
                out.append(exc)
        return out

    def _recommend_one(self, user_id: int, k: int, exclude_seen: bool) -> RecommendationResult:
        try:
            ratings, degraded = self.history.user_ratings(user_id)
        except StoreDown:
            ratings, degraded = {}, True  # unknown history: popularity alone still answers
        seen = set(ratings) if exclude_seen else set()
        liked = sorted(((r, m) for m, r in ratings.items() if r >= 4), reverse=True)[:TOP_RATED]
        affinity: dict[int, float] = defaultdict(float)
        reasons: dict[int, tuple[float, str]] = {}
        liked_by_movie = {m: r for r, m in liked}
        try:
            self._graph_candidates(liked_by_movie, affinity, reasons)
        except StoreDown:
            degraded = True
        try:
            popular = self._popularity()
        except StoreDown:
            popular, degraded = [], True
        if liked_by_movie and popular:
            self._genre_candidates(liked_by_movie, popular, affinity, reasons)
        # Graph affinity saturates (many shared credits ≈ a few), popularity is relative to the
        # most-rated movie; both land in [0, 1] and count equally.
        scores = {m: GRAPH_SHARE * (1.0 - math.exp(-a / AFFINITY_SCALE)) for m, a in affinity.items()}
        if popular:
            top_raters = popular[0].raters
            for p in popular:
                bonus = (1.0 - GRAPH_SHARE) * p.raters / top_raters * (p.average / 5.0)
                scores[p.movie_id] = scores.get(p.movie_id, 0.0) + bonus
                if p.movie_id not in reasons or scores[p.movie_id] - bonus < bonus:
                    reasons[p.movie_id] = (bonus, f"popular: rated by {p.raters} users, average {p.average:.2f}")
        ranked = sorted(((s, m) for m, s in scores.items() if m not in seen), key=lambda x: (-x[0], x[1]))[:k]
        items = [Recommended(m, round(s, 6), i + 1, reasons[m][1]) for i, (s, m) in enumerate(ranked)]
        if not items and degraded:
            raise StoreDown("graph", "no candidates could be read for recommendations")
        return RecommendationResult(items, FALLBACK_VERSION, degraded)

    def _graph_candidates(
        self, liked: dict[int, float], affinity: dict[int, float], reasons: dict[int, tuple[float, str]]
    ) -> None:
        if not liked:
            return
        with self.stores.call("graph"):
            people = list(taste.sharing_people(graph=self.stores.graph, movie_ids=list(liked)))
        for row in people:
            rating = liked[row.source]
            weight = PERSON_WEIGHT * rating / 5.0
            candidate = row.candidate
            affinity[candidate] += weight
            role = ROLE_NAMES.get(row.role, "person")
            why = f"shares {role} {row.person} with {row.source_title}, which you rated {rating:g}"
            if candidate not in reasons or reasons[candidate][0] < weight:
                reasons[candidate] = (weight, why)

    def _genre_candidates(
        self,
        liked: dict[int, float],
        popular: list[Popularity],
        affinity: dict[int, float],
        reasons: dict[int, tuple[float, str]],
    ) -> None:
        """Genre overlap with the liked movies, for popular movies only (a genre alone is weak evidence)."""
        catalogue = self._catalogue()
        for p in popular:
            genres = catalogue.genres.get(p.movie_id, frozenset())
            for source, rating in liked.items():
                shared = genres & catalogue.genres.get(source, frozenset())
                if not shared:
                    continue
                weight = GENRE_WEIGHT * len(shared) * rating / 5.0 / len(liked)
                affinity[p.movie_id] += weight
                title = catalogue.titles.get(source, f"movie {source}")
                why = f"shares genre {min(shared)} with {title}, which you rated {rating:g}"
                if p.movie_id not in reasons or reasons[p.movie_id][0] < weight:
                    reasons[p.movie_id] = (weight, why)

    def _catalogue(self) -> _Catalogue:
        """Titles and genres of every movie, read from PostgreSQL once per process."""
        with self._lock:
            if self._movies is None:
                with self.stores.call("postgres"):
                    self._movies = _Catalogue(*taste.titles_and_genres(pg=self.stores.pg))
            return self._movies

    def _popularity(self) -> list[Popularity]:
        """The most-rated movies, computed at most once per TTL per process: from the graph, or
        (when the graph is away) from a scan of the reviews in Mongo."""
        with self._lock:
            if time.monotonic() - self._popular_at < self.popularity_ttl_s:
                return self._popular
            try:
                popular = self._popularity_from_graph()
            except StoreDown:
                if self._popular:  # a stale list beats a slow scan while the graph is away
                    return self._popular
                popular = self._popularity_from_reviews()
            self._popular, self._popular_at = popular, time.monotonic()
            return popular

    def _popularity_from_graph(self) -> list[Popularity]:
        with self.stores.call("graph"):
            return taste.most_rated(graph=self.stores.graph, k=POPULAR_POOL)

    def _popularity_from_reviews(self) -> list[Popularity]:
        with self.stores.call("mongo"):
            return taste.most_reviewed(db=self.stores.mongo, k=POPULAR_POOL)


class WithFallback(Recommender):
    """``primary`` when it answers; otherwise ``fallback``'s answer marked degraded (per request:
    in a batch, only the requests the primary failed fall back)."""

    def __init__(self, primary: Recommender, fallback: Recommender) -> None:
        self.primary = primary
        self.fallback = fallback

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        try:
            outcomes = self.primary.recommend_many(requests)
        except Exception as exc:  # the whole batch failed (e.g. a store the model path reads)
            outcomes = [exc] * len(requests)
        out: list[Outcome] = []
        for request, outcome in zip(requests, outcomes, strict=True):
            if not isinstance(outcome, Exception):
                out.append(outcome)
                continue
            # any failure of the model path: answer, but say so
            log.warning("primary recommender failed (%s); answering from the fallback", outcome)
            try:
                result = self.fallback.recommend(request.user_id, request.k, request.exclude_seen)
                out.append(RecommendationResult(result.items, result.model_version, degraded=True))
            except Exception as exc:
                out.append(exc)
        return out
