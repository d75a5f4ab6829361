"""The synthetic MovieLens-shaped generator: exact, deterministic, skewed like MovieLens, streaming."""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from sources.datasets.movielens import GENRES, Dataset, Rating
from sources.datasets.synth import SPAN_END, SPAN_START, movielens_shape, synthetic
from sources.errors import DatasetError

SHAPE = {"users": 400, "movies": 3000, "ratings": 40_000}


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return synthetic(**SHAPE, seed=7)


@pytest.fixture(scope="module")
def blocks(ds: Dataset) -> list[tuple[int, list[Rating]]]:
    return list(ds.rating_blocks())


def test_deterministic_and_fresh_each_call(ds: Dataset, blocks: list[tuple[int, list[Rating]]]) -> None:
    again = synthetic(**SHAPE, seed=7)
    assert again.users == ds.users and again.movies == ds.movies
    assert list(again.rating_blocks()) == blocks
    assert list(ds.rating_blocks()) == blocks  # a second iteration of the same dataset reproduces it
    assert list(again.credits()) == list(ds.credits())
    assert again.fingerprint == ds.fingerprint and again.name == ds.name == "synthetic-u400-m3000-r40000-s7"
    other = synthetic(**SHAPE, seed=8)
    assert other.fingerprint != ds.fingerprint
    assert list(other.rating_blocks())[:5] != blocks[:5]


def test_exact_total_every_user_once_min_20(ds: Dataset, blocks: list[tuple[int, list[Rating]]]) -> None:
    assert [u for u, _ in blocks] == [u.id for u in ds.users] == list(range(1, 401))
    assert sum(len(b) for _, b in blocks) == ds.n_ratings == 40_000
    assert min(len(b) for _, b in blocks) >= 20
    assert all(u.age is None and u.gender is None for u in ds.users)  # enrich.demographics fills them


def test_no_duplicates_sorted_within_span(ds: Dataset, blocks: list[tuple[int, list[Rating]]]) -> None:
    ids = {m.id for m in ds.movies}
    assert ids == set(range(1, 3001))
    for _, block in blocks:
        movies = [r.movie_id for r in block]
        assert len(set(movies)) == len(movies)
        assert set(movies) <= ids
        keys = [(r.ts, r.movie_id) for r in block]
        assert keys == sorted(keys)
        assert all(SPAN_START <= r.ts <= SPAN_END for r in block)


def test_popularity_and_activity_are_skewed(blocks: list[tuple[int, list[Rating]]]) -> None:
    per_movie = Counter(r.movie_id for _, b in blocks for r in b)
    counts = sorted(per_movie.values(), reverse=True)
    assert sum(counts[:300]) / sum(counts) > 0.40  # top 10 % of 3000 movies
    per_user = np.array([len(b) for _, b in blocks])
    assert per_user.max() / np.median(per_user) > 5
    assert per_user.max() <= 3000


def test_ratings_look_like_movielens(blocks: list[tuple[int, list[Rating]]]) -> None:
    stars = Counter(r.rating for _, b in blocks for r in b)
    assert set(stars) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    mean = sum(k * v for k, v in stars.items()) / sum(stars.values())
    assert 3.2 <= mean <= 3.8
    assert stars.most_common(1)[0][0] == 4.0


def test_catalogue_and_release_before_first_rating(ds: Dataset, blocks: list[tuple[int, list[Rating]]]) -> None:
    genres = Counter(g for m in ds.movies for g in m.genres)
    assert all(1 <= len(m.genres) <= 3 and set(m.genres) <= set(GENRES) for m in ds.movies)
    assert genres["Drama"] > genres["Comedy"] > genres["Western"] > genres["IMAX"]
    assert all(m.year is not None and 1920 <= m.year <= 2019 and m.title for m in ds.movies)
    year = {m.id: m.year for m in ds.movies}
    for _, block in blocks:
        for r in block:
            assert datetime.fromtimestamp(r.ts, UTC).year >= year[r.movie_id]


def test_credits_shape(ds: Dataset) -> None:
    credits = list(ds.credits())
    roles = Counter(c.role for c in credits)
    assert set(roles) == {"ACTED_IN", "DIRECTED", "WROTE", "PRODUCED"}
    assert roles["DIRECTED"] == 3000
    assert 15 <= roles["ACTED_IN"] / 3000 <= 25
    assert 1 <= roles["WROTE"] / 3000 <= 2 and 1 <= roles["PRODUCED"] / 3000 <= 2
    assert all(c.person_id.startswith("p:") and 1 <= c.movie_id <= 3000 for c in credits)
    assert len(credits) == len(set(credits))
    actors = Counter(c.person_id for c in credits if c.role == "ACTED_IN")
    assert max(actors.values()) >= 10 * np.median(list(actors.values()))  # power-law reuse


def test_small_and_edge_shapes() -> None:
    full = synthetic(users=3, movies=4, ratings=12)  # everyone rates everything
    assert sorted(len(b) for _, b in full.rating_blocks()) == [4, 4, 4]
    sparse = synthetic(users=10, movies=50, ratings=7)  # fewer ratings than users: some rate none
    lengths = [len(b) for _, b in sparse.rating_blocks()]
    assert len(lengths) == 10 and sum(lengths) == 7
    assert sum(len(b) for _, b in synthetic(users=5, movies=5, ratings=0).rating_blocks()) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0, "movies": 10, "ratings": 0}, "users must be an integer ≥ 1, got 0"),
        ({"users": 5, "movies": 0, "ratings": 0}, "movies must be an integer ≥ 1, got 0"),
        ({"users": 5, "movies": 10, "ratings": -1}, "ratings must be an integer ≥ 0, got -1"),
        ({"users": 5, "movies": 10, "ratings": 1, "seed": -3}, "seed must be an integer ≥ 0"),
        ({"users": 5, "movies": 10, "ratings": 2.5}, "ratings must be an integer"),
        ({"users": 5, "movies": 10, "ratings": 51}, "51 ratings is impossible with 5 users × 10 movies"),
    ],
)
def test_bad_parameters(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(DatasetError, match=message) as info:
        synthetic(**kwargs)
    assert "\n" not in str(info.value)


def test_streams_in_bounded_memory() -> None:
    ds = synthetic(users=1000, movies=4000, ratings=200_000, seed=3)
    gc.collect()
    tracemalloc.start()
    try:
        total = biggest = 0
        for _, block in ds.rating_blocks():
            total += len(block)
            biggest = max(biggest, len(block))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 200_000
    # 200K Rating objects alone take > 20 MB; one user's block (≤ 4000 ratings) well under 1 MB.
    assert peak < 6 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while streaming: ratings are being accumulated"


def test_the_default_shape_follows_movielens_by_ratings() -> None:
    """`marquee synth --ratings N` alone: ML-1M's and ML-25M's shapes at their sizes, the
    geometric middle in between (the 5M rung's 31,333 × 15,210), and a valid set far below."""
    assert movielens_shape(1_000_000) == (6_040, 3_706)
    assert movielens_shape(25_000_095) == (162_541, 62_423)
    assert movielens_shape(5_000_000) == (31_333, 15_210)
    assert movielens_shape(0) == (6_040, 3_706)
    for ratings in (1, 200, 20_000, 100_000):
        users, movies = movielens_shape(ratings)
        assert users * movies >= 2 * ratings
        small = synthetic(users=users, movies=movies, ratings=ratings)  # the generator takes the shape
        if ratings <= 20_000:
            assert sum(len(block) for _, block in small.rating_blocks()) == ratings
