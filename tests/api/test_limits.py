"""Limits and bad input: each answers HTTP 200 with a GraphQL error that has a clear message
and a stable ``extensions.code`` — never a 500, never a leaked traceback."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from api.schema import MAX_ALIASES, MAX_DEPTH, MAX_TOKENS

Query = Callable[..., dict[str, Any]]


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    errors = body.get("errors") or []
    assert len(errors) == 1, body
    error: dict[str, Any] = errors[0]
    assert "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize("first", [0, -1, 101])
@pytest.mark.parametrize(
    "query",
    [
        "query($f: Int!) { movies(first: $f) { totalCount } }",
        "query($f: Int!) { users(first: $f) { totalCount } }",
        'query($f: Int!) { searchMovies(text: "toy", first: $f) { similarity } }',
        "query($f: Int!) { recommendations(userId: 1, first: $f) { degraded } }",
        "query($f: Int!) { movie(id: 1) { similar(first: $f) { similarity } } }",
        "query($f: Int!) { movie(id: 1) { neighbours(first: $f) { depth } } }",
        "query($f: Int!) { user(id: 1) { reviews(first: $f) { rating } } }",
    ],
)
def test_first_out_of_range(gql: Query, query: str, first: int) -> None:
    error = only_error(gql(query, {"f": first}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == f"`first` must be between 1 and 100, got {first}"


def test_first_of_two_to_the_31(gql: Query) -> None:
    literal = only_error(gql("{ movies(first: 2147483648) { totalCount } }"))
    assert literal["extensions"]["code"] == "BAD_USER_INPUT"
    assert "2147483648" in literal["message"] and "32-bit" in literal["message"]
    variable = only_error(gql("query($f: Int!) { movies(first: $f) { totalCount } }", {"f": 2**31}))
    assert variable["extensions"]["code"] == "BAD_USER_INPUT"
    assert "2147483648" in variable["message"]


def test_first_100_is_allowed(gql: Query) -> None:
    body = gql("{ movies(first: 100) { edges { cursor } } }")
    assert "errors" not in body and len(body["data"]["movies"]["edges"]) == 100


def test_unknown_ids_are_not_found_and_the_rest_answers(gql: Query) -> None:
    body = gql("{ user(id: 99999) { age } movie(id: 424242) { title } other: movie(id: 1) { title } }")
    assert body["data"] == {"user": None, "movie": None, "other": {"title": "Toy Story"}}
    by_path = {e["path"][0]: e for e in body["errors"]}
    assert by_path["user"]["message"] == "no user with id 99999"
    assert by_path["movie"]["message"] == "no movie with id 424242"
    assert {e["extensions"]["code"] for e in body["errors"]} == {"NOT_FOUND"}


def test_recommendations_for_an_unknown_user(gql: Query) -> None:
    error = only_error(gql("{ recommendations(userId: 5000) { degraded } }"))
    assert error["extensions"]["code"] == "NOT_FOUND" and "5000" in error["message"]


@pytest.mark.parametrize(
    ("global_id", "message"),
    [
        ("!!!not-base64", "cannot represent a GlobalID"),
        (base64.b64encode(b"no-colon").decode(), "cannot represent a GlobalID"),
        (base64.b64encode(b"Review:1").decode(), "known node types: User, Movie"),
        (base64.b64encode(b"User:abc").decode(), "user id must be an integer"),
        (base64.b64encode(b"Movie:999999").decode(), "no movie with id 999999"),
    ],
)
def test_malformed_or_unknown_global_ids(gql: Query, global_id: str, message: str) -> None:
    body = gql("query($id: ID!) { node(id: $id) { id } }", {"id": global_id})
    error = only_error(body)
    assert message in error["message"]
    assert error["extensions"]["code"] in {"BAD_USER_INPUT", "NOT_FOUND"}


def test_malformed_cursor(gql: Query) -> None:
    error = only_error(gql('{ movies(after: "bm90LWEtY3Vyc29y") { totalCount } }'))
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "after"}
    assert "not a cursor this API issued" in error["message"]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ('{ movies(first: "ten") { totalCount } }', "Int cannot represent"),
        ("{ user(id: 1.5) { age } }", "Int cannot represent"),
        ("{ movie(id: 1) { neighbours(relation: FRIEND) { depth } } }", "FRIEND"),
        ("{ searchMovies(text: 42) { similarity } }", "String cannot represent"),
    ],
)
def test_wrong_types(gql: Query, query: str, fragment: str) -> None:
    error = only_error(gql(query))
    assert fragment in error["message"]
    assert error["extensions"]["code"] in {"BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"}


@pytest.mark.parametrize("text", ["", "   ", "x" * 10_240])
def test_empty_or_huge_search_text(gql: Query, text: str) -> None:
    error = only_error(gql("query($t: String!) { searchMovies(text: $t) { similarity } }", {"t": text}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "must not be empty" in error["message"] or "at most 200" in error["message"]


def test_huge_title_search_and_bad_filters(gql: Query) -> None:
    body = gql("query($s: String) { movies(search: $s) { totalCount } }", {"s": "y" * 10_240})
    assert only_error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    body = gql('{ movies(genre: "Polka") { totalCount } }')
    assert only_error(body)["message"] == "unknown genre 'Polka'"
    body = gql("{ movies(yearFrom: 2000, yearTo: 1990) { totalCount } }")
    assert "is after" in only_error(body)["message"]


def test_neighbour_depth_limit(gql: Query) -> None:
    error = only_error(gql("{ movie(id: 1) { title neighbours(depth: 3) { depth } } }"))
    assert error["message"] == "`depth` must be 1 or 2, got 3"
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


def test_query_depth_limit(gql: Query) -> None:
    nested = "userId"
    for _ in range(MAX_DEPTH):
        nested = f"following {{ {nested} }}"
    for _ in range(2):  # the second answer comes from the validation cache: the limit still holds
        error = only_error(gql(f"{{ user(id: 1) {{ {nested} }} }}"))
        assert "exceeds maximum operation depth" in error["message"]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"


def test_a_repeated_query_is_parsed_and_validated_once(gql: Query) -> None:
    """Validation costs more than most resolvers; a frontend's repeated query must hit the cache
    (it silently missed while the limit rules were new classes on every request)."""
    from strawberry.extensions.validation_cache import _get_validate_cache

    from api.schema import QUERY_CACHE_SIZE

    cache = _get_validate_cache(QUERY_CACHE_SIZE)
    query = "{ movie(id: 2) { title year } }"
    gql(query)
    hits = cache.cache_info().hits
    for _ in range(3):
        assert gql(query)["data"]["movie"]["title"] == "GoldenEye"
    assert cache.cache_info().hits == hits + 3


def test_alias_limit(gql: Query) -> None:
    aliases = " ".join(f"m{i}: movie(id: 1) {{ title }}" for i in range(MAX_ALIASES + 1))
    error = only_error(gql(f"{{ {aliases} }}"))
    assert "aliases" in error["message"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    ok = " ".join(f"m{i}: movie(id: 1) {{ title }}" for i in range(5))
    assert "errors" not in gql(f"{{ {ok} }}")


def test_token_limit(gql: Query) -> None:
    fields = " ".join(["title"] * MAX_TOKENS)
    error = only_error(gql(f"{{ movie(id: 1) {{ {fields} }} }}"))
    assert "token" in error["message"].lower()
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"


def test_syntax_and_unknown_fields(gql: Query) -> None:
    assert only_error(gql("{ movie(id: 1) { title "))["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    error = only_error(gql("{ movie(id: 1) { budget } }"))
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED" and "budget" in error["message"]
