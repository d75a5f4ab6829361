"""The Feast feature store over the real embedded stores: point-in-time correctness against an
independent recomputation from the systems of record, online/offline consistency, bad label
frames, splits, and the ``marquee feast`` pass-through."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore
from sqlalchemy import text

from model.data.point_in_time import (
    LabelFrameError,
    label_events,
    recbole_split,
    time_split,
    training_frame,
    validate_labels,
)
from sources.feature_store.env import FEATURE_REPO, FeastConfigError, feast_environment, open_feature_store
from sources.feature_store.materialize import apply_repo, materialize
from sources.ingest import IngestReport
from sources.stores import mongo
from sources.stores.clients import Endpoints, Stores

USER_VIEWS = ("user_profile", "user_playback", "user_reviews", "user_graph")
MOVIE_VIEWS = ("movie_profile", "movie_embedding", "movie_reviews", "movie_graph")


# fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(feature_store: FeatureStore) -> FeatureStore:
    """Features exported, the repo applied and materialized (tests/conftest.py)."""
    return feature_store


@pytest.fixture(scope="module")
def labels(stores: Stores, loaded: IngestReport) -> pd.DataFrame:
    return label_events(stores)


@pytest.fixture(scope="module")
def sample(labels: pd.DataFrame) -> pd.DataFrame:
    """Random ratings plus the hard cases: a user's and a movie's very first rating (nothing
    before them), and a rating sharing its instant with another rating of the same user (the
    other one must not leak in either)."""
    first_of_user = labels.groupby("user_id").head(1).sample(2, random_state=1)
    first_of_movie = labels.groupby("movie_id").head(1).sample(2, random_state=2)
    same_instant = labels[labels.duplicated(["user_id", "event_timestamp"], keep=False)].sample(3, random_state=3)
    picked = pd.concat([labels.sample(20, random_state=0), first_of_user, first_of_movie, same_instant])
    return picked.drop_duplicates(["user_id", "movie_id", "event_timestamp"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def frame(store: FeatureStore, sample: pd.DataFrame) -> pd.DataFrame:
    return training_frame(store, sample)


# independent recomputation from the systems of record ------------------------------------


def _epoch(moment: pd.Timestamp) -> int:
    return int(moment.timestamp())


def _days_since_previous(instants: list[datetime]) -> float:
    distinct = sorted(set(instants))
    return (distinct[-1] - distinct[-2]).total_seconds() / 86400 if len(distinct) > 1 else 0.0


def review_features(stores: Stores, key: str, entity: int, before: datetime) -> dict[str, Any] | None:
    """review_count, mean_rating, days_since_previous from MongoDB reviews strictly before ``before``."""
    docs = list(mongo.live(stores.mongo, "reviews").find({key: entity, "ts": {"$lt": before}}, {"rating": 1, "ts": 1}))
    if not docs:
        return None
    return {
        "review_count": len(docs),
        "mean_rating": float(np.mean([d["rating"] for d in docs])),
        "days_since_previous": _days_since_previous([d["ts"] for d in docs]),
    }


def playback_features(stores: Stores, user: int, before: datetime) -> dict[str, Any] | None:
    doc = mongo.live(stores.mongo, "playback_logs").find_one({"_id": user}) or {"sessions": []}
    sessions = sorted(
        (s for s in doc["sessions"] if s["timestamp"] < before), key=lambda s: (s["timestamp"], s["session_id"])
    )
    if not sessions:
        return None
    durations = [float(s["duration_seconds"]) for s in sessions]
    devices = [s["device"] for s in sessions]
    last5 = durations[-5:]
    return {
        "session_count": len(sessions),
        "mean_duration_s": float(np.mean(durations)),
        "total_duration_s": float(np.sum(durations)),
        "mean_buffer_rate": float(np.mean([s["buffer_rate"] for s in sessions])),
        **{f"share_{d}": devices.count(d) / len(devices) for d in ("tv", "mobile", "desktop", "tablet")},
        "last5_durations": [0.0] * (5 - len(last5)) + last5,
    }


def user_graph_features(stores: Stores, user: int, before: datetime) -> dict[str, Any] | None:
    row = stores.graph.read(
        "MATCH (u:User {id: $u}) "
        "OPTIONAL MATCH (u)-[w:WATCHED]->(:Movie) WHERE w.ts < $t "
        "WITH u, count(w) AS watched "
        "OPTIONAL MATCH (f:User)-[:FOLLOWS]->(u) WITH u, watched, count(f) AS followers "
        "OPTIONAL MATCH (u)-[:FOLLOWS]->(g:User) RETURN watched, followers, count(g) AS following",
        {"u": user, "t": _epoch(pd.Timestamp(before))},
    )[0]
    if row["watched"] == 0:  # the feature rows are written at WATCHED events: none yet, no row
        return None
    return {"followers": row["followers"], "following": row["following"], "watched_count": row["watched"]}


def movie_graph_features(stores: Stores, movie: int, before: datetime) -> dict[str, Any]:
    t = _epoch(pd.Timestamp(before))
    degrees = stores.graph.read(
        "MATCH (m:Movie {id: $m}) "
        "OPTIONAL MATCH (:User)-[r:RATED]->(m) WHERE r.ts < $t WITH m, count(r) AS rated "
        "OPTIONAL MATCH (:User)-[w:WATCHED]->(m) WHERE w.ts < $t RETURN rated, count(w) AS watched",
        {"m": movie, "t": t},
    )[0]
    credits = stores.graph.read(
        "MATCH (m:Movie {id: $m}) OPTIONAL MATCH (p:Person)-[c]->(m) "
        "RETURN count(DISTINCT p) AS people, "
        "count(DISTINCT CASE WHEN type(c) = 'ACTED_IN' THEN p END) AS actors, "
        "count(DISTINCT CASE WHEN type(c) = 'DIRECTED' THEN p END) AS directors",
        {"m": movie},
    )[0]
    genres = stores.graph.read("MATCH (:Movie {id: $m})-[:HAS_GENRE]->(g:Genre) RETURN count(g) AS n", {"m": movie})
    return {
        "rated_degree": degrees["rated"],
        "watched_degree": degrees["watched"],
        "genre_count": genres[0]["n"],
        "people_count": credits["people"],
        "actor_count": credits["actors"],
        "director_count": credits["directors"],
    }


def profile_features(stores: Stores, user: int, movie: int, before: datetime) -> dict[str, dict[str, Any] | None]:
    with stores.pg.connect() as conn:
        user_row = (
            conn.execute(
                text(
                    "SELECT u.age, u.gender, u.occupation, u.city, t.name AS tier, "
                    "t.monthly_price::float8 AS monthly_price FROM users u "
                    "JOIN subscriptions s ON s.user_id = u.id JOIN subscription_tiers t ON t.id = s.tier_id "
                    "WHERE u.id = :u AND s.started_at < :t"
                ),
                {"u": user, "t": before},
            )
            .mappings()
            .first()
        )
        movie_row = (
            conn.execute(
                text(
                    "SELECT m.year, (SELECT string_agg(g.name, '|' ORDER BY g.id) FROM movie_genres x "
                    "JOIN genres g ON g.id = x.genre_id WHERE x.movie_id = m.id) AS genres, "
                    "e.embedding::text AS embedding FROM movies m JOIN movie_embeddings e ON e.movie_id = m.id "
                    "WHERE m.id = :m AND m.added_at - interval '1 second' < :t"
                ),
                {"m": movie, "t": before},
            )
            .mappings()
            .first()
        )
    return {
        "user_profile": dict(user_row) if user_row else None,
        "movie_profile": dict(movie_row) if movie_row else None,
    }


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, list):
        return len(actual) == len(expected) and bool(np.allclose(np.asarray(actual, float), expected, rtol=1e-9))
    if isinstance(expected, float):
        return bool(np.isclose(float(actual), expected, rtol=1e-9, atol=1e-12))
    return bool(actual == expected)


def _assert_view(row: pd.Series, view: str, expected: dict[str, Any] | None, where: str) -> None:
    columns = [c for c in row.index if c.startswith(f"{view}__")]
    if expected is None:
        present = {c: row[c] for c in columns if not _is_null(row[c])}
        assert not present, f"{where}: {view} should be empty (nothing before t) but has {present}"
        return
    for name, value in expected.items():
        got = row[f"{view}__{name}"]
        assert _same(got, value), f"{where}: {view}.{name} = {got!r}, systems of record say {value!r}"


def _is_null(value: Any) -> bool:
    return value is None or (not isinstance(value, list | np.ndarray) and bool(pd.isna(value)))


# point-in-time correctness -----------------------------------------------------------------


def test_training_frame_keeps_labels_and_order(frame: pd.DataFrame, sample: pd.DataFrame) -> None:
    assert len(frame) == len(sample)
    pd.testing.assert_frame_equal(frame[list(sample.columns)], sample)
    assert frame["event_timestamp"].dt.tz is not None
    for view in (*USER_VIEWS, *MOVIE_VIEWS, "user_movie_affinity"):
        assert any(c.startswith(f"{view}__") for c in frame.columns), view


def test_features_equal_recomputation_strictly_before_each_rating(stores: Stores, frame: pd.DataFrame) -> None:
    for _, row in frame.iterrows():
        user, movie, t = int(row["user_id"]), int(row["movie_id"]), row["event_timestamp"].to_pydatetime()
        where = f"user {user} movie {movie} at {t.isoformat()}"
        user_reviews = review_features(stores, "user_id", user, t)
        movie_reviews = review_features(stores, "movie_id", movie, t)
        _assert_view(row, "user_reviews", user_reviews, where)
        _assert_view(row, "movie_reviews", movie_reviews, where)
        _assert_view(row, "user_playback", playback_features(stores, user, t), where)
        _assert_view(row, "user_graph", user_graph_features(stores, user, t), where)
        _assert_view(row, "movie_graph", movie_graph_features(stores, movie, t), where)
        profiles = profile_features(stores, user, movie, t)
        _assert_view(row, "user_profile", profiles["user_profile"], where)
        movie_profile = profiles["movie_profile"]
        if movie_profile is None:
            _assert_view(row, "movie_profile", None, where)
            _assert_view(row, "movie_embedding", None, where)
        else:
            _assert_view(
                row, "movie_profile", {"year": movie_profile["year"], "genres": movie_profile["genres"] or ""}, where
            )
            embedding = [float(x) for x in movie_profile["embedding"].strip("[]").split(",")]
            got = np.asarray(row["movie_embedding__title_embedding"], dtype=np.float32)
            assert np.allclose(got, np.asarray(embedding, dtype=np.float32)), where

        # The on-demand view, from the recomputed review stats.
        def bias(stats: dict[str, Any] | None) -> float:
            return (
                0.0
                if stats is None
                else stats["review_count"] * (stats["mean_rating"] - 3.53) / (stats["review_count"] + 10)
            )

        expected = min(5.0, max(1.0, 3.53 + bias(user_reviews) + bias(movie_reviews)))
        assert np.isclose(row["user_movie_affinity__baseline_rating"], expected, rtol=1e-9), where


def test_hard_cases_are_in_the_sample(frame: pd.DataFrame) -> None:
    """The sample exercises empty histories (so the null branch above is really tested)."""
    assert frame["user_reviews__review_count"].isna().any()
    assert frame["movie_reviews__review_count"].isna().any()
    # A movie's first rating has no review history yet, but the movie is in the catalogue (from a
    # second before that rating), so its content features are there: the engagement net needs them.
    first_ratings = frame[frame["movie_reviews__review_count"].isna()]
    assert first_ratings["movie_profile__year"].notna().all()
    assert first_ratings["movie_embedding__title_embedding"].notna().all()


def test_later_feature_rows_change_nothing_at_t(stores: Stores, store: FeatureStore, sample: pd.DataFrame) -> None:
    """Feature rows one microsecond after each label (absurd values) must not reach it.

    Written at the feature-table level: ``marquee export`` is append-only by event-time
    watermark, so a late Mongo event would neither reach the tables nor be removable without
    a full rebuild; the point-in-time join is what is under test here."""
    rows = sample.head(8)
    before = training_frame(store, rows)
    marker = datetime(2000, 1, 1, tzinfo=UTC)  # created_timestamp identifying our rows
    inserts = {
        "feat_user_reviews": ("user_id", "review_count, mean_rating, days_since_previous", "-7, -7, -7"),
        "feat_movie_reviews": ("movie_id", "review_count, mean_rating, days_since_previous", "-7, -7, -7"),
        "feat_user_graph": ("user_id", "followers, following, watched_count", "-7, -7, -7"),
    }
    try:
        with stores.pg.begin() as conn:
            for table, (key, columns, values) in inserts.items():
                for _, r in rows.iterrows():
                    conn.execute(
                        text(
                            f"INSERT INTO {table} ({key}, event_timestamp, created_timestamp, {columns}) "
                            f"VALUES (:k, :t, :c, {values}) ON CONFLICT DO NOTHING"
                        ),
                        {"k": int(r[key]), "t": r["event_timestamp"] + timedelta(microseconds=1), "c": marker},
                    )
        after = training_frame(store, rows)
        moved = training_frame(store, rows.assign(event_timestamp=rows["event_timestamp"] + timedelta(seconds=1)))
    finally:
        with stores.pg.begin() as conn:
            for table in inserts:
                conn.execute(text(f"DELETE FROM {table} WHERE created_timestamp = :c"), {"c": marker})
    pd.testing.assert_frame_equal(after, before)
    # ... while a label after them does see them (the rows were really there).
    assert (moved["user_reviews__review_count"] == -7).all()
    assert (moved["movie_graph__rated_degree"] != -7).all()


def test_lateral_join_equals_feasts_own_join(
    stores: Stores, store: FeatureStore, labels: pd.DataFrame, sample: pd.DataFrame
) -> None:
    """Our offline store (sources/feature_store/offline.py) answers exactly as Feast's stock postgres join."""
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import PostgreSQLOfflineStore

    stock = open_feature_store(stores.endpoints, offline_store_type="postgres")
    assert type(stock._get_provider().offline_store) is PostgreSQLOfflineStore  # really Feast's own
    assert type(store._get_provider().offline_store) is not PostgreSQLOfflineStore
    rows = pd.concat([sample, labels.sample(100, random_state=7)]).drop_duplicates(
        ["user_id", "movie_id", "event_timestamp"], ignore_index=True
    )
    ours, theirs = training_frame(store, rows), training_frame(stock, rows)
    assert list(ours.columns) == list(theirs.columns)
    for column in ours.columns:
        for i, (a, b) in enumerate(zip(ours[column], theirs[column], strict=True)):
            if _is_null(a) or _is_null(b):
                assert _is_null(a) and _is_null(b), f"{column} row {i}: {a!r} vs Feast's {b!r}"
            elif isinstance(b, list | np.ndarray):
                assert np.array_equal(np.asarray(a), np.asarray(b)), f"{column} row {i}"
            else:
                assert a == b, f"{column} row {i}: {a!r} vs Feast's {b!r}"


# online / offline consistency ----------------------------------------------------------------


def test_online_features_equal_latest_offline_rows(stores: Stores, store: FeatureStore) -> None:
    pairs = [{"user_id": u, "movie_id": m} for u, m in ((1, 1), (13, 50), (405, 181), (943, 1682), (655, 100))]
    online = store.get_online_features(
        features=store.get_feature_service("engagement_serving_v1"), entity_rows=pairs, full_feature_names=True
    ).to_df()
    latest = {
        "user_reviews": ("feat_user_reviews", "user_id", ("review_count", "mean_rating", "days_since_previous")),
        "user_playback": ("feat_user_playback", "user_id", ("session_count", "mean_duration_s", "last5_durations")),
        "user_graph": ("feat_user_graph", "user_id", ("followers", "following", "watched_count")),
        "movie_reviews": ("feat_movie_reviews", "movie_id", ("review_count", "mean_rating", "days_since_previous")),
        "movie_graph": ("feat_movie_graph", "movie_id", ("rated_degree", "actor_count", "pagerank")),
        "movie_neighbours": ("feat_movie_neighbours", "movie_id", ("neighbour_ids", "neighbour_scores")),
    }
    with stores.pg.connect() as conn:
        for i, pair in enumerate(pairs):
            for view, (table, key, columns) in latest.items():
                expected = (
                    conn.execute(
                        text(
                            f"SELECT {', '.join(columns)} FROM {table} WHERE {key} = :k "
                            "ORDER BY event_timestamp DESC, created_timestamp DESC LIMIT 1"
                        ),
                        {"k": pair[key]},
                    )
                    .mappings()
                    .first()
                )
                assert expected is not None, f"{table} has no row for {pair}"
                for column in columns:
                    got = online.loc[i, f"{view}__{column}"]
                    value = expected[column]
                    value = [float(v) for v in value] if isinstance(value, list) else value
                    got = list(got) if isinstance(got, list | np.ndarray) else got
                    assert _same(got, value), f"{view}.{column} for {pair}: online {got!r}, offline {value!r}"
            profile = conn.execute(
                text("SELECT u.city, m.year FROM users u, movies m WHERE u.id = :u AND m.id = :m"),
                {"u": pair["user_id"], "m": pair["movie_id"]},
            ).one()
            assert online.loc[i, "user_profile__city"] == profile.city
            assert online.loc[i, "movie_profile__year"] == profile.year
            assert len(online.loc[i, "movie_embedding__title_embedding"]) == 384
    assert online["user_movie_affinity__baseline_rating"].between(1, 5).all()


def test_materialize_again_is_a_no_op(store: FeatureStore) -> None:
    report = materialize(store)
    assert report.rows == 0, [(v.view, v.rows) for v in report.views]


def test_apply_again_deletes_nothing(store: FeatureStore) -> None:
    assert apply_repo(store)["deleted"] == 0


# bad label frames -----------------------------------------------------------------------


def test_unknown_ids_get_null_features(store: FeatureStore) -> None:
    labels = pd.DataFrame(
        {
            "user_id": [10_000_001, 1],
            "movie_id": [1, 20_000_002],
            "event_timestamp": pd.to_datetime(["1998-03-01", "1998-03-01"], utc=True),
        }
    )
    frame = training_frame(store, labels)
    assert frame.loc[0, ["user_reviews__review_count", "user_profile__city"]].isna().all()
    assert frame.loc[0, "movie_reviews__review_count"] > 0  # the known movie still has features
    assert frame.loc[1, ["movie_reviews__review_count", "movie_profile__year"]].isna().all()
    assert frame.loc[1, "user_reviews__review_count"] > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(event_timestamp=f["event_timestamp"].dt.tz_localize(None)), "timezone-aware"),
        (lambda f: f.assign(event_timestamp=f["event_timestamp"].where(f.index != 1)), "without an event_timestamp"),
        (lambda f: f.drop(columns=["event_timestamp"]), "lacks column"),
        (lambda f: pd.concat([f, f.iloc[[0]]], ignore_index=True), "duplicate"),
        (lambda f: f.assign(user_id=f["user_id"].astype(float).where(f.index != 0)), "without a user_id"),
        (lambda f: f.assign(movie_id=f["movie_id"].astype(str)), "must be integers"),
    ],
)
def test_bad_label_frames_are_refused(labels: pd.DataFrame, change: Any, message: str) -> None:
    bad = change(labels.head(5).copy())
    with pytest.raises(LabelFrameError, match=message):
        validate_labels(bad)


def test_bad_label_frame_never_reaches_feast(store: FeatureStore, labels: pd.DataFrame) -> None:
    naive = labels.head(3).assign(event_timestamp=labels.head(3)["event_timestamp"].dt.tz_localize(None))
    with pytest.raises(LabelFrameError):
        training_frame(store, naive)


# labels and splits ------------------------------------------------------------------------


def test_label_events_cover_every_rating(labels: pd.DataFrame, loaded: IngestReport) -> None:
    assert len(labels) == loaded.counts["mongo.reviews"]
    assert str(labels["event_timestamp"].dt.tz) == "UTC"
    assert labels["engagement"].between(0, 1).all()
    assert np.allclose(labels["engagement"], (labels["rating"] - 1) / 4)


def test_time_split_is_global_and_ordered(labels: pd.DataFrame) -> None:
    train, val, test = time_split(labels, val=0.1, test=0.1)
    assert len(train) + len(val) + len(test) == len(labels)
    assert train["event_timestamp"].max() <= val["event_timestamp"].min()
    assert val["event_timestamp"].max() <= test["event_timestamp"].min()
    assert abs(len(test) / len(labels) - 0.1) < 0.01 and abs(len(val) / len(labels) - 0.1) < 0.01


def test_recbole_split_per_user_chronological(labels: pd.DataFrame) -> None:
    train, val, test = recbole_split(labels)
    assert len(train) + len(val) + len(test) == len(labels)
    for user in (1, 405, 655):
        n = int((labels["user_id"] == user).sum())
        assert len(val[val.user_id == user]) == int(0.1 * n)
        assert len(test[test.user_id == user]) == int(0.1 * n)
        assert (
            train[train.user_id == user]["event_timestamp"].max() <= val[val.user_id == user]["event_timestamp"].min()
        )
        assert val[val.user_id == user]["event_timestamp"].max() <= test[test.user_id == user]["event_timestamp"].min()
    tiny = pd.DataFrame({"user_id": [7] * 5, "event_timestamp": pd.date_range("1998-01-01", periods=5, tz="UTC")})
    tr, va, te = recbole_split(tiny)  # 0.1 * 5 rounds to 0: RecBole still gives one each
    assert (len(tr), len(va), len(te)) == (3, 1, 1)
    assert te["event_timestamp"].iloc[0] == tiny["event_timestamp"].max()


# configuration and command line -------------------------------------------------------------


def test_feast_environment_from_socket_and_external_dsns() -> None:
    socket = feast_environment(Endpoints("postgresql://postgres:@/postgres?host=/data/pg", "", "", None, frozenset()))
    assert socket["MARQUEE_FEAST_PG_HOST"] == "/data/pg"
    assert (socket["MARQUEE_FEAST_PG_PORT"], socket["MARQUEE_FEAST_PG_DB"], socket["MARQUEE_FEAST_PG_PASSWORD"]) == (
        "5432",
        "postgres",
        "",
    )
    assert "search_path%3Dfeast_registry" in socket["MARQUEE_FEAST_REGISTRY_URL"]
    external = feast_environment(
        Endpoints("postgresql://bob:s%40cret@db.example.com:6543/marq?sslmode=require", "", "", None, frozenset())
    )
    assert external["MARQUEE_FEAST_PG_HOST"] == "db.example.com"
    assert (external["MARQUEE_FEAST_PG_PORT"], external["MARQUEE_FEAST_PG_USER"]) == ("6543", "bob")
    assert (external["MARQUEE_FEAST_PG_PASSWORD"], external["MARQUEE_FEAST_PG_SSLMODE"]) == ("s@cret", "require")
    with pytest.raises(FeastConfigError, match="single quote"):
        feast_environment(Endpoints("postgresql://bob:it's@db/marq", "", "", None, frozenset()))


def test_feast_reads_only_the_definitions() -> None:
    from feast.repo_operations import get_repo_files

    assert get_repo_files(FEATURE_REPO) == [(FEATURE_REPO / "definitions.py").resolve()]


def test_marquee_feast_passes_commands_through(store: FeatureStore, stores: Stores) -> None:
    marquee = Path(sys.executable).with_name("marquee")
    result = subprocess.run(
        [str(marquee), "feast", "feature-views", "list"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MARQUEE_DATA_DIR": str(stores.settings.data_dir)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for view in (*USER_VIEWS, *MOVIE_VIEWS, "movie_neighbours", "user_movie_affinity"):
        assert view in result.stdout


def test_the_frame_keeps_one_copy_of_each_title_embedding(store: FeatureStore, labels: pd.DataFrame) -> None:
    """Every rating of a title points at one read-only copy of its embedding, across chunks of
    the join: at 1M ratings this is a pointer per row instead of 384 floats (docs/scale.md)."""
    top = labels["movie_id"].value_counts().index[:3]
    rows = labels[labels["movie_id"].isin(top)].groupby("movie_id").tail(40).reset_index(drop=True)
    framed = training_frame(store, rows, chunk_rows=50)  # 120 rows: three chunks
    vectors = framed.dropna(subset=["movie_embedding__title_embedding"])
    copies = vectors.groupby("movie_id")["movie_embedding__title_embedding"].agg(lambda v: len({id(x) for x in v}))
    assert len(copies) == 3 and (copies == 1).all()
    first = vectors["movie_embedding__title_embedding"].iloc[0]
    assert first.dtype == np.float32 and first.shape == (384,) and not first.flags.writeable


def test_labels_since_keep_only_the_window(stores: Stores, labels: pd.DataFrame) -> None:
    since = labels["event_timestamp"].iloc[len(labels) // 2].to_pydatetime()
    recent = label_events(stores, since=since)
    expected = labels[labels["event_timestamp"] >= since].reset_index(drop=True)
    pd.testing.assert_frame_equal(recent, expected)
