"""Crash consistency of writes: the served app is killed with SIGKILL in the middle of a burst
of rateMovie/recordPlayback, restarted, and every acknowledged mutation must be in Mongo
exactly once, replay with the same result and no second write, and be counted in the user's
online features (the push was done, or redone by the repair at start: api/queries/writes.py).

A real ``uvicorn --factory api.app:app_from_env`` process over the session's stores, a real
signal. The users written for (901-904) are ones no other test asserts on; everything written
is undone at the end (Mongo, the mutation log, raw and feature tables, online rows).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import text

from api.queries.feast_features import VIEW_OF_TABLE
from api.queries.writes import MUTATIONS
from sources.export import features
from sources.export.run import export
from sources.settings import Settings
from sources.stores import mongo
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore

USERS = (901, 902, 903, 904)  # one client thread each
PER_THREAD = 30  # requests each thread sends (alternating rating / playback), far more than land before the kill
KILL_AFTER = 16  # acknowledged mutations before the SIGKILL
MOVIE_BASE = 1200  # thread k's i-th request is about movie MOVIE_BASE + i: one write per (user, movie)

RATE = """mutation($u: Int!, $m: Int!, $r: Int!, $c: String) {
  rateMovie(userId: $u, movieId: $m, rating: $r, clientMutationId: $c) {
    __typename ... on RatingRecorded { reviewId rating replayed featuresPushed } } }"""
PLAY = """mutation($u: Int!, $m: Int!, $d: Int!, $c: String) {
  recordPlayback(userId: $u, movieId: $m, durationSeconds: $d, device: TV, clientMutationId: $c) {
    __typename ... on PlaybackRecorded { sessionId durationSeconds replayed featuresPushed } } }"""


@dataclass(frozen=True)
class Sent:
    kind: str  # "rating" | "playback"
    client_id: str
    user_id: int
    movie_id: int
    value: int  # stars or seconds

    def request(self) -> dict[str, Any]:
        if self.kind == "rating":
            return {"query": RATE, "variables": {"u": self.user_id, "m": self.movie_id, "r": self.value,
                                                 "c": self.client_id}}  # fmt: skip
        return {"query": PLAY, "variables": {"u": self.user_id, "m": self.movie_id, "d": self.value,
                                             "c": self.client_id}}  # fmt: skip


def _answer(response: httpx.Response, sent: Sent) -> dict[str, Any] | None:
    """The RatingRecorded/PlaybackRecorded answer, or None when the mutation was not acknowledged."""
    if response.status_code != 200:
        return None
    data = (response.json().get("data") or {}).get("rateMovie" if sent.kind == "rating" else "recordPlayback")
    if not data or data["__typename"] not in ("RatingRecorded", "PlaybackRecorded"):
        return None
    return dict(data)


# -- the served process ----------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str


def _start(settings: Settings) -> Server:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "api.app:app_from_env", "--factory", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "MARQUEE_DATA_DIR": str(settings.data_dir), "MARQUEE_HEAVY_LANE": "false"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return Server(process, url)
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("the served app did not become ready")
        time.sleep(0.25)


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


# -- undoing the test's writes ---------------------------------------------------------------


class Undo:
    def __init__(self, stores: Stores, store: FeatureStore) -> None:
        self.stores, self.store = stores, store
        self.started = datetime.now(UTC) - timedelta(seconds=1)
        self.playback = {u: mongo.live(stores.mongo, "playback_logs").find_one({"_id": u}) for u in USERS}
        self.movies: set[int] = set()
        self.old_reviews: list[tuple[str, datetime]] = []  # written with a time before ``started``

    def restore(self) -> None:
        db = self.stores.mongo
        mongo.live(db, "reviews").delete_many({"user_id": {"$in": list(USERS)}, "ts": {"$gte": self.started}})
        old_ids = [review_id for review_id, _ in self.old_reviews]
        mongo.live(db, "reviews").delete_many({"_id": {"$in": old_ids}})
        since_time = min([self.started, *(at for _, at in self.old_reviews)])
        playback = mongo.live(db, "playback_logs")
        for user_id, doc in self.playback.items():
            if doc is None:
                playback.delete_one({"_id": user_id})
            else:
                playback.replace_one({"_id": user_id}, doc)
        db[MUTATIONS].delete_many({"input.user_id": {"$in": list(USERS)}})
        since = {"users": list(USERS), "t": self.started}
        with self.stores.pg.begin() as conn:
            conn.execute(text("DELETE FROM raw_reviews WHERE user_id = ANY(:users) AND ts >= :t"), since)
            conn.execute(text("DELETE FROM raw_playback_sessions WHERE user_id = ANY(:users) AND ts >= :t"), since)
            conn.execute(text("DELETE FROM raw_reviews WHERE review_id = ANY(:ids)"), {"ids": old_ids})
            for entity, keys in (("user_id", USERS), ("movie_id", sorted(self.movies))):
                features.create_affected(conn, entity)
                for key in keys:
                    moment = since_time.isoformat()
                    features.mark_affected(conn, entity, f"SELECT {int(key)}, CAST('{moment}' AS timestamptz)")
            for feature in (features.USER_REVIEWS, features.MOVIE_REVIEWS, features.USER_PLAYBACK):
                features.recompute(conn, feature)
        for table, entity, keys in (("feat_user_reviews", "user_id", USERS), ("feat_user_playback", "user_id", USERS),
                                    ("feat_movie_reviews", "movie_id", sorted(self.movies))):  # fmt: skip
            for key in keys:
                row = _latest(self.stores, table, entity, key)
                if row is not None:
                    self.store.write_to_online_store(VIEW_OF_TABLE[table], pd.DataFrame([row]))


def _latest(stores: Stores, table: str, entity: str, key: int) -> dict[str, Any] | None:
    with stores.pg.connect() as conn:
        row = conn.execute(
            text(f"SELECT * FROM {table} WHERE {entity} = :k ORDER BY event_timestamp DESC LIMIT 1"), {"k": key}
        )
        found = row.mappings().first()
    return dict(found) if found is not None else None


@pytest.fixture
def undo(stores: Stores, feature_store: FeatureStore) -> Iterator[Undo]:
    tracker = Undo(stores, feature_store)
    try:
        yield tracker
    finally:
        tracker.restore()


# -- the test --------------------------------------------------------------------------------


def _burst(url: str, thread: int, acked: dict[str, tuple[Sent, dict[str, Any]]], lock: threading.Lock) -> None:
    user_id = USERS[thread]
    with httpx.Client(timeout=30) as client:
        for i in range(PER_THREAD):
            kind = "rating" if i % 2 == 0 else "playback"
            sent = Sent(
                kind, f"crash-{uuid.uuid4()}", user_id, MOVIE_BASE + i, 1 + i % 5 if kind == "rating" else 60 + i
            )
            try:
                answer = _answer(client.post(f"{url}/graphql", json=sent.request()), sent)
            except httpx.TransportError:
                return  # the server is gone: this one and the rest are not acknowledged
            if answer is not None:
                with lock:
                    acked[sent.client_id] = (sent, answer)


def _planted(db: Any, user_id: int, movie_id: int, status: str) -> tuple[str, str]:
    """A mutation record as a crash leaves it: "pending" (claimed, nothing written) or "done"
    with its review written but never pushed. Returns (client id, review id)."""
    at = datetime.now(UTC).replace(microsecond=0)
    client_id, review_id = f"crash-{uuid.uuid4()}", f"{user_id}:{movie_id}:{int(at.timestamp())}"
    result = {"review_id": review_id, "user_id": user_id, "movie_id": movie_id, "rating": 2, "rated_at": at}
    inputs = {"user_id": user_id, "movie_id": movie_id, "rating": 2}
    db[MUTATIONS].insert_one({"_id": client_id, "kind": "rateMovie", "input": inputs, "result": result,
                              "status": status, "at": at})  # fmt: skip
    if status == "done":
        review = {"_id": review_id, "user_id": user_id, "movie_id": movie_id, "rating": 2.0, "ts": at}
        mongo.live(db, "reviews").insert_one(review)
    return client_id, review_id


def _online(store: FeatureStore, user_id: int) -> tuple[int, int]:
    found = store.get_online_features(
        features=["user_reviews:review_count", "user_playback:session_count"], entity_rows=[{"user_id": user_id}]
    ).to_dict()
    return int(found["review_count"][0] or 0), int(found["session_count"][0] or 0)


def _in_mongo(stores: Stores, user_id: int) -> tuple[int, int]:
    """Reviews and playback sessions of the user in Mongo, the system of record."""
    reviews = len(list(mongo.live(stores.mongo, "reviews").find({"user_id": user_id}, {"_id": 1})))
    doc = mongo.live(stores.mongo, "playback_logs").find_one({"_id": user_id})
    return reviews, len(doc["sessions"]) if doc else 0


def test_acknowledged_writes_survive_a_sigkill(
    settings: Settings, stores: Stores, feature_store: FeatureStore, undo: Undo
) -> None:
    undo.movies.update(MOVIE_BASE + i for i in range(PER_THREAD + 2))
    server = _start(settings)
    acked: dict[str, tuple[Sent, dict[str, Any]]] = {}
    lock = threading.Lock()
    try:
        threads = [threading.Thread(target=_burst, args=(server.url, k, acked, lock)) for k in range(len(USERS))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(server.process.pid, signal.SIGKILL)  # mid-burst: requests are in flight
        server.process.wait(timeout=10)
        for thread in threads:
            thread.join(timeout=60)
    finally:
        _stop(server)
    assert len(acked) >= KILL_AFTER, "too few mutations were acknowledged before the kill"
    assert len(acked) < len(USERS) * PER_THREAD, "the burst ended before the kill"

    # What a crash between the claim and the write, and one after the write but before the
    # push, leave behind (the kill above lands in either window only by chance).
    pending_id, pending_review = _planted(stores.mongo, USERS[0], MOVIE_BASE + PER_THREAD, "pending")
    unpushed_id, unpushed_review = _planted(stores.mongo, USERS[1], MOVIE_BASE + PER_THREAD + 1, "done")

    reviews = mongo.live(stores.mongo, "reviews")
    server = _start(settings)  # the repair runs before it is ready
    try:
        # Every acknowledged mutation is in Mongo exactly once.
        for sent, answer in acked.values():
            if sent.kind == "rating":
                stored = list(reviews.find({"user_id": sent.user_id, "movie_id": sent.movie_id,
                                            "ts": {"$gte": undo.started}}))  # fmt: skip
                assert [(d["_id"], d["rating"]) for d in stored] == [(answer["reviewId"], float(sent.value))]
            else:
                doc = mongo.live(stores.mongo, "playback_logs").find_one({"_id": sent.user_id})
                sessions = [s for s in doc["sessions"] if s["session_id"] == answer["sessionId"]]
                assert len(sessions) == 1 and sessions[0]["duration_seconds"] == sent.value
        before = {u: _in_mongo(stores, u) for u in USERS}

        # A replay after the restart answers the same result, replayed, and writes nothing.
        with httpx.Client(timeout=30) as client:
            for sent, answer in acked.values():
                again = _answer(client.post(f"{server.url}/graphql", json=sent.request()), sent)
                assert again is not None and again["replayed"] is True
                key = "reviewId" if sent.kind == "rating" else "sessionId"
                assert again[key] == answer[key]
            for client_id, review_id, user_id, movie_id in (
                (pending_id, pending_review, USERS[0], MOVIE_BASE + PER_THREAD),
                (unpushed_id, unpushed_review, USERS[1], MOVIE_BASE + PER_THREAD + 1),
            ):
                replay = Sent("rating", client_id, user_id, movie_id, 2)
                again = _answer(client.post(f"{server.url}/graphql", json=replay.request()), replay)
                assert again == {"__typename": "RatingRecorded", "reviewId": review_id, "rating": 2,
                                 "replayed": True, "featuresPushed": False}  # fmt: skip
                assert len(list(reviews.find({"_id": review_id}))) == 1
        assert {u: _in_mongo(stores, u) for u in USERS} == before

        # Nothing is left unfinished in the log, and the online features count what Mongo holds.
        records = list(stores.mongo[MUTATIONS].find({"input.user_id": {"$in": list(USERS)}}))
        assert records and all(r["status"] == "done" and r.get("pushed") is True for r in records)
        for user_id in USERS:
            assert _online(feature_store, user_id) == _in_mongo(stores, user_id), user_id
    finally:
        _stop(server)


def test_export_reads_an_unpushed_api_review_older_than_its_watermark(
    stores: Stores, feature_store: FeatureStore, undo: Undo
) -> None:
    """An acknowledged rating whose push failed, written with a time the reviews watermark has
    passed (another export ran between its claim and its write): the next export lands it."""
    export(stores, sources=["reviews"], quiet=True)
    with stores.pg.connect() as conn:
        watermark = conn.execute(text("SELECT watermark FROM export_watermarks WHERE source = 'reviews'")).scalar_one()
    user_id, movie_id = USERS[2], MOVIE_BASE
    at = watermark - timedelta(minutes=1)
    review_id = f"{user_id}:{movie_id}:{int(at.timestamp())}"
    result = {"review_id": review_id, "user_id": user_id, "movie_id": movie_id, "rating": 4, "rated_at": at}
    stores.mongo[MUTATIONS].insert_one({"_id": f"crash-{uuid.uuid4()}", "kind": "rateMovie", "result": result,
                                        "input": {"user_id": user_id, "movie_id": movie_id, "rating": 4},
                                        "status": "done", "at": at})  # fmt: skip
    mongo.live(stores.mongo, "reviews").insert_one(
        {"_id": review_id, "user_id": user_id, "movie_id": movie_id, "rating": 4.0, "ts": at}
    )
    undo.movies.add(movie_id)
    undo.old_reviews.append((review_id, at))
    report = export(stores, sources=["reviews"], quiet=True)
    assert report.rows_landed["reviews"] >= 1
    with stores.pg.connect() as conn:
        landed = conn.execute(text("SELECT count(*) FROM raw_reviews WHERE review_id = :r"), {"r": review_id})
        assert landed.scalar_one() == 1
