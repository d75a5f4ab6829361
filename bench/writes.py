"""Write benchmark: acknowledged mutations per second beside the GraphQL no-op floor.

``marquee bench writes`` starts the served app (bench/serve.py's ``bench_app``, answering
mutations once they are durable: ``MARQUEE_WRITE_ACK=durable``) and, at the same concurrency
and in the same run, loads ``/floor`` (the no-op query) and then ``rateMovie`` and
``recordPlayback`` in turn, each with its own clientMutationId. It then waits for the
background pusher (api/write_pusher.py) to finish and prints: mutations/s beside the floor's
requests/s, the acknowledgement-to-push delay p50/p99 measured in the server (the user's online
features written and kept lists forgotten), the acknowledgement-to-written delay (events in
Mongo, record marked), the groups the
pusher made and the milliseconds they spent in each step (Mongo writes, recompute, online rows,
log marks), and the loss: acknowledged mutations whose record is missing, not pushed, or
whose event is not in Mongo exactly once (must be 0).

Everything the benchmark wrote is undone at the end (reviews, sessions, mutation records, raw
rows, the features of the users and movies it touched, their online rows), so it can be run
on any data dir, any number of times.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pandas as pd
from sqlalchemy import text

from api.queries.feast_features import VIEW_OF_TABLE
from bench.serve import Figures, free_port, start_server
from sources.export import features
from sources.settings import Settings
from sources.stores import mongo
from sources.stores.clients import Stores

RATE = """mutation($u: Int!, $m: Int!, $r: Int!, $c: String) { rateMovie(userId: $u, movieId: $m, rating: $r,
  clientMutationId: $c) { __typename ... on RatingRecorded { reviewId } } }"""
PLAY = """mutation($u: Int!, $m: Int!, $d: Int!, $c: String) { recordPlayback(userId: $u, movieId: $m,
  durationSeconds: $d, device: TV, clientMutationId: $c) { __typename ... on PlaybackRecorded { sessionId } } }"""
FLOOR = "{ floor { rank score explanation movie { movieId title } } }"


async def _load(base: str, concurrency: int, seconds: float, body: Any) -> tuple[Figures, list[str]]:
    """``body(i)`` → (JSON body, client id or None); the client ids of acknowledged mutations."""
    counter = itertools.count()
    latencies: list[float] = []
    acked: list[str] = []
    errors = 0
    first_error: str | None = None
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors, first_error
            while time.perf_counter() < deadline:
                payload, client_id = body(next(counter))
                started = time.perf_counter()
                response = await client.post("/floor" if client_id is None else "/graphql", json=payload)
                latencies.append((time.perf_counter() - started) * 1000)
                data = response.json().get("data") if response.status_code == 200 else None
                answer = next(iter(data.values()), None) if data else None
                ok = answer is not None and (client_id is None or answer.get("__typename", "").endswith("Recorded"))
                if not ok:
                    errors += 1
                    first_error = first_error or response.text[:200]
                elif client_id is not None:
                    acked.append(client_id)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Figures(len(latencies), errors, elapsed, latencies, first_error), acked


def _mutation(run: str, users: int, movies: int) -> Any:
    def body(i: int) -> tuple[dict[str, Any], str]:
        client_id = f"{run}-{i}"
        user, movie = 1 + (i * 7919) % users, 1 + (i * 104_729) % movies
        if i % 2 == 0:
            variables = {"u": user, "m": movie, "r": 1 + i % 5, "c": client_id}
            return {"query": RATE, "variables": variables}, client_id
        return {"query": PLAY, "variables": {"u": user, "m": movie, "d": 60 + i % 3000, "c": client_id}}, client_id

    return body


def _pusher(base: str) -> dict[str, Any]:
    report: dict[str, Any] = httpx.get(f"{base}/bench/writes", timeout=30).json()
    return report


def run(seconds: float = 10.0, concurrency: int = 8) -> dict[str, Any]:
    settings = Settings()
    run_id = f"bench-writes-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, "MARQUEE_WRITE_ACK": "durable", "MARQUEE_RECOMMENDATION_WARM_USERS": "0"}
    server = start_server("bench.serve:bench_app", port, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with Stores.open(settings) as stores:
            users, movies = _counts(stores)
        warm = _mutation(f"{run_id}-warm", users, movies)
        asyncio.run(_load(base, 2, 1.0, lambda i: ({"query": FLOOR}, None)))
        _, warm_acked = asyncio.run(_load(base, 2, 1.0, warm))
        _drain(base)
        _pusher(base)  # resets the server's delays
        floor, _ = asyncio.run(_load(base, concurrency, seconds, lambda i: ({"query": FLOOR}, None)))
        figures, acked = asyncio.run(_load(base, concurrency, seconds, _mutation(run_id, users, movies)))
        drained_in = _drain(base)
        pushed = _pusher(base)
    finally:
        server.terminate()
        server.wait(timeout=60)
    with Stores.open(settings) as stores:
        lost = _lost(stores, acked)
        _undo(stores, f"{run_id}")
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "floor (no-op) req/s": round(floor.rps, 1),
        "mutations acknowledged/s": round(len(acked) / figures.seconds, 1),
        "vs floor": f"{len(acked) / figures.seconds / floor.rps:.0%}",
        "mutation p50 ms": round(figures.pct(0.5), 1),
        "mutation p99 ms": round(figures.pct(0.99), 1),
        "errors": figures.errors,
        "first error": figures.first_error,
        "acknowledged": len(acked),
        "push delay p50 ms": pushed["p50_ms"],
        "push delay p99 ms": pushed["p99_ms"],
        "written delay p50 ms": pushed.get("written_p50_ms"),
        "written delay p99 ms": pushed.get("written_p99_ms"),
        "pushed groups": pushed["groups"],
        "group time by step, ms": pushed["stage_ms"],
        "mean group": round(pushed["written"] / pushed["groups"], 1) if pushed["groups"] else None,
        "queue drained after the load, s": round(drained_in, 2),
        "lost": lost,
        "warm-up mutations (not counted)": len(warm_acked),
    }


def _counts(stores: Stores) -> tuple[int, int]:
    with stores.pg.connect() as conn:
        users = conn.execute(text("SELECT max(id) FROM users")).scalar_one()
        movies = conn.execute(text("SELECT max(id) FROM movies")).scalar_one()
    return min(int(users), 943), int(movies)


def _drain(base: str, timeout_s: float = 120.0) -> float:
    started = time.monotonic()
    while _pusher_pending(base) and time.monotonic() - started < timeout_s:
        time.sleep(0.05)
    return time.monotonic() - started


def _pusher_pending(base: str) -> int:
    return int(httpx.get(f"{base}/bench/writes", params={"peek": 1}, timeout=30).json()["pending"])


def _lost(stores: Stores, acked: list[str]) -> int:
    """Acknowledged mutations not durable and pushed: record missing or not pushed, event not in Mongo once."""
    db = stores.mongo
    records = {r["_id"]: r for r in db[mongo.MUTATION_LOG].find({"_id": {"$in": acked}})}
    review_ids = [r["result"]["review_id"] for r in records.values() if r["kind"] == "rateMovie"]
    reviews: dict[str, int] = {}
    for doc in mongo.live(db, "reviews").find({"_id": {"$in": review_ids}}, {"_id": 1}):
        reviews[doc["_id"]] = reviews.get(doc["_id"], 0) + 1
    sessions: dict[str, int] = {}
    play_users = sorted({r["user_id"] for r in records.values() if r["kind"] == "recordPlayback"})
    for user_id in play_users:
        doc = mongo.live(db, "playback_logs").find_one({"_id": user_id}) or {}
        for s in doc.get("sessions", []):
            sessions[s["session_id"]] = sessions.get(s["session_id"], 0) + 1
    lost = 0
    for client_id in acked:
        record = records.get(client_id)
        if record is None or record.get("pushed") is not True:
            lost += 1
            continue
        result = record["result"]
        key, found = (
            (result["review_id"], reviews) if record["kind"] == "rateMovie" else (result["session_id"], sessions)
        )
        lost += found.get(key, 0) != 1
    return lost


def _undo(stores: Stores, prefix: str) -> None:
    """Remove every trace of the benchmark's mutations (ids starting with ``prefix``)."""
    db = stores.mongo
    records = list(db[mongo.MUTATION_LOG].find({"_id": {"$regex": f"^{prefix}"}}))
    if not records:
        return
    review_ids = [r["result"]["review_id"] for r in records if r["kind"] == "rateMovie"]
    session_ids = {r["result"]["session_id"] for r in records if r["kind"] == "recordPlayback"}
    mongo.live(db, "reviews").delete_many({"_id": {"$in": review_ids}})
    playback = mongo.live(db, "playback_logs")
    for user_id in sorted({r["user_id"] for r in records if r["kind"] == "recordPlayback"}):
        doc = playback.find_one({"_id": user_id})
        if doc is not None:
            kept = [s for s in doc.get("sessions", []) if s.get("session_id") not in session_ids]
            playback.replace_one({"_id": user_id}, {**doc, "sessions": kept})
    db[mongo.MUTATION_LOG].delete_many({"_id": {"$regex": f"^{prefix}"}})
    since: datetime = min(r["at"] for r in records)
    users = sorted({int(r["user_id"]) for r in records})
    movies = sorted({int(r["input"]["movie_id"]) for r in records if r["kind"] == "rateMovie"})
    with stores.pg.begin() as conn:
        conn.execute(text("DELETE FROM raw_reviews WHERE review_id = ANY(:ids)"), {"ids": review_ids})
        conn.execute(text("DELETE FROM raw_playback_sessions WHERE session_id = ANY(:ids)"), {"ids": list(session_ids)})
        for feature, keys in ((features.USER_REVIEWS, users), (features.MOVIE_REVIEWS, movies),
                              (features.USER_PLAYBACK, users)):  # fmt: skip
            if not keys:
                continue
            features.create_affected(conn, feature.entity)
            conn.execute(text(f"DELETE FROM _affected_{feature.entity}"))
            values = ", ".join(f"({k}, CAST('{since.isoformat()}' AS timestamptz))" for k in keys)
            features.mark_affected(conn, feature.entity, f"SELECT * FROM (VALUES {values}) v")
            features.recompute(conn, feature)
    _write_online(stores, users, movies)


def _write_online(stores: Stores, users: list[int], movies: list[int]) -> None:
    from sources.feature_store.env import open_feature_store

    store = open_feature_store(stores.endpoints)
    for table, entity, keys in (("feat_user_reviews", "user_id", users), ("feat_movie_reviews", "movie_id", movies),
                                ("feat_user_playback", "user_id", users)):  # fmt: skip
        with stores.pg.connect() as conn:
            rows = conn.execute(
                text(f"SELECT DISTINCT ON ({entity}) * FROM {table} WHERE {entity} = ANY(:k) "
                     f"ORDER BY {entity}, event_timestamp DESC"), {"k": keys},
            ).mappings().all()  # fmt: skip
        if rows:
            store.write_to_online_store(VIEW_OF_TABLE[table], pd.DataFrame([dict(r) for r in rows]))
