"""The users' loaded ratings kept in memory (api/recommendations/loaded_ratings.py), against the real graph."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from api.recommendations.history import RatingHistory
from api.recommendations.loaded_ratings import LoadedRatings
from sources.ingest import IngestReport
from sources.stores.clients import Stores

USER = 1  # rated 272 movies in ML-100K
TS = 2_000_000_000.0  # an edge from 2033: later than any rating loaded


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def extra_rating(stores: Stores, movie_id: int, score: float) -> Iterator[None]:
    """A RATED edge added to the graph, as a new load would, and removed afterwards."""
    params = {"u": USER, "m": movie_id, "s": score, "t": TS}
    stores.graph.write(
        "MATCH (u:User {id: $u}), (m:Movie {id: $m}) CREATE (u)-[:RATED {score: $s, ts: $t}]->(m)", params
    )
    try:
        yield
    finally:
        stores.graph.write("MATCH (:User {id: $u})-[r:RATED {ts: $t}]->(:Movie {id: $m}) DELETE r", params)


def test_loaded_ratings_are_kept_for_the_ttl_then_read_again(stores: Stores, loaded: IngestReport) -> None:
    clock = Clock()
    kept = LoadedRatings(stores.graph, ttl_s=60, clock=clock)
    movies, scores, _ = kept.read([USER])[USER]
    assert len(movies) == len(scores) == 272
    unrated = min(m for m in range(1, 1683) if m not in movies)
    with extra_rating(stores, unrated, 5.0):
        clock.now = 59.0
        assert unrated not in kept.read([USER])[USER][0], "kept: the graph is not asked again within the TTL"
        clock.now = 61.0
        movies, scores, _ = kept.read([USER])[USER]
        assert len(movies) == 273 and scores[movies.index(unrated)] == 5.0
    kept.clear()
    assert unrated not in kept.read([USER])[USER][0]


def test_users_without_ratings_and_the_capacity(stores: Stores, loaded: IngestReport) -> None:
    kept = LoadedRatings(stores.graph, capacity=2)
    found = kept.read([1, 2, 99_999])
    assert found[99_999] == ((), (), ()) and len(found[1][0]) == 272
    assert len(kept) == 2  # the least recently read went first
    assert len(LoadedRatings(stores.graph, ttl_s=0).read([1])[1][0]) == 272


def test_a_movie_rated_again_counts_with_its_latest_rating(stores: Stores, loaded: IngestReport) -> None:
    history = RatingHistory(stores, loaded_ratings_ttl_s=0)
    before, _ = history.user_ratings(USER)
    movie = next(m for m, r in before.items() if r != 2.0)
    with extra_rating(stores, movie, 2.0):
        after, degraded = history.user_ratings(USER)
    assert not degraded and len(after) == len(before) and after[movie] == 2.0
