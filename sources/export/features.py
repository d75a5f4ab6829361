"""The feature time series, computed in SQL from the raw tables for the affected entities only.

Each recompute reads an ``_affected_<entity>`` temp table of (id, from_ts): the entity's
rows at or after ``from_ts`` are deleted and recomputed from all of its raw events (window
functions over its whole history), rows before ``from_ts`` keep their values and their
``created_timestamp``. Events of one entity at the same instant make one row whose values
include all of them. ``now()`` is the transaction's start: one ``created_timestamp`` per export.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class FeatureSql:
    table: str
    entity: str  # user_id or movie_id
    columns: tuple[str, ...]  # after entity, event_timestamp, created_timestamp
    #: SELECT yielding (entity, event_timestamp, *columns) for entities in _affected_<entity>.
    select: str


USER_REVIEWS = FeatureSql(
    "feat_user_reviews",
    "user_id",
    ("review_count", "mean_rating", "days_since_previous"),
    """
    SELECT user_id, ts, sum(n) OVER w, sum(total) OVER w / sum(n) OVER w,
           coalesce(extract(epoch FROM ts - lag(ts) OVER w)::float8 / 86400, 0)
    FROM (SELECT user_id, ts, count(*) AS n, sum(rating) AS total FROM raw_reviews
          WHERE user_id IN (SELECT user_id FROM _affected_user_id) GROUP BY user_id, ts) per_ts
    WINDOW w AS (PARTITION BY user_id ORDER BY ts)
    """,
)

MOVIE_REVIEWS = FeatureSql(
    "feat_movie_reviews",
    "movie_id",
    ("review_count", "mean_rating", "days_since_previous"),
    """
    SELECT movie_id, ts, sum(n) OVER w, sum(total) OVER w / sum(n) OVER w,
           coalesce(extract(epoch FROM ts - lag(ts) OVER w)::float8 / 86400, 0)
    FROM (SELECT movie_id, ts, count(*) AS n, sum(rating) AS total FROM raw_reviews
          WHERE movie_id IN (SELECT movie_id FROM _affected_movie_id) GROUP BY movie_id, ts) per_ts
    WINDOW w AS (PARTITION BY movie_id ORDER BY ts)
    """,
)

# Sessions in (ts, session_id) order; the row for an instant is its last session's running values.
USER_PLAYBACK = FeatureSql(
    "feat_user_playback",
    "user_id",
    (
        "session_count",
        "mean_duration_s",
        "total_duration_s",
        "mean_buffer_rate",
        "share_tv",
        "share_mobile",
        "share_desktop",
        "share_tablet",
        "last5_durations",
    ),
    """
    SELECT user_id, ts, session_count, mean_duration_s, total_duration_s, mean_buffer_rate,
           share_tv, share_mobile, share_desktop, share_tablet,
           array_fill(0::float8, ARRAY[5 - cardinality(last5)]) || last5
    FROM (
        SELECT user_id, ts,
               count(*) OVER w AS session_count,
               avg(duration_s) OVER w AS mean_duration_s,
               sum(duration_s) OVER w AS total_duration_s,
               avg(buffer_rate) OVER w AS mean_buffer_rate,
               avg((device = 'tv')::int::float8) OVER w AS share_tv,
               avg((device = 'mobile')::int::float8) OVER w AS share_mobile,
               avg((device = 'desktop')::int::float8) OVER w AS share_desktop,
               avg((device = 'tablet')::int::float8) OVER w AS share_tablet,
               array_agg(duration_s) OVER (PARTITION BY user_id ORDER BY ts, session_id
                                           ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS last5,
               row_number() OVER (PARTITION BY user_id, ts ORDER BY session_id DESC) AS from_last
        FROM raw_playback_sessions
        WHERE user_id IN (SELECT user_id FROM _affected_user_id)
        WINDOW w AS (PARTITION BY user_id ORDER BY ts, session_id ROWS UNBOUNDED PRECEDING)
    ) per_session
    WHERE from_last = 1
    """,
)

USER_GRAPH = FeatureSql(
    "feat_user_graph",
    "user_id",
    ("followers", "following", "watched_count"),
    """
    SELECT e.user_id, e.ts, coalesce(s.followers, 0), coalesce(s.following, 0),
           sum(e.n) OVER (PARTITION BY e.user_id ORDER BY e.ts)
    FROM (SELECT user_id, ts, count(*) AS n FROM raw_graph_edges
          WHERE kind = 'WATCHED' AND user_id IN (SELECT user_id FROM _affected_user_id)
          GROUP BY user_id, ts) e
    LEFT JOIN raw_graph_user_static s ON s.user_id = e.user_id
    """,
)

# One row per instant with a RATED or WATCHED edge on the movie, plus one a second before the
# movie entered the catalogue (added_at): its static features are known from then on.
MOVIE_GRAPH = FeatureSql(
    "feat_movie_graph",
    "movie_id",
    (
        "rated_degree",
        "watched_degree",
        "genre_count",
        "people_count",
        "actor_count",
        "director_count",
        "pagerank",
    ),
    """
    SELECT e.movie_id, e.ts,
           sum(e.rated) OVER w, sum(e.watched) OVER w,
           coalesce(s.genre_count, 0), coalesce(s.people_count, 0), coalesce(s.actor_count, 0),
           coalesce(s.director_count, 0), coalesce(s.pagerank, 0)
    FROM (
        SELECT movie_id, ts, sum(rated) AS rated, sum(watched) AS watched FROM (
            SELECT movie_id, ts, (kind = 'RATED')::int AS rated, (kind = 'WATCHED')::int AS watched
            FROM raw_graph_edges WHERE movie_id IN (SELECT movie_id FROM _affected_movie_id)
            UNION ALL
            SELECT id, added_at - interval '1 second', 0, 0 FROM movies
            WHERE added_at IS NOT NULL AND id IN (SELECT movie_id FROM _affected_movie_id)
        ) events GROUP BY movie_id, ts
    ) e
    LEFT JOIN raw_graph_movie_static s ON s.movie_id = e.movie_id
    WINDOW w AS (PARTITION BY e.movie_id ORDER BY e.ts)
    """,
)


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


def recompute(conn: Connection, feature: FeatureSql) -> int:
    """Replace ``feature``'s rows of the affected entities from their first changed instant on."""
    affected = f"_affected_{feature.entity}"
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
            f"FROM ({feature.select}) f(entity, ts, {columns}) "
            f"JOIN {affected} a ON a.{feature.entity} = f.entity WHERE f.ts >= a.from_ts"
        )
    )
    return inserted.rowcount
