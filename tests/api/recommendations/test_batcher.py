"""No N+1: a page of items costs a small constant number of queries per store.

The app here runs on its own clients to the same embedded stores, instrumented at the
client boundary: SQLAlchemy's ``before_cursor_execute`` event for PostgreSQL, a pymongo
``CommandListener`` for Mongo, and a counting wrapper around the graph adapter's reads.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from sqlalchemy import event
from starlette.testclient import TestClient

from api.app import create_app
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores.clients import Stores
from sources.stores.graph import GraphStore, Params, Row

#: the app's own background threads (the change feed's poll, the write pusher): not a page's queries
BACKGROUND = ("mutation-feed", "write-pusher")


class MongoCommands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if threading.current_thread().name not in BACKGROUND:
            self.commands[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class CountingGraph:
    """The real graph adapter, with its reads counted."""

    def __init__(self, inner: GraphStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.reads: list[str] = []

    def read(self, cypher: str, params: Params | None = None) -> list[Row]:
        self.reads.append(cypher)
        return self.inner.read(cypher, params)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


@dataclass
class Counts:
    sql: list[str] = field(default_factory=list)
    mongo: MongoCommands = field(default_factory=MongoCommands)
    graph: CountingGraph | None = None

    def reset(self) -> None:
        self.sql.clear()
        self.mongo.commands.clear()
        assert self.graph is not None
        self.graph.reads.clear()

    def snapshot(self) -> dict[str, int]:
        assert self.graph is not None
        return {
            "postgres": len(self.sql),
            "mongo": sum(n for name, n in self.mongo.commands.items() if name not in ("getMore", "endSessions")),
            "graph": len(self.graph.reads),
        }


@pytest.fixture(scope="module")
def counted(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[tuple[TestClient, Counts]]:
    counts = Counts()
    own = Stores(settings, stores.endpoints)
    own.mongo_client.close()
    own.mongo_client = pymongo.MongoClient(stores.endpoints.mongo_uri, tz_aware=True, event_listeners=[counts.mongo])
    own.mongo = own.mongo_client[settings.mongo_db]
    counts.graph = CountingGraph(own.graph)
    own.graph = counts.graph  # type: ignore[assignment]

    def on_sql(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.strip().upper() != "SELECT 1":  # pool pre-ping
            counts.sql.append(statement)

    for engine in (own.pg, own.pg_reads):
        event.listen(engine, "before_cursor_execute", on_sql)
    try:
        with TestClient(create_app(settings, stores=own)) as client:
            yield client, counts
    finally:
        for engine in (own.pg, own.pg_reads):
            event.remove(engine, "before_cursor_execute", on_sql)
        own.graph = counts.graph.inner
        own.close()


MOVIE_PAGE = """query($first: Int!) { movies(first: $first) { edges { node {
  title year genres
  people { actors { freebaseId } directors { freebaseId } writers { freebaseId } }
  ratingStats { count average histogram }
} } } }"""

USER_PAGE = """query($first: Int!) { users(first: $first) { edges { node {
  age occupation subscription { tier } payments(first: 2) { amount }
  reviews(first: 3) { rating movie { title genres } }
  recentSessions(first: 2) { device }
  following(first: 3) { age }
  followers(first: 3) { age }
  watched(first: 2) { movie { title } }
} } } }"""


def run(client: TestClient, counts: Counts, query: str, first: int) -> tuple[dict[str, Any], dict[str, int]]:
    counts.reset()
    response = client.post("/graphql", json={"query": query, "variables": {"first": first}})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body["errors"]
    return body, counts.snapshot()


def test_a_page_of_50_movies_costs_a_constant_number_of_queries(counted: tuple[TestClient, Counts]) -> None:
    client, counts = counted
    body, fifty = run(client, counts, MOVIE_PAGE, 50)
    nodes = [e["node"] for e in body["data"]["movies"]["edges"]]
    assert len(nodes) == 50
    assert nodes[0]["title"] == "Toy Story" and nodes[0]["ratingStats"]["count"] == 452
    assert all(n["genres"] for n in nodes) and sum(bool(n["people"]["actors"]) for n in nodes) > 40
    # PostgreSQL: page + total count + genres; Mongo: catalog lookup + one find; graph: one read.
    assert fifty == {"postgres": 3, "mongo": 2, "graph": 1}, counts.sql
    _, five = run(client, counts, MOVIE_PAGE, 5)
    assert five == fifty  # the same for 5 as for 50: no per-item queries


def test_a_page_of_users_with_every_store_costs_a_constant_number_of_queries(
    counted: tuple[TestClient, Counts],
) -> None:
    client, counts = counted
    body, twenty = run(client, counts, USER_PAGE, 20)
    users = [e["node"] for e in body["data"]["users"]["edges"]]
    assert len(users) == 20 and users[0]["age"] == 24
    _, three = run(client, counts, USER_PAGE, 3)
    for snapshot in (twenty, three):
        # users page + count, payments, followed/follower users, reviewed/watched movies and their
        # genres; movies arrive from Mongo and the graph at different moments, so the movie and
        # genre loaders may run in one batch or two, but never once per user.
        assert 7 <= snapshot["postgres"] <= 9, counts.sql
        assert snapshot["mongo"] == 3  # catalog, reviews, playback logs
        assert snapshot["graph"] == 3  # following, followers, watched
