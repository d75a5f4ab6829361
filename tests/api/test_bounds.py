"""A request's bounds (api/bounds.py, sources/stores/deadline.py): a deadline that ends slow
fields with TIMEOUT and keeps what was answered, and a cap on the response's size."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.bounds import GRACE_S
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores import deadline
from sources.stores.clients import Stores

# 100 movies, each walked two steps through the graph: an allowed query (cost 15,002) that
# takes seconds, far longer than the budget below.
SLOW = """{ movie(id: 1) { title }
  movies(first: 100) { edges { node { movieId neighbours(depth: 2, first: 100) { movie { title } } } } } }"""


def bounded_app(settings: Settings, stores: Stores, **bounds: float) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=bounds), stores=stores))


def test_past_the_deadline_slow_fields_end_with_timeout_and_the_rest_is_kept(
    settings: Settings, stores: Stores, loaded: IngestReport
) -> None:
    with bounded_app(settings, stores, request_timeout_s=0.3) as client:
        started = time.monotonic()
        body = client.post("/graphql", json={"query": SLOW}).json()
    took = time.monotonic() - started
    assert body["data"] is not None, body["errors"][:3]
    assert body["data"]["movie"] == {"title": "Toy Story"}  # answered before the deadline: kept
    codes = {e["extensions"]["code"] for e in body["errors"]}
    assert codes == {"TIMEOUT"}, body["errors"][:3]
    assert any("neighbours" in e["path"] for e in body["errors"])
    assert took < 0.3 + GRACE_S + 5.0, took  # the deadline, the backstop's grace, a loaded machine's slack


def test_a_response_over_the_size_cap_becomes_one_error(
    settings: Settings, stores: Stores, loaded: IngestReport
) -> None:
    with bounded_app(settings, stores, max_response_bytes=2_000) as client:
        big = client.post("/graphql", json={"query": "{ movies(first: 100) { edges { node { title year } } } }"})
        small = client.post("/graphql", json={"query": "{ movie(id: 1) { title } }"}).json()
    assert big.json()["data"] is None
    assert big.json()["errors"][0]["extensions"] == {"code": "RESPONSE_TOO_LARGE", "limit": 2_000}
    assert small == {"data": {"movie": {"title": "Toy Story"}}}


def test_a_budget_refuses_calls_once_spent_or_cancelled() -> None:
    assert deadline.check() is None  # no budget outside a request: jobs run unbounded
    with deadline.within(60) as budget:
        left = deadline.check()
        assert left is not None and 59 < left <= 60
        with deadline.unbounded():
            assert deadline.check() is None  # a batch shared by several requests
        budget.cancelled = True
        with pytest.raises(deadline.DeadlineExceeded, match="cancelled"):
            deadline.check()
    with deadline.within(0.0), pytest.raises(deadline.DeadlineExceeded, match="longer than"):
        deadline.check()
    assert deadline.check() is None
