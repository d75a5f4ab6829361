"""A request's bounds (api/bounds.py, sources/stores/deadline.py): a deadline that ends slow
fields with TIMEOUT and keeps what was answered, and a cap on the response's size."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.bounds import GRACE_S
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores import deadline
from sources.stores.clients import Stores
from tests.api.conftest import ServeInThread

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


def test_a_client_that_leaves_stops_its_work(
    settings: Settings, stores: Stores, loaded: IngestReport, serve_in_thread: ServeInThread
) -> None:
    """The client gives up after 0.2 s; the server notices within its poll and abandons the
    operation (counted in /readyz), and keeps answering others."""
    app = create_app(settings.model_copy(update={"request_timeout_s": 60.0}), stores=stores)
    with serve_in_thread(app, lifespan="on") as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/graphql", json={"query": SLOW}, timeout=0.2)
        deadline_at = time.monotonic() + 10
        while not httpx.get(f"{url}/readyz", timeout=5).json()["serving"]["abandoned"].get("disconnected"):
            assert time.monotonic() < deadline_at, "the abandoned operation was not stopped"
            time.sleep(0.1)
        light = httpx.post(f"{url}/graphql", json={"query": "{ movie(id: 1) { title } }"}, timeout=10).json()
    assert light == {"data": {"movie": {"title": "Toy Story"}}}


def test_sigterm_lets_the_request_under_way_finish_within_its_deadline(
    settings: Settings, stores: Stores, loaded: IngestReport
) -> None:
    """``marquee serve`` in a real process; SIGTERM while a slow request runs: the request is
    answered (its slow fields with TIMEOUT at the deadline) and the process exits soon after."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ) | {"MARQUEE_REQUEST_TIMEOUT_S": "2", "MARQUEE_HEAVY_LANE": "false",
                              "MARQUEE_RECOMMENDATION_WARM_USERS": "0"}  # fmt: skip
    command = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        try:
            ready_by = time.monotonic() + 180
            while not _ready(url):
                assert process.poll() is None and time.monotonic() < ready_by, "marquee serve did not start"
                time.sleep(0.25)
            answers: list[httpx.Response] = []
            slow = threading.Thread(target=lambda: answers.append(httpx.post(f"{url}/graphql", json={"query": SLOW},
                                                                               timeout=60)))  # fmt: skip
            slow.start()
            time.sleep(0.5)  # the request is under way
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            exit_code = process.wait(timeout=60)
            took = time.monotonic() - signalled
            slow.join(timeout=10)
        finally:
            process.kill()
    assert answers and answers[0].status_code == 200
    body = answers[0].json()
    assert body["data"]["movie"] == {"title": "Toy Story"}
    assert exit_code in (0, -signal.SIGTERM), exit_code  # Uvicorn re-raises the signal once it has shut down
    assert took < 2 + GRACE_S + 10.0, took  # deadline, backstop, a loaded machine's slack


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False
