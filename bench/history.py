"""Per-request cost against the size of the API's history: ``marquee bench serve --history N``.

For each level (e.g. 0, 10,000, 100,000 API mutations in the log; at most three levels) the
mutation log is filled up to that many records with ``writes.log_record`` (the shape the API
inserts: ratings of users 101-943, marked pushed, dated over the past day, inserted in bulk),
then, in the same served app (bench/serve.py's ``bench_app``, with kept lists bypassed on
``/ranked``):

- the no-op floor and ``recommendations`` ranked on every request, at concurrency 1, for the
  same hundred users (1-100) at every level, none of them in the filled log. Before each level
  the process forgets what it keeps per user (``/bench/forget``: their API ratings and loaded
  ratings), so each user's first request reads the log again, as a user unseen since start
  would. Only the log's size changes between levels: the users, their histories and the work
  of ranking them stay the same (an earlier version ranked a fresh hundred per level, whose
  histories differed by a quarter);
- the change feed's poll (``writes.changes_since``: what the forget-poll reads each second),
  timed in this process;
- for comparison, the reads these replaced, timed in this process: the per-request
  ``{"input.user_id": {"$in": [user]}}`` and the poll's ``{"at": {"$gte": …}}``, which the
  embedded Mongo server answers by scanning the log.

The records are removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from api.queries import writes
from bench.serve import QUERIES, free_port, load, start_server
from sources.settings import Settings
from sources.stores import mongo
from sources.stores.clients import Stores

INSERT_BATCH = 5_000
#: users 1-100 are measured at every level, none with a record in the filled log; the log is
#: filled with the ratings of the others, so a request's cost can only move with the size of
#: the log, not with its own user's history
MEASURED = 100


def _timed(call: Callable[[], Any], n: int) -> float:
    took = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


def _fill(db: mongo.MongoDb, run: str, start: int, stop: int) -> None:
    """Records ``start``..``stop`` of this run: ratings spread over the past day (before any poll window)."""
    base = datetime.now(UTC) - timedelta(days=1)
    for first in range(start, stop, INSERT_BATCH):
        docs = []
        for i in range(first, min(stop, first + INSERT_BATCH)):
            user, movie = MEASURED + 1 + (i * 7919) % (943 - MEASURED), 1 + (i * 104_729) % 1682
            at = base + timedelta(milliseconds=i * 500)
            review_id = f"{user}:{movie}:{int(at.timestamp())}"
            result = {"review_id": review_id, "user_id": user, "movie_id": movie, "rating": 1 + i % 5, "rated_at": at}
            inputs = {"user_id": user, "movie_id": movie, "rating": 1 + i % 5}
            docs.append(writes.log_record(f"{run}-{i}", "rateMovie", inputs, result, at, "done") | {"pushed": True})
        db[mongo.MUTATION_LOG].insert_many(docs, ordered=False)


def _level(base: str, db: mongo.MongoDb, level: int, seconds: float) -> dict[str, Any]:
    """One row: the floor and the ranked path over HTTP, then the log reads timed in process."""
    floor_path, floor_query, _ = QUERIES["floor (no-op, 10 items)"]
    ranked_path, ranked_query, _ = QUERIES["recommendations, every request ranked"]
    floor = asyncio.run(load(base, floor_path, floor_query, lambda i: {}, concurrency=1, seconds=seconds))
    users = {"u": 1}

    def user(i: int) -> dict[str, Any]:
        return {"u": 1 + i % MEASURED}

    httpx.post(f"{base}/bench/forget", timeout=30).raise_for_status()
    ranked = asyncio.run(load(base, ranked_path, ranked_query, user, concurrency=1, seconds=seconds))
    since = datetime.now(UTC) - timedelta(seconds=6)
    log = db[mongo.MUTATION_LOG]
    n_old = 3 if level >= 50_000 else 5
    old_user = {"input.user_id": {"$in": [users["u"]]}, "kind": "rateMovie"}
    return {
        "mutations": level,
        "floor p50": floor.pct(0.5),
        "ranked p50": ranked.pct(0.5),
        "ranked p99": ranked.pct(0.99),
        "errors": ranked.errors,
        "first error": ranked.first_error,
        "poll": _timed(lambda: writes.changes_since(db, writes.epoch_ms(since)), 20),
        "user read": _timed(lambda: writes.api_ratings(db, [1]), 20),
        "old user read": _timed(lambda: list(log.find(old_user, {"input": 1, "result": 1})), n_old),
        "old poll": _timed(lambda: list(log.find({"at": {"$gte": since}}, {"input": 1})), n_old),
    }


def run(levels: list[int], seconds: float) -> None:
    settings = Settings()
    run_id = f"bench-history-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, "MARQUEE_RECOMMENDATION_WARM_USERS": "0"}
    server = start_server("bench.serve:bench_app", port, env=env)
    base = f"http://127.0.0.1:{port}"
    ranked_path, ranked_query, _ = QUERIES["recommendations, every request ranked"]
    rows: list[dict[str, Any]] = []
    try:
        with Stores.open(settings) as stores:
            db = stores.mongo
            writes.ensure_indexes(db)
            warm = asyncio.run(load(base, ranked_path, ranked_query, lambda i: {"u": 1 + i % MEASURED},
                                    concurrency=1, seconds=2.0))  # fmt: skip
            if warm.first_error:
                print(f"warming up: {warm.first_error}")
            filled = 0
            print(f"uvicorn workers=1, concurrency 1, {seconds:g}s per cell, client in this process")
            for level in sorted(levels):
                started = time.perf_counter()
                _fill(db, run_id, filled, level)
                filled = max(filled, level)
                if level:
                    print(f"{level:,} mutations in the log ({time.perf_counter() - started:.0f} s to insert)")
                time.sleep(2.0)  # a poll or two of the change feed
                rows.append(_level(base, db, level, seconds))
                if rows[-1]["first error"]:
                    print(f"first error: {rows[-1]['first error']}")
            db[mongo.MUTATION_LOG].delete_many({"_id": {"$regex": f"^{run_id}-"}})
    finally:
        server.terminate()
        server.wait(timeout=30)
    first = rows[0]
    print(f"{'mutations':>10} {'floor p50':>10} {'ranked p50':>11} {'x floor':>8} {'vs 0':>6} {'ranked p99':>11} "
          f"{'poll p50':>9} {'vs 0':>6} {'user read':>10} | {'before: user read':>17} {'poll':>8}")  # fmt: skip
    for row in rows:
        print(f"{row['mutations']:>10,} {row['floor p50']:>8.1f}ms {row['ranked p50']:>9.1f}ms "
              f"{row['ranked p50'] / row['floor p50']:>7.1f}x {row['ranked p50'] / first['ranked p50'] - 1:>+6.0%} "
              f"{row['ranked p99']:>9.1f}ms {row['poll']:>7.2f}ms {row['poll'] / first['poll'] - 1:>+6.0%} "
              f"{row['user read']:>8.2f}ms | {row['old user read']:>15.1f}ms {row['old poll']:>11.1f}ms"
              + (f"  ({row['errors']} errors)" if row["errors"] else ""))  # fmt: skip
