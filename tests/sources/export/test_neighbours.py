"""The export's movie neighbours: the 2-hop over credits and genres, computed as a sparse product.

A distinct shared person counts 1, a shared genre 0.1; the best ``k`` by score, ties by id;
never the movie itself, never a movie sharing nothing. Checked against hand-made answers and
against a brute-force count over a random graph, whatever the block size.
(``tests/sources/export/test_export.py`` checks the exported rows of ML-100K against the graph.)
"""

from __future__ import annotations

import random

import pytest

from sources.export.graph_static import StaticGraph, neighbours


def brute_force(static: StaticGraph, k: int) -> list[tuple[int, list[int], list[float]]]:
    people: dict[int, set[str]] = {m: set() for m in static.movie_ids}
    genres: dict[int, set[str]] = {m: set() for m in static.movie_ids}
    for person, _, movie in static.credits:
        people[movie].add(person)
    for movie, genre in static.genres:
        genres[movie].add(genre)
    out = []
    for m in sorted(static.movie_ids):
        scored = [(10 * len(people[m] & people[n]) + len(genres[m] & genres[n]), n) for n in static.movie_ids if n != m]
        ranked = sorted(((s, n) for s, n in scored if s > 0), key=lambda sn: (-sn[0], sn[1]))[:k]
        if ranked:
            out.append((m, [n for _, n in ranked], [s / 10 for s, _ in ranked]))
    return out


def test_scores_ties_and_what_is_left_out() -> None:
    static = StaticGraph(
        movie_ids=[40, 10, 30, 20, 50],  # unsorted on purpose: ties still break by id
        credits=sorted(
            [
                ("ann", "ACTED_IN", 10),
                ("ann", "DIRECTED", 10),  # one person in two roles counts once
                ("ann", "ACTED_IN", 20),
                ("ann", "ACTED_IN", 30),
                ("bob", "WROTE", 10),
                ("bob", "PRODUCED", 30),
            ]
        ),
        genres=sorted([(10, "Drama"), (20, "Drama"), (30, "Comedy"), (40, "Drama")]),
        follows=[],
    )
    got = {m: (ids, scores) for m, ids, scores in neighbours(static, k=2)}
    assert got[10] == ([30, 20], [2.0, 1.1])  # ann + bob; ann + Drama; 40 (Drama, 0.1) cut by k
    assert got[20] == ([10, 30], [1.1, 1.0])
    assert got[40] == ([10, 20], [0.1, 0.1])  # a tie at 0.1: by id
    assert 50 not in got  # shares nothing: no row


def test_empty_catalogue_and_a_catalogue_smaller_than_k() -> None:
    assert neighbours(StaticGraph([], [], [], [])) == []
    two = StaticGraph([1, 2], [], [(1, "Drama"), (2, "Drama")], [])
    assert neighbours(two, k=20) == [(1, [2], [0.1]), (2, [1], [0.1])]


@pytest.mark.parametrize("block", [1, 7, 1000])
def test_matches_a_brute_force_count_whatever_the_block(block: int) -> None:
    rng = random.Random(5)
    movies = rng.sample(range(1, 500), 60)
    people = [f"p{i}" for i in range(40)]
    credits = {(rng.choice(people), rng.choice(["ACTED_IN", "DIRECTED", "WROTE"]), m) for m in movies for _ in range(3)}
    genres = {(m, rng.choice(["Drama", "Comedy", "War", "Crime"])) for m in movies for _ in range(2)}
    static = StaticGraph(movies, sorted(credits), sorted(genres), [])
    expected = brute_force(static, k=5)
    assert len(expected) > 50
    assert neighbours(static, k=5, block=block) == expected
