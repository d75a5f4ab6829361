"""A store that does not answer costs only the fields that need it.

Real outages, no mocks. Mongo: the app points at a port where nothing listens (pymongo
connects lazily, so the app starts). Graph: the app starts against a private FalkorDB
server which is then stopped, i.e. the graph goes away while the API serves. PostgreSQL
and the other store are the session's real embedded ones.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores.clients import Stores
from sources.stores.embedded import EmbeddedStores

QUERY = """{
  movie(id: 1) { title year genres similar(first: 2) { movie { movieId } }
                 people { actors { freebaseId } } neighbours(first: 2) { depth } ratingStats { count } }
  user(id: 1) { age occupation subscription { tier }
                reviews(first: 2) { rating } recentSessions(first: 1) { device }
                following(first: 2) { userId } watched(first: 2) { movieId } }
  recommendations(userId: 1, first: 5) { degraded modelVersion items { movie { movieId } explanation } }
}"""


def dead_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def client_with(settings: Settings, stores: Stores, **uris: str) -> TestClient:
    configured = settings.model_copy(
        update={
            "pg_dsn": stores.endpoints.pg_dsn,
            "mongo_uri": stores.endpoints.mongo_uri,
            "graph_uri": stores.endpoints.graph_uri,
            "connect_timeout_s": 1.0,
            **uris,
        }
    )
    # SecretStr fields: model_copy skips validation, so wrap the plain strings ourselves.
    from pydantic import SecretStr

    for name in ("pg_dsn", "mongo_uri", "graph_uri"):
        value = getattr(configured, name)
        if isinstance(value, str):
            object.__setattr__(configured, name, SecretStr(value))
    return TestClient(create_app(configured))


@pytest.fixture(scope="module")
def graph_down(
    settings: Settings, stores: Stores, loaded: IngestReport, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    private = EmbeddedStores(tmp_path_factory.mktemp("graph-outage"), notify=lambda _: None)
    graph_uri, _ = private.ensure_falkordb()
    try:
        with client_with(settings, stores, graph_uri=graph_uri) as client:
            assert client.get("/readyz").json()["stores"]["graph"]["ok"] is True
            assert private.stop_all() == ["FalkorDB"]
            yield client
    finally:
        private.stop_all()


@pytest.fixture(scope="module")
def mongo_down(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[TestClient]:
    with client_with(settings, stores, mongo_uri=f"mongodb://127.0.0.1:{dead_port()}/") as client:
        yield client


def errors_by_path(body: dict[str, Any]) -> dict[str, str]:
    return {".".join(str(p) for p in e["path"]): e["extensions"]["code"] for e in body.get("errors", [])}


def test_graph_down_costs_only_graph_fields(graph_down: TestClient) -> None:
    response = graph_down.post("/graphql", json={"query": QUERY})
    assert response.status_code == 200
    body = response.json()
    data = body["data"]
    assert (data["movie"]["title"], data["movie"]["year"]) == ("Toy Story", 1995)
    assert data["movie"]["genres"] == ["Animation", "Children's", "Comedy"]
    assert len(data["movie"]["similar"]) == 2 and data["movie"]["ratingStats"]["count"] == 452
    assert data["user"]["age"] == 24 and len(data["user"]["reviews"]) == 2
    for field in ("people", "neighbours"):
        assert data["movie"][field] is None
    assert data["user"]["following"] is None and data["user"]["watched"] is None
    assert errors_by_path(body) == {
        "movie.people": "STORE_UNAVAILABLE",
        "movie.neighbours": "STORE_UNAVAILABLE",
        "user.following": "STORE_UNAVAILABLE",
        "user.watched": "STORE_UNAVAILABLE",
    }
    assert all("graph store is unavailable" in e["message"] for e in body["errors"])
    # Recommendations fall back to popularity (counted from Mongo) and say so.
    recs = data["recommendations"]
    assert recs["degraded"] is True and len(recs["items"]) == 5
    assert all(i["explanation"].startswith("popular: ") for i in recs["items"])


def test_mongo_down_costs_only_mongo_fields(mongo_down: TestClient) -> None:
    body = mongo_down.post("/graphql", json={"query": QUERY}).json()
    data = body["data"]
    assert data["movie"]["title"] == "Toy Story" and data["movie"]["people"]["actors"]
    assert data["movie"]["ratingStats"] is None
    assert data["user"]["occupation"] == "technician" and data["user"]["subscription"]["tier"]
    assert data["user"]["reviews"] is None and data["user"]["recentSessions"] is None
    assert data["user"]["following"] and data["user"]["watched"]
    assert errors_by_path(body) == {
        "movie.ratingStats": "STORE_UNAVAILABLE",
        "user.reviews": "STORE_UNAVAILABLE",
        "user.recentSessions": "STORE_UNAVAILABLE",
    }
    recs = data["recommendations"]
    assert recs["degraded"] is True and len(recs["items"]) == 5


def test_mutations_with_mongo_down_are_store_errors(mongo_down: TestClient) -> None:
    body = mongo_down.post(
        "/graphql", json={"query": "mutation { rateMovie(userId: 1, movieId: 1, rating: 4) { __typename } }"}
    ).json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "STORE_UNAVAILABLE"
    assert "mongo store is unavailable" in body["errors"][0]["message"]


def test_readiness_reports_each_store(graph_down: TestClient, mongo_down: TestClient, api_client: TestClient) -> None:
    healthy = api_client.get("/readyz")
    assert healthy.status_code == 200
    report = healthy.json()
    assert report["ready"] is True
    assert {name: r["ok"] for name, r in report["stores"].items()} == {
        "postgres": True,
        "mongo": True,
        "graph": True,
        "feature_store": False,  # optional: none configured in tests
    }
    for client, down in ((graph_down, "graph"), (mongo_down, "mongo")):
        response = client.get("/readyz")
        assert response.status_code == 503
        stores = response.json()["stores"]
        assert stores[down]["ok"] is False and stores[down]["error"]
        assert all(stores[name]["ok"] for name in ("postgres", "mongo", "graph") if name != down)
        assert client.get("/healthz").json() == {"status": "ok"}
