"""Recommendations behind one small protocol, so a model-backed recommender plugs in later.

``Recommender.recommend(user_id, k, exclude_seen) -> RecommendationResult`` is all the
GraphQL layer knows. Two implementations live here:

- ``FallbackRecommender``: no model needed. Candidates are movies that share people
  (through the graph) or genres with the user's top-rated movies, plus the most-rated
  movies; each carries an explanation naming the link ("shares director m.0xyz with
  Star Wars (1977), which you rated 5"). What the user has seen comes from Mongo, the
  system of record, so a rating made a moment ago is already excluded.
- ``WithFallback(primary, fallback)``: asks ``primary`` (e.g. two-tower + engagement
  net on Feast features) and answers from ``fallback`` with ``degraded=True`` when it
  fails because a store or the model is unavailable.

Implementations are synchronous; the API calls them in a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

from api.errors import StoreDown, store_call
from sources import mongo
from sources.stores import Stores

log = logging.getLogger(__name__)

FALLBACK_VERSION = "fallback-graph-popularity-v1"
ROLE_NAMES = {"ACTED_IN": "actor", "DIRECTED": "director", "WROTE": "writer", "PRODUCED": "producer"}
# How much one shared person / genre / popularity counts; people say more about taste than genres.
PERSON_WEIGHT, GENRE_WEIGHT, POPULARITY_WEIGHT = 1.0, 0.15, 0.5
TOP_RATED = 10  # the user's liked movies that seed graph candidates
POPULAR_POOL = 300  # most-rated movies kept in memory


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


class Recommender(Protocol):
    def recommend(self, user_id: int, k: int, exclude_seen: bool = True) -> RecommendationResult: ...


@dataclass(frozen=True)
class _Popular:
    movie_id: int
    title: str
    raters: int
    average: float


class FallbackRecommender:
    """Graph and popularity candidates; no trained model involved."""

    def __init__(self, stores: Stores, *, popularity_ttl_s: float = 600.0) -> None:
        self.stores = stores
        self.popularity_ttl_s = popularity_ttl_s
        self._popular: list[_Popular] = []
        self._popular_at = float("-inf")
        self._lock = threading.Lock()

    def recommend(self, user_id: int, k: int, exclude_seen: bool = True) -> RecommendationResult:
        degraded = False
        try:
            ratings = self._user_ratings(user_id)
        except StoreDown:
            ratings, degraded = {}, True  # unknown history: popularity alone still answers
        seen = set(ratings) if exclude_seen else set()
        liked = sorted(((r, m) for m, r in ratings.items() if r >= 4), reverse=True)[:TOP_RATED]
        scores: dict[int, float] = defaultdict(float)
        reasons: dict[int, tuple[float, str]] = {}
        try:
            self._graph_candidates(dict((m, r) for r, m in liked), scores, reasons)
        except StoreDown:
            degraded = True
        try:
            popular = self._popularity()
        except StoreDown:
            popular, degraded = [], True
        if popular:
            top_raters = popular[0].raters
            for p in popular:
                bonus = POPULARITY_WEIGHT * p.raters / top_raters * (p.average / 5.0)
                scores[p.movie_id] += bonus
                if p.movie_id not in reasons or reasons[p.movie_id][0] < bonus:
                    reasons[p.movie_id] = (bonus, f"popular: rated by {p.raters} users, average {p.average:.2f}")
        ranked = sorted(((s, m) for m, s in scores.items() if m not in seen), key=lambda x: (-x[0], x[1]))[:k]
        items = [Recommended(m, round(s, 6), i + 1, reasons[m][1]) for i, (s, m) in enumerate(ranked)]
        if not items and degraded:
            raise StoreDown("graph", "no candidates could be read for recommendations")
        return RecommendationResult(items, FALLBACK_VERSION, degraded)

    def _user_ratings(self, user_id: int) -> dict[int, float]:
        """movie id → the user's latest rating, from Mongo (the system of record)."""
        with store_call("mongo"):
            reviews = mongo.live(self.stores.mongo, "reviews")
            docs = reviews.find({"user_id": user_id}, {"_id": 0, "movie_id": 1, "rating": 1, "ts": 1})
            latest: dict[int, tuple[Any, float]] = {}
            for doc in docs:
                movie_id = int(doc["movie_id"])
                if movie_id not in latest or doc["ts"] >= latest[movie_id][0]:
                    latest[movie_id] = (doc["ts"], float(doc["rating"]))
        return {m: r for m, (_, r) in latest.items()}

    def _graph_candidates(
        self, liked: dict[int, float], scores: dict[int, float], reasons: dict[int, tuple[float, str]]
    ) -> None:
        if not liked:
            return
        with store_call("graph"):
            people = self.stores.graph.read(
                "MATCH (m:Movie)<-[r1:ACTED_IN|DIRECTED|WROTE|PRODUCED]-(p:Person)-[r2:ACTED_IN|DIRECTED|WROTE|PRODUCED]->"
                "(c:Movie) WHERE m.id IN $ids AND c.id <> m.id "
                "RETURN c.id AS candidate, m.id AS source, m.title AS title, p.id AS person, type(r2) AS rel",
                {"ids": list(liked)},
            )
            genres = self.stores.graph.read(
                "MATCH (m:Movie)-[:HAS_GENRE]->(g:Genre)<-[:HAS_GENRE]-(c:Movie) WHERE m.id IN $ids AND c.id <> m.id "
                "RETURN c.id AS candidate, m.id AS source, m.title AS title, g.name AS genre",
                {"ids": list(liked)},
            )
        for row in people:
            rating = liked[int(row["source"])]
            weight = PERSON_WEIGHT * rating / 5.0
            candidate = int(row["candidate"])
            scores[candidate] += weight
            role = ROLE_NAMES.get(str(row["rel"]), "person")
            why = f"shares {role} {row['person']} with {row['title']}, which you rated {rating:g}"
            if candidate not in reasons or reasons[candidate][0] < weight:
                reasons[candidate] = (weight, why)
        for row in genres:
            rating = liked[int(row["source"])]
            weight = GENRE_WEIGHT * rating / 5.0 / len(liked)
            candidate = int(row["candidate"])
            scores[candidate] += weight
            why = f"shares genre {row['genre']} with {row['title']}, which you rated {rating:g}"
            if candidate not in reasons or reasons[candidate][0] < weight:
                reasons[candidate] = (weight, why)

    def _popularity(self) -> list[_Popular]:
        """The most-rated movies, read from the graph at most once per TTL per process."""
        with self._lock:
            if time.monotonic() - self._popular_at < self.popularity_ttl_s:
                return self._popular
            try:
                with store_call("graph"):
                    rows = self.stores.graph.read(
                        "MATCH (:User)-[r:RATED]->(m:Movie) RETURN m.id AS id, m.title AS title, "
                        "count(r) AS n, avg(r.score) AS avg ORDER BY n DESC, id LIMIT $k",
                        {"k": POPULAR_POOL},
                    )
            except StoreDown:
                if self._popular:  # a stale list beats none while the graph is away
                    return self._popular
                raise
            self._popular = [_Popular(int(r["id"]), str(r["title"]), int(r["n"]), float(r["avg"])) for r in rows]
            self._popular_at = time.monotonic()
            return self._popular


class WithFallback:
    """``primary`` when it answers; otherwise ``fallback``'s answer marked degraded."""

    def __init__(self, primary: Recommender, fallback: Recommender) -> None:
        self.primary = primary
        self.fallback = fallback

    def recommend(self, user_id: int, k: int, exclude_seen: bool = True) -> RecommendationResult:
        try:
            return self.primary.recommend(user_id, k, exclude_seen)
        except Exception as exc:  # any failure of the model path: answer, but say so
            log.warning("primary recommender failed (%s); answering from the fallback", exc)
            result = self.fallback.recommend(user_id, k, exclude_seen)
            return RecommendationResult(result.items, result.model_version, degraded=True)
