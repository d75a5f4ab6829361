"""`marquee export` on ML-100K: point-in-time correctness against the systems of record,
idempotency, incremental runs and failure atomicity.

Every expected value is recomputed here from MongoDB (``find`` + Python) and the graph
(Cypher + Python/networkx), using only events at or before the row's event time.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import networkx as nx
import pytest
from sqlalchemy import inspect, text

from sources.export.graph_static import NEIGHBOURS
from sources.export.run import SOURCES, ExportError, ExportReport, export
from sources.ingest import IngestReport
from sources.stores import mongo
from sources.stores.clients import Stores

FEATURE_TABLES = (
    "feat_user_playback",
    "feat_user_reviews",
    "feat_movie_reviews",
    "feat_user_graph",
    "feat_movie_graph",
    "feat_movie_neighbours",
)
STATE_TABLES = (
    *FEATURE_TABLES,
    "raw_reviews",
    "raw_playback_sessions",
    "raw_graph_edges",
    "raw_graph_movie_static",
    "raw_graph_user_static",
    "export_watermarks",
)
SAMPLE = 25
approx = pytest.approx


@pytest.fixture(scope="module")
def exported(stores: Stores, loaded: IngestReport) -> ExportReport:
    return export(stores, full=True, quiet=True)


def table_digest(stores: Stores, table: str, where: str = "true") -> tuple[int, str]:
    """(rows, md5 of every row in primary-key order): equal digests = byte-identical contents."""
    key = ", ".join(inspect(stores.pg).get_pk_constraint(table)["constrained_columns"])
    with stores.pg.connect() as conn:
        row = conn.execute(
            text(
                f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY {key})), '') "
                f"FROM {table} t WHERE {where}"
            )
        ).one()
    return int(row[0]), str(row[1])


def snapshot(stores: Stores) -> dict[str, Any]:
    """Every state table's digest, and the raw tables' index definitions (a rebuild drops and
    builds them again inside its transaction)."""
    with stores.pg.connect() as conn:
        indexes = conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'raw%' ORDER BY 1")
        ).all()
    return {**{table: table_digest(stores, table) for table in STATE_TABLES}, "indexes": [tuple(r) for r in indexes]}


def sample_rows(stores: Stores, table: str, n: int = SAMPLE, seed: int = 7) -> list[dict[str, Any]]:
    with stores.pg.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table}"))]
    picked = random.Random(seed).sample(rows, n)
    return picked


def days(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds() / 86400


def epoch(t: datetime) -> int:
    return int(t.timestamp())


# full export -------------------------------------------------------------------------------


def test_full_export_lands_every_event(stores: Stores, exported: ExportReport) -> None:
    reviews = mongo.live(stores.mongo, "reviews").count_documents({})
    sessions = sum(len(d["sessions"]) for d in mongo.live(stores.mongo, "playback_logs").find({}, {"sessions": 1}))
    edges = sum(stores.graph.read(f"MATCH ()-[r:{k}]->() RETURN count(r) AS n")[0]["n"] for k in ("RATED", "WATCHED"))
    assert exported.rows_landed == {"reviews": reviews, "playback": sessions, "graph": edges}
    assert (reviews, sessions, edges) == (100_000, 100_000, 200_000)
    with stores.pg.connect() as conn:
        # One row per (user, instant) with a review: as many as distinct (user_id, ts) pairs.
        distinct_user_ts = len({(d["user_id"], d["ts"]) for d in mongo.live(stores.mongo, "reviews").find({})})
        assert conn.execute(text("SELECT count(*) FROM feat_user_reviews")).scalar() == distinct_user_ts
        assert conn.execute(text("SELECT count(*) FROM feat_movie_neighbours")).scalar() == 1682
        bad_last5 = "SELECT count(*) FROM feat_user_playback WHERE cardinality(last5_durations) <> 5"
        assert conn.execute(text(bad_last5)).scalar() == 0


def test_a_rebuild_leaves_the_raw_tables_indexed_as_migrated(stores: Stores, exported: ExportReport) -> None:
    # The full export loaded the raw tables with their secondary indexes dropped, then built them.
    secondary = {name for name, _ in snapshot(stores)["indexes"] if name.startswith("ix_")}
    assert secondary == {
        "ix_raw_reviews_movie_ts", "ix_raw_reviews_user_ts", "ix_raw_reviews_ts", "ix_raw_playback_sessions_user_ts",
        "ix_raw_graph_edges_movie_kind_ts", "ix_raw_graph_edges_user_kind_ts",
    }  # fmt: skip


def test_every_feature_table_is_keyed_by_entity_and_event_time(stores: Stores, exported: ExportReport) -> None:
    inspector = inspect(stores.pg)
    for table in FEATURE_TABLES:
        entity = "movie_id" if "movie" in table else "user_id"
        assert inspector.get_pk_constraint(table)["constrained_columns"] == [entity, "event_timestamp"], table
        types = {c["name"]: c["type"] for c in inspector.get_columns(table)}
        for column in ("event_timestamp", "created_timestamp"):
            assert types[column].timezone is True, (table, column)  # timestamptz


# point-in-time correctness -------------------------------------------------------------------


@pytest.mark.parametrize("entity", ["user_id", "movie_id"])
def test_review_features_match_mongo_as_of_each_event(stores: Stores, exported: ExportReport, entity: str) -> None:
    table = "feat_user_reviews" if entity == "user_id" else "feat_movie_reviews"
    reviews = mongo.live(stores.mongo, "reviews")
    for row in sample_rows(stores, table):
        t = row["event_timestamp"]
        past = list(reviews.find({entity: row[entity], "ts": {"$lte": t}}, {"rating": 1, "ts": 1}))
        assert row["review_count"] == len(past)
        assert row["mean_rating"] == approx(sum(d["rating"] for d in past) / len(past), rel=1e-12)
        earlier = [d["ts"] for d in past if d["ts"] < t]
        assert max(d["ts"] for d in past) == t  # the row is at an event of this entity
        assert row["days_since_previous"] == approx(days(t, max(earlier)) if earlier else 0.0, rel=1e-12)


def test_playback_features_match_mongo_as_of_each_session(stores: Stores, exported: ExportReport) -> None:
    playback = mongo.live(stores.mongo, "playback_logs")
    for row in sample_rows(stores, "feat_user_playback"):
        t = row["event_timestamp"]
        doc = playback.find_one({"user_id": row["user_id"]})
        assert doc is not None
        past = sorted(
            (s for s in doc["sessions"] if s["timestamp"] <= t), key=lambda s: (s["timestamp"], s["session_id"])
        )
        n = len(past)
        durations = [float(s["duration_seconds"]) for s in past]
        assert row["session_count"] == n
        assert row["total_duration_s"] == sum(durations)
        assert row["mean_duration_s"] == approx(sum(durations) / n, rel=1e-12)
        assert row["mean_buffer_rate"] == approx(sum(s["buffer_rate"] for s in past) / n, rel=1e-12)
        for device in ("tv", "mobile", "desktop", "tablet"):
            share = sum(s["device"] == device for s in past) / n
            assert row[f"share_{device}"] == approx(share, rel=1e-12)
        assert row["last5_durations"] == ([0.0] * 5 + durations)[-5:]


def test_user_graph_features_match_cypher_as_of_each_watch(stores: Stores, exported: ExportReport) -> None:
    for row in sample_rows(stores, "feat_user_graph"):
        p = {"u": row["user_id"], "t": epoch(row["event_timestamp"])}
        watched = stores.graph.read("MATCH (:User {id: $u})-[r:WATCHED]->() WHERE r.ts <= $t RETURN count(r) AS n", p)
        followers = stores.graph.read("MATCH (:User)-[:FOLLOWS]->(u:User {id: $u}) RETURN count(*) AS n", p)
        following = stores.graph.read("MATCH (u:User {id: $u})-[:FOLLOWS]->(:User) RETURN count(*) AS n", p)
        assert (row["watched_count"], row["followers"], row["following"]) == (
            watched[0]["n"],
            followers[0]["n"],
            following[0]["n"],
        )


def _static_graph(stores: Stores) -> tuple[nx.Graph, dict[int, set[str]], dict[int, set[str]]]:
    """Person–Movie credits + Movie–Genre edges as an undirected graph; people and genres per movie."""
    graph = nx.Graph()
    people: dict[int, set[str]] = defaultdict(set)
    genres: dict[int, set[str]] = defaultdict(set)
    for r in stores.graph.read("MATCH (m:Movie) RETURN m.id AS m"):
        graph.add_node(f"m:{r['m']}")
    for r in stores.graph.read(
        "MATCH (p:Person)-[:ACTED_IN|DIRECTED|WROTE|PRODUCED]->(m:Movie) RETURN p.id AS p, m.id AS m"
    ):
        graph.add_edge(f"p:{r['p']}", f"m:{r['m']}")
        people[r["m"]].add(r["p"])
    for r in stores.graph.read("MATCH (m:Movie)-[:HAS_GENRE]->(g:Genre) RETURN m.id AS m, g.name AS g"):
        graph.add_edge(f"m:{r['m']}", f"g:{r['g']}")
        genres[r["m"]].add(r["g"])
    return graph, people, genres


def test_movie_graph_features_match_cypher_as_of_each_event(stores: Stores, exported: ExportReport) -> None:
    graph, _, _ = _static_graph(stores)
    rank = nx.pagerank(graph, alpha=0.85, tol=1e-12, max_iter=1000)
    with stores.pg.connect() as conn:
        added_rows = conn.execute(text("SELECT id, added_at FROM movies")).all()
    added = {movie_id: at for movie_id, at in added_rows}
    rows = sample_rows(stores, "feat_movie_graph")
    # and the catalogue-entry row of one sampled movie
    with stores.pg.connect() as conn:
        first = conn.execute(
            text("SELECT * FROM feat_movie_graph WHERE movie_id = :m ORDER BY event_timestamp LIMIT 1"),
            {"m": rows[0]["movie_id"]},
        ).one()
    rows.append(dict(first._mapping))
    assert first.event_timestamp <= added[first.movie_id] - timedelta(seconds=1)
    for row in rows:
        p = {"m": row["movie_id"], "t": epoch(row["event_timestamp"])}

        def one(cypher: str, params: dict[str, Any] = p) -> int:
            return int(stores.graph.read(cypher, params)[0]["n"])

        expected = {
            "rated_degree": one("MATCH ()-[r:RATED]->(:Movie {id: $m}) WHERE r.ts <= $t RETURN count(r) AS n"),
            "watched_degree": one("MATCH ()-[r:WATCHED]->(:Movie {id: $m}) WHERE r.ts <= $t RETURN count(r) AS n"),
            "genre_count": one("MATCH (:Movie {id: $m})-[:HAS_GENRE]->(g) RETURN count(DISTINCT g) AS n"),
            "people_count": one(
                "MATCH (p:Person)-[:ACTED_IN|DIRECTED|WROTE|PRODUCED]->(:Movie {id: $m}) RETURN count(DISTINCT p) AS n"
            ),
            "actor_count": one("MATCH (p:Person)-[:ACTED_IN]->(:Movie {id: $m}) RETURN count(DISTINCT p) AS n"),
            "director_count": one("MATCH (p:Person)-[:DIRECTED]->(:Movie {id: $m}) RETURN count(DISTINCT p) AS n"),
        }
        assert {k: row[k] for k in expected} == expected, row
        assert row["pagerank"] == approx(rank[f"m:{row['movie_id']}"], rel=1e-6)
        # the row is at an edge of this movie, or one second before it entered the catalogue
        at_edge = one("MATCH ()-[r:RATED|WATCHED]->(:Movie {id: $m}) WHERE r.ts = $t RETURN count(r) AS n")
        assert at_edge > 0 or row["event_timestamp"] == added[row["movie_id"]] - timedelta(seconds=1)


def test_movie_neighbours_match_a_python_two_hop(stores: Stores, exported: ExportReport) -> None:
    _, people, genres = _static_graph(stores)
    movies = sorted(set(people) | set(genres))
    for row in sample_rows(stores, "feat_movie_neighbours"):
        m = row["movie_id"]
        scores = {n: len(people[m] & people[n]) + 0.1 * len(genres[m] & genres[n]) for n in movies if n != m}
        ranked = sorted(((s, n) for n, s in scores.items() if s > 0), key=lambda sn: (-round(sn[0], 6), sn[1]))
        ranked = ranked[:NEIGHBOURS]
        assert row["neighbour_ids"] == [n for _, n in ranked]
        assert row["neighbour_scores"] == approx([s for s, _ in ranked], abs=1e-9)


# idempotency and incremental runs ----------------------------------------------------------


def test_second_export_lands_nothing_and_changes_no_byte(stores: Stores, exported: ExportReport) -> None:
    before = snapshot(stores)
    again = export(stores, quiet=True)
    assert again.rows_landed == {"reviews": 0, "playback": 0, "graph": 0}
    assert not any(s.rebuilt for s in again.sources)
    assert snapshot(stores) == before


def _latest_event(stores: Stores) -> datetime:
    with stores.pg.connect() as conn:
        return max(
            conn.execute(text(f"SELECT max(ts) FROM {t}")).scalar() for t in ("raw_reviews", "raw_playback_sessions")
        )


def _append_sessions(playback: Any, doc: dict[str, Any], sessions: list[dict[str, Any]], updated_at: datetime) -> None:
    """Append sessions the way a writer must: whole-document replace. (The embedded nx-27017
    server stringifies array elements on ``$push`` and datetimes on ``$set``: measured.)"""
    playback.replace_one(
        {"_id": doc["_id"]}, {**doc, "sessions": [*doc["sessions"], *sessions], "updated_at": updated_at}
    )


@pytest.fixture
def new_activity(stores: Stores, exported: ExportReport) -> Iterator[dict[str, Any]]:
    """One new review, playback session, RATED and WATCHED edge for an existing user and movie,
    after every other event; removed again afterwards, with the export state restored."""
    before = snapshot(stores)
    with stores.pg.connect() as conn:
        watermarks = conn.execute(text("SELECT * FROM export_watermarks")).all()
    user_id = 1
    rated = {r["m"] for r in stores.graph.read("MATCH (:User {id: 1})-[:RATED]->(m) RETURN m.id AS m")}
    movie_id = min(m for m in range(1, 1683) if m not in rated)
    watched_at = (_latest_event(stores) + timedelta(days=3)).replace(microsecond=0)
    rated_at = watched_at + timedelta(hours=2)
    reviews = mongo.live(stores.mongo, "reviews")
    playback = mongo.live(stores.mongo, "playback_logs")
    doc = playback.find_one({"_id": user_id})
    assert doc is not None
    review = {"_id": f"{user_id}:{movie_id}:{epoch(rated_at)}", "user_id": user_id, "movie_id": movie_id}
    session = {
        "session_id": "test-export-session",
        "movie_id": movie_id,
        "timestamp": watched_at,
        "duration_seconds": 4321,
        "device": "tablet",
        "buffer_rate": 0.02,
        "errors": 1,
    }
    params = {"u": user_id, "m": movie_id, "r": epoch(rated_at), "w": epoch(watched_at)}
    try:
        reviews.insert_one({**review, "rating": 4.0, "ts": rated_at})
        _append_sessions(playback, doc, [session], watched_at)
        stores.graph.write(
            "MATCH (u:User {id: $u}), (m:Movie {id: $m}) "
            "CREATE (u)-[:RATED {score: 4.0, ts: $r}]->(m), (u)-[:WATCHED {ts: $w, duration: 4321}]->(m)",
            params,
        )
        yield {"user": user_id, "movie": movie_id, "rated_at": rated_at, "watched_at": watched_at, "before": before}
    finally:
        reviews.delete_one({"_id": review["_id"]})
        playback.replace_one({"_id": user_id}, doc)
        stores.graph.write(
            "MATCH (:User {id: $u})-[r:RATED|WATCHED]->(:Movie {id: $m}) WHERE r.ts = $r OR r.ts = $w DELETE r", params
        )
        _forget(stores, user_id, movie_id, watched_at, watermarks)
        if snapshot(stores) != before:  # not the state we started from: rebuild from the restored stores
            export(stores, full=True, quiet=True)
        assert snapshot(stores) == before


def _forget(stores: Stores, user_id: int, movie_id: int, since: datetime, watermarks: list[Any]) -> None:
    """Undo an export of the new activity: its raw rows, the feature rows at its times, the watermarks."""
    with stores.pg.begin() as conn:
        at = {"u": user_id, "m": movie_id, "t": since}
        conn.execute(text("DELETE FROM raw_reviews WHERE user_id = :u AND movie_id = :m AND ts >= :t"), at)
        conn.execute(text("DELETE FROM raw_playback_sessions WHERE session_id = 'test-export-session'"))
        conn.execute(text("DELETE FROM raw_graph_edges WHERE user_id = :u AND movie_id = :m AND ts >= :t"), at)
        for table in FEATURE_TABLES:
            entity = "movie_id" if "movie" in table else "user_id"
            key = at["m"] if entity == "movie_id" else at["u"]
            conn.execute(text(f"DELETE FROM {table} WHERE {entity} = :k AND event_timestamp >= :t"), {"k": key, **at})
        conn.execute(text("DELETE FROM export_watermarks"))
        for row in watermarks:
            conn.execute(
                text(
                    "INSERT INTO export_watermarks (source, watermark, rows, ingest_run_id, digest, updated_at) "
                    "VALUES (:source, :watermark, :rows, :ingest_run_id, :digest, :updated_at)"
                ),
                dict(row._mapping),
            )


def test_incremental_export_lands_exactly_the_new_events(stores: Stores, new_activity: dict[str, Any]) -> None:
    u, m = new_activity["user"], new_activity["movie"]
    rated_at, watched_at = new_activity["rated_at"], new_activity["watched_at"]
    before: dict[str, tuple[int, str]] = new_activity["before"]

    report = export(stores, quiet=True)

    assert report.rows_landed == {"reviews": 1, "playback": 1, "graph": 2}
    assert not any(s.rebuilt for s in report.sources)
    # Everything that existed before is byte-identical (created_timestamp included): only rows at
    # the new events' times were added.
    new_rows = {
        "feat_user_reviews": f"user_id = {u} AND event_timestamp >= '{rated_at.isoformat()}'",
        "feat_movie_reviews": f"movie_id = {m} AND event_timestamp >= '{rated_at.isoformat()}'",
        "feat_user_playback": f"user_id = {u} AND event_timestamp >= '{watched_at.isoformat()}'",
        "feat_user_graph": f"user_id = {u} AND event_timestamp >= '{watched_at.isoformat()}'",
        "feat_movie_graph": f"movie_id = {m} AND event_timestamp >= '{watched_at.isoformat()}'",
    }
    for table, where in new_rows.items():
        assert table_digest(stores, table, f"NOT ({where})") == before[table], table
        assert table_digest(stores, table, where)[0] == (2 if table == "feat_movie_graph" else 1), table
    assert table_digest(stores, "feat_movie_neighbours") == before["feat_movie_neighbours"]

    with stores.pg.connect() as conn:

        def last_two(table: str, entity: str, key: int) -> list[dict[str, Any]]:
            rows = conn.execute(
                text(f"SELECT * FROM {table} WHERE {entity} = :k ORDER BY event_timestamp DESC LIMIT 2"), {"k": key}
            )
            return [dict(r._mapping) for r in rows]

        new, old = last_two("feat_user_reviews", "user_id", u)
        assert new["event_timestamp"] == rated_at and new["review_count"] == old["review_count"] + 1
        assert new["mean_rating"] == approx((old["mean_rating"] * old["review_count"] + 4.0) / new["review_count"])
        assert new["days_since_previous"] == approx(days(rated_at, old["event_timestamp"]))
        new, old = last_two("feat_movie_reviews", "movie_id", m)
        assert (new["event_timestamp"], new["review_count"]) == (rated_at, old["review_count"] + 1)
        new, old = last_two("feat_user_playback", "user_id", u)
        assert (new["event_timestamp"], new["session_count"]) == (watched_at, old["session_count"] + 1)
        assert new["last5_durations"] == [*old["last5_durations"][1:], 4321.0]
        assert new["total_duration_s"] == old["total_duration_s"] + 4321
        new, old = last_two("feat_user_graph", "user_id", u)
        assert (new["event_timestamp"], new["watched_count"]) == (watched_at, old["watched_count"] + 1)
        rated_row, watched_row = last_two("feat_movie_graph", "movie_id", m)
        assert rated_row["event_timestamp"] == rated_at and watched_row["event_timestamp"] == watched_at
        assert rated_row["rated_degree"] == watched_row["rated_degree"] + 1
        assert rated_row["watched_degree"] == watched_row["watched_degree"]

    assert export(stores, quiet=True).rows_landed == {"reviews": 0, "playback": 0, "graph": 0}


# failure atomicity --------------------------------------------------------------------------


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "rebuild"])
def test_a_bad_playback_document_fails_the_export_and_writes_nothing(
    stores: Stores, exported: ExportReport, full: bool
) -> None:
    before = snapshot(stores)
    assert ("ix_raw_playback_sessions_user_ts",) in [i[:1] for i in before["indexes"]]
    playback = mongo.live(stores.mongo, "playback_logs")
    doc = playback.find_one({"_id": 2})
    assert doc is not None
    late = (_latest_event(stores) + timedelta(days=1)).replace(microsecond=0)
    good = {"session_id": "test-good", "movie_id": 1, "timestamp": late, "duration_seconds": 100,
            "device": "tv", "buffer_rate": 0.0, "errors": 0}  # fmt: skip
    bad = {**good, "session_id": "test-bad", "timestamp": late + timedelta(minutes=1), "duration_seconds": "long"}
    try:
        # the good session comes first: it is read and landed before the bad one fails the source
        _append_sessions(playback, doc, [good, bad], late)
        with pytest.raises(ExportError, match=r"export of playback failed.*'test-bad'.*duration_seconds is 'long'"):
            # A rebuild of playback alone: the sources commit one by one, so a full run's earlier
            # sources would be (re)written before playback fails.
            export(stores, quiet=True, full=full, sources=["playback"] if full else SOURCES)
        assert snapshot(stores) == before
    finally:
        playback.replace_one({"_id": 2}, doc)
    assert export(stores, quiet=True).rows_landed == {"reviews": 0, "playback": 0, "graph": 0}
    assert snapshot(stores) == before


def test_a_bad_graph_edge_fails_the_graph_export_and_writes_nothing(stores: Stores, exported: ExportReport) -> None:
    before = snapshot(stores)
    late = epoch(_latest_event(stores)) + 86_400
    try:
        stores.graph.write(
            "MATCH (u:User {id: 3}), (m:Movie {id: 1}) CREATE (u)-[:WATCHED {ts: $t, duration: 60}]->(m), "
            "(u)-[:WATCHED {ts: $t + 1, duration: 'one minute'}]->(m)",
            {"t": late},
        )
        with pytest.raises(ExportError, match=r"export of graph failed.*WATCHED edge User 3 → Movie 1.*duration"):
            export(stores, quiet=True, sources=["graph"])
        assert snapshot(stores) == before
    finally:
        stores.graph.write("MATCH (:User {id: 3})-[r:WATCHED]->(:Movie {id: 1}) WHERE r.ts >= $t DELETE r", {"t": late})
    assert export(stores, quiet=True).rows_landed == {"reviews": 0, "playback": 0, "graph": 0}


def test_unknown_source_is_refused(stores: Stores) -> None:
    with pytest.raises(ExportError, match="unknown export source"):
        export(stores, sources=["nope"], quiet=True)
