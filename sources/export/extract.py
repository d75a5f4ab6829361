"""Read raw events from MongoDB and the graph, newest-since-watermark, as validated row batches.

MongoDB is read with ``find`` only (filters, sort, batch_size): the embedded
server's aggregation engine gives wrong answers (see docs/embedded-stores.md). The graph is read with
portable Cypher paged by user id ranges (scalar parameters only, so both adapters work).
A document or edge that cannot become a row raises ``BadRecord`` naming it.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sources.datasets.enrich import DEVICES
from sources.stores import mongo, mongo_scan
from sources.stores.clients import Stores
from sources.stores.graph import GraphStore

ReviewRow = tuple[str, int, int, float, datetime]
SessionRow = tuple[str, int, int, datetime, float, str, float, int]
EdgeRow = tuple[str, int, int, datetime, float | None]

EDGE_KINDS = ("RATED", "WATCHED")
EDGE_VALUE = {"RATED": "score", "WATCHED": "duration"}  # the property kept as raw_graph_edges.value


class BadRecord(ValueError):
    """A source record that cannot be exported; the message names it and what is wrong."""


def _int(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BadRecord(f"{where}: {what} is {value!r}, not an integer")
    return value


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRecord(f"{where}: {what} is {value!r}, not a finite number")
    return float(value)


def _time(value: Any, what: str, where: str) -> datetime:
    if not isinstance(value, datetime):
        raise BadRecord(f"{where}: {what} is {value!r}, not a date-time")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _batches(rows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def prefetch(batches: Iterator[list[Any]], depth: int = 2) -> Iterator[list[Any]]:
    """Read the next batches in a thread while the caller writes the current one to PostgreSQL.

    At most ``depth`` batches wait (bounded memory). A reader error is raised in the caller;
    if the caller stops early, the reader thread stops at its next batch.
    """
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the caller's thread
            put(("error", exc))

    reader = threading.Thread(target=read, name="export-reader", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=10)


# MongoDB ----------------------------------------------------------------------------------


#: the API's mutation log records whose event may not be in the feature tables yet: written
#: with their claim time, possibly after an export moved past it (api/queries/writes.py)
NOT_PUSHED: dict[str, Any] = {"pushed": {"$ne": True}}


def unpushed_writes(db: mongo.MongoDb) -> tuple[list[str], list[int]]:
    """(review ids, playback user ids) of the API's writes not marked pushed to the feature store.

    An incremental export reads them whatever their event time: a write cut by a crash, or
    finished by a retry long after its claim, carries a time that can be older than the
    watermark, and would otherwise reach the features only after a ``--full`` export."""
    reviews: list[str] = []
    users: set[int] = set()
    for doc in db[mongo.MUTATION_LOG].find(NOT_PUSHED):
        result = doc.get("result") or {}
        if doc.get("kind") == "rateMovie" and isinstance(result.get("review_id"), str):
            reviews.append(result["review_id"])
        elif doc.get("kind") == "recordPlayback" and isinstance(result.get("user_id"), int):
            users.add(result["user_id"])
    return reviews, sorted(users)


def review_batches(
    stores: Stores, since: datetime | None, batch_size: int, also: list[str] | None = None
) -> Iterator[list[ReviewRow]]:
    """Reviews with ``ts >= since`` (all when None), oldest first, then the reviews ``also`` names
    that are older (``unpushed_writes``). ``>=`` re-reads the watermark's own instant so a review
    that arrived later with that same time is not missed; landing is idempotent, so re-read rows
    change nothing."""
    # A scan in bounded memory on the embedded server too (sources/stores/mongo_scan.py)
    cursor = mongo_scan.scan(stores, "reviews", field="ts", since=since, batch_size=batch_size)

    def docs() -> Iterator[dict[str, Any]]:
        yield from cursor
        if since is not None and also:
            for doc in mongo.live(stores.mongo, "reviews").find({"_id": {"$in": also}}):
                if not isinstance(doc.get("ts"), datetime) or _time(doc["ts"], "ts", "") < since:
                    yield doc  # (newer ones were read above)

    def rows() -> Iterator[ReviewRow]:
        for doc in docs():
            where = f"review {doc.get('_id')!r}"
            yield (
                str(doc["_id"]),
                _int(doc.get("user_id"), "user_id", where),
                _int(doc.get("movie_id"), "movie_id", where),
                _number(doc.get("rating"), "rating", where),
                _time(doc.get("ts"), "ts", where),
            )

    return _batches(rows(), batch_size)


class PlaybackReader:
    """Sessions of the playback documents updated at or after ``since`` (all when None), and of
    the documents of ``also_users`` (``unpushed_writes``).

    The watermark is the documents' ``updated_at`` (what the filter reads), so a writer that
    appends a session must set ``updated_at`` to when it wrote. Every session of a re-read
    document is yielded, late ones included; sessions landed before are skipped at landing.
    ``newest_update`` is the newest ``updated_at`` read: the next watermark.
    """

    def __init__(
        self, stores: Stores, since: datetime | None, batch_size: int, also_users: list[int] | None = None
    ) -> None:
        self.since, self.batch_size = since, batch_size
        self._db, self._also = stores.mongo, also_users or []
        self.newest_update = since
        # A playback document holds every session of one user: fetch few at a time
        self._cursor = mongo_scan.scan(stores, "playback_logs", field="updated_at", since=since,
                                       batch_size=max(1, batch_size // 500))  # fmt: skip

    def batches(self) -> Iterator[list[SessionRow]]:
        return _batches(self._rows(), self.batch_size)

    def _docs(self) -> Iterator[dict[str, Any]]:
        """The documents updated since the watermark, then the older ones of ``also_users``
        (users with an API write not marked pushed, see ``unpushed_writes``)."""
        yield from self._cursor
        if self.since is None or not self._also:
            return
        for doc in mongo.live(self._db, "playback_logs").find({"_id": {"$in": self._also}}):
            updated = doc.get("updated_at")
            if not isinstance(updated, datetime) or _time(updated, "updated_at", "") < self.since:
                yield doc

    def _rows(self) -> Iterator[SessionRow]:
        for doc in self._docs():
            user_where = f"playback_logs document {doc.get('_id')!r}"
            user_id = _int(doc.get("user_id"), "user_id", user_where)
            updated = _time(doc.get("updated_at"), "updated_at", user_where)
            self.newest_update = max(updated, self.newest_update or updated)
            sessions = doc.get("sessions")
            if not isinstance(sessions, list):
                raise BadRecord(f"{user_where}: sessions is {type(sessions).__name__}, not a list")
            for s in sessions:
                if not isinstance(s, dict):
                    raise BadRecord(f"{user_where}: a session is {s!r}, not a document")
                yield _session_row(user_id, s, f"{user_where}, session {s.get('session_id')!r}")


def _session_row(user_id: int, s: dict[str, Any], where: str) -> SessionRow:
    session_id = s.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise BadRecord(f"{where}: session_id is missing")
    device = s.get("device")
    if device not in DEVICES:
        raise BadRecord(f"{where}: device is {device!r}, not one of {', '.join(DEVICES)}")
    return (
        session_id,
        user_id,
        _int(s.get("movie_id"), "movie_id", where),
        _time(s.get("timestamp"), "timestamp", where),
        _number(s.get("duration_seconds"), "duration_seconds", where),
        str(device),
        _number(s.get("buffer_rate"), "buffer_rate", where),
        _int(s.get("errors"), "errors", where),
    )


# graph ------------------------------------------------------------------------------------


def user_id_pages(graph: GraphStore, batch_size: int) -> list[tuple[int, int]]:
    """Inclusive user id ranges holding about ``batch_size`` timestamped edges each."""
    ids = [int(r["id"]) for r in graph.read("MATCH (u:User) RETURN u.id AS id ORDER BY id")]
    if not ids:
        return []
    edges = sum(int(graph.read(f"MATCH ()-[r:{kind}]->() RETURN count(r) AS n")[0]["n"]) for kind in EDGE_KINDS)
    per_page = max(1, batch_size * len(ids) // max(edges, 1))
    return [(ids[i], ids[min(i + per_page, len(ids)) - 1]) for i in range(0, len(ids), per_page)]


def edge_batches(
    graph: GraphStore, kind: str, since_epoch: int | None, pages: list[tuple[int, int]]
) -> Iterator[list[EdgeRow]]:
    """``kind`` edges (RATED or WATCHED) with ``ts >= since_epoch``, one page of users at a time."""
    assert kind in EDGE_KINDS  # interpolated into Cypher
    value = EDGE_VALUE[kind]
    since = -(1 << 62) if since_epoch is None else since_epoch
    cypher = (
        f"MATCH (u:User)-[r:{kind}]->(m:Movie) WHERE u.id >= $lo AND u.id <= $hi AND r.ts >= $since "
        f"RETURN u.id AS u, m.id AS m, r.ts AS ts, r.{value} AS v"
    )
    for lo, hi in pages:
        batch: list[EdgeRow] = []
        for r in graph.read(cypher, {"lo": lo, "hi": hi, "since": since}):
            where = f"graph {kind} edge User {r['u']!r} → Movie {r['m']!r}"
            ts = _int(r["ts"], "ts", where)
            v = r["v"]
            batch.append(
                (
                    kind,
                    _int(r["u"], "user id", where),
                    _int(r["m"], "movie id", where),
                    datetime.fromtimestamp(ts, tz=UTC),
                    None if v is None else _number(v, value, where),
                )
            )
        if batch:
            yield batch
