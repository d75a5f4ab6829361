"""Loads and exports stream: no job holds more than a batch of its input, whatever its size.

A small synthetic dataset goes through ``ingest`` and ``export`` on stores of its own (a
second data dir, so the session's ML-100K stores are untouched), with a small batch size.
Each writer's batches are recorded on their way to the real stores: a job that read the
whole input before writing, or wrote it in one piece, fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sources import migrate as migrations
from sources.datasets.synth import synthetic
from sources.export import extract
from sources.export.run import export
from sources.ingest import IngestReport, ingest
from sources.settings import Settings
from sources.stores import mongo, mongo_append
from sources.stores.clients import Stores
from sources.stores.embedded import EmbeddedStores
from sources.stores.mongo_bulk import BulkInserter, open_table
from sources.stores.mongo_scan import count, scan

USERS, MOVIES, RATINGS, BATCH = 60, 80, 3000, 200


@pytest.fixture(scope="module")
def small_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    path = tmp_path_factory.mktemp("streaming")
    try:
        with Stores.open(Settings(data_dir=path)) as opened:
            migrations.upgrade(opened.pg)
            yield opened
    finally:
        EmbeddedStores(path).stop_all()


@pytest.fixture(scope="module")
def recorded(small_stores: Stores) -> Iterator[tuple[IngestReport, dict[str, list[int]]]]:
    """The load, with the size of every Mongo and graph batch and how many users the dataset
    had yielded when the first Mongo batch was written."""
    seen: dict[str, list[int]] = {"mongo": [], "graph": [], "users_before_first_write": []}
    dataset = synthetic(users=USERS, movies=MOVIES, ratings=RATINGS, seed=5)
    blocks = dataset.rating_blocks
    yielded = [0]

    def counted() -> Iterator[Any]:
        for block in blocks():
            yielded[0] += 1
            yield block

    original_insert = BulkInserter.insert

    def insert(self: BulkInserter, docs: Any) -> None:
        if self.collection.startswith("reviews__"):
            if not seen["mongo"]:
                seen["users_before_first_write"].append(yielded[0])
            seen["mongo"].append(len(docs))
        original_insert(self, docs)

    from sources.stores import graph as graph_module

    writer_cls: Any = graph_module._FalkorWriter
    original_run = writer_cls.run

    def run(self: Any, cypher: str, params: Any = None) -> None:
        if params and "RATED" in cypher and "movie_at" in params:
            seen["graph"].append(len(params["movie_at"]))
        original_run(self, cypher, params)

    patch = pytest.MonkeyPatch()
    patch.setattr(BulkInserter, "insert", insert)
    patch.setattr(writer_cls, "run", run)
    patch.setattr(dataset, "rating_blocks", counted)
    try:
        report = ingest(small_stores, dataset, seed=5, batch_size=BATCH, quiet=True)
    finally:
        patch.undo()
    yield report, seen


def test_ingest_writes_in_batches_as_it_reads(recorded: tuple[IngestReport, dict[str, list[int]]]) -> None:
    report, seen = recorded
    assert sum(seen["mongo"]) == RATINGS == report.counts["mongo.reviews"] == report.counts["graph.edge.RATED"]
    assert sum(seen["graph"]) == RATINGS
    biggest_user = max(
        len(r) for _, r in synthetic(users=USERS, movies=MOVIES, ratings=RATINGS, seed=5).rating_blocks()
    )
    # a batch closes at the first user past BATCH ratings: never more than that in memory
    assert max(seen["mongo"]) < BATCH + biggest_user
    assert max(seen["graph"]) <= BATCH
    assert len(seen["mongo"]) >= RATINGS // (BATCH + biggest_user)
    # the first batch was written before the dataset had yielded most of its users
    assert seen["users_before_first_write"][0] < USERS // 2


def test_direct_mongo_load_reads_back_like_the_servers_own_writes(
    small_stores: Stores, recorded: tuple[IngestReport, dict[str, list[int]]]
) -> None:
    reviews = mongo.live(small_stores.mongo, "reviews")
    doc = reviews.find_one({"user_id": 1}, sort=[("ts", 1)])
    assert doc is not None and doc["ts"].tzinfo is not None
    again = reviews.find_one({"_id": doc["_id"]})
    assert again == doc
    # a range on the event time (the export's watermark) sees the same rows as a Python filter
    every = list(reviews.find({}))
    cut = sorted(d["ts"] for d in every)[len(every) // 2]
    assert reviews.count_documents({"ts": {"$gte": cut}}) == sum(d["ts"] >= cut for d in every)
    playback = mongo.live(small_stores.mongo, "playback_logs").find_one({"_id": 1})
    assert playback is not None and playback["user_id"] == 1 and playback["sessions"]


def test_export_lands_in_batches(small_stores: Stores, recorded: tuple[IngestReport, dict[str, list[int]]]) -> None:
    sizes: list[int] = []
    original = extract.prefetch

    def recording(batches: Iterator[list[Any]], depth: int = 2) -> Iterator[list[Any]]:
        for batch in original(batches, depth):
            sizes.append(len(batch))
            yield batch

    patch = pytest.MonkeyPatch()
    patch.setattr(extract, "prefetch", recording)
    try:
        report = export(small_stores, full=True, batch_size=BATCH, quiet=True)
    finally:
        patch.undo()
    assert sum(s.rows_read for s in report.sources) >= RATINGS
    assert sizes and max(sizes) <= BATCH
    assert len(sizes) >= RATINGS // BATCH


def test_sessions_set_the_hnsw_search_width(small_stores: Stores) -> None:
    from sqlalchemy import text

    with small_stores.pg_reads.connect() as conn:
        conn.execute(text("SELECT movie_id FROM movie_embeddings ORDER BY embedding <=> embedding LIMIT 1")).all()
        width = conn.execute(text("SHOW hnsw.ef_search")).scalar_one()
    assert int(width) == small_stores.settings.hnsw_ef_search


def test_a_scan_reads_the_embedded_file_as_find_reads_the_server(
    small_stores: Stores, recorded: tuple[IngestReport, dict[str, list[int]]]
) -> None:
    """``mongo_scan.scan`` reads the embedded server's file in pages (not the server, which
    would hold every document of the answer): the same documents, values and order as ``find``,
    for rows the bulk loader wrote and rows the server wrote itself."""
    reviews = mongo.live(small_stores.mongo, "reviews")
    sqlite_file = small_stores.mongo_file()
    assert sqlite_file is not None and open_table(sqlite_file, reviews.name, read_only=True) is not None
    newest = reviews.find_one({}, sort=[("ts", -1)])
    assert newest is not None
    late = newest["ts"] + timedelta(milliseconds=1500)  # a fraction of a second, written by the server
    reviews.insert_one({"_id": "scan:late", "user_id": 1, "movie_id": 1, "rating": 4.5, "ts": late})
    try:
        by_time = [("ts", 1), ("_id", 1)]
        assert list(scan(small_stores, "reviews", field="ts", batch_size=7)) == list(reviews.find({}, sort=by_time))
        cut = sorted(d["ts"] for d in reviews.find({}))[RATINGS // 3]
        expected = list(reviews.find({"ts": {"$gte": cut}}, sort=by_time))
        assert list(scan(small_stores, "reviews", field="ts", since=cut, batch_size=7)) == expected
        assert 0 < len(expected) < RATINGS and expected[-1]["_id"] == "scan:late"
        assert sorted(d["_id"] for d in scan(small_stores, "reviews")) == sorted(d["_id"] for d in reviews.find({}))
        assert count(small_stores, "reviews") == reviews.count_documents({}) == RATINGS + 1
    finally:
        reviews.delete_one({"_id": "scan:late"})
    assert count(small_stores, "reviews") == RATINGS  # the server's delete, seen in the file at once
    playback = mongo.live(small_stores.mongo, "playback_logs")
    docs = list(scan(small_stores, "playback_logs", field="updated_at", batch_size=3))
    assert docs == list(playback.find({}, sort=[("updated_at", 1), ("_id", 1)]))
    assert isinstance(docs[0]["sessions"][0]["timestamp"], datetime) and docs[0]["updated_at"].tzinfo is not None


def test_an_append_in_the_file_is_what_the_server_reads(
    small_stores: Stores, recorded: tuple[IngestReport, dict[str, list[int]]]
) -> None:
    """``mongo_append.append`` adds sessions inside the embedded server's file: ``find`` then
    reads them as documents (not the JSON strings the server's own ``$push`` leaves), the
    document's ``updated_at`` moves (the export's watermark sees it through the server's
    index), an id without a document is handed back, and a second append of the same
    sessions changes nothing."""
    playback = mongo.live(small_stores.mongo, "playback_logs")
    original = playback.find_one({}, sort=[("_id", 1)])
    assert original is not None
    user_id, before = original["_id"], original["sessions"]
    at = datetime(2031, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)
    new = [
        {"session_id": f"append:{i}", "movie_id": 7 + i, "timestamp": at - timedelta(minutes=i)}
        | {"duration_seconds": 60 * (i + 1), "device": "tv", "buffer_rate": 0.25, "errors": i}
        for i in range(2)
    ]
    try:
        by_id = {user_id: new, 10**9: new[:1]}
        missing = mongo_append.append(
            small_stores, "playback_logs", by_id, array="sessions", key="session_id", stamp="updated_at", at=at
        )
        assert missing == [10**9]
        doc = playback.find_one({"_id": user_id})
        assert doc is not None and doc["sessions"] == [*before, *new] and doc["updated_at"] == at
        assert all(isinstance(s, dict) for s in doc["sessions"])
        assert [d["_id"] for d in playback.find({"updated_at": {"$gte": at}})] == [user_id]
        assert [d["_id"] for d in scan(small_stores, "playback_logs", field="updated_at", since=at)] == [user_id]
        later = at + timedelta(seconds=1)
        same = {"array": "sessions", "key": "session_id", "stamp": "updated_at"}
        again = mongo_append.append(small_stores, "playback_logs", {user_id: new}, **same, at=later)
        assert again == [] and playback.find_one({"_id": user_id}) == doc  # nothing appended twice
    finally:
        playback.replace_one({"_id": user_id}, original)
    assert playback.find_one({"_id": user_id}) == original
