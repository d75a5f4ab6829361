"""Query cost (api/cost.py): counted before execution, refused over budget with its cost.

The unit tests count small queries against the real schema by hand; the served-app tests
send the abusive queries of issue 13 and check that nothing ran."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from graphql import GraphQLSchema, OperationDefinitionNode, parse, validate

from api.cost import DEFAULT_MAX_COST, RANKING_COST, query_cost
from api.queries import reads
from api.schema import build_schema

Query = Callable[..., dict[str, Any]]
REPO = Path(__file__).resolve().parents[2]

#: issue 13's measurements: 530 s / 37 MB, 25 s / 37 MB, 30 s / 24 MB; each within the depth,
#: alias and token limits
ABUSIVE = {
    "neighbours of neighbours": (
        "{ movies(first: 100) { edges { node { neighbours(depth: 2, first: 100) { movie "
        "{ neighbours(depth: 2, first: 100) { movie { title } } } } } } } }",
        # 2 + 100 × (50 + 100 × (1 + 50 + 100 × 1))
        1_515_002,
    ),
    "similar per recommendation": (
        "{ users(first: 100) { edges { node { recommendations(first: 100, excludeSeen: false) "
        "{ items { movie { similar(first: 100) { movie { title } } } } } } } } }",
        # 2 + 100 × (50 + 100 × (1 + 5 + 100 × 1))
        1_065_002,
    ),
    "a ranking per follower of a followee": (
        "{ users(first: 100) { edges { node { following(first: 100) { followers(first: 100) "
        "{ recommendations(first: 100) { items { score } } } } } } } }",
        # 2 + 100 × (2 + 100 × (2 + 100 × 50))
        50_020_202,
    ),
}


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema()._schema


def cost(schema: GraphQLSchema, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> int:
    document = parse(query)
    assert validate(schema, document) == []
    return query_cost(schema, document, variables, **kw)


# -- the cost function ------------------------------------------------------------------------


def test_columns_cost_nothing_and_fetched_objects_one(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ movie(id: 1) { title year movieId } }") == 1
    assert cost(schema, "{ movie(id: 1) { title ratingStats { count } } __typename }") == 2
    # 1 (movie) + 5 (similar) + 3 × (1 (movie) + 0)
    assert cost(schema, "{ movie(id: 1) { similar(first: 3) { similarity movie { title } } } }") == 9


def test_a_connection_multiplies_by_first_and_defaults_from_the_schema(schema: GraphQLSchema) -> None:
    # users: 2 + first × (edges 0 + node 0 + subscription 1 + reviews (2 + 3 × (movie 1)))
    query = (
        "{ users(first: 4) { totalCount edges { cursor node { age subscription { tier } "
        "reviews(first: 3) { movie { title } } } } } }"
    )
    assert cost(schema, query) == 2 + 4 * (1 + 2 + 3 * 1)
    # movies without `first`: the schema's default, 20; similar without it: 10
    assert cost(schema, "{ movies { edges { node { similar { movie { title } } } } } }") == 2 + 20 * (5 + 10 * 1)


def test_rankings_and_two_hop_walks_cost_most(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ recommendations(userId: 1, first: 10) { items { score } } }") == RANKING_COST
    one = cost(schema, "{ movie(id: 1) { neighbours(depth: 1, first: 10) { depth } } }")
    two = cost(schema, "{ movie(id: 1) { neighbours(depth: 2, first: 10) { depth } } }")
    assert (one, two) == (1 + 5, 1 + 50)
    assert cost(schema, '{ searchMovies(text: "x", first: 5) { movie { title } } }') == 10 + 5


def test_variables_are_counted_with_their_values(schema: GraphQLSchema) -> None:
    query = "query($n: Int!, $d: Int! = 1) { movie(id: 1) { neighbours(depth: $d, first: $n) { movie { title } } } }"
    assert cost(schema, query, {"n": 7}) == 1 + 5 + 7
    assert cost(schema, query, {"n": 7, "d": 2}) == 1 + 50 + 7
    assert cost(schema, query, {"n": 1000}) == 1 + 5 + 100  # past MAX_FIRST the resolver refuses: counted as 100
    # A nullable variable the request leaves out: the argument's default (10), as execution does.
    assert cost(schema, "query($n: Int) { movie(id: 1) { similar(first: $n) { movie { title } } } }") == 1 + 5 + 10


def test_fragments_named_and_inline_are_counted_where_spread(schema: GraphQLSchema) -> None:
    query = """
      query($n: Int!) { movies(first: $n) { edges { node { ...Card } } } m: movie(id: 1) { ...Card } }
      fragment Card on Movie { title ... on Movie { similar(first: 2) { movie { ...Title } } } }
      fragment Title on Movie { title ratingStats { count } }
    """
    card = 5 + 2 * (1 + 1)  # similar: 5 + 2 × (movie 1 + ratingStats 1)
    assert cost(schema, query, {"n": 3}) == (2 + 3 * card) + (1 + card)


def test_skipped_fields_and_node_ids(schema: GraphQLSchema) -> None:
    query = "query($s: Boolean!) { movie(id: 1) { title similar(first: 4) @skip(if: $s) { movie { title } } } }"
    assert cost(schema, query, {"s": True}) == 1
    assert cost(schema, query, {"s": False}) == 1 + 5 + 4
    nodes = '{ nodes(ids: ["TW92aWU6MQ==", "TW92aWU6Mg==", "VXNlcjox"]) { ... on Movie { ratingStats { count } } } }'
    assert cost(schema, nodes) == 1 + 3 * 1  # Movie 1, Movie 2, User 1


def test_a_fragment_spread_many_times_is_costed_once(schema: GraphQLSchema) -> None:
    """Doubling spreads would make a naive walk exponential in the query's length."""
    fragments = [f"fragment F{i} on Movie {{ ...F{i + 1} ...F{i + 1} }}" for i in range(40)]
    query = "{ movie(id: 1) { ...F0 } } " + " ".join(fragments) + " fragment F40 on Movie { ratingStats { count } }"
    assert cost(schema, query) == 1 + 2**40  # counted as executed would be asked, without walking 2**40 nodes


@pytest.mark.parametrize("name", ABUSIVE)
def test_the_abusive_queries_cost_what_they_should(schema: GraphQLSchema, name: str) -> None:
    query, expected = ABUSIVE[name]
    assert cost(schema, query) == expected > DEFAULT_MAX_COST


# -- every query the docs and the tests send fits the default budget ---------------------------


def documented_queries() -> Iterator[tuple[str, str]]:
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```graphql\n(.*?)```", path.read_text(), re.S):
            for part in re.split(r"\n\s*\n", block):
                if part.strip():
                    yield path.name, part


def queries_in_tests(schema: GraphQLSchema) -> Iterator[tuple[str, str]]:
    """String constants in the tests (but these, over budget on purpose) that are valid GraphQL."""
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "{" in node.value:
                try:
                    document = parse(node.value)
                except Exception:
                    continue
                if not validate(schema, document):
                    yield path.name, node.value


def worst_variables(query: str) -> dict[str, Any]:
    """Every Int variable at the largest page size (the cost is then an upper bound)."""
    worst: dict[str, Any] = {}
    for operation in parse(query).definitions:
        if isinstance(operation, OperationDefinitionNode):
            for definition in operation.variable_definitions or ():
                if "Int" in str(definition.type.to_dict()):
                    worst[definition.variable.name.value] = 100
    return worst


def test_documented_and_tested_queries_fit_the_budget(schema: GraphQLSchema) -> None:
    docs = list(documented_queries())
    assert len(docs) >= 6
    for where, query in docs:
        assert cost(schema, query) <= DEFAULT_MAX_COST, (where, query)
    tested = list(queries_in_tests(schema))
    assert len(tested) >= 40
    for where, query in tested:
        assert query_cost(schema, parse(query), worst_variables(query)) <= DEFAULT_MAX_COST, (where, query)


def test_documented_queries_run_on_the_served_app(gql: Query) -> None:
    for where, query in documented_queries():
        if query.lstrip().startswith("mutation") or "searchMovies" in query:
            continue  # a write, and the text encoder's load: counted above, run by their own tests
        body = gql(query)
        assert body.get("data"), (where, body)
        assert "QUERY_TOO_COMPLEX" not in {e["extensions"]["code"] for e in body.get("errors", [])}


# -- refused on the served app, before execution ------------------------------------------------


@pytest.fixture
def page_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The root page reads the abusive queries start with, counted: none may run."""
    calls: list[str] = []
    for name in ("users_page", "movies_page"):
        real = getattr(reads, name)

        def counted(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(reads, name, counted)
    return calls


def test_page_reads_are_counted(gql: Query, page_reads: list[str]) -> None:
    assert gql("{ users(first: 1) { totalCount } movies(first: 1) { totalCount } }")["data"]
    assert sorted(page_reads) == ["movies_page", "users_page"]


@pytest.mark.parametrize("name", ABUSIVE)
def test_abusive_queries_are_refused_before_they_run(gql: Query, page_reads: list[str], name: str) -> None:
    query, expected = ABUSIVE[name]
    body = gql(query)
    assert body.get("data") is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": expected, "limit": DEFAULT_MAX_COST}
    assert str(expected) in error["message"] and str(DEFAULT_MAX_COST) in error["message"]
    assert page_reads == []


def test_the_cost_follows_the_variables_through_the_validation_cache(gql: Query, page_reads: list[str]) -> None:
    """The same text validates once (cached) but is costed with each request's variables."""
    from strawberry.extensions.validation_cache import _get_validate_cache

    from api.schema import QUERY_CACHE_SIZE

    query = (
        "query($n: Int!) { users(first: $n) { edges { node { following(first: $n) "
        "{ recommendations(first: $n) { items { score } } } } } } }"
    )
    cache: Any = _get_validate_cache(QUERY_CACHE_SIZE)  # an lru_cache
    assert gql(query, {"n": 2})["data"]["users"]["edges"]
    hits = cache.cache_info().hits
    refused = gql(query, {"n": 100})
    assert refused["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert refused["errors"][0]["extensions"]["cost"] == 2 + 100 * (2 + 100 * RANKING_COST)
    assert gql(query, {"n": 2})["data"]["users"]["edges"]
    assert cache.cache_info().hits == hits + 2
    assert page_reads == ["users_page", "users_page"]


def test_the_limit_is_configurable(settings: Any, stores: Any, loaded: Any) -> None:
    from starlette.testclient import TestClient

    from api.app import create_app

    tight = settings.model_copy(update={"query_max_cost": 10})
    with TestClient(create_app(tight, stores=stores)) as client:
        ok = client.post("/graphql", json={"query": "{ movie(id: 1) { similar(first: 4) { similarity } } }"}).json()
        assert ok["data"]["movie"]["similar"]
        body = client.post("/graphql", json={"query": "{ movie(id: 1) { similar(first: 5) { movie { title } } } }"})
        assert body.json()["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": 11, "limit": 10}
