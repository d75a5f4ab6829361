"""What a user has rated, as the recommenders see it: one read per store for a whole batch.

The graph mirrors every loaded rating (RATED edges, kept in memory for a while by
``loaded_ratings.py``); the API's own later ratings come from its mutation log in Mongo, kept
in memory per user and fed as they are acknowledged or polled (``api_ratings.py``), so a
rating made a moment ago counts and a request's cost does not grow with the log. Only when the graph is away is
``reviews``, the system of record, read for these users (a scan on the embedded Mongo
server: slow, hence not the normal path). The fallback and the ranker both read it here.
"""

from __future__ import annotations

from collections.abc import Sequence

from api.queries import taste
from api.recommendations.api_ratings import ApiRatings
from api.recommendations.loaded_ratings import LoadedRatings
from sources.stores.clients import Stores
from sources.stores.failures import StoreDown


class RatingHistory:
    """Users' latest rating of each movie they rated; ``loaded_ratings_ttl_s`` keeps the graph's part."""

    def __init__(self, stores: Stores, *, loaded_ratings_ttl_s: float = 60.0) -> None:
        self.stores = stores
        self.loaded = LoadedRatings(stores.graph, ttl_s=loaded_ratings_ttl_s)
        self.api = ApiRatings(stores.mongo)

    def user_ratings(self, user_id: int) -> tuple[dict[int, float], bool]:
        """(movie id → the user's latest rating, degraded?); see ``user_ratings_many``."""
        found, degraded = self.user_ratings_many([user_id])
        return found[user_id], degraded

    def user_ratings_many(self, user_ids: Sequence[int]) -> tuple[dict[int, dict[int, float]], bool]:
        """(user → movie id → the user's latest rating, degraded?), one read per store for all.

        Each user's movies come oldest first (by the time of their latest rating, ties by movie
        id): the served retriever weighs the latest ones most.

        The graph mirrors every loaded rating (RATED edges; kept in memory for a while by
        api/recommendations/loaded_ratings.py); the API's own later ratings come from its mutation log
        (api/recommendations/api_ratings.py: in memory, fed as they happen; one indexed read
        per user not kept), so a rating made a moment ago counts. Only when
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
            with self.stores.call("graph"):
                loaded = self.loaded.read(list(latest))
            for user_id, (movie_ids, scores, times) in loaded.items():
                mine = latest[user_id] = {m: (t, s) for m, s, t in zip(movie_ids, scores, times, strict=True)}
                if len(mine) < len(movie_ids):  # a movie rated twice: its latest rating counts
                    mine.clear()
                    for m, s, t in zip(movie_ids, scores, times, strict=True):
                        keep(user_id, m, t, s)
            try:
                with self.stores.call("mongo"):
                    written = self.api.read(list(latest))
                for user_id, movies in written.items():
                    for movie_id, (ts, rating) in movies.items():
                        keep(user_id, movie_id, ts, rating)
            except StoreDown:
                degraded = True  # ratings made through the API since the load may be missing
        except StoreDown:
            degraded = True
            with self.stores.call("mongo"):
                for user_id, movie_id, at, rating in taste.reviews_of(db=self.stores.mongo, user_ids=list(latest)):
                    keep(user_id, movie_id, at.timestamp(), rating)
        in_time_order = {u: sorted(movies.items(), key=lambda kv: (kv[1][0], kv[0])) for u, movies in latest.items()}
        return {u: {m: r for m, (_, r) in movies} for u, movies in in_time_order.items()}, degraded
