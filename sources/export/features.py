"""The feature time series: ONE definition per feature, rendered for PostgreSQL and for Spark SQL.

Each ``FeatureSql.select`` is a function of a ``Dialect``: the window functions, joins and
grouping are written once; the dialect fills in the few spellings the two engines do not
share (seconds between two times, a cast to float, the padding of an array, the set of
entities to compute). PostgreSQL renders them for the incremental export below; Spark
renders them for ``sources/export/lake.py`` over the same raw events, so the two engines
cannot drift apart (tests/sources/test_spark_parity.py checks they agree, row by row).

Each PostgreSQL recompute reads an ``_affected_<entity>`` temp table of (id, from_ts): the
entity's rows at or after ``from_ts`` are deleted and recomputed from all of its raw events
(window functions over its whole history), rows before ``from_ts`` keep their values and their
``created_timestamp``. Spark recomputes every entity. Events of one entity at the same
instant make one row whose values include all of them. ``now()`` is the transaction's start:
one ``created_timestamp`` per export.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class Dialect:
    """The spellings one SQL engine needs for the shared feature definitions."""

    name: str
    float_type: str
    #: (earlier, later) -> days between two timestamps, as a float
    days_between: Callable[[str, str], str]
    #: array expression -> the same array left-padded with 0.0 to 5 elements
    pad5: Callable[[str], str]
    #: the aggregate collecting values into an array (used over an ordered window)
    collect: str
    #: (column, entity) -> a condition choosing the rows of the entities to compute
    affected: Callable[[str, str], str]


POSTGRES = Dialect(
    name="postgres",
    float_type="float8",
    days_between=lambda a, b: f"extract(epoch FROM {b} - {a})::float8 / 86400",
    pad5=lambda a: f"array_fill(0::float8, ARRAY[5 - cardinality({a})]) || {a}",
    collect="array_agg",
    affected=lambda column, entity: f"{column} IN (SELECT {entity} FROM _affected_{entity})",
)

#: PostgreSQL for a recompute of a few entities (the API's pushes): the affected set as an array,
#: which the planner looks up through the (entity, ts) indexes instead of scanning the raw table
#: (measured: docs/performance.md); the export's ``IN`` keeps a scan for its many entities
POSTGRES_FEW = Dialect(
    name="postgres",
    float_type="float8",
    days_between=POSTGRES.days_between,
    pad5=POSTGRES.pad5,
    collect="array_agg",
    affected=lambda column, entity: f"{column} = ANY(ARRAY(SELECT {entity} FROM _affected_{entity}))",
)


def postgres_for(keys: list[int]) -> Dialect:
    """PostgreSQL for a recompute of exactly ``keys``, named inline as a constant array: the
    planner sees how many there are and goes through the (entity, ts) indexes, with no temp
    table to fill and analyse first (``upsert_newest``)."""
    array = "ARRAY[" + ",".join(str(int(k)) for k in keys) + "]::int[]"
    return replace(POSTGRES_FEW, affected=lambda column, entity: f"{column} = ANY({array})")


SPARK = Dialect(
    name="spark",
    float_type="double",
    days_between=lambda a, b: f"CAST(unix_micros({b}) - unix_micros({a}) AS double) / 86400000000",
    pad5=lambda a: f"concat(array_repeat(CAST(0 AS double), 5 - size({a})), {a})",
    collect="collect_list",
    affected=lambda column, entity: "TRUE",  # every entity: Spark rebuilds the whole table
)


@dataclass(frozen=True)
class FeatureSql:
    table: str
    entity: str  # user_id or movie_id
    #: (name, type) after entity, event_timestamp, created_timestamp; types: int, float, float[]
    typed_columns: tuple[tuple[str, str], ...]
    #: dialect -> SELECT yielding (entity, event_timestamp, *columns) for the affected entities.
    render: Callable[[Dialect], str]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.typed_columns)

    @property
    def select(self) -> str:
        """The PostgreSQL rendering (the incremental export's)."""
        return self.render(POSTGRES)


def _flag(d: Dialect, condition: str) -> str:
    return f"CAST(CASE WHEN {condition} THEN 1 ELSE 0 END AS {d.float_type})"


def _reviews(entity: str) -> Callable[[Dialect], str]:
    def render(d: Dialect) -> str:
        return f"""
    SELECT {entity}, ts, sum(n) OVER w, sum(total) OVER w / sum(n) OVER w,
           coalesce({d.days_between("lag(ts) OVER w", "ts")}, 0)
    FROM (SELECT {entity}, ts, count(*) AS n, sum(rating) AS total FROM raw_reviews
          WHERE {d.affected(entity, entity)} GROUP BY {entity}, ts) per_ts
    WINDOW w AS (PARTITION BY {entity} ORDER BY ts)
    """

    return render


_REVIEW_COLUMNS = (("review_count", "int"), ("mean_rating", "float"), ("days_since_previous", "float"))
USER_REVIEWS = FeatureSql("feat_user_reviews", "user_id", _REVIEW_COLUMNS, _reviews("user_id"))
MOVIE_REVIEWS = FeatureSql("feat_movie_reviews", "movie_id", _REVIEW_COLUMNS, _reviews("movie_id"))


# Sessions in (ts, session_id) order; the row for an instant is its last session's running values.
def _user_playback(d: Dialect) -> str:
    shares = ",\n".join(
        "               avg(" + _flag(d, f"device = '{device}'") + f") OVER w AS share_{device}"
        for device in ("tv", "mobile", "desktop", "tablet")
    )
    return f"""
    SELECT user_id, ts, session_count, mean_duration_s, total_duration_s, mean_buffer_rate,
           share_tv, share_mobile, share_desktop, share_tablet,
           {d.pad5("last5")}
    FROM (
        SELECT user_id, ts,
               count(*) OVER w AS session_count,
               avg(duration_s) OVER w AS mean_duration_s,
               sum(duration_s) OVER w AS total_duration_s,
               avg(buffer_rate) OVER w AS mean_buffer_rate,
{shares},
               {d.collect}(duration_s) OVER (PARTITION BY user_id ORDER BY ts, session_id
                                           ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS last5,
               row_number() OVER (PARTITION BY user_id, ts ORDER BY session_id DESC) AS from_last
        FROM raw_playback_sessions
        WHERE {d.affected("user_id", "user_id")}
        WINDOW w AS (PARTITION BY user_id ORDER BY ts, session_id ROWS UNBOUNDED PRECEDING)
    ) per_session
    WHERE from_last = 1
    """


USER_PLAYBACK = FeatureSql(
    "feat_user_playback",
    "user_id",
    (
        ("session_count", "int"),
        ("mean_duration_s", "float"),
        ("total_duration_s", "float"),
        ("mean_buffer_rate", "float"),
        ("share_tv", "float"),
        ("share_mobile", "float"),
        ("share_desktop", "float"),
        ("share_tablet", "float"),
        ("last5_durations", "float[]"),
    ),
    _user_playback,
)


def _user_graph(d: Dialect) -> str:
    return f"""
    SELECT e.user_id, e.ts, coalesce(s.followers, 0), coalesce(s.following, 0),
           sum(e.n) OVER (PARTITION BY e.user_id ORDER BY e.ts)
    FROM (SELECT user_id, ts, count(*) AS n FROM raw_graph_edges
          WHERE kind = 'WATCHED' AND {d.affected("user_id", "user_id")}
          GROUP BY user_id, ts) e
    LEFT JOIN raw_graph_user_static s ON s.user_id = e.user_id
    """


USER_GRAPH = FeatureSql(
    "feat_user_graph", "user_id", (("followers", "int"), ("following", "int"), ("watched_count", "int")), _user_graph
)


# One row per instant with a RATED or WATCHED edge on the movie, plus one a second before the
# movie entered the catalogue (added_at): its static features are known from then on.
def _movie_graph(d: Dialect) -> str:
    return f"""
    SELECT e.movie_id, e.ts,
           sum(e.rated) OVER w, sum(e.watched) OVER w,
           coalesce(s.genre_count, 0), coalesce(s.people_count, 0), coalesce(s.actor_count, 0),
           coalesce(s.director_count, 0), coalesce(s.pagerank, 0)
    FROM (
        SELECT movie_id, ts, sum(rated) AS rated, sum(watched) AS watched FROM (
            SELECT movie_id, ts, CASE WHEN kind = 'RATED' THEN 1 ELSE 0 END AS rated,
                   CASE WHEN kind = 'WATCHED' THEN 1 ELSE 0 END AS watched
            FROM raw_graph_edges WHERE {d.affected("movie_id", "movie_id")}
            UNION ALL
            SELECT id, added_at - INTERVAL '1' SECOND, 0, 0 FROM movies
            WHERE added_at IS NOT NULL AND {d.affected("id", "movie_id")}
        ) events GROUP BY movie_id, ts
    ) e
    LEFT JOIN raw_graph_movie_static s ON s.movie_id = e.movie_id
    WINDOW w AS (PARTITION BY e.movie_id ORDER BY e.ts)
    """


MOVIE_GRAPH = FeatureSql(
    "feat_movie_graph",
    "movie_id",
    (
        ("rated_degree", "int"),
        ("watched_degree", "int"),
        ("genre_count", "int"),
        ("people_count", "int"),
        ("actor_count", "int"),
        ("director_count", "int"),
        ("pagerank", "float"),
    ),
    _movie_graph,
)

#: every time series computed from raw events, in export order
TIME_SERIES = (USER_REVIEWS, MOVIE_REVIEWS, USER_PLAYBACK, USER_GRAPH, MOVIE_GRAPH)


def create_affected(conn: Connection, entity: str) -> None:
    """A temp table of entities to recompute and the time from which their rows change."""
    conn.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS _affected_{entity} "
            f"({entity} int PRIMARY KEY, from_ts timestamptz NOT NULL) ON COMMIT DROP"
        )
    )


def mark_affected(conn: Connection, entity: str, select_entity_ts: str) -> None:
    """Add (entity, earliest changed time) pairs from ``select_entity_ts`` to the affected set."""
    conn.execute(
        text(
            f"INSERT INTO _affected_{entity} ({entity}, from_ts) "
            f"SELECT {entity}, min(from_ts) FROM ({select_entity_ts}) changed({entity}, from_ts) GROUP BY {entity} "
            f"ON CONFLICT ({entity}) DO UPDATE SET from_ts = least(_affected_{entity}.from_ts, EXCLUDED.from_ts)"
        )
    )


def recompute(conn: Connection, feature: FeatureSql, dialect: Dialect = POSTGRES) -> int:
    """Replace ``feature``'s rows of the affected entities from their first changed instant on
    (``dialect``: ``POSTGRES_FEW`` when they are a few, as in the API's pushes).

    The affected set is analysed first: a fresh temp table has no statistics, and the planner
    then guessed ~2,000 entities and scanned the whole raw and feature tables even for the few
    users of an API push (measured: docs/performance.md); with its real size it goes through
    the (entity, time) indexes, so a recompute costs what the affected entities hold."""
    affected = f"_affected_{feature.entity}"
    conn.execute(text(f"ANALYZE {affected}"))
    conn.execute(
        text(
            f"DELETE FROM {feature.table} t USING {affected} a "
            f"WHERE t.{feature.entity} = a.{feature.entity} AND t.event_timestamp >= a.from_ts"
        )
    )
    columns = ", ".join(feature.columns)
    inserted = conn.execute(
        text(
            f"INSERT INTO {feature.table} ({feature.entity}, event_timestamp, created_timestamp, {columns}) "
            f"SELECT f.entity, f.ts, now(), {', '.join(f'f.{c}' for c in feature.columns)} "
            f"FROM ({feature.render(dialect)}) f(entity, ts, {columns}) "
            f"JOIN {affected} a ON a.{feature.entity} = f.entity WHERE f.ts >= a.from_ts"
        )
    )
    return inserted.rowcount


def upsert_newest(conn: Connection, feature: FeatureSql, changed: Mapping[int, datetime]) -> list[dict[str, Any]]:
    """Recompute ``feature``'s rows of the ``changed`` entities (entity → earliest new event
    time) from that time on, in one statement, and return the newest row of each.

    For events that were only *added* (the API's pushes): every instant an entity had at or
    after its time is still there after the addition, so an upsert on (entity, event_timestamp)
    replaces each such row and adds the new ones, which is what ``recompute``'s delete and
    insert do, with one round trip instead of six. A removal of events needs ``recompute``."""
    if not changed:
        return []
    keys = sorted(int(k) for k in changed)
    pairs = ", ".join(f"({k}, CAST('{changed[k].isoformat()}' AS timestamptz))" for k in keys)
    columns = ", ".join(feature.columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in ("created_timestamp", *feature.columns))
    rows = conn.execute(
        text(
            f"WITH written AS ("
            f"INSERT INTO {feature.table} ({feature.entity}, event_timestamp, created_timestamp, {columns}) "
            f"SELECT f.entity, f.ts, now(), {', '.join(f'f.{c}' for c in feature.columns)} "
            f"FROM ({feature.render(postgres_for(keys))}) f(entity, ts, {columns}) "
            f"JOIN (VALUES {pairs}) a(entity, from_ts) ON a.entity = f.entity WHERE f.ts >= a.from_ts "
            f"ON CONFLICT ({feature.entity}, event_timestamp) DO UPDATE SET {updates} RETURNING *) "
            f"SELECT DISTINCT ON ({feature.entity}) * FROM written ORDER BY {feature.entity}, event_timestamp DESC"
        )
    )
    return [dict(row) for row in rows.mappings()]
