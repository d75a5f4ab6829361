"""The security checklist (OWASP GraphQL cheat sheet, graphql-cop's checks) against the real app:
production mode (GraphiQL and introspection off) and the defaults. docs/api.md lists the items."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores.clients import Stores

HTML = {"accept": "text/html"}
# graphql-cop's own queries
COP_INTROSPECTION = "query cop { __schema { types { name fields { name } } } }"
COP_CIRCULAR = (
    "query cop { __schema { types { fields { type { fields { type { fields { type { fields { type { name } } } } } } } "
    "} } } }"
)
COP_SUGGESTION = "query cop { __schema { directive } }"
COP_DIRECTIVES = "query cop { __typename @aa@aa@aa@aa@aa@aa@aa@aa@aa@aa }"
COP_ALIASES = "query cop { " + " ".join(f"alias{i}: __typename" for i in range(101)) + " }"
MUTATION = 'mutation { rateMovie(userId: 1, movieId: 1, rating: 9, clientMutationId: "csrf-probe") { __typename } }'
EVIL = "https://evil.example"
PROTOCOL = "graphql-transport-ws"


@pytest.fixture(scope="module")
def production(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[TestClient]:
    closed = settings.model_copy(update={"graphiql": False, "introspection": False})
    with TestClient(create_app(closed, stores=stores)) as client:
        yield client


def _errors(client: TestClient, query: str, variables: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    response = client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("data") is None, body
    errors: list[dict[str, Any]] = body["errors"]
    return errors


# -- introspection and the IDE -----------------------------------------------------------------


def test_production_serves_no_ide_and_refuses_introspection(production: TestClient) -> None:
    page = production.get("/graphql", headers=HTML)
    assert page.status_code == 404 and "graphiql" not in page.text.lower()
    for query in (COP_INTROSPECTION, COP_CIRCULAR, '{ __type(name: "Query") { name fields { name } } }'):
        errors = _errors(production, query)
        # refused by the introspection switch (graphql-core also caps introspection depth)
        assert any("introspection" in e["message"].lower() for e in errors), errors
    # __typename is not introspection: clients (Apollo, Relay) ask for it
    ok = production.post("/graphql", json={"query": "{ movie(id: 1) { __typename title } }"}).json()
    assert ok == {"data": {"movie": {"__typename": "Movie", "title": "Toy Story"}}}


# -- field suggestions -------------------------------------------------------------------------

MISTAKES: list[tuple[str, dict[str, Any] | None]] = [
    ("{ movei(id: 1) { title } }", None),  # unknown field
    (COP_SUGGESTION, None),
    ("{ movie(idd: 1) { title } }", None),  # unknown argument
    ("{ movie(id: 1) { neighbours(relation: ACTR) { __typename } } }", None),  # enum literal
    ("query($r: NeighbourRelation!) { movie(id: 1) { neighbours(relation: $r) { __typename } } }", {"r": "ACTR"}),
    ("query($r: NeighbourRelaton!) { movie(id: 1) { title } }", None),  # unknown type
    ("{ movie(id: 1) }", None),  # a leaf selection missing
]


@pytest.mark.parametrize(("query", "variables"), MISTAKES)
def test_no_field_suggestions_when_introspection_is_off(
    production: TestClient, api_client: TestClient, query: str, variables: dict[str, Any] | None
) -> None:
    hidden = _errors(production, query, variables)
    assert hidden and not any("did you mean" in e["message"].lower() for e in hidden), hidden
    assert all(e["extensions"]["code"] != "INTERNAL_SERVER_ERROR" for e in hidden)
    # the same mistake with introspection on (development) still gets its hint
    if query != "{ movie(id: 1) }":
        shown = _errors(api_client, query, variables)
        assert any("Did you mean" in e["message"] for e in shown), shown


# -- GET, batching, content types (CSRF) -------------------------------------------------------


@pytest.mark.parametrize("query", [MUTATION, "mutation cop { __typename }", "query cop { __typename }"])
def test_get_runs_no_operation(production: TestClient, api_client: TestClient, query: str) -> None:
    for client in (production, api_client):
        response = client.get("/graphql", params={"query": query})
        assert response.status_code == 400, response.text
        assert "not allowed when using GET" in response.text and "data" not in response.text


def test_batching_is_refused(production: TestClient, api_client: TestClient) -> None:
    for client in (production, api_client):
        batch = [{"query": "query cop { __typename }"}] * 10
        response = client.post("/graphql", json=batch)
        assert response.status_code == 400 and response.text == "Batching is not enabled"


SIMPLE_CONTENT_TYPES = [  # what a browser sends cross-site without a CORS preflight, and tricks on them
    "application/x-www-form-urlencoded",
    "text/plain",
    "text/plain; charset=utf-8",
    "text/plain; application/json",
    "text/plain, application/json",
    "multipart/form-data; boundary=x",
    "application/jsonx",
    "",
]


@pytest.mark.parametrize("content_type", SIMPLE_CONTENT_TYPES)
def test_post_must_be_json(production: TestClient, api_client: TestClient, content_type: str) -> None:
    body = '{"query": "' + MUTATION.replace('"', '\\"') + '"}'
    for client in (production, api_client):
        response = client.post("/graphql", content=body, headers={"content-type": content_type})
        assert response.status_code == 415, (content_type, response.text)
        assert response.headers["content-type"].startswith("text/plain") and "data" not in response.text
    # graphql-cop's form post
    form = api_client.post("/graphql", data={"query": "query cop { __typename }"})
    assert form.status_code == 415


def test_json_post_with_charset_still_works(api_client: TestClient) -> None:
    for content_type in ("application/json", "application/json; charset=utf-8"):
        response = api_client.post(
            "/graphql", content='{"query": "{ movie(id: 1) { title } }"}', headers={"content-type": content_type}
        )
        assert response.status_code == 200 and response.json() == {"data": {"movie": {"title": "Toy Story"}}}


# -- DoS shapes graphql-cop tries --------------------------------------------------------------


def test_alias_and_directive_overloading_refused(production: TestClient) -> None:
    (aliases,) = _errors(production, COP_ALIASES)
    assert aliases["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    (directives,) = _errors(production, COP_DIRECTIVES)  # one error, not one per directive
    assert directives["extensions"] == {"code": "QUERY_TOO_COMPLEX", "directives": 10, "limit": 4}
    # what a real query carries still runs
    query = "{ movie(id: 1) { title @include(if: true) @skip(if: false) year @skip(if: true) } }"
    ok = production.post("/graphql", json={"query": query})
    assert ok.json() == {"data": {"movie": {"title": "Toy Story"}}}


# -- no trace, debug or fingerprints -----------------------------------------------------------


def test_no_trace_debug_or_fingerprint(production: TestClient) -> None:
    assert production.app.debug is False  # type: ignore[attr-defined]
    for query in ("qwerty cop { abc }", "{ movie(id: 1) { title } }", "{ user(id: -1) { id } }"):
        response = production.post("/graphql", json={"query": query})
        assert response.status_code == 200
        body = response.json()
        for error in body.get("errors", []):
            assert set(error["extensions"]) <= {"code", "argument", "user_id", "requestId", "store"}, error
        assert "tracing" not in str(body.get("extensions", {})) and "Traceback" not in response.text
        assert not {"x-powered-by", "server"} & set(response.headers)


def test_no_websocket_endpoint(production: TestClient) -> None:
    # the schema has no subscriptions, so there is nothing to serve over a socket
    with pytest.raises(WebSocketDisconnect), production.websocket_connect("/graphql", subprotocols=[PROTOCOL]):
        pass


# -- CORS --------------------------------------------------------------------------------------


def _preflight(client: TestClient, origin: str) -> Any:
    return client.options(
        "/graphql",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-api-key",
        },
    )


def test_cors_closed_by_default(production: TestClient) -> None:
    assert "access-control-allow-origin" not in _preflight(production, EVIL).headers
    posted = production.post("/graphql", json={"query": "{ movie(id: 1) { title } }"}, headers={"origin": EVIL})
    assert posted.status_code == 200 and "access-control-allow-origin" not in posted.headers


def test_cors_opens_only_to_the_configured_origins(settings: Settings, stores: Stores, loaded: IngestReport) -> None:
    app_origin = "https://app.example"
    opened = settings.model_copy(update={"graphiql": False, "introspection": False, "cors_origins": [app_origin]})
    with TestClient(create_app(opened, stores=stores)) as client:
        allowed = _preflight(client, app_origin)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == app_origin
        assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
        refused = _preflight(client, EVIL)
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        posted = client.post("/graphql", json={"query": "{ movie(id: 1) { title } }"}, headers={"origin": EVIL})
        assert "access-control-allow-origin" not in posted.headers
        # CORS does not loosen the content-type rule
        form = client.post("/graphql", data={"query": "{ __typename }"}, headers={"origin": app_origin})
        assert form.status_code == 415
