"""``marquee export`` with the spark engine: the feature tables as partitioned Parquet, computed by Spark SQL.

After the PostgreSQL export has landed the raw events (``sources/export/run.py``), this job:

1. snapshots what the features are computed from into ``<location>/_raw/<table>`` (Parquet,
   streamed from PostgreSQL in batches): the raw event tables, the static graph tables and
   ``movies`` (catalogue times), plus the rows of the views that are not time series (the
   profile and embedding queries of ``sources/feature_store/profiles.py``, and the movie
   neighbours);
2. registers each snapshot as a Spark view under its PostgreSQL name and runs every feature
   definition of ``sources/export/features.py`` rendered for Spark SQL (the same window
   functions PostgreSQL runs), casting each column to its declared type;
3. writes each feature table to ``<location>/<table>``, partitioned by ``event_month``
   (``yyyy-MM`` of ``event_timestamp``), first into ``<location>/_staging`` and, once every
   table is written, swapped into place: a failed run leaves the previous tables as they were.

Spark recomputes every entity (no watermark of its own): a run is a full rebuild, skipped when
the PostgreSQL export landed nothing and every table is in place. The raw snapshot and the
swap work on a local or mounted folder; on object storage the raw zone would be written by
ingestion itself (docs/deploy.md).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from sources.errors import MarqueeError, first_line
from sources.export import features
from sources.feature_store import profiles
from sources.feature_store.spark import spark_session
from sources.progress import progress_bar
from sources.settings import OfflineTarget

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from sources.stores.clients import Stores

_TS = pa.timestamp("us", tz="UTC")
_I = pa.int32()
_F = pa.float64()
_S = pa.string()

#: snapshot name -> (PostgreSQL query, Arrow schema); the raw inputs of the time series
RAW: dict[str, tuple[str, pa.Schema]] = {
    "raw_reviews": (
        "SELECT review_id, user_id, movie_id, rating, ts FROM raw_reviews",
        pa.schema([("review_id", _S), ("user_id", _I), ("movie_id", _I), ("rating", _F), ("ts", _TS)]),
    ),
    "raw_playback_sessions": (
        "SELECT session_id, user_id, movie_id, ts, duration_s, device, buffer_rate, errors FROM raw_playback_sessions",
        pa.schema(
            [
                ("session_id", _S),
                ("user_id", _I),
                ("movie_id", _I),
                ("ts", _TS),
                ("duration_s", _F),
                ("device", _S),
                ("buffer_rate", _F),
                ("errors", _I),
            ]
        ),
    ),
    "raw_graph_edges": (
        "SELECT kind, user_id, movie_id, ts, value FROM raw_graph_edges",
        pa.schema([("kind", _S), ("user_id", _I), ("movie_id", _I), ("ts", _TS), ("value", _F)]),
    ),
    "raw_graph_movie_static": (
        "SELECT movie_id, genre_count, people_count, actor_count, director_count, pagerank FROM raw_graph_movie_static",
        pa.schema(
            [
                ("movie_id", _I),
                ("genre_count", _I),
                ("people_count", _I),
                ("actor_count", _I),
                ("director_count", _I),
                ("pagerank", _F),
            ]
        ),
    ),
    "raw_graph_user_static": (
        "SELECT user_id, followers, following FROM raw_graph_user_static",
        pa.schema([("user_id", _I), ("followers", _I), ("following", _I)]),
    ),
    "movies": ("SELECT id, added_at FROM movies", pa.schema([("id", _I), ("added_at", _TS)])),
}

_STAMPS = [("event_timestamp", _TS), ("created_timestamp", _TS)]
#: feature table -> (PostgreSQL query, Arrow schema); views whose rows are not computed from events
STATIC: dict[str, tuple[str, pa.Schema]] = {
    "user_profile": (
        profiles.USER_PROFILE,
        pa.schema(
            [
                ("user_id", _I),
                ("age", _I),
                ("gender", _S),
                ("occupation", _S),
                ("city", _S),
                ("tier", _S),
                ("monthly_price", _F),
                *_STAMPS,
            ]
        ),
    ),
    "movie_profile": (
        profiles.MOVIE_PROFILE,
        pa.schema([("movie_id", _I), ("year", _I), ("genres", _S), ("genre_multi_hot", pa.list_(_I)), *_STAMPS]),
    ),
    "movie_embedding": (
        profiles.MOVIE_EMBEDDING,
        pa.schema([("movie_id", _I), ("title_embedding", pa.list_(pa.float32())), *_STAMPS]),
    ),
    "feat_movie_neighbours": (
        "SELECT movie_id, event_timestamp, created_timestamp, neighbour_ids, neighbour_scores "
        "FROM feat_movie_neighbours",
        pa.schema(
            [
                ("movie_id", _I),
                ("event_timestamp", _TS),
                ("created_timestamp", _TS),
                ("neighbour_ids", pa.list_(_I)),
                ("neighbour_scores", pa.list_(_F)),
            ]
        ),
    ),
}

#: every table the spark engine's feature views read, under <location>/<table>
TABLES = tuple(f.table for f in features.TIME_SERIES) + tuple(STATIC)
PARTITION = "event_month"
_SPARK_TYPES = {"int": "int", "float": "double", "float[]": "array<double>"}


class LakeExportError(MarqueeError):
    """The Parquet feature tables could not be written; the previous ones are unchanged."""


@dataclass
class LakeReport:
    rows: dict[str, int] = field(default_factory=dict)  # feature table -> rows written
    raw_rows: int = 0  # rows snapshotted from PostgreSQL
    seconds: float = 0.0
    skipped: bool = False

    @property
    def rows_per_s(self) -> float:
        """Raw rows turned into feature tables per second (the export's throughput)."""
        return self.raw_rows / self.seconds if self.seconds > 0 else 0.0


def local_path(location: str) -> Path:
    """The folder of a local ``location`` (a path or ``file://`` URI); other schemes are refused."""
    if location.startswith("file://"):
        return Path(location.removeprefix("file://"))
    if "://" in location:
        raise LakeExportError(
            f"MARQUEE_OFFLINE_URI {location!r}: this export writes a local or mounted folder; "
            "object storage is the production story of docs/deploy.md, not tested here"
        )
    return Path(location)


def complete(location: str) -> bool:
    """Whether every feature table is in place (each with Spark's ``_SUCCESS`` marker)."""
    root = local_path(location)
    return all((root / table / "_SUCCESS").exists() for table in TABLES)


def _batches(dsn: str, query: str, schema: pa.Schema, batch_size: int) -> Iterator[pa.RecordBatch]:
    """``query``'s rows as Arrow batches, read with a server-side cursor (bounded memory)."""
    with psycopg.connect(dsn) as conn, conn.cursor(name="lake_snapshot") as cur:
        cur.itersize = batch_size
        cur.execute(query)
        while rows := cur.fetchmany(batch_size):
            columns = list(zip(*rows, strict=True))
            yield pa.RecordBatch.from_arrays(
                [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)], schema=schema
            )


def _snapshot(dsn: str, query: str, schema: pa.Schema, path: Path, batch_size: int) -> int:
    """Write ``query``'s rows to ``path`` (one Parquet file); returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in _batches(dsn, query, schema, batch_size):
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def feature_frame(spark: SparkSession, feature: features.FeatureSql, created: datetime) -> DataFrame:
    """``feature``'s rows from the registered raw views, typed as its PostgreSQL table."""
    names = ", ".join(("entity", "ts", *feature.columns))
    typed = ", ".join(f"CAST({name} AS {_SPARK_TYPES[kind]}) AS {name}" for name, kind in feature.typed_columns)
    return spark.sql(
        f"SELECT CAST(entity AS int) AS {feature.entity}, ts AS event_timestamp, "
        f"TIMESTAMP '{created.isoformat()}' AS created_timestamp, {typed} "
        f"FROM ({feature.render(features.SPARK)}) AS f({names})"
    )


def _write(frame: DataFrame, path: Path) -> int:
    from pyspark.sql import functions as fn

    frame = frame.withColumn(PARTITION, fn.date_format("event_timestamp", "yyyy-MM"))
    frame.write.mode("overwrite").partitionBy(PARTITION).parquet(str(path))
    return int(frame.count())


def _swap(staging: Path, root: Path) -> None:
    """Move every staged table into place (the old one is removed only after its successor is in)."""
    for table in TABLES:
        target, old = root / table, root / f"_old_{table}"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        (staging / table).rename(target)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def export_lake(
    stores: Stores, target: OfflineTarget, *, changed: bool = True, batch_size: int = 50_000, quiet: bool = False
) -> LakeReport:
    """Rebuild the Parquet feature tables under ``target.location`` from PostgreSQL's raw tables.

    Skipped (``report.skipped``) when ``changed`` is False and every table is in place.
    """
    root = local_path(target.location)
    if not changed and complete(target.location):
        return LakeReport(skipped=True)
    report = LakeReport()
    began = time.perf_counter()
    staging, raw = root / "_staging", root / "_raw"
    dsn = stores.endpoints.pg_dsn
    try:
        shutil.rmtree(staging, ignore_errors=True)
        with progress_bar(quiet=quiet) as progress:
            task = progress.add_task("export to Spark (Parquet)", total=len(RAW) + len(TABLES))
            for name, (query, schema) in RAW.items():
                report.raw_rows += _snapshot(dsn, query, schema, raw / f"{name}.parquet", batch_size)
                progress.advance(task)
            spark = spark_session(target)
            for name in RAW:
                spark.read.parquet(str(raw / f"{name}.parquet")).createOrReplaceTempView(name)
            created = datetime.now(UTC)
            for feature in features.TIME_SERIES:
                report.rows[feature.table] = _write(feature_frame(spark, feature, created), staging / feature.table)
                progress.advance(task)
            for name, (query, schema) in STATIC.items():
                _snapshot(dsn, query, schema, raw / f"{name}.parquet", batch_size)
                report.rows[name] = _write(spark.read.parquet(str(raw / f"{name}.parquet")), staging / name)
                progress.advance(task)
        _swap(staging, root)
    except MarqueeError:
        raise
    except Exception as exc:
        raise LakeExportError(
            f"export to Parquet under {target.location} failed, the previous tables are unchanged: {first_line(exc)}"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.seconds = time.perf_counter() - began
    return report


def lake_counts(spark: SparkSession, location: str) -> dict[str, Any]:
    """Rows per feature table under ``location`` (for reports and tests)."""
    return {table: spark.read.parquet(f"{location}/{table}").count() for table in TABLES}
