"""Recommendations behind one small protocol, so a model-backed recommender plugs in later.

``Recommender.recommend(user_id, k, exclude_seen) -> RecommendationResult`` is all the
GraphQL layer knows. Two implementations live here:

- ``FallbackRecommender``: no model needed. Candidates are movies that share people
  (through the graph) with the user's top-rated movies, plus the most-rated movies
  (boosted when they share genres with them); each carries an explanation naming the
  link ("shares director m.0xyz with Star Wars (1977), which you rated 5"). What the
  user has seen: the graph's RATED edges plus the API's own mutation log, so a rating
  made a moment ago is already excluded.
- ``WithFallback(primary, fallback)``: asks ``primary`` (e.g. two-tower + engagement
  net on Feast features) and answers from ``fallback`` with ``degraded=True`` when it
  fails because a store or the model is unavailable.

Implementations are synchronous; the API calls them in a worker thread, several requests
at once through ``recommend_many`` when the recommender offers one (api/batcher.py).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import text

from api import writes
from api.credits import CREDITS, ROLE_NAMES
from api.errors import StoreDown, store_call
from api.loaded_ratings import LoadedRatings
from sources import mongo
from sources.stores import Stores

log = logging.getLogger(__name__)

FALLBACK_VERSION = "fallback-graph-popularity-v1"
# How much one shared person / genre / popularity counts; people say more about taste than genres.
PERSON_WEIGHT, GENRE_WEIGHT = 1.0, 0.15
GRAPH_SHARE = 0.5  # of the final score; popularity has the rest
AFFINITY_SCALE = 2.0  # summed link weight at which graph affinity reaches 63%
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


@dataclass(frozen=True)
class RecommendationRequest:
    user_id: int
    k: int
    exclude_seen: bool = True


#: What one request of a batch comes to: its answer, or the error it alone raised.
Outcome = RecommendationResult | Exception


class Recommender(Protocol):
    """One user at a time. A recommender may also offer ``recommend_many(requests) ->
    list[Outcome]`` to answer several users in one pass (see ``recommend_many`` below)."""

    def recommend(self, user_id: int, k: int, exclude_seen: bool = True) -> RecommendationResult: ...


def recommend_many(recommender: Recommender, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
    """Each request's outcome, in order: through the recommender's own ``recommend_many`` when
    it has one, else one ``recommend`` per request; one request's error fails only that one."""
    many = getattr(recommender, "recommend_many", None)
    if many is not None:
        outcomes: list[Outcome] = many(requests)
        return outcomes
    out: list[Outcome] = []
    for r in requests:
        try:
            out.append(recommender.recommend(r.user_id, r.k, r.exclude_seen))
        except Exception as exc:  # this request's own failure
            out.append(exc)
    return out


def single(recommender: Recommender, request: RecommendationRequest) -> RecommendationResult:
    """``recommend`` through ``recommend_many``, for recommenders that batch."""
    outcome = recommend_many(recommender, [request])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


class BatchRecommender(ABC):
    """Base of recommenders that answer in batches: ``recommend`` is a batch of one."""

    def recommend(self, user_id: int, k: int, exclude_seen: bool = True) -> RecommendationResult:
        return single(self, RecommendationRequest(user_id, k, exclude_seen))

    @abstractmethod
    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]: ...


@dataclass(frozen=True)
class _Popular:
    movie_id: int
    raters: int
    average: float


@dataclass(frozen=True)
class _Catalogue:
    titles: dict[int, str]
    genres: dict[int, frozenset[str]]


class FallbackRecommender:
    """Graph and popularity candidates; no trained model involved."""

    def __init__(self, stores: Stores, *, popularity_ttl_s: float = 600.0, loaded_ratings_ttl_s: float = 60.0) -> None:
        self.stores = stores
        self.loaded = LoadedRatings(stores.graph, ttl_s=loaded_ratings_ttl_s)
        self.popularity_ttl_s = popularity_ttl_s
        self._popular: list[_Popular] = []
        self._popular_at = float("-inf")
        self._lock = threading.RLock()
        self._movies: _Catalogue | None = None

    def recommend(self, user_id: int, k: int, exclude_seen: bool = True) -> RecommendationResult:
        try:
            ratings, degraded = self.user_ratings(user_id)
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

    def user_ratings(self, user_id: int) -> tuple[dict[int, float], bool]:
        """(movie id → the user's latest rating, degraded?); see ``user_ratings_many``."""
        found, degraded = self.user_ratings_many([user_id])
        return found[user_id], degraded

    def user_ratings_many(self, user_ids: Sequence[int]) -> tuple[dict[int, dict[int, float]], bool]:
        """(user → movie id → the user's latest rating, degraded?), one read per store for all.

        The graph mirrors every loaded rating (RATED edges; kept in memory for a while by
        api/loaded_ratings.py); the API's own later ratings come from its mutation log in Mongo
        (small, indexed), read on every call so a rating made a moment ago counts. Only when
        the graph is away is ``reviews``, the system of record, read for these users (a scan on
        the embedded Mongo server: slow, hence not the normal path).
        """
        latest: dict[int, dict[int, tuple[float, float]]] = {int(u): {} for u in user_ids}  # → (epoch s, rating)

        def keep(user_id: int, movie_id: int, ts: float, rating: float) -> None:
            mine = latest[user_id]
            if movie_id not in mine or ts >= mine[movie_id][0]:
                mine[movie_id] = (ts, rating)

        degraded = False
        try:
            with store_call("graph"):
                loaded = self.loaded.read(list(latest))
            for user_id, (movie_ids, scores, times) in loaded.items():
                mine = latest[user_id] = {m: (t, s) for m, s, t in zip(movie_ids, scores, times, strict=True)}
                if len(mine) < len(movie_ids):  # a movie rated twice: its latest rating counts
                    mine.clear()
                    for m, s, t in zip(movie_ids, scores, times, strict=True):
                        keep(user_id, m, t, s)
            try:
                with store_call("mongo"):
                    written = writes.api_ratings(self.stores.mongo, list(latest))
                for user_id, movies in written.items():
                    for movie_id, (at, rating) in movies.items():
                        keep(user_id, movie_id, at.timestamp(), rating)
            except StoreDown:
                degraded = True  # ratings made through the API since the load may be missing
        except StoreDown:
            degraded = True
            with store_call("mongo"):
                reviews = mongo.live(self.stores.mongo, "reviews")
                query = {"user_id": {"$in": list(latest)}}
                for doc in reviews.find(query, {"_id": 0, "user_id": 1, "movie_id": 1, "rating": 1, "ts": 1}):
                    keep(int(doc["user_id"]), int(doc["movie_id"]), doc["ts"].timestamp(), float(doc["rating"]))
        return {u: {m: r for m, (_, r) in movies.items()} for u, movies in latest.items()}, degraded

    def _graph_candidates(
        self, liked: dict[int, float], affinity: dict[int, float], reasons: dict[int, tuple[float, str]]
    ) -> None:
        if not liked:
            return
        with store_call("graph"):
            people = self.stores.graph.read(
                f"MATCH (m:Movie)<-[:{CREDITS}]-(p:Person)-[r2:{CREDITS}]->(c:Movie) "
                "WHERE m.id IN $ids AND c.id <> m.id "
                "RETURN c.id AS candidate, m.id AS source, m.title AS title, p.id AS person, type(r2) AS rel",
                {"ids": list(liked)},
            )
        for row in people:
            rating = liked[int(row["source"])]
            weight = PERSON_WEIGHT * rating / 5.0
            candidate = int(row["candidate"])
            affinity[candidate] += weight
            role = ROLE_NAMES.get(str(row["rel"]), "person")
            why = f"shares {role} {row['person']} with {row['title']}, which you rated {rating:g}"
            if candidate not in reasons or reasons[candidate][0] < weight:
                reasons[candidate] = (weight, why)

    def _genre_candidates(
        self,
        liked: dict[int, float],
        popular: list[_Popular],
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
                with store_call("postgres"), self.stores.pg.connect() as conn:
                    titles = {row[0]: row[1] for row in conn.execute(text("SELECT id, title FROM movies"))}
                    genres: dict[int, set[str]] = defaultdict(set)
                    for movie_id, name in conn.execute(
                        text("SELECT mg.movie_id, g.name FROM movie_genres mg JOIN genres g ON g.id = mg.genre_id")
                    ):
                        genres[movie_id].add(name)
                self._movies = _Catalogue(titles, {m: frozenset(g) for m, g in genres.items()})
            return self._movies

    def _popularity(self) -> list[_Popular]:
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

    def _popularity_from_graph(self) -> list[_Popular]:
        with store_call("graph"):
            rows = self.stores.graph.read(
                "MATCH (:User)-[r:RATED]->(m:Movie) RETURN m.id AS id, count(r) AS n, avg(r.score) AS avg "
                "ORDER BY n DESC, id LIMIT $k",
                {"k": POPULAR_POOL},
            )
        return [_Popular(int(r["id"]), int(r["n"]), float(r["avg"])) for r in rows]

    def _popularity_from_reviews(self) -> list[_Popular]:
        counts: dict[int, list[float]] = defaultdict(lambda: [0, 0.0])
        with store_call("mongo"):
            reviews = mongo.live(self.stores.mongo, "reviews")
            for doc in reviews.find({}, {"_id": 0, "movie_id": 1, "rating": 1}, batch_size=20_000):
                entry = counts[int(doc["movie_id"])]
                entry[0] += 1
                entry[1] += float(doc["rating"])
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:POPULAR_POOL]
        return [_Popular(movie_id, int(n), total / n) for movie_id, (n, total) in ranked]


class WithFallback(BatchRecommender):
    """``primary`` when it answers; otherwise ``fallback``'s answer marked degraded (per request:
    in a batch, only the requests the primary failed fall back)."""

    def __init__(self, primary: Recommender, fallback: Recommender) -> None:
        self.primary = primary
        self.fallback = fallback

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        try:
            outcomes = recommend_many(self.primary, requests)
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
