"""``marquee bench abuse``: how the served app holds up when clients misbehave.

Prints, against the real app (``api.app:app_from_env`` under Uvicorn, one worker):

1. a light query's p50/p99 alone (the floor), then beside four clients sending the heaviest
   allowed query in a loop, each with its own API key (the fifth client has one too), with
   how many of the flood's queries were admitted and how many got 429;
2. the cost the three over-budget queries of the issue were refused with, and the limit;
3. a partial answer's latency with Mongo unreachable (a second server whose
   ``MARQUEE_MONGO_URI`` points at a closed port), after its first failure.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from typing import Any

import httpx

from bench.serve import free_port, start_server

LIGHT = "{ movie(id: 1) { title } }"
# The heaviest kind the cost limit lets through: 100 movies, each walked two steps in the graph.
HEAVY = "{ movies(first: 100) { edges { node { neighbours(depth: 2, first: 100) { movie { title } } } } } }"
PARTIAL = "{ user(id: 1) { age reviews(first: 3) { rating } } }"
REFUSED = {
    "neighbours of neighbours": "{ movies(first: 100) { edges { node { neighbours(depth: 2, first: 100) { movie { "
    "neighbours(depth: 2, first: 100) { movie { title } } } } } } } }",
    "recommendations then similar": "{ users(first: 100) { edges { node { recommendations(first: 100, "
    "excludeSeen: false) { items { movie { similar(first: 100) { movie { title } } } } } } } } }",
    "following, followers, recommendations": "{ users(first: 100) { edges { node { following(first: 100) { "
    "followers(first: 100) { recommendations(first: 100) { items { score } } } } } } } }",
}
FLOODERS = 4


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """The served app (not the benchmark app: the real bounds and budgets) and its base URL."""
    port = free_port()
    # /healthz, not /readyz: one run serves with Mongo unreachable on purpose
    process = start_server("api.app:app_from_env", port, env=env, ready_path="/healthz")
    return process, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _figures(latencies: list[float]) -> dict[str, float]:
    return {"n": len(latencies), "p50_ms": round(_pct(latencies, 0.5), 2), "p99_ms": round(_pct(latencies, 0.99), 2)}


def _light(base: str, key: str, seconds: float) -> list[float]:
    """Sequential light queries for ``seconds``: their latencies in ms (failures raise)."""
    latencies: list[float] = []
    with httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=60) as client:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            started = time.perf_counter()
            response = client.post("/graphql", json={"query": LIGHT})
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200 or "errors" in response.json():
                raise RuntimeError(f"the light query failed: {response.status_code} {response.text[:200]}")
    return latencies


def _flood(base: str, key: str, stop: threading.Event, counts: dict[str, int], lock: threading.Lock) -> None:
    with httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=120) as client:
        while not stop.is_set():
            try:
                response = client.post("/graphql", json={"query": HEAVY})
                outcome = "admitted" if response.status_code == 200 else f"http {response.status_code}"
                if response.status_code == 429:
                    stop.wait(min(1.0, float(response.headers.get("retry-after", 1))))
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
            with lock:
                counts[outcome] = counts.get(outcome, 0) + 1


def _lane_report(base: str) -> dict[str, Any] | None:
    serving = httpx.get(f"{base}/readyz", timeout=30).json().get("serving", {})
    report: dict[str, Any] | None = serving.get("heavy_lane")
    return report


def _wait_for_lane(base: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """Waits until the heavy lane (api/lane.py) has started, so the flood meets the lane and not
    the in-process fallback of its start-up; says so when the lane is off."""
    stop = time.monotonic() + timeout_s
    while (report := _lane_report(base)) is not None and not report["ready"]:
        if time.monotonic() > stop:
            raise RuntimeError(f"the heavy lane did not start within {timeout_s:g} s: {report}")
        time.sleep(1.0)
    return report or {"off": True}


def run(seconds: float = 20.0) -> dict[str, Any]:
    keys = [f"flood-{i}" for i in range(FLOODERS)] + ["calm"]
    budget = os.environ.get("MARQUEE_CLIENT_COST_PER_S", "200")  # the budgets are off by default
    env = dict(os.environ) | {"MARQUEE_API_KEYS": json.dumps(keys), "MARQUEE_RECOMMENDATION_WARM_USERS": "0",
                              "MARQUEE_CLIENT_COST_PER_S": budget}  # fmt: skip
    out: dict[str, Any] = {}
    process, base = _serve(env)
    try:
        out["heavy lane"] = _wait_for_lane(base)
        _light(base, "calm", 2.0)  # warm the path
        alone = _light(base, "calm", seconds / 2)
        out["light alone"] = {
            "n": len(alone),
            "p50_ms": round(_pct(alone, 0.5), 2),
            "p99_ms": round(_pct(alone, 0.99), 2),
        }
        refused = {}
        with httpx.Client(base_url=base, headers={"x-api-key": "calm"}, timeout=60) as client:
            for name, query in REFUSED.items():
                error = client.post("/graphql", json={"query": query}).json()["errors"][0]
                refused[name] = {k: error["extensions"].get(k) for k in ("code", "cost", "limit")}
        out["refused"] = refused
        stop, lock = threading.Event(), threading.Lock()
        counts: dict[str, int] = {}
        flooders = [threading.Thread(target=_flood, args=(base, key, stop, counts, lock)) for key in keys[:FLOODERS]]
        for thread in flooders:
            thread.start()
        time.sleep(1.0)
        try:
            beside = _light(base, "calm", seconds)
        finally:
            stop.set()
            for thread in flooders:
                thread.join(timeout=130)
        out["light beside the flood"] = _figures(beside)
        out["flood outcomes"] = counts
        out["heavy lane"] = _lane_report(base) or out["heavy lane"]
        out["p99 ratio (flood / alone)"] = round(_pct(beside, 0.99) / _pct(alone, 0.99), 2)
    finally:
        _stop(process)
    dead = env | {"MARQUEE_MONGO_URI": f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=2000"}
    process, base = _serve(dead)
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            first_started = time.perf_counter()
            client.post("/graphql", json={"query": PARTIAL})
            first_ms = (time.perf_counter() - first_started) * 1000
            latencies, partial = [], True
            for _ in range(50):
                started = time.perf_counter()
                body = client.post("/graphql", json={"query": PARTIAL}).json()
                latencies.append((time.perf_counter() - started) * 1000)
                partial &= body.get("data", {}).get("user", {}).get("age") is not None and "errors" in body
        out["partial answer, Mongo unreachable"] = {
            "first_ms": round(first_ms, 1), "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(_pct(latencies, 0.99), 2), "all_partial": partial,
        }  # fmt: skip
    finally:
        _stop(process)
    return out
