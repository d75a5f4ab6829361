"""The heavy lane (api/lane.py): a real second process answers the expensive operations.

The front app runs over the session's stores with the lane plugged in; the lane is the real
``uvicorn --factory api.app:app_from_env`` subprocess on a Unix socket, at a lower priority.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app, plug_heavy_lane
from api.fairness import EXPENSIVE_COST
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores.clients import Stores
from tests.api.conftest import Query

# 20 movies, two graph steps each: cost well over EXPENSIVE_COST, answered in well under a second
HEAVY = "{ movies(first: 20) { edges { node { id title neighbours(depth: 2, first: 50) { movie { id title } } } } } }"
LIGHT = "{ movie(id: 1) { title } }"


def _lane(client: TestClient) -> dict[str, Any]:
    report: dict[str, Any] = client.get("/readyz").json()["serving"]["heavy_lane"]
    return report


@pytest.fixture(scope="module")
def front(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[TestClient]:
    app = create_app(settings, stores=stores, configure=plug_heavy_lane)
    with TestClient(app) as client:
        deadline = time.monotonic() + 180
        while not _lane(client)["ready"]:
            assert _lane(client)["ok"], "the lane process died while starting"
            assert time.monotonic() < deadline, "the lane did not start within 180 s"
            time.sleep(0.5)
        yield client


def _post(client: TestClient, query: str) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_heavy_query_is_expensive() -> None:
    from graphql import parse

    from api.cost import query_cost
    from api.schema import build_schema

    assert query_cost(build_schema()._schema, parse(HEAVY)) >= EXPENSIVE_COST
    assert query_cost(build_schema()._schema, parse(LIGHT)) < EXPENSIVE_COST


def test_an_expensive_query_is_answered_by_the_lane_as_the_front_would(front: TestClient, gql: Query) -> None:
    before = _lane(front)
    answer = _post(front, HEAVY)
    assert "errors" not in answer and len(answer["data"]["movies"]["edges"]) == 20
    assert answer == gql(HEAVY)  # the same app without a lane, in this process
    after = _lane(front)
    assert after["forwarded"] == before["forwarded"] + 1 and after["fell_back"] == before["fell_back"]
    assert _post(front, LIGHT)["data"]["movie"]["title"]
    assert _lane(front)["forwarded"] == after["forwarded"]  # light queries stay in the front


def test_the_lane_runs_at_a_lower_priority(front: TestClient, settings: Settings) -> None:
    lane_pid = _lane(front)["pid"]
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, lane_pid) == min(19, own + settings.heavy_lane_nice)


def test_an_error_in_the_lane_comes_back_with_its_code(front: TestClient) -> None:
    answer = _post(front, HEAVY.replace("movies(first: 20)", 'movies(first: 20, after: "bm90LWEtY3Vyc29y")'))
    assert answer["data"] is None or answer["data"]["movies"] is None
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_a_dead_lane_costs_nothing_but_the_lane(front: TestClient, gql: Query) -> None:
    """Runs last in this module: it kills the lane; the front answers expensive queries itself."""
    lane_pid = _lane(front)["pid"]
    os.kill(lane_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _lane(front)["ok"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    before = _lane(front)["fell_back"]
    assert _post(front, HEAVY) == gql(HEAVY)
    assert _lane(front)["fell_back"] == before + 1


def test_the_lane_dies_with_its_parent_even_on_sigkill(settings: Settings, stores: Stores) -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import sys, time
            from api.lane import HeavyLane
            from sources.settings import Settings
            lane = HeavyLane.start(Settings())
            print(lane.process.pid, flush=True)
            time.sleep(600)
        """),
        ],
        stdout=subprocess.PIPE,
        env=dict(os.environ),
    )
    assert parent.stdout is not None
    with parent.stdout:
        lane_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 90  # the lane may be mid-start: it stops once its start-up ends
    while _alive(lane_pid):
        assert time.monotonic() < deadline, "the lane outlived its killed parent"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"  # a zombie waits for init: it is gone
    except FileNotFoundError:
        return False
