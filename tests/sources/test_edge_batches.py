"""The ingest's two ways of writing a batch of edges write the same edges, in a real FalkorDB.

``edge_batch`` collects either every movie or only the batch's own (whichever is cheaper for
the batch's share of the catalogue); the positions it sends must point each row at its own
user and movie either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from falkordb import FalkorDB

from sources.ingest import ALL_MOVIES, CREATE_RATED, CREATE_WATCHED, OWN_MOVIES, edge_batch
from sources.stores.clients import Stores
from sources.stores.graph import FalkorGraph

MOVIE_IDS = [7, 20, 33, 41, 58, 60, 75, 91, 104, 230]  # not 1..n: positions are not ids
CATALOGUE = {m: p for p, m in enumerate(MOVIE_IDS)}
ROWS = [[u, m, (u * m) % 5 + 1, 1_000 + u * 10 + p] for p, (u, m) in enumerate(
    [(3, 91), (3, 7), (12, 91), (12, 230), (5, 33), (5, 7), (3, 20), (12, 7)]
)]  # fmt: skip


@pytest.fixture
def scratch(stores: Stores) -> Iterator[FalkorGraph]:
    """An empty graph of its own beside the session's, with the users and movies ROWS name."""
    parts = urlsplit(stores.endpoints.graph_uri)
    graph = FalkorGraph(parts.hostname or "127.0.0.1", parts.port or 6379, "test_edge_batches", parts.password)
    graph.write("UNWIND $u AS i CREATE (:User {id: i})", {"u": [3, 5, 12, 40]})
    graph.write("UNWIND $m AS i CREATE (:Movie {id: i})", {"m": MOVIE_IDS})
    graph.write("CREATE INDEX FOR (n:User) ON (n.id)")
    graph.write("CREATE INDEX FOR (n:Movie) ON (n.id)")
    try:
        yield graph
    finally:
        graph.close()
        FalkorDB(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, password=parts.password).select_graph(
            "test_edge_batches"
        ).delete()


def edges(graph: FalkorGraph, kind: str, a: str, b: str) -> list[list[Any]]:
    cypher = f"MATCH (u:User)-[r:{kind}]->(m:Movie) RETURN u.id AS u, m.id AS m, r.{a} AS a, r.{b} AS b"
    return sorted([row["u"], row["m"], row["a"], row["b"]] for row in graph.read(cypher))


@pytest.mark.parametrize("own_movies_below", [0.0, 1.0], ids=["every movie", "the batch's movies"])
def test_either_way_each_row_lands_on_its_own_user_and_movie(scratch: FalkorGraph, own_movies_below: float) -> None:
    cypher, params = edge_batch(CREATE_RATED, ROWS, CATALOGUE, own_movies_below)
    assert cypher.startswith(ALL_MOVIES if own_movies_below == 0.0 else OWN_MOVIES)
    scratch.write(cypher, params)
    assert edges(scratch, "RATED", "score", "ts") == sorted(ROWS)

    watched = [[u, m, ts, 60 * a] for u, m, a, ts in ROWS]
    scratch.write(*edge_batch(CREATE_WATCHED, watched, CATALOGUE, own_movies_below))
    assert edges(scratch, "WATCHED", "ts", "duration") == sorted(watched)


def test_a_missing_movie_writes_nothing_rather_than_a_wrong_edge(scratch: FalkorGraph) -> None:
    scratch.write("MATCH (m:Movie {id: 230}) DELETE m")
    scratch.write(*edge_batch(CREATE_RATED, ROWS, CATALOGUE, own_movies_below=1.0))
    assert edges(scratch, "RATED", "score", "ts") == []


def test_the_cheaper_way_is_chosen_by_the_batchs_share_of_the_catalogue() -> None:
    catalogue = {m: m - 1 for m in range(1, 62_424)}  # ML-25M's catalogue size
    narrow = [[u, 1 + (u * 37) % 8_000, 4, 0] for u in range(20_000)]  # ~8,000 of 62,423 movies
    wide = [[u, 1 + (u * 37) % 40_000, 4, 0] for u in range(20_000)]  # ~20,000 of them
    assert edge_batch(CREATE_RATED, narrow, catalogue)[0].startswith(OWN_MOVIES)
    assert edge_batch(CREATE_RATED, wide, catalogue)[0].startswith(ALL_MOVIES)
    small = {m: m - 1 for m in range(1, 1_683)}  # ML-100K: a batch touches most of it
    assert edge_batch(CREATE_RATED, [[u, 1 + u % 1_682, 4, 0] for u in range(20_000)], small)[0].startswith(ALL_MOVIES)
