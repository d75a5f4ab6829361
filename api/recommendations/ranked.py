"""The model path as a ``Recommender``: the best retriever's candidates re-ranked by the engagement net.

``RankerRecommender`` reads the users' histories for the whole batch (``history.py``), asks
``model.serve.ranker.Ranker`` to rank them on online features, and explains each item through
the in-memory credits index (``explanations.py``). ``api/serving.py`` plugs it in.

It also owns what follows the served checkpoint: titles added after training are placed by
content (``add_new_movies``, called on ``addMovie`` and on every swap), ``audience`` ranks
users for one movie, and ``swap`` puts a newly loaded ``Ranker`` in place in one reference
assignment: a batch already running finishes on the ranker it started with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from api.queries import catalog, reads
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

AUDIENCE_TTL_S = 60.0  # every user's vector is recomputed at most this often for ``audience``
TREND_REFRESH_S = 60.0  # the trend prior's recent counts are read again at most this often


class RankerRecommender(Recommender):
    """The retriever's candidates re-ranked by the engagement net (model/serve/ranker.py), as a Recommender."""

    def __init__(self, stores: Stores, ranker: Ranker, features: PairFeatures | None, history: RatingHistory):
        self.ranker, self.features, self._history = ranker, features, history
        self.stores = stores
        self.credits = CreditIndex(stores)
        self._users: tuple[Ranker, float, list[int], torch.Tensor] | None = None
        self._users_lock = threading.Lock()
        self.trend_at = float("-inf")  # when the trend prior's counts were last read
        self.trend_error: str | None = None

    def swap(self, ranker: Ranker) -> str:
        """Serve ``ranker`` from now on (after placing the titles added since it was trained and
        reading its trend window); the previous one answers until this assignment. Returns the
        version now serving."""
        self.add_new_movies(ranker)
        self.refresh_trend(ranker)
        self.ranker = ranker
        return ranker.version

    def refresh_trend(self, ranker: Ranker | None = None) -> None:
        """Give the ranker's trend prior (model/serve/trend.py) the movies' counts in its window.
        A failure is kept in ``trend_error`` (``/readyz``) and the previous counts stay."""
        ranker = ranker or self.ranker
        if ranker.prior is None:
            return
        try:
            with self.stores.call("postgres"):
                counts = reads.recent_movie_counts(pg=self.stores.pg, days=ranker.prior.days)
        except Exception as exc:
            self.trend_error = first_line(exc)
            log.warning("trend counts not read: %s", self.trend_error)
            return
        ranker.set_recent_counts(counts)
        self.trend_at, self.trend_error = time.monotonic(), None

    def refresh_trend_if_due(self) -> None:
        """``refresh_trend`` when the counts are older than TREND_REFRESH_S (the reload watcher's tick)."""
        if time.monotonic() - self.trend_at >= TREND_REFRESH_S:
            self.refresh_trend()

    def add_new_movies(self, ranker: Ranker | None = None) -> list[int]:
        """Place every catalogue movie the ranker has no vector for by its content (PostgreSQL)."""
        ranker = ranker or self.ranker
        with self.stores.call("postgres"):
            missing = catalog.movies_not_in(self.stores.pg, set(ranker.movie_index))
            if not missing:
                return []
            ids, content, genres = catalog.movie_content(self.stores.pg, missing)
        if not ids:
            return []
        return ranker.add_movies(ids, torch.from_numpy(content), torch.from_numpy(genres))

    def audience(self, movie_id: int, first: int) -> list[tuple[int, float]]:
        """The ``first`` users most likely to pick ``movie_id`` (user id, probability; see
        ``Ranker.audience``), every user's vector reading their history (recomputed at most
        every AUDIENCE_TTL_S)."""
        ranker = self.ranker
        if not ranker.content_path:
            return []  # EASE scores movies from users' histories, not users as vectors
        with self._users_lock:
            kept = self._users
            if kept is None or kept[0] is not ranker or time.monotonic() - kept[1] > AUDIENCE_TTL_S:
                ratings, _ = self._history.user_ratings_many(ranker.user_ids)
                histories = [sorted(ratings[u]) for u in ranker.user_ids]
                kept = (ranker, time.monotonic(), ranker.user_ids, ranker.user_vectors(ranker.user_ids, histories))
                self._users = kept
        if int(movie_id) not in ranker.movie_index:
            self.add_new_movies(ranker)
        return ranker.audience(movie_id, kept[3], kept[2], first)

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        """Several users in one pass: one history read per store, then ``Ranker.rank_many``."""
        from model.serve.ranker import RankRequest

        ranker = self.ranker  # one ranker for the whole batch, even if a swap happens meanwhile
        # The users' ratings from the graph plus the API's own recent ones: milliseconds, where
        # a scan of reviews on the embedded Mongo takes ~0.2 s.
        ratings, degraded = self._history.user_ratings_many([r.user_id for r in requests])
        asks = []
        for r in requests:
            history = list(ratings[r.user_id])  # oldest first
            asks.append(RankRequest(r.user_id, history, r.k, set(history) if r.exclude_seen else set()))
        out: list[Outcome] = []
        for ask, outcome in zip(asks, ranker.rank_many(asks, features=self.features), strict=True):
            if isinstance(outcome, Exception):  # this user alone (e.g. newer than the checkpoint)
                out.append(outcome)
                continue
            scored, features_degraded = outcome
            out.append(self._result(ask, ratings[ask.user_id], scored, degraded or features_degraded, ranker.version))
        return out

    def warm(self) -> None:
        """Load now what the first request would wait for: the movie features, the credits index,
        torch's lazy state. A failure here is only logged; requests will try again."""
        try:
            self.recommend(next(iter(self.ranker.user_index)), 10)
        except Exception as exc:
            log.warning("serving warm-up failed (%s); the first requests will load what it would have", first_line(exc))

    def _result(
        self, ask: RankRequest, ratings: dict[int, float], scored: list[Scored], degraded: bool, version: str
    ) -> RecommendationResult:
        reasons = self.credits.explain(ratings, [s.movie_id for s in scored])
        matched = "two-tower match" if self.ranker.retriever_kind == "two_tower" else "EASE score"
        items = []
        for rank, s in enumerate(scored, start=1):
            why = reasons.get(s.movie_id) or f"{matched} {s.retriever:.2f} with your {len(ask.history)} ratings"
            if s.rating is not None:
                why += f"; predicted rating {s.rating:.1f}"
            items.append(Recommended(s.movie_id, round(float(s.score), 6), rank, why))
        return RecommendationResult(items, version, degraded)
