"""Where the three systems of record are, and their clients, opened once and closed once.

``resolve_endpoints`` maps Settings to URIs, starting the embedded server for every store
whose URI is unset. ``Stores`` holds one SQLAlchemy engine, one MongoClient and one graph
adapter for the life of a command or of the API process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pymongo
from pgvector import Vector
from pgvector.psycopg.vector import VectorBinaryDumper
from pymongo.database import Database
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from sources.errors import StoreUnavailable, first_line
from sources.settings import OfflineTarget, Settings, redact
from sources.stores import deadline
from sources.stores.embedded import EmbeddedStores, Notify, print_to_stderr
from sources.stores.failures import Breakers, store_call
from sources.stores.graph import GraphStore, open_graph


@dataclass(frozen=True)
class Endpoints:
    pg_dsn: str
    mongo_uri: str
    graph_uri: str
    #: Bolt URI of the embedded FalkorDB (the neo4j adapter's way in); None when external.
    graph_bolt_uri: str | None
    embedded: frozenset[str]
    #: the offline feature engine and where its tables live (Settings.offline_engine and friends)
    offline: OfflineTarget = field(default_factory=OfflineTarget)

    @property
    def sqlalchemy_url(self) -> str:
        """The DSN with the psycopg 3 driver named, as SQLAlchemy and Feast's registry want it."""
        url = make_url(self.pg_dsn)
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)

    def redacted(self) -> dict[str, str]:
        return {"postgres": redact(self.pg_dsn), "mongo": redact(self.mongo_uri), "graph": redact(self.graph_uri)}


def resolve_endpoints(settings: Settings, *, start: bool = True, notify: Notify = print_to_stderr) -> Endpoints:
    """URIs for every store; embedded servers are started (or reused) where none is set."""
    embedded = EmbeddedStores(settings.data_dir, notify)
    names: set[str] = set()

    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    pg = secret(settings.pg_dsn)
    if pg is None:
        names.add("postgres")
        pg = embedded.ensure_postgres() if start else ""
    mongo = secret(settings.mongo_uri)
    if mongo is None:
        names.add("mongo")
        mongo = embedded.ensure_mongo() if start else ""
    graph, bolt = secret(settings.graph_uri), None
    if graph is None:
        names.add("graph")
        graph, bolt = embedded.ensure_falkordb() if start else ("", None)
    return Endpoints(pg, mongo, graph, bolt, frozenset(names), settings.offline_target)


def pg_engine(endpoints: Endpoints, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine on psycopg 3 whose connections send pgvector ``Vector`` parameters
    in binary (``binary_vectors``)."""
    engine = create_engine(endpoints.sqlalchemy_url, pool_pre_ping=True, **kwargs)
    event.listen(engine, "connect", binary_vectors)
    return engine


def binary_vectors(dbapi_connection: Any, connection_record: Any) -> None:
    """Dump ``pgvector.Vector`` parameters in PostgreSQL's binary format: 4 bytes a float, which
    the server copies, where the text form is 384 decimal numbers to print and parse (searchMovies
    sends one per request). The dumper names no type, so the server takes it from the statement
    (``CAST(:v AS vector)``) and nothing is looked up per connection. Other parameters are
    untouched."""
    dbapi_connection.adapters.register_dumper(Vector, VectorBinaryDumper)


def bound_statement(conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                    executemany: bool) -> None:  # fmt: skip
    """Under a request's budget (``deadline.within``) PostgreSQL cancels a statement when the
    budget runs out (``statement_timeout``); outside one, statements run unbounded again.

    Listens on ``Stores.pg_reads`` only: its connections autocommit, so a ``SET`` holds at once
    and the value kept in the connection's ``info`` is the server's (no rollback can revert it).
    The timeout is set in whole seconds, rounded up, and only when the connection's current one
    is stricter than the budget or over a second more lenient: most requests reuse a
    connection whose timeout already fits, and pay no extra round trip."""
    left = deadline.remaining()
    current: int = conn.info.get("statement_timeout_ms", 0)
    if left is None:
        wanted = 0
    else:
        left_ms = max(1, int(left * 1000))
        fits = current and left_ms <= current <= left_ms + 1000
        wanted = current if fits else math.ceil(left_ms / 1000) * 1000
    if wanted != current:
        cursor.execute(f"SET statement_timeout = {int(wanted)}")
        conn.info["statement_timeout_ms"] = wanted


class Stores:
    """Open clients to all three stores. Use as a context manager so they are closed."""

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints
        timeout_ms = int(settings.connect_timeout_s * 1000)
        connect_args = {
            "connect_timeout": int(settings.connect_timeout_s),
            # set once per session, so the vector searches pay no extra round trip for it
            "options": f"-c hnsw.ef_search={int(settings.hnsw_ef_search)}",
        }
        self.pg: Engine = pg_engine(endpoints, connect_args=connect_args)
        #: a pool of its own for the API's reads, which need no transaction around them: each
        #: statement commits alone, which saves the BEGIN and ROLLBACK round trips a
        #: transactional checkout adds (~0.2 ms of a ~0.6 ms read, measured), and each is
        #: bounded by its request's budget (``bound_statement``)
        self.pg_reads: Engine = pg_engine(endpoints, connect_args=connect_args, isolation_level="AUTOCOMMIT")
        event.listen(self.pg_reads, "before_cursor_execute", bound_statement)
        self.mongo_client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            endpoints.mongo_uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            tz_aware=True,
        )
        self.mongo: Database[dict[str, Any]] = self.mongo_client[settings.mongo_db]
        self.graph: GraphStore = open_graph(
            endpoints.graph_uri, settings.graph_name, settings.connect_timeout_s, settings.graph_timeout_s
        )
        #: one circuit breaker per store name, fed by every ``call`` and by ``check``'s pings
        self.breakers = Breakers(
            settings.store_cooldown_s,
            pings={"postgres": self.ping_pg, "mongo": self.ping_mongo, "graph": self.graph.ping},
        )

    @classmethod
    def open(cls, settings: Settings, *, notify: Notify = print_to_stderr) -> Stores:
        return cls(settings, resolve_endpoints(settings, notify=notify))

    def call(self, store: str) -> AbstractContextManager[None]:
        """``with stores.call("mongo"): …``: ``store_call`` through this process's breaker for
        ``store``, so while it is open the call fails at once with ``StoreDown``."""
        return store_call(store, self.breakers, connect_timeout_s=self.settings.connect_timeout_s)

    def pings(self) -> dict[str, Callable[[], None]]:
        """Each store's ping, by the name ``call`` uses; it always reaches the store (no
        breaker) and tells the breaker what it found, so a store that is back closes it."""

        def fed(store: str, ping: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    ping()
                except Exception as exc:
                    self.breakers[store].failed(first_line(exc))
                    raise
                self.breakers[store].succeeded()

            return run

        return {
            name: fed(name, ping)
            for name, ping in (("postgres", self.ping_pg), ("mongo", self.ping_mongo), ("graph", self.graph.ping))
        }

    def check(self) -> dict[str, str | None]:
        """Ping every store; maps store name to None (answers) or the reason it does not."""
        result: dict[str, str | None] = {}
        for name, probe in self.pings().items():
            try:
                probe()
                result[name] = None
            except StoreUnavailable as exc:
                result[name] = str(exc)
        return result

    def ping_pg(self) -> None:
        try:
            with self.pg.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise StoreUnavailable("PostgreSQL", redact(self.endpoints.pg_dsn), first_line(exc)) from exc

    def ping_mongo(self) -> None:
        try:
            self.mongo_client.admin.command("ping")
        except Exception as exc:
            raise StoreUnavailable("MongoDB", redact(self.endpoints.mongo_uri), first_line(exc)) from exc

    def mongo_file(self) -> Path | None:
        """The SQLite file of the embedded Mongo server's database (``sources.stores.mongo_bulk``
        writes it, ``sources.stores.mongo_scan`` reads it), or None for an external MongoDB."""
        if "mongo" not in self.endpoints.embedded:
            return None
        return EmbeddedStores(self.settings.data_dir).mongo_database_file(self.settings.mongo_db)

    def require_all(self) -> None:
        """Raise StoreUnavailable for the first store that does not answer."""
        self.ping_pg()
        self.ping_mongo()
        self.graph.ping()

    def close(self) -> None:
        self.graph.close()
        self.mongo_client.close()
        self.pg.dispose()
        self.pg_reads.dispose()

    def __enter__(self) -> Stores:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
