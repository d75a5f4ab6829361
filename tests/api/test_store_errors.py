"""A store outage tells the client which store, nothing more; the driver's text is logged
under the request's id, which the error carries so an operator can find that line.

Real outage, no mocks: the app's Mongo URI points at a port where nothing listens (as in
test_resilience.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores.clients import Stores
from sources.stores.failures import StoreDown
from tests.api.test_resilience import client_with, dead_port

QUERY = "{ user(id: 1) { age reviews(first: 3) { rating } } }"


@pytest.fixture(scope="module")
def dead_mongo(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[tuple[TestClient, int]]:
    port = dead_port()
    with client_with(settings, stores, mongo_uri=f"mongodb://127.0.0.1:{port}/") as client:
        yield client, port


def test_store_down_message_and_detail() -> None:
    down = StoreDown("postgres", "connection is bad: connection to server on socket /tmp/x/.s.PGSQL.5432 failed")
    assert str(down) == "the postgres store is unavailable"
    assert down.reason.startswith("connection is bad")
    assert down.detail == f"the postgres store is unavailable: {down.reason}"
    assert StoreDown("graph").detail == "the graph store is unavailable"


def store_error(body: dict[str, Any]) -> dict[str, Any]:
    assert body["data"]["user"]["age"] == 24 and body["data"]["user"]["reviews"] is None
    [error] = body["errors"]
    assert error["path"] == ["user", "reviews"]
    return dict(error)


def test_the_client_sees_the_store_and_the_log_has_the_driver_text(
    dead_mongo: tuple[TestClient, int], caplog: pytest.LogCaptureFixture
) -> None:
    client, port = dead_mongo
    with caplog.at_level(logging.WARNING, logger="api.errors"):
        response = client.post("/graphql", json={"query": QUERY})
    error = store_error(response.json())
    assert error["message"] == "the mongo store is unavailable"
    extensions = error["extensions"]
    assert set(extensions) == {"code", "store", "requestId"}
    assert (extensions["code"], extensions["store"]) == ("STORE_UNAVAILABLE", "mongo")
    request_id = extensions["requestId"]
    assert request_id and response.headers["X-Request-ID"] == request_id
    for internal in ("127.0.0.1", str(port), "Errno", "refused", "/"):
        assert internal not in str(error), internal

    lines = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert "the mongo store is unavailable" in lines[0] and "user.reviews" in lines[0]
    assert f"127.0.0.1:{port}" in lines[0]  # the driver's text, for the operator


def test_a_plain_client_request_id_is_kept_and_an_odd_one_replaced(dead_mongo: tuple[TestClient, int]) -> None:
    client, _ = dead_mongo
    kept = client.post("/graphql", json={"query": QUERY}, headers={"X-Request-ID": "edge-7f3a.42"})
    assert store_error(kept.json())["extensions"]["requestId"] == "edge-7f3a.42"
    assert kept.headers["X-Request-ID"] == "edge-7f3a.42"
    odd = client.post("/graphql", json={"query": QUERY}, headers={"X-Request-ID": "x forged: log line"})
    request_id = store_error(odd.json())["extensions"]["requestId"]
    assert "forged" not in request_id and len(request_id) == 32
