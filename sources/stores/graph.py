"""Graph access: one small interface, two adapters running the same (portable) Cypher.

- ``Neo4jGraph``: the official neo4j driver, managed transactions (the driver retries
  transient failures). Used for Neo4j in production, and in tests against FalkorDB's Bolt
  port for parity.
- ``FalkorGraph``: FalkorDB's native client over the Redis protocol. In embedded mode all
  bulk writes go through it: FalkorDB's Bolt server crashes on list-of-map parameters.

Rows come back as plain dicts of plain values (nodes and relationships become their
property dicts), so callers never see driver types and both adapters compare equal.
Store times as integer epoch seconds: portable across Neo4j and FalkorDB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

from sources.errors import StoreUnavailable
from sources.settings import redact
from sources.stores import deadline

Row = dict[str, Any]
Params = Mapping[str, Any]


class GraphWriter(Protocol):
    def run(self, cypher: str, params: Params | None = None) -> None: ...


class GraphStore(Protocol):
    name: str

    def read(self, cypher: str, params: Params | None = None) -> list[Row]: ...

    def write(self, cypher: str, params: Params | None = None) -> None: ...

    def replace(self, load: Callable[[GraphWriter], None]) -> None:
        """Run ``load`` against an empty staging graph and make it the graph only if it
        completes: readers see the old graph or the new one, never half of one."""

    def discard_staging(self) -> bool:
        """Remove what an interrupted ``replace`` left behind; True if there was something."""

    def ping(self) -> None: ...

    def close(self) -> None: ...


def _plain(value: Any) -> Any:
    """Driver objects (nodes, relationships, paths) to plain Python values."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    props = getattr(value, "properties", None)  # FalkorDB Node / Edge
    if isinstance(props, dict):
        return {k: _plain(v) for k, v in props.items()}
    if hasattr(value, "items") and hasattr(value, "element_id"):  # neo4j Node / Relationship
        return {k: _plain(v) for k, v in value.items()}
    return value


class FalkorGraph:
    """FalkorDB through its native (Redis protocol) client.

    The client connects on first use (its constructor already talks to the server), so a
    process can start while the graph is down and only the calls that need it fail.
    """

    def __init__(self, host: str, port: int, graph: str, password: str | None = None,
                 timeout_s: float = 60.0) -> None:  # fmt: skip
        self.name = graph
        self._uri = f"falkordb://{host}:{port}"
        self._connect_args = {"host": host, "port": port, "password": password, "socket_timeout": timeout_s,
                              "socket_connect_timeout": min(timeout_s, 5.0)}  # fmt: skip
        self._client: Any = None

    @property
    def _db(self) -> Any:
        if self._client is None:
            from falkordb import FalkorDB

            try:
                self._client = FalkorDB(**self._connect_args)
            except Exception as exc:
                raise StoreUnavailable("FalkorDB", self._uri, str(exc)) from exc
        return self._client

    def _graph(self, name: str | None = None) -> Any:
        return self._db.select_graph(name or self.name)

    def read(self, cypher: str, params: Params | None = None) -> list[Row]:
        try:
            left = deadline.remaining()  # a request's budget, if any, bounds the query
            timeout_ms = None if left is None else max(1, int(left * 1000))
            result = self._graph().ro_query(cypher, dict(params or {}), timeout=timeout_ms)
        except Exception as exc:
            # FalkorDB refuses queries on a graph that was never written (or was lost); an
            # empty graph answers nothing, as Neo4j's empty database would.
            if "empty key" in str(exc):
                return []
            raise
        header = [column[1] for column in result.header]
        return [dict(zip(header, (_plain(v) for v in row), strict=True)) for row in result.result_set]

    def write(self, cypher: str, params: Params | None = None) -> None:
        self._graph().query(cypher, dict(params or {}))

    def replace(self, load: Callable[[GraphWriter], None]) -> None:
        staging_name = f"{self.name}__staging"
        self.discard_staging()  # an earlier run died part-way
        staging = self._graph(staging_name)
        try:
            load(_FalkorWriter(staging))
            # RENAME is atomic in Redis and replaces the target key (the live graph).
            self._db.connection.rename(staging_name, self.name)
        except BaseException:
            self.discard_staging()
            raise
        # The server snapshots only every 300 s; a kill before that would lose the new graph
        # (seen: a machine reset right after `marquee up`). A load is rare, so save it now.
        self._db.connection.save()

    def discard_staging(self) -> bool:
        staging_name = f"{self.name}__staging"
        if staging_name not in self._db.list_graphs():
            return False
        self._graph(staging_name).delete()
        return True

    def ping(self) -> None:
        try:
            self._db.connection.ping()
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable("FalkorDB", self._uri, str(exc)) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.connection.close()


class _FalkorWriter:
    def __init__(self, graph: Any) -> None:
        self._graph = graph

    def run(self, cypher: str, params: Params | None = None) -> None:
        self._graph.query(cypher, dict(params or {}))


class Neo4jGraph:
    """Neo4j (or any Bolt server) through the official driver and managed transactions."""

    def __init__(
        self, uri: str, database: str | None, auth: tuple[str, str] | None = None, timeout_s: float = 5.0
    ) -> None:
        import neo4j

        self.name = database or "neo4j"
        self._database = database
        self._uri = redact(uri)
        self._driver = neo4j.GraphDatabase.driver(
            uri, auth=auth, connection_timeout=timeout_s, max_transaction_retry_time=15.0
        )

    def read(self, cypher: str, params: Params | None = None) -> list[Row]:
        def work(tx: Any) -> list[Row]:
            return [{k: _plain(v) for k, v in record.items()} for record in tx.run(cypher, dict(params or {}))]

        left = deadline.remaining()  # a request's budget, if any, bounds the transaction
        if left is not None:
            import neo4j

            work = neo4j.unit_of_work(timeout=max(left, 0.001))(work)
        with self._driver.session(database=self._database) as session:
            rows: list[Row] = session.execute_read(work)
            return rows

    def write(self, cypher: str, params: Params | None = None) -> None:
        with self._driver.session(database=self._database) as session:
            session.execute_write(lambda tx: tx.run(cypher, dict(params or {})).consume())

    def replace(self, load: Callable[[GraphWriter], None]) -> None:
        # One explicit transaction: Neo4j commits all of it or none. Very large loads need
        # a Neo4j sized for it (dbms.memory.transaction.total.max); see the README.
        with (
            self._driver.session(database=self._database) as session,
            session.begin_transaction() as tx,
        ):
            tx.run("MATCH (n) DETACH DELETE n").consume()
            load(_Neo4jWriter(tx))
            tx.commit()

    def discard_staging(self) -> bool:
        return False  # replace() is one transaction: an interrupted one rolled back

    def ping(self) -> None:
        try:
            self._driver.verify_connectivity()
        except Exception as exc:
            raise StoreUnavailable("Neo4j", self._uri, str(exc)) from exc

    def close(self) -> None:
        self._driver.close()


class _Neo4jWriter:
    def __init__(self, tx: Any) -> None:
        self._tx = tx

    def run(self, cypher: str, params: Params | None = None) -> None:
        self._tx.run(cypher, dict(params or {})).consume()


def open_graph(uri: str, graph_name: str, timeout_s: float = 5.0, query_timeout_s: float = 60.0) -> GraphStore:
    """The adapter for ``uri``: ``falkordb://`` → native client; ``bolt://``/``neo4j://`` → driver."""
    parts = urlsplit(uri)
    if parts.scheme == "falkordb":
        return FalkorGraph(
            parts.hostname or "127.0.0.1", parts.port or 6379, graph_name, parts.password, query_timeout_s
        )
    auth = (parts.username, parts.password or "") if parts.username else None
    bare = parts._replace(netloc=f"{parts.hostname}:{parts.port or 7687}").geturl()
    # Neo4j: the server's default database unless the URI path names one (neo4j://h:p/movies).
    database = parts.path.strip("/") or None
    return Neo4jGraph(bare, database, auth, timeout_s)


@contextmanager
def graph_session(uri: str, graph_name: str) -> Iterator[GraphStore]:
    graph = open_graph(uri, graph_name)
    try:
        yield graph
    finally:
        graph.close()
