"""Both graph adapters run the same Cypher against the same embedded FalkorDB and agree."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sources.ingest import IngestReport
from sources.stores.clients import Stores
from sources.stores.graph import FalkorGraph, GraphStore, Neo4jGraph, open_graph

PARITY_QUERIES = [
    ("MATCH (m:Movie {id: $id}) RETURN m.title AS title, m.year AS year", {"id": 1}),
    ("MATCH (u:User)-[r:RATED]->(m:Movie {id: $id}) WHERE r.ts < $cut "
     "RETURN count(r) AS n, count(DISTINCT u) AS users", {"id": 50, "cut": 880000000}),
    ("MATCH (p:Person)-[:ACTED_IN]->(m:Movie {id: $id}) RETURN p.id AS person ORDER BY person", {"id": 1}),
    ("MATCH (m:Movie {id: $id})<-[:ACTED_IN|DIRECTED]-(:Person)-[:ACTED_IN|DIRECTED]->(o:Movie) "
     "WHERE o.id <> $id RETURN o.id AS movie, count(*) AS shared ORDER BY shared DESC, movie LIMIT 10", {"id": 1}),
    ("MATCH (m:Movie {id: $id})-[:HAS_GENRE]->(g:Genre) RETURN collect(g.name) AS genres", {"id": 1}),
    ("MATCH (u:User {id: $id}) OPTIONAL MATCH (u)-[:FOLLOWS]->(f:User) RETURN f.id AS follows ORDER BY follows",
     {"id": 1}),
    ("MATCH (m:Movie {id: $id}) RETURN m AS movie", {"id": 50}),
    ("MATCH (u:User {id: $id})-[r:RATED]->(m:Movie) RETURN m.id AS movie, r.score AS score "
     "ORDER BY r.ts, movie LIMIT 5", {"id": 1}),
]  # fmt: skip


@pytest.fixture(scope="module")
def bolt(stores: Stores, loaded: IngestReport) -> Iterator[GraphStore]:
    assert stores.endpoints.graph_bolt_uri is not None
    graph = open_graph(stores.endpoints.graph_bolt_uri, stores.settings.graph_name)
    assert isinstance(graph, Neo4jGraph)
    yield graph
    graph.close()


@pytest.mark.parametrize(("cypher", "params"), PARITY_QUERIES)
def test_adapters_return_the_same_rows(stores: Stores, bolt: GraphStore, cypher: str, params: dict[str, int]) -> None:
    assert isinstance(stores.graph, FalkorGraph)
    native = stores.graph.read(cypher, params)
    assert native, "the query should return rows on ML-100K"
    assert bolt.read(cypher, params) == native


def test_rows_are_plain_values(stores: Stores, loaded: IngestReport) -> None:
    rows = stores.graph.read("MATCH (m:Movie {id: 1}) RETURN m AS movie")
    assert rows == [{"movie": {"id": 1, "title": "Toy Story", "year": 1995}}]


def test_ping_reports_an_unreachable_graph() -> None:
    from sources.errors import StoreUnavailable

    graph = open_graph("bolt://127.0.0.1:1", "neo4j", timeout_s=1.0)
    with pytest.raises(StoreUnavailable, match="does not answer"):
        graph.ping()
    graph.close()
