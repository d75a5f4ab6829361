"""``marquee export``: systems of record → raw tables → feature time series, per source, atomically.

Sources: ``reviews`` (Mongo), ``playback`` (Mongo), ``graph`` (timestamped RATED/WATCHED
edges plus the static graph). Each source runs in ONE PostgreSQL transaction:

1. read events at or after its watermark (``export_watermarks``), in batches;
2. COPY each batch into a temp table and ``INSERT … ON CONFLICT DO NOTHING`` into its raw
   table: rows already landed are skipped, so re-reading a window is harmless;
3. recompute the feature rows of the entities that got new rows, from their earliest new
   event on (sources/export/features.py);
4. move the watermark.

A failure anywhere rolls the source's transaction back: its raw rows, features and watermark
stay as they were.

Watermarks are event times read with ``>=`` (the watermark's own instant is re-read; landing
skips what it already holds). An event that arrives with a time older than its source's
watermark is not seen by an incremental run: reviews and graph edges carry only their
event time. Playback documents carry ``updated_at``, so a late session is picked up when its
document is re-read. The API's own writes are covered whatever their time: the events of
mutation log records not marked pushed (a push cut by a crash, or one that failed) are read
as well (``extract.unpushed_writes``; api/queries/writes.py). ``full=True`` (``--full``)
rebuilds everything, and so does the first export after a new ``marquee ingest`` (a newer
complete ``ingest_runs`` row).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.progress import Progress, TaskID
from sqlalchemy import Connection, text

from sources.errors import MarqueeError, first_line
from sources.export import extract, features, graph_static
from sources.export.lake import LakeReport, export_lake
from sources.progress import progress_bar
from sources.settings import OfflineTarget
from sources.stores import mongo
from sources.stores.clients import Stores
from sources.stores.pgcopy import column_types, copy_rows, indexes_deferred

SOURCES = ("reviews", "playback", "graph")
EXPORT_LOCK = 0x6D71_6578  # pg advisory lock key ("mqex")

RAW_TABLES = {
    "reviews": ("raw_reviews",),
    "playback": ("raw_playback_sessions",),
    "graph": ("raw_graph_edges", "raw_graph_movie_static", "raw_graph_user_static"),
}
FEATURE_TABLES = {
    "reviews": ("feat_user_reviews", "feat_movie_reviews"),
    "playback": ("feat_user_playback",),
    "graph": ("feat_user_graph", "feat_movie_graph", "feat_movie_neighbours"),
}
# Watermark rows each source keeps (the graph keeps one per edge kind, and a digest of its static part).
WATERMARKS = {
    "reviews": ("reviews",),
    "playback": ("playback",),
    "graph": ("graph.RATED", "graph.WATCHED", "graph.static"),
}


class ExportError(MarqueeError):
    """An export of one source failed; that source's tables and watermark are unchanged."""


@dataclass
class SourceReport:
    source: str
    rebuilt: bool = False
    rows_read: int = 0
    rows_landed: int = 0
    feature_rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ExportReport:
    sources: list[SourceReport]
    #: the spark engine's Parquet rebuild (sources/export/lake.py); None on the postgres engine
    lake: LakeReport | None = None

    @property
    def rows_landed(self) -> dict[str, int]:
        return {s.source: s.rows_landed for s in self.sources}


@dataclass
class _Mark:
    watermark: datetime | None
    ingest_run_id: int | None
    digest: str | None


# watermarks ---------------------------------------------------------------------------------


def _marks(conn: Connection, source: str) -> dict[str, _Mark]:
    rows = conn.execute(
        text(
            "SELECT source, watermark, ingest_run_id, digest FROM export_watermarks "
            "WHERE source = ANY(:names) FOR UPDATE"
        ),
        {"names": list(WATERMARKS[source])},
    ).all()
    return {r[0]: _Mark(r[1], r[2], r[3]) for r in rows}


def _save_mark(conn: Connection, name: str, old: _Mark | None, mark: _Mark, rows: int) -> None:
    """Move a watermark; a run that found nothing new writes nothing (a no-op export changes no byte)."""
    if rows == 0 and old == mark:
        return
    conn.execute(
        text(
            "INSERT INTO export_watermarks (source, watermark, rows, ingest_run_id, digest, updated_at) "
            "VALUES (:s, :w, :r, :i, :d, now()) ON CONFLICT (source) DO UPDATE SET "
            "watermark = EXCLUDED.watermark, rows = export_watermarks.rows + EXCLUDED.rows, "
            "ingest_run_id = EXCLUDED.ingest_run_id, digest = EXCLUDED.digest, updated_at = now()"
        ),
        {"s": name, "w": mark.watermark, "r": rows, "i": mark.ingest_run_id, "d": mark.digest},
    )


def _latest_ingest(conn: Connection) -> int | None:
    value = conn.execute(text("SELECT max(id) FROM ingest_runs WHERE status = 'complete'")).scalar()
    return int(value) if value is not None else None


# landing ------------------------------------------------------------------------------------


def _land(
    conn: Connection,
    raw_table: str,
    columns: tuple[str, ...],
    batches: Iterator[list[tuple[Any, ...]]],
    progress: Progress,
    task: TaskID,
    *,
    rebuild: bool,
) -> tuple[int, int]:
    """Batches → ``raw_table`` (existing keys skipped). Returns (rows read, rows landed).

    An incremental run keeps the new rows in ``_landed``, which the feature recompute and the
    watermark read. A rebuild started from an emptied table, so every row in it is new: it
    keeps no second copy (one write a row less; ``_landed_rows`` names the raw table instead)."""
    conn.execute(text(f"CREATE TEMP TABLE _batch (LIKE {raw_table}) ON COMMIT DROP"))
    names = ", ".join(columns)
    insert = f"INSERT INTO {raw_table} ({names}) SELECT {names} FROM _batch ON CONFLICT DO NOTHING"
    if not rebuild:
        conn.execute(text(f"CREATE TEMP TABLE _landed (LIKE {raw_table}) ON COMMIT DROP"))
        insert = f"WITH new AS ({insert} RETURNING {names}) INSERT INTO _landed ({names}) SELECT {names} FROM new"
    types = column_types(conn, "_batch", columns)  # binary COPY: the batches are plain typed values
    read = landed = 0
    for batch in extract.prefetch(batches):
        copy_rows(conn, "_batch", columns, batch, types=types)
        landed += conn.execute(text(insert)).rowcount
        conn.execute(text("TRUNCATE _batch"))
        read += len(batch)
        progress.advance(task, len(batch))
    conn.execute(text("DROP TABLE _batch"))
    return read, landed


def _landed_rows(rebuild: bool, raw_table: str, kind: str | None = None) -> str:
    """What ``_land`` landed, as a FROM item: ``_landed``, or on a rebuild the raw table itself
    (``kind``: only that edge kind's rows)."""
    if not rebuild:
        return "_landed"
    return raw_table if kind is None else f"(SELECT * FROM {raw_table} WHERE kind = '{kind}') landed"


def _bulk(conn: Connection, raw_table: str, rebuild: bool) -> AbstractContextManager[None]:
    """A rebuild loads an emptied raw table: its secondary indexes are built once, after."""
    return indexes_deferred(conn, raw_table) if rebuild else nullcontext()


def _newest(conn: Connection, previous: datetime | None, landed_rows: str) -> datetime | None:
    """The watermark after landing: the newest event time landed, never moving backwards."""
    landed = conn.execute(text(f"SELECT max(ts) FROM {landed_rows}")).scalar()
    candidates = [t for t in (previous, landed) if t is not None]
    return max(candidates) if candidates else None


def _rebuild(conn: Connection, source: str) -> None:
    conn.execute(text(f"TRUNCATE {', '.join(RAW_TABLES[source] + FEATURE_TABLES[source])}"))


@contextmanager
def _source_transaction(stores: Stores, source: str) -> Iterator[Connection]:
    """One transaction per source; any failure becomes an ExportError naming the source."""
    try:
        with stores.pg.begin() as conn:
            yield conn
    except MarqueeError:
        raise
    except extract.BadRecord as exc:
        raise ExportError(f"export of {source} failed, nothing of it was written: {exc}") from exc
    except Exception as exc:
        raise ExportError(f"export of {source} failed, nothing of it was written: {first_line(exc)}") from exc


# sources ------------------------------------------------------------------------------------


def _export_reviews(
    stores: Stores, conn: Connection, report: SourceReport, progress: Progress, batch_size: int
) -> None:
    mark = _marks(conn, "reviews").get("reviews")
    run_id = _latest_ingest(conn)
    since = _start(conn, "reviews", report, mark, run_id)
    total = mongo.live(stores.mongo, "reviews").estimated_document_count() if since is None else None
    task = progress.add_task("export reviews (mongo)", total=total)
    late, _ = extract.unpushed_writes(stores.mongo) if since is not None else ([], [])
    batches = extract.review_batches(stores, since, batch_size, also=late)
    columns = ("review_id", "user_id", "movie_id", "rating", "ts")
    with _bulk(conn, "raw_reviews", report.rebuilt):
        report.rows_read, report.rows_landed = _land(
            conn, "raw_reviews", columns, iter(batches), progress, task, rebuild=report.rebuilt
        )
    landed = _landed_rows(report.rebuilt, "raw_reviews")
    features.create_affected(conn, "user_id")
    features.create_affected(conn, "movie_id")
    features.mark_affected(conn, "user_id", f"SELECT user_id, ts FROM {landed}")
    features.mark_affected(conn, "movie_id", f"SELECT movie_id, ts FROM {landed}")
    for feature in (features.USER_REVIEWS, features.MOVIE_REVIEWS):
        report.feature_rows[feature.table] = features.recompute(conn, feature)
    _save_mark(conn, "reviews", mark, _Mark(_newest(conn, since, landed), run_id, None), report.rows_landed)


def _export_playback(
    stores: Stores, conn: Connection, report: SourceReport, progress: Progress, batch_size: int
) -> None:
    mark = _marks(conn, "playback").get("playback")
    run_id = _latest_ingest(conn)
    since = _start(conn, "playback", report, mark, run_id)
    task = progress.add_task("export playback (mongo)", total=None)
    columns = ("session_id", "user_id", "movie_id", "ts", "duration_s", "device", "buffer_rate", "errors")
    _, late = extract.unpushed_writes(stores.mongo) if since is not None else ([], [])
    reader = extract.PlaybackReader(stores, since, batch_size, also_users=late)
    with _bulk(conn, "raw_playback_sessions", report.rebuilt):
        report.rows_read, report.rows_landed = _land(
            conn, "raw_playback_sessions", columns, reader.batches(), progress, task, rebuild=report.rebuilt
        )
    landed = _landed_rows(report.rebuilt, "raw_playback_sessions")
    features.create_affected(conn, "user_id")
    features.mark_affected(conn, "user_id", f"SELECT user_id, ts FROM {landed}")
    report.feature_rows["feat_user_playback"] = features.recompute(conn, features.USER_PLAYBACK)
    # Watermark: the newest document update read (the field the filter reads), not a session time.
    _save_mark(conn, "playback", mark, _Mark(reader.newest_update, run_id, None), report.rows_landed)


def _export_graph(stores: Stores, conn: Connection, report: SourceReport, progress: Progress, batch_size: int) -> None:
    marks = _marks(conn, "graph")
    run_id = _latest_ingest(conn)
    stale = any(m.ingest_run_id != run_id for m in marks.values()) or len(marks) < len(WATERMARKS["graph"])
    if report.rebuilt or stale:
        report.rebuilt = True
        _rebuild(conn, "graph")
        marks = {}
    features.create_affected(conn, "user_id")
    features.create_affected(conn, "movie_id")

    # Static part first: the time series below read its per-entity values.
    static_task = progress.add_task("export graph (static)", total=None)
    static = graph_static.read_static(stores.graph)
    static_mark = marks.get("graph.static")
    static_changed = static_mark is None or static_mark.digest != static.digest
    if static_changed:
        _replace_static(conn, static)
        _replace_neighbours(conn, static)
    progress.update(static_task, total=1, completed=1)

    pages = extract.user_id_pages(stores.graph, batch_size)
    with _bulk(conn, "raw_graph_edges", report.rebuilt):
        for kind in extract.EDGE_KINDS:
            mark = marks.get(f"graph.{kind}")
            since = int(mark.watermark.timestamp()) if mark is not None and mark.watermark is not None else None
            task = progress.add_task(f"export graph ({kind})", total=None)
            read, landed = _land(
                conn,
                "raw_graph_edges",
                ("kind", "user_id", "movie_id", "ts", "value"),
                extract.edge_batches(stores.graph, kind, since, pages),
                progress,
                task,
                rebuild=report.rebuilt,
            )
            rows = _landed_rows(report.rebuilt, "raw_graph_edges", kind)
            features.mark_affected(conn, "movie_id", f"SELECT movie_id, ts FROM {rows}")
            if kind == "WATCHED":
                features.mark_affected(conn, "user_id", f"SELECT user_id, ts FROM {rows}")
            previous = mark.watermark if mark is not None else None
            _save_mark(conn, f"graph.{kind}", mark, _Mark(_newest(conn, previous, rows), run_id, None), landed)
            conn.execute(text("DROP TABLE IF EXISTS _landed"))
            report.rows_read += read
            report.rows_landed += landed
    for feature in (features.USER_GRAPH, features.MOVIE_GRAPH):
        report.feature_rows[feature.table] = features.recompute(conn, feature)
    _save_mark(conn, "graph.static", static_mark, _Mark(None, run_id, static.digest), 0)


def _start(
    conn: Connection, source: str, report: SourceReport, mark: _Mark | None, run_id: int | None
) -> datetime | None:
    """The watermark to read from, after a rebuild where one is asked for or the stores were reloaded."""
    if report.rebuilt or mark is None or mark.ingest_run_id != run_id:
        report.rebuilt = True
        _rebuild(conn, source)
        return None
    return mark.watermark


def _replace_static(conn: Connection, static: graph_static.StaticGraph) -> None:
    """New per-movie/per-user static values; entities whose values changed are recomputed in full."""
    conn.execute(text("CREATE TEMP TABLE _movie_static (LIKE raw_graph_movie_static) ON COMMIT DROP"))
    copy_rows(
        conn,
        "_movie_static",
        ("movie_id", "genre_count", "people_count", "actor_count", "director_count", "pagerank"),
        graph_static.movie_static(static),
    )
    conn.execute(text("CREATE TEMP TABLE _user_static (LIKE raw_graph_user_static) ON COMMIT DROP"))
    copy_rows(conn, "_user_static", ("user_id", "followers", "following"), graph_static.user_static(static))
    for entity, temp, table in (
        ("movie_id", "_movie_static", "raw_graph_movie_static"),
        ("user_id", "_user_static", "raw_graph_user_static"),
    ):
        # Changed = present on one side only, or different values (full outer join on the key).
        features.mark_affected(
            conn,
            entity,
            f"SELECT coalesce(n.{entity}, o.{entity}), '-infinity'::timestamptz FROM {temp} n "
            f"FULL JOIN {table} o ON o.{entity} = n.{entity} WHERE ROW(n.*) IS DISTINCT FROM ROW(o.*)",
        )
        conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text(f"INSERT INTO {table} SELECT * FROM {temp}"))
        conn.execute(text(f"DROP TABLE {temp}"))


def _replace_neighbours(conn: Connection, static: graph_static.StaticGraph) -> None:
    """Neighbours are static: one row per movie at the time it entered the catalogue."""
    rows = graph_static.neighbours(static)
    conn.execute(text("DELETE FROM feat_movie_neighbours"))
    conn.execute(text("CREATE TEMP TABLE _neighbours (movie_id int, ids int[], scores float8[]) ON COMMIT DROP"))
    copy_rows(conn, "_neighbours", ("movie_id", "ids", "scores"), rows)
    # No catalogue time → the catalogue's first one (or the epoch), so the row is never "in the future".
    conn.execute(
        text(
            "INSERT INTO feat_movie_neighbours "
            "(movie_id, event_timestamp, created_timestamp, neighbour_ids, neighbour_scores) "
            "SELECT n.movie_id, coalesce(m.added_at, (SELECT min(added_at) FROM movies), "
            "'1970-01-01T00:00:00Z'::timestamptz), now(), n.ids, n.scores "
            "FROM _neighbours n LEFT JOIN movies m ON m.id = n.movie_id"
        )
    )
    conn.execute(text("DROP TABLE _neighbours"))


EXPORTERS: dict[str, Callable[[Stores, Connection, SourceReport, Progress, int], None]] = {
    "reviews": _export_reviews,
    "playback": _export_playback,
    "graph": _export_graph,
}


@contextmanager
def _export_lock(stores: Stores) -> Iterator[None]:
    with stores.pg.connect() as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": EXPORT_LOCK}).scalar_one():
            raise ExportError("another export is running against this PostgreSQL; try again when it ends")
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": EXPORT_LOCK})
            conn.commit()


def export(
    stores: Stores,
    *,
    full: bool = False,
    sources: Iterable[str] = SOURCES,
    batch_size: int = 5000,
    quiet: bool = False,
    offline: OfflineTarget | None = None,
) -> ExportReport:
    """Export what changed since the last run (everything on the first run, or with ``full``).

    With the spark engine (``stores.endpoints.offline``), the feature tables are then rebuilt as
    Parquet by Spark (``sources/export/lake.py``) when anything changed or a table is missing;
    ``offline`` replaces the endpoints' engine for this run."""
    chosen = list(sources)
    unknown = [s for s in chosen if s not in EXPORTERS]
    if unknown:
        raise ExportError(f"unknown export source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
    reports: list[SourceReport] = []
    with _export_lock(stores):
        with progress_bar(quiet=quiet) as progress:
            for source in chosen:
                report = SourceReport(source, rebuilt=full)
                t0 = time.perf_counter()
                with _source_transaction(stores, source) as conn:
                    EXPORTERS[source](stores, conn, report, progress, batch_size)
                report.seconds = time.perf_counter() - t0
                reports.append(report)
        result = ExportReport(reports)
        target = offline or stores.endpoints.offline
        if target.engine == "spark":
            changed = full or any(r.rebuilt or r.rows_landed for r in reports)
            result.lake = export_lake(stores, target, changed=changed, quiet=quiet)
    return result
