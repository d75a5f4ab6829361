"""Register the feature repo with Feast (apply) and copy the latest features online (materialize).

The 1998 trap: Feast's ``materialize_incremental`` starts a never-materialized view at
``now - ttl`` (now - 52 weeks when the TTL is 0), so on MovieLens-100K (Sept 1997 - April 1998)
a first incremental run silently loads nothing. ``materialize`` therefore starts every view
that was never materialized at the earliest event in its offline source, and only then goes
incremental (from where the previous run ended).
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sources.errors import MarqueeError
from sources.feature_store.env import FEATURE_REPO
from sources.feature_store.postgres import connect

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.repo_contents import RepoContents


class MaterializeError(MarqueeError):
    """Materialization was asked for something impossible (an end before its start, an unapplied repo)."""


@dataclass
class ViewMaterialization:
    view: str
    start: datetime
    end: datetime
    rows: int  # entity rows written to the online store (the latest row per entity in the window)
    seconds: float


@dataclass
class MaterializeReport:
    views: list[ViewMaterialization] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(v.rows for v in self.views)

    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def repo_contents() -> RepoContents:
    """The Feast objects defined in ``feature_repo/definitions.py`` (imported by path)."""
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource
    from feast.repo_contents import RepoContents

    spec = importlib.util.spec_from_file_location("marquee_feature_definitions", FEATURE_REPO / "definitions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    contents = RepoContents(
        projects=[],
        data_sources=[],
        entities=[],
        feature_views=[],
        feature_services=[],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        permissions=[],
    )
    for obj in vars(module).values():
        if isinstance(obj, DataSource):
            contents.data_sources.append(obj)
        elif isinstance(obj, Entity):
            contents.entities.append(obj)
        elif isinstance(obj, OnDemandFeatureView):
            contents.on_demand_feature_views.append(obj)
        elif isinstance(obj, FeatureView):
            contents.feature_views.append(obj)
        elif isinstance(obj, FeatureService):
            contents.feature_services.append(obj)
    return contents


def apply_repo(store: FeatureStore) -> dict[str, int]:
    """Make the registry match ``definitions.py``: add and update its objects, delete objects it
    no longer defines, create the online tables. Idempotent. Returns counts applied/deleted."""
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.project import Project
    from feast.repo_operations import extract_objects_for_apply_delete

    # definitions.py declares the sources of the engine named here: this store's, whatever
    # store was opened last in this process
    os.environ["MARQUEE_FEAST_OFFLINE_ENGINE"] = "spark" if _on_spark(store) else "postgres"
    contents = repo_contents()
    contents.projects.append(Project(name=store.project))  # else the diff deletes the project
    # Feast leaves this function unannotated
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(  # type: ignore[no-untyped-call]
        store.project, store.registry, contents
    )
    # Feast adds a placeholder entity on every apply; it is not ours to delete.
    to_delete = [obj for obj in to_delete if obj.name != DUMMY_ENTITY_NAME]
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    return {"applied": len(to_apply), "deleted": len(to_delete)}


def _source_sql(view: FeatureView) -> tuple[str, str]:
    """(FROM expression, join key) of a view's PostgreSQL source."""
    source: Any = view.batch_source
    return source.get_table_query_string(), view.entity_columns[0].name


def _on_spark(store: FeatureStore) -> bool:
    return str(store.config.offline_store.type) == "spark"


def _scalar(store: FeatureStore, query: str, params: tuple[Any, ...] = ()) -> Any:
    """One value of ``query`` (``%s`` placeholders take datetimes) on the store's offline engine."""
    if _on_spark(store):
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        assert session is not None  # open_feature_store started it
        for value in params:
            query = query.replace("%s", f"TIMESTAMP '{_utc(value).isoformat()}'", 1)
        row = session.sql(query.replace('"', "`")).first()
        value = row[0] if row else None
        return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value
    with connect(store.config.offline_store) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
    return row[0] if row else None


def earliest_event(store: FeatureStore, view: FeatureView) -> datetime | None:
    """The first event time in the view's offline source (None when it holds no rows)."""
    table, _ = _source_sql(view)
    value = _scalar(store, f"SELECT min(event_timestamp) FROM {table} AS src")
    return value if isinstance(value, datetime) else None


def _resume_from(store: FeatureStore, view: FeatureView, last_end: datetime) -> datetime:
    """Where an incremental run starts: the last run's end, or earlier when rows written since
    then carry older event times (a re-export of 1998 events lands after a 2026 run).
    Feast windows on event time only, so those rows would otherwise never reach the online store."""
    table, _ = _source_sql(view)
    late = _scalar(store, f"SELECT min(event_timestamp) FROM {table} AS src WHERE created_timestamp > %s", (last_end,))
    return min(last_end, late) if isinstance(late, datetime) else last_end


def _entities_in_window(store: FeatureStore, view: FeatureView, start: datetime, end: datetime) -> int:
    table, key = _source_sql(view)
    return int(
        _scalar(
            store,
            f'SELECT count(DISTINCT "{key}") FROM {table} AS src WHERE event_timestamp BETWEEN %s AND %s',
            (start, end),
        )
        or 0
    )


def materialize(
    store: FeatureStore,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    views: list[str] | None = None,
) -> MaterializeReport:
    """Copy each view's latest values in [start, end] into the online store.

    Without ``start`` it is incremental: a view resumes where its last materialization ended
    (earlier if rows exported since then carry older event times), and a view never
    materialized starts at its earliest offline event (see the module docstring). ``end``
    defaults to now. Re-running is safe (the online store upserts). An explicit window writes
    each entity's latest row *in that window*, over newer online values too (Feast's postgres
    online store overwrites unconditionally): backfill with it, then run incrementally.
    """
    end = _utc(end) if end is not None else datetime.now(UTC)
    start = _utc(start) if start is not None else None
    if start is not None and start > end:
        raise MaterializeError(f"materialize start {start.isoformat()} is after its end {end.isoformat()}")
    registered = store.list_feature_views()
    if not registered:  # else an empty table and "0 rows" would look like success
        raise MaterializeError(
            f"the feature repository is not applied (project {store.project!r} has no feature views in "
            "the registry): run `marquee apply` first"
        )
    report = MaterializeReport()
    began = time.perf_counter()
    for view in registered:
        if views is not None and view.name not in views:
            continue
        t0 = time.perf_counter()
        view_start = start
        if view_start is None:
            last_end = view.most_recent_end_time
            view_start = earliest_event(store, view) if last_end is None else _resume_from(store, view, last_end)
        if view_start is None:  # an empty source: nothing to write yet
            continue
        view_start = _utc(view_start)
        if view_start > end:
            continue
        store.materialize(view_start, end, feature_views=[view.name])
        rows = _entities_in_window(store, view, view_start, end)
        report.views.append(ViewMaterialization(view.name, view_start, end, rows, time.perf_counter() - t0))
    report.seconds = time.perf_counter() - began
    return report


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC (what the CLI's ISO options mean)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
