"""The real API app over the session's embedded stores (ML-100K loaded), driven over HTTP.

Starlette's TestClient is httpx underneath and runs the app's lifespan, so every request
goes through routing, Strawberry, the DataLoaders and the real stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores import Stores

Query = Callable[..., dict[str, Any]]


def _post(client: TestClient, query: str, variables: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    """POST a GraphQL query; asserts the transport answered 200 with JSON (never a 500)."""
    response = client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="session")
def api_client(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[TestClient]:
    app = create_app(settings, stores=stores)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def gql(api_client: TestClient) -> Query:
    """``gql(query, variables, **headers)`` → the JSON body; fails on any HTTP status but 200."""

    def run(query: str, variables: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
        return _post(api_client, query, variables, **headers)

    return run
