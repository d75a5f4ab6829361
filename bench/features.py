"""``marquee bench features``: materialization throughput and point-in-time retrieval speed.

Retrieval is measured against a hand-written SQL point-in-time join over the same tables in
the same run (labels uploaded with COPY, one ``LEFT JOIN LATERAL (... ORDER BY event_timestamp
DESC LIMIT 1)`` per view, rows fetched in binary format into pandas): the floor any feature store on this
PostgreSQL can reach. ``ratio`` = Feast seconds / hand-written seconds.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import psycopg

from model.data.point_in_time import LEAKAGE_GUARD, label_events, training_frame
from sources.feature_store.env import open_feature_store
from sources.feature_store.materialize import earliest_event, materialize

if TYPE_CHECKING:
    from sources.stores.clients import Stores

# The engagement_training_v1 join, written by hand. {labels} is a table of
# (user_id, movie_id, event_timestamp) already shifted by the leakage guard.
HAND_WRITTEN_PIT_JOIN = """
SELECT l.user_id, l.movie_id, l.event_timestamp,
       up.age, up.gender, up.occupation, up.city, up.tier, up.monthly_price,
       pb.session_count, pb.mean_duration_s, pb.total_duration_s, pb.mean_buffer_rate,
       pb.share_tv, pb.share_mobile, pb.share_desktop, pb.share_tablet, pb.last5_durations,
       ur.review_count, ur.mean_rating, ur.days_since_previous,
       ug.followers, ug.following, ug.watched_count,
       mp.year, mp.genres, mp.genre_multi_hot, me.title_embedding,
       mr.review_count, mr.mean_rating, mr.days_since_previous,
       mg.rated_degree, mg.watched_degree, mg.genre_count, mg.people_count, mg.actor_count,
       mg.director_count, mg.pagerank
FROM {labels} l
LEFT JOIN LATERAL (
    SELECT u.age::int AS age, u.gender, u.occupation, u.city, t.name AS tier, t.monthly_price::float8 AS monthly_price
    FROM users u JOIN subscriptions s ON s.user_id = u.id JOIN subscription_tiers t ON t.id = s.tier_id
    WHERE u.id = l.user_id AND s.started_at <= l.event_timestamp ORDER BY s.started_at DESC LIMIT 1) up ON TRUE
LEFT JOIN LATERAL (
    SELECT * FROM feat_user_playback f WHERE f.user_id = l.user_id AND f.event_timestamp <= l.event_timestamp
    ORDER BY f.event_timestamp DESC, f.created_timestamp DESC LIMIT 1) pb ON TRUE
LEFT JOIN LATERAL (
    SELECT * FROM feat_user_reviews f WHERE f.user_id = l.user_id AND f.event_timestamp <= l.event_timestamp
    ORDER BY f.event_timestamp DESC, f.created_timestamp DESC LIMIT 1) ur ON TRUE
LEFT JOIN LATERAL (
    SELECT * FROM feat_user_graph f WHERE f.user_id = l.user_id AND f.event_timestamp <= l.event_timestamp
    ORDER BY f.event_timestamp DESC, f.created_timestamp DESC LIMIT 1) ug ON TRUE
LEFT JOIN LATERAL (
    SELECT m.year::int AS year,
           coalesce((SELECT string_agg(g.name, '|' ORDER BY g.id) FROM movie_genres x JOIN genres g ON g.id = x.genre_id
                     WHERE x.movie_id = m.id), '') AS genres,
           ARRAY(SELECT (x.movie_id IS NOT NULL)::int FROM genres g
                 LEFT JOIN movie_genres x ON x.genre_id = g.id AND x.movie_id = m.id ORDER BY g.id) AS genre_multi_hot
    FROM movies m
    WHERE m.id = l.movie_id
      AND coalesce(m.added_at - interval '1 second', TIMESTAMPTZ '1970-01-01 00:00:00+00')
          <= l.event_timestamp) mp ON TRUE
LEFT JOIN LATERAL (
    SELECT e.embedding::real[] AS title_embedding FROM movie_embeddings e JOIN movies m ON m.id = e.movie_id
    WHERE e.movie_id = l.movie_id
      AND coalesce(m.added_at - interval '1 second', TIMESTAMPTZ '1970-01-01 00:00:00+00') <= l.event_timestamp
    ) me ON TRUE
LEFT JOIN LATERAL (
    SELECT * FROM feat_movie_reviews f WHERE f.movie_id = l.movie_id AND f.event_timestamp <= l.event_timestamp
    ORDER BY f.event_timestamp DESC, f.created_timestamp DESC LIMIT 1) mr ON TRUE
LEFT JOIN LATERAL (
    SELECT * FROM feat_movie_graph f WHERE f.movie_id = l.movie_id AND f.event_timestamp <= l.event_timestamp
    ORDER BY f.event_timestamp DESC, f.created_timestamp DESC LIMIT 1) mg ON TRUE
"""


def hand_written_join(dsn: str, labels: pd.DataFrame) -> pd.DataFrame:
    """The engagement_training_v1 features for ``labels`` with HAND_WRITTEN_PIT_JOIN."""
    with psycopg.connect(dsn) as conn, conn.cursor(binary=True) as cur:
        cur.execute(
            "CREATE TEMP TABLE bench_labels (user_id bigint, movie_id bigint, event_timestamp timestamptz) "
            "ON COMMIT DROP"
        )
        rows = zip(
            labels["user_id"].tolist(),
            labels["movie_id"].tolist(),
            (labels["event_timestamp"] - LEAKAGE_GUARD).dt.to_pydatetime().tolist(),
            strict=True,
        )
        with cur.copy("COPY bench_labels FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute("ANALYZE bench_labels")
        cur.execute(HAND_WRITTEN_PIT_JOIN.format(labels="bench_labels"))
        columns = [c.name for c in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=columns)


def bench_feature_store(
    stores: Stores, *, n_labels: int = 100_000, stock_labels: int = 5_000, seed: int = 42
) -> dict[str, Any]:
    """Materialization rows/s and historical retrieval of ``n_labels`` labels: Feast vs hand-written SQL.

    ``stock_labels`` > 0 also times Feast's stock postgres point-in-time join (which our offline
    store replaces, see sources/feature_store/offline.py) on that many labels, next to ours on the same."""
    store = open_feature_store(stores.endpoints)
    views = store.list_feature_views()
    start = min(t for t in (earliest_event(store, v) for v in views) if t is not None)
    report = materialize(store, start=start, end=datetime.now(UTC))  # a full re-materialization
    labels = label_events(stores)
    sample = labels.sample(n=min(n_labels, len(labels)), random_state=seed, ignore_index=True)

    t0 = time.perf_counter()
    frame = training_frame(store, sample)
    feast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hand = hand_written_join(stores.endpoints.pg_dsn, sample)
    hand_s = time.perf_counter() - t0
    figures: dict[str, Any] = {}
    if stock_labels > 0:
        few = sample.head(stock_labels)
        t0 = time.perf_counter()
        training_frame(store, few)
        figures["ours_seconds_on_stock_sample"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        training_frame(open_feature_store(stores.endpoints, offline_store_type="postgres"), few)
        figures["stock_feast_seconds"] = round(time.perf_counter() - t0, 2)
        figures["stock_labels"] = len(few)
    return {
        **figures,
        "materialize_rows": report.rows,
        "materialize_seconds": round(report.seconds, 2),
        "materialize_rows_per_s": round(report.rows_per_second(), 1),
        "labels": len(sample),
        "feature_columns": sum("__" in c for c in frame.columns),
        "feast_historical_seconds": round(feast_s, 2),
        "feast_rows_per_s": round(len(sample) / feast_s, 1),
        "hand_written_sql_seconds": round(hand_s, 2),
        "hand_written_columns": len(hand.columns) - 3,
        "ratio": round(feast_s / hand_s, 2),
    }
