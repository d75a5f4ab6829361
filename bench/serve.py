"""Serving benchmark: latency and throughput of API queries over real HTTP, beside a floor.

``marquee bench serve`` starts Uvicorn in a child process with the
served app (``marquee serve``'s) plus three routes: ``/floor``, a GraphQL schema whose only
query returns 10 constant items shaped like recommendations (what Strawberry + Uvicorn alone
cost here); ``/ranked``, Marquee's own schema with the cache of ranked lists taken out, so
every request is ranked; and ``/constant``, the same with a constant recommender (what the API
layer costs around the model). Each query is reported next to the floor at the same
concurrency; recommendation rows also say how many requests each batch carried
(api/recommendations/batcher.py) and how many were answered from the cache (api/recommendations/kept_lists.py), with
one worker only (each worker counts its own). The cells start once the served app's
background ranking has nothing queued (its start-up warm-up, api/recommendations/refresher.py). The
first recommendations row asks for users 1, 2, … 943 in turn, starting again at 1 in each
cell: it measures the served path (lists warmed at start and refreshed ahead, ranked on a
miss); the second asks for users 1-50 again and again, as returning visitors would. The load client
runs in this process (same cores, as the figures in docs/performance.md were taken). Before that, the
data floor times the recommendation path in process, without GraphQL or HTTP, for one user
and for 8 users ranked together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import strawberry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from api.app import MarqueeGraphQL
from api.context import Context, Services
from api.recommendations.contract import (
    Outcome,
    RecommendationRequest,
    RecommendationResult,
    Recommended,
    Recommender,
)
from api.recommendations.kept_lists import CachedRecommender
from api.schema import build_schema
from sources.errors import MarqueeError
from sources.settings import Settings


@strawberry.type
class FloorMovie:
    movie_id: int
    title: str


@strawberry.type
class FloorItem:
    rank: int
    score: float
    explanation: str
    movie: FloorMovie


@strawberry.type
class FloorQuery:
    @strawberry.field
    def floor(self) -> list[FloorItem]:
        return [
            FloorItem(rank=i + 1, score=1.0 - i / 10, explanation="constant", movie=FloorMovie(movie_id=i, title="x"))
            for i in range(10)
        ]


class ConstantRecommender(Recommender):
    """The first ``k`` movie ids for any user: what the API costs around a recommender."""

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        return [
            RecommendationResult([Recommended(m, 1.0 / m, m, "constant") for m in range(1, r.k + 1)], "constant")
            for r in requests
        ]


class SwappedRecommender(MarqueeGraphQL):
    """The real schema, loaders and stores, with the recommender swapped by ``swap``."""

    def __init__(self, swap: Callable[[Services], Recommender]) -> None:
        super().__init__(build_schema(), graphql_ide=None)
        self.swap = swap
        self._base: Services | None = None
        self.services: Services | None = None

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        context = await super().get_context(request, response)
        if self.services is None or self._base is not context.services:  # one copy, so one batcher
            self._base = context.services
            self.services = dataclasses.replace(context.services, recommender=self.swap(context.services))
        context.services = self.services
        return context


def _uncached(services: Services) -> Recommender:
    recommender = services.recommender
    return recommender.inner if isinstance(recommender, CachedRecommender) else recommender


CONSTANT = SwappedRecommender(lambda services: ConstantRecommender())
RANKED = SwappedRecommender(_uncached)


async def batch_sizes(request: Request) -> JSONResponse:
    """Per recommendations route since the last call (then reset): mean requests per ranked
    batch, and the share of requests answered from the cache of ranked lists."""
    out: dict[str, dict[str, float | None]] = {}
    routes = (("/graphql", request.app.state.services), ("/ranked", RANKED.services), ("/constant", CONSTANT.services))
    for route, services in routes:
        if services is None:
            continue
        sizes, cache = services.batcher.batch_sizes, services.recommender
        batches = sum(sizes.values())
        out[route] = {"batch": sum(size * n for size, n in sizes.items()) / batches if batches else None}
        sizes.clear()
        if isinstance(cache, CachedRecommender):
            asked = cache.hits + cache.misses
            out[route]["hits"] = cache.hits / asked if asked else None
            cache.hits = cache.misses = 0
    return JSONResponse(out)


async def pusher_report(request: Request) -> JSONResponse:
    """The write pusher (api/write_pusher.py): queued mutations, groups and mutations written, and
    the acknowledgement-to-push delays p50/p99 (features online, lists forgotten), the
    acknowledgement-to-written ones (events in Mongo, record marked), and the milliseconds spent in each step of the
    groups since the last call (then reset; ``?peek=1`` keeps them)."""
    pusher = request.app.state.services.write_pusher
    delays, done_delays = sorted(pusher.delays), sorted(pusher.done_delays)

    def pct(q: float, delays: list[float] = delays) -> float | None:
        return round(delays[min(len(delays) - 1, int(q * len(delays)))] * 1000, 1) if delays else None

    feature_timings = getattr(request.app.state.services.feature_pusher, "timings", {})
    stages = {**pusher.stages, **{f"push: {k}": v for k, v in feature_timings.items()}}
    out = {"pending": pusher.pending, "groups": pusher.groups, "written": pusher.written,
           "p50_ms": pct(0.5), "p99_ms": pct(0.99), "failing": pusher.failing,
           "written_p50_ms": pct(0.5, done_delays), "written_p99_ms": pct(0.99, done_delays),
           "stage_ms": {k: round(v * 1000, 1) for k, v in stages.items()}}  # fmt: skip
    if not request.query_params.get("peek"):
        pusher.delays.clear()
        pusher.done_delays.clear()
        pusher.groups = pusher.written = 0
        for timings in (pusher.stages, feature_timings):
            for key in timings:
                timings[key] = 0.0
    return JSONResponse(out)


async def forget_users(request: Request) -> JSONResponse:
    """Forget what this process keeps per user (their API ratings and loaded ratings), so the
    next request of each user reads the stores again (``marquee bench serve --history``)."""
    history = request.app.state.services.history
    history.api.clear()
    history.loaded.clear()
    return JSONResponse({"forgotten": True})


def bench_app() -> Starlette:
    """Uvicorn factory: the served app (``marquee serve``'s: trained ranker, Feast features,
    kept lists) plus ``/floor``, ``/ranked`` (the same without the kept lists), ``/constant``
    (the real schema around a constant recommender), ``/bench/batches`` (requests per batch
    and cache hits), ``/bench/writes`` (the write pusher's groups and delays) and ``/bench/forget``
    (drop what the process keeps per user)."""
    from api.app import app_from_env

    app = app_from_env()
    floor: GraphQL[None, None] = GraphQL(strawberry.Schema(query=FloorQuery), graphql_ide=None)
    app.router.routes[0:0] = [
        Route("/floor", floor, methods=["POST"]),
        Route("/constant", CONSTANT, methods=["POST"]),
        Route("/ranked", RANKED, methods=["POST"]),
        Route("/bench/batches", batch_sizes),
        Route("/bench/writes", pusher_report),
        Route("/bench/forget", forget_users, methods=["POST"]),
    ]
    return app


CONCURRENCY = [1, 8, 32]
ITEM = "rank score explanation movie { movieId title }"
RECOMMENDATIONS = (
    f"query($u: Int!) {{ recommendations(userId: $u, first: 10) {{ modelVersion degraded items {{ {ITEM} }} }} }}"
)
QUERIES: dict[str, tuple[str, str, Callable[[int], dict[str, Any]]]] = {
    "floor (no-op, 10 items)": ("/floor", f"{{ floor {{ {ITEM} }} }}", lambda i: {}),
    "recommendations(first: 10)": ("/graphql", RECOMMENDATIONS, lambda i: {"u": 1 + i % 943}),
    "recommendations, 50 users coming back": ("/graphql", RECOMMENDATIONS, lambda i: {"u": 1 + i % 50}),
    "recommendations, every request ranked": ("/ranked", RECOMMENDATIONS, lambda i: {"u": 1 + i % 943}),
    "recommendations, constant recommender": ("/constant", RECOMMENDATIONS, lambda i: {"u": 1 + i % 943}),
    "movie.similar(first: 10)": (
        "/graphql",
        "query($m: Int!) { movie(id: $m) { similar(first: 10) { similarity movie { movieId title } } } }",
        lambda i: {"m": 1 + i % 1682},
    ),
    "movie.neighbours(first: 10)": (
        "/graphql",
        "query($m: Int!) { movie(id: $m) { neighbours(first: 10) { depth description movie { movieId title } } } }",
        lambda i: {"m": 1 + i % 1682},
    ),
}


@dataclass(frozen=True)
class Figures:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    first_error: str | None = None  # what the first failed request got, to say why

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(base: str, path: str, query: str, variables: Callable[[int], dict[str, Any]], *, concurrency: int,
                seconds: float) -> Figures:  # fmt: skip
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None

    def failed(why: str) -> None:
        nonlocal errors, first_error
        errors += 1
        first_error = first_error or why[:200]

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                i = next(counter)
                started = time.perf_counter()
                try:
                    response = await client.post(path, json={"query": query, "variables": variables(i)})
                except httpx.TransportError as exc:  # a dropped connection is an error of this cell, not the end
                    failed(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                # A degraded answer (fallback recommender) is not the path being measured.
                if response.status_code != 200 or "errors" in response.json() or '"degraded":true' in response.text:
                    failed(f"HTTP {response.status_code}: {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Figures(len(latencies), errors, elapsed, latencies, first_error)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def start_server(app: str, port: int, *, workers: int = 1, env: dict[str, str] | None = None,
                 ready_path: str = "/readyz", timeout_s: float = 180.0) -> subprocess.Popen[bytes]:  # fmt: skip
    """Uvicorn serving the factory ``app`` on ``port``, once ``ready_path`` answers 200 and its
    heavy lane (api/lane.py), when it has one, has started: the lane's start-up (its own stores
    and model, in a second process) would otherwise take CPU from the first cells measured."""
    command = [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    process = subprocess.Popen(command, env=env if env is not None else dict(os.environ))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                _wait_for_lane(f"http://127.0.0.1:{port}", deadline)
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError("the benchmark server exited before it was ready")
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the benchmark server did not become ready within {timeout_s:g} s")


def _wait_for_lane(base: str, deadline: float) -> None:
    """Until ``/readyz`` says the heavy lane is ready (or reports none); measuring anyway at ``deadline``."""
    while time.monotonic() < deadline:
        lane = httpx.get(f"{base}/readyz", timeout=5).json().get("serving", {}).get("heavy_lane")
        if lane is None or lane.get("ready") or not lane.get("ok"):
            return
        time.sleep(0.5)
    print("the heavy lane had not started by the start-up deadline; measuring anyway")


def _wait_for_warm_up(base: str, timeout_s: float = 300.0) -> None:
    """Until the served app's background ranking (api/recommendations/refresher.py) has nothing queued, so
    the cells measure serving, not the start-up warm-up competing with it."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        report = httpx.get(f"{base}/readyz", timeout=5).json().get("serving", {}).get("recommendation_cache", {})
        background = report.get("background")
        if background is None:
            return  # no cache of ranked lists: nothing warms up
        if background["queued"] == 0:
            took = time.monotonic() - started
            print(f"background ranking idle after {took:.1f} s more; {background['ranked']} lists ranked so far")
            return
        time.sleep(0.5)
    print(f"background ranking still busy after {timeout_s:.0f} s; measuring anyway")


def run(concurrencies: list[int], seconds: float, workers: int, only: list[str] | None = None) -> None:
    port = free_port()
    server = start_server("bench.serve:bench_app", port, workers=workers)
    base = f"http://127.0.0.1:{port}"
    try:
        names = [n for n in QUERIES if only is None or any(o in n for o in only) or n.startswith("floor")]
        for name in names:  # warm every path once (model load, caches, connection pools)
            path, query, variables = QUERIES[name]
            asyncio.run(load(base, path, query, variables, concurrency=2, seconds=1.0))
        print(f"uvicorn workers={workers}, {seconds:g}s per cell, client in this process")
        _wait_for_warm_up(base)
        probe = "{ recommendations(userId: 1, first: 1) { modelVersion } }"
        served = httpx.post(f"{base}/graphql", json={"query": probe}).json()["data"]["recommendations"]
        print(f"recommendations served by {served['modelVersion']}")
        print(f"{'query':38} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  vs floor")
        for concurrency in concurrencies:
            floor: Figures | None = None
            for name in names:
                path, query, variables = QUERIES[name]
                httpx.get(f"{base}/bench/batches")  # reset the batch counts
                figures = asyncio.run(load(base, path, query, variables, concurrency=concurrency, seconds=seconds))
                if floor is None:
                    floor, ratio = figures, ""
                else:
                    ratio = (
                        f"{figures.rps / floor.rps:5.0%} of floor req/s, p50 {figures.pct(0.5) / floor.pct(0.5):.1f}x"
                    )
                    # With several workers each keeps its own counts, and one answers this call.
                    counts = httpx.get(f"{base}/bench/batches").json().get(path, {}) if workers == 1 else {}
                    if counts.get("batch") is not None:
                        ratio += f", {counts['batch']:.1f} requests per batch"
                    if counts.get("hits") is not None:
                        ratio += f", {counts['hits']:.0%} from the cache"
                print(
                    f"{name:38} {concurrency:>4} {figures.rps:>8.1f} {figures.pct(0.5):>8.1f} "
                    f"{figures.pct(0.99):>8.1f} {figures.errors:>6}  {ratio}"
                )
                if figures.first_error:
                    print(f"{'':44} first error: {figures.first_error}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def data_floor(calls: int = 200) -> None:
    """Floor (b): the same path without GraphQL or HTTP: the user's history, the served
    retriever's candidates, their encoded online features (movie side in memory, the user's row from
    Feast), the engagement forward pass. Each part is also timed alone."""
    import numpy as np

    from api.queries import reads
    from api.recommendations.history import RatingHistory
    from model.networks.engagement import predict_ratings
    from model.serve.pair_features import CachedPairFeatures
    from model.serve.ranker import Ranker, RankRequest, service_features
    from sources.feature_store.env import open_feature_store
    from sources.stores.clients import Stores

    settings = Settings()
    parts: dict[str, list[float]] = {
        "data floor: rank(first 10) incl. features": [],
        "  user history (graph + mutation log)": [],
        "  retriever candidates (100)": [],
        "  features of 100 pairs, encoded": [],
        "  engagement forward pass": [],
        "8 users at once (rank_many), per user": [],
    }
    timers = list(parts.values())
    with Stores.open(settings) as stores:
        store = open_feature_store(stores.endpoints)
        ranker = Ranker.load(settings.models_dir, expected_features=service_features(store))
        features, history = CachedPairFeatures(store, reads.movie_ids(pg=stores.pg)), RatingHistory(stores)
        if ranker.engagement is None or ranker.encoder is None:
            raise MarqueeError(
                "the data floor times the engagement re-rank, and there is no engagement checkpoint: "
                "train it (`marquee train --model engagement`) or skip the floor (--data-floor-calls 0)"
            )
        for i in range(calls + 10):  # the first 10 warm the caches and are not counted
            user = 1 + (i * 37) % 943
            t0 = time.perf_counter()
            seen = list(history.user_ratings(user)[0])  # oldest first
            t1 = time.perf_counter()
            movie_ids, _ = ranker.candidates(user, seen, 100, set(seen))
            t2 = time.perf_counter()
            batch = features.encoded(user, movie_ids.tolist(), ranker.encoder)
            t3 = time.perf_counter()
            predict_ratings(ranker.engagement, batch)
            t4 = time.perf_counter()
            ranker.rank(user, seen, 10, exclude=set(seen), features=features)
            t5 = time.perf_counter()
            # What a batch of the API's costs: the histories and the ranking of 8 users together.
            users = [1 + (i * 37 + j * 101) % 943 for j in range(8)]
            ratings, _ = history.user_ratings_many(users)
            asks = [RankRequest(u, list(ratings[u]), 10, set(ratings[u])) for u in users]
            ranker.rank_many(asks, features=features)
            t6 = time.perf_counter()
            if i >= 10:
                took = (t5 - t4, t1 - t0, t2 - t1, t3 - t2, t4 - t3, (t6 - t5) / len(users))
                for timer, seconds in zip(timers, took, strict=True):
                    timer.append(seconds)
        features.close()
    for name, values in parts.items():
        ms = np.array(values) * 1000
        print(f"{name:44} p50 {np.percentile(ms, 50):7.2f} ms   p99 {np.percentile(ms, 99):7.2f} ms   ({calls} calls)")
