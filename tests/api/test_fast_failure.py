"""A dead store costs one request its timeout; after that its fields fail at once (circuit
breaker, sources/stores/failures.py), and they answer again soon after the store is back.

Real outages, no mocks: the app reaches the session's Mongo or FalkorDB through a TCP gate
on its own port; shutting the gate refuses new connections and cuts the open ones, as a
stopped server does, and opening it again is the server coming back.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores.clients import Stores
from tests.api.test_resilience import client_with, dead_port, errors_by_path

MONGO_QUERY = "{ user(id: 1) { age reviews(first: 3) { rating } } }"
GRAPH_QUERY = "{ user(id: 1) { age following(first: 3) { userId } } }"


class Gate:
    """A TCP forwarder on ``port`` to a real server, which can be shut and opened again."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 0)
        self.port = dead_port()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._carried: list[socket.socket] = []

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        """Nothing listens any more and every connection carried so far is cut."""
        listener, self._listener = self._listener, None
        if listener is not None:
            _cut(listener)  # shutdown wakes the accepting thread (close alone would not)
        with self._lock:
            carried, self._carried = self._carried, []
        for sock in carried:
            _cut(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                near, _ = listener.accept()
            except OSError:
                return
            try:
                far = socket.create_connection(self.target, timeout=5)
                far.settimeout(None)
            except OSError:
                _cut(near)
                continue
            with self._lock:
                self._carried += [near, far]
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _cut(source)
        _cut(sink)


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def gate_to(stores: Stores) -> Iterator[dict[str, Gate]]:
    gates = {
        "mongo": Gate(stores.endpoints.mongo_uri),
        "graph": Gate(stores.endpoints.graph_uri),
    }
    for gate in gates.values():
        gate.open()
    yield gates
    for gate in gates.values():
        gate.shut()


def through(gate: Gate, store: str) -> dict[str, Any]:
    if store == "mongo":
        return {"mongo_uri": f"mongodb://127.0.0.1:{gate.port}/"}
    return {"graph_uri": f"falkordb://127.0.0.1:{gate.port}"}


def timed(client: TestClient, query: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.post("/graphql", json={"query": query})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return elapsed, body


def assert_partial(body: dict[str, Any], field: str) -> None:
    assert body["data"]["user"]["age"] == 24 and body["data"]["user"][field] is None
    assert errors_by_path(body) == {f"user.{field}": "STORE_UNAVAILABLE"}


def answered(body: dict[str, Any], field: str) -> bool:
    return not body.get("errors") and len(body["data"]["user"][field]) == 3


@pytest.mark.parametrize(
    ("store", "query", "field"), [("mongo", MONGO_QUERY, "reviews"), ("graph", GRAPH_QUERY, "following")]
)
def test_a_dead_store_fails_fast_after_the_first_failure_and_recovers(
    settings: Settings,
    stores: Stores,
    loaded: IngestReport,
    gate_to: dict[str, Gate],
    store: str,
    query: str,
    field: str,
) -> None:
    gate = gate_to[store]
    with client_with(settings, stores, **through(gate, store)) as client:  # connect timeout 1 s
        assert answered(timed(client, query)[1], field)
        gate.shut()
        first, body = timed(client, query)
        assert_partial(body, field)
        times = []
        for _ in range(20):
            elapsed, body = timed(client, query)
            assert_partial(body, field)
            times.append(elapsed)
        p99 = statistics.quantiles(times, n=100, method="inclusive")[98]
        print(
            f"\n{store} down: first failure {first * 1000:.0f} ms; then 20 requests "
            f"p50 {statistics.median(times) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
        )
        print("   each (ms):", " ".join(f"{t * 1000:.0f}" for t in times))
        # Without the breaker each request costs the 1 s timeout. One request in 20 may still
        # stall that long on a loaded machine (seen once with the suite's two workers on 2 cores,
        # the stall coinciding with the change feed's own read failing), so the test allows one.
        assert sum(t >= 1.0 for t in times) <= 1 and statistics.median(times) < 0.2, times

        gate.open()
        back = time.perf_counter()
        while not answered(timed(client, query)[1], field):
            assert time.perf_counter() - back < 10, f"{store} fields still fail 10 s after it came back"
            time.sleep(0.1)
        recovery = time.perf_counter() - back
        print(f"{store} back: its field answers {recovery:.2f} s later (cool-down {settings.store_cooldown_s:g} s)")
        assert recovery < 5.0


def test_readyz_pings_the_store_itself_and_closes_the_breaker(
    settings: Settings, stores: Stores, loaded: IngestReport, gate_to: dict[str, Gate]
) -> None:
    gate = gate_to["mongo"]
    # A cool-down far longer than the test: only /readyz can bring the field back in time.
    patient = settings.model_copy(update={"store_cooldown_s": 600.0})
    with client_with(patient, stores, **through(gate, "mongo")) as client:
        gate.shut()
        assert_partial(timed(client, MONGO_QUERY)[1], "reviews")
        breakers = client.app.state.services.stores.breakers  # type: ignore[attr-defined]
        assert breakers.states()["mongo"] == "open"
        report = client.get("/readyz")
        assert report.status_code == 503 and report.json()["stores"]["mongo"]["ok"] is False  # a real ping
        gate.open()
        deadline = time.monotonic() + 10
        while (report := client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, report.json()
            time.sleep(0.2)
        assert breakers.states()["mongo"] == "closed"
        assert answered(timed(client, MONGO_QUERY)[1], "reviews")
