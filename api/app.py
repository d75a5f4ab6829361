"""The Starlette application: GraphQL (+ GraphiQL served offline), health and readiness.

``create_app(settings)`` returns the app; its lifespan opens the stores once per process,
builds the ``Services`` (stores, recommender, feature store hooks) on ``app.state`` and
closes the stores at shutdown. ``configure`` lets the caller swap plug-ins in once the
stores are open, e.g. a model-backed recommender::

    def plug_model(services: Services) -> None:
        services.recommender = WithFallback(RankerRecommender(...), services.recommender)
        services.closing.callback(...)  # whatever it started, stopped at shutdown

    app = create_app(settings, configure=plug_model)

Routes: ``/graphql`` (operations by POST as application/json only; GET shows GraphiQL when
enabled and runs nothing; api/security.py), ``/healthz`` (the
process lives), ``/readyz`` (every store answers within a timeout; 503 otherwise; it also
reports how the serving background work is doing), and the GraphiQL assets. Uvicorn runs it
with ``factory=True`` on ``api.app:app_from_env``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from api.bounds import BoundedGraphQL
from api.context import Context, Services, build_context
from api.graphiql import DEFAULT_ASSETS_DIR, OfflineGraphQL, graphiql_assets_mount
from api.lane import HeavyLane
from api.queries import writes
from api.recommendations.fallback import FallbackRecommender
from api.recommendations.history import RatingHistory
from api.recommendations.kept_lists import MutationFeed
from api.schema import build_schema
from api.security import JsonPostOnly
from api.write_pusher import WritePusher
from sources.errors import first_line
from sources.settings import Settings
from sources.stores.clients import Stores
from sources.stores.failures import StoreDown

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0


class MarqueeGraphQL(JsonPostOnly, BoundedGraphQL, OfflineGraphQL[Context, None]):
    """The GraphQL endpoint; each request gets a Context with fresh DataLoaders and runs within
    its bounds (api/bounds.py)."""

    max_response_bytes = 10_000_000

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        services: Services = request.app.state.services
        return build_context(services, request, response if isinstance(response, Response) else None)


def create_app(
    settings: Settings,
    *,
    stores: Stores | None = None,
    configure: Callable[[Services], None] | None = None,
    assets_dir: Path = DEFAULT_ASSETS_DIR,
) -> Starlette:
    """The API app. Pass ``stores`` to share already-open clients (then they are not closed here)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with ExitStack() as closing:  # closes in reverse: plug-ins' work, then the stores
            opened = stores if stores is not None else await run_in_threadpool(Stores.open, settings)
            if stores is None:
                closing.callback(opened.close)
            await run_in_threadpool(_prepare_mongo, opened)
            history = RatingHistory(opened, loaded_ratings_ttl_s=settings.loaded_ratings_cache_s)
            services = Services(
                settings=settings,
                stores=opened,
                history=history,
                recommender=FallbackRecommender(opened, history),
                closing=closing.enter_context(ExitStack()),
            )
            feed = MutationFeed(opened.mongo, services.user_changed, services.changes_lost, on_change=history.api.saw)
            services.feed = feed
            services.write_pusher = WritePusher(
                opened,
                lambda: services.feature_pusher,
                on_pushed=services.user_changed,
                batch=settings.write_batch,
                linger_s=settings.write_linger_ms / 1000,
            )
            if configure is not None:
                configure(services)
            closing.callback(feed.start().close)
            closing.callback(services.write_pusher.start().close)  # stops first: it drains into the stores
            app.state.services = services
            try:
                yield
            finally:
                for aclose in services.async_closing:
                    await aclose()

    graphql = MarqueeGraphQL(
        build_schema(introspection=settings.introspection, max_cost=settings.query_max_cost),
        assets_dir=assets_dir,
        graphql_ide="graphiql" if settings.graphiql else None,
        allow_queries_via_get=False,  # GET serves the IDE page only: no operation runs from a link
    )
    graphql.max_response_bytes = settings.max_response_bytes
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        graphiql_assets_mount(assets_dir),
    ]
    # CORS stays closed (no Access-Control-Allow-Origin) unless MARQUEE_CORS_ORIGINS names origins.
    middleware = [_cors(settings.cors_origins)] if settings.cors_origins else []
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def plug_heavy_lane(services: Services) -> None:
    """Start the heavy lane (api/lane.py) and forward expensive operations to it; stopped at
    shutdown, after its client."""
    lane = HeavyLane.start(services.settings)
    services.closing.callback(lane.close)
    services.async_closing.append(lane.aclose)
    services.reports["heavy_lane"] = lane.report
    services.heavy_lane = lane


def _cors(origins: list[str]) -> Middleware:
    return Middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST"],
        allow_headers=["content-type", "x-api-key", "x-request-id"],
        expose_headers=["x-request-id"],
        max_age=600,
    )


def _prepare_mongo(stores: Stores) -> None:
    """The mutation log's index; a Mongo that is down now only costs the fields that need it."""
    try:
        with stores.call("mongo"):
            writes.ensure_indexes(stores.mongo)
    except StoreDown as exc:
        log.warning("starting without Mongo: %s", exc.detail)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Each store pinged in parallel, each within READY_TIMEOUT_S; 503 when any does not answer.

    The pings always reach the stores (not through the circuit breakers) and feed them: a store
    that answers again closes its breaker at once."""
    services: Services = request.app.state.services
    probes = services.stores.pings()

    async def probe(check: Callable[[], None]) -> dict[str, Any]:
        started = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(run_in_threadpool(check), timeout=READY_TIMEOUT_S)
            outcome: dict[str, Any] = {"ok": True}
        except TimeoutError:
            outcome = {"ok": False, "error": f"no answer within {READY_TIMEOUT_S:g}s"}
        except Exception as exc:  # a ping's failure is the report, not a crash of the probe
            outcome = {"ok": False, "error": first_line(exc)}
        outcome["ms"] = round((asyncio.get_running_loop().time() - started) * 1000, 1)
        return outcome

    results = await asyncio.gather(*(probe(check) for check in probes.values()))
    report = dict(zip(probes, results, strict=True))
    report["feature_store"] = {"ok": services.online_features is not None, "optional": True}
    ready = all(r["ok"] for name, r in report.items() if name != "feature_store")
    serving = {name: describe() for name, describe in services.reports.items()}
    serving["abandoned"] = {"ok": True, **services.abandoned}
    return JSONResponse({"ready": ready, "stores": report, "serving": serving}, status_code=200 if ready else 503)


def app_from_env() -> Starlette:
    """Uvicorn factory (``uvicorn --factory api.app:app_from_env``): settings from the environment,
    Feast online features and the trained ranker plugged in when they are available."""
    import torch

    # A request's forward pass is a few thousand rows at most: too small for intra-op threads
    # to pay, and handing their pool between request threads costs more than it gains
    # (docs/performance.md). Parallelism comes from batching requests and from ``--workers``.
    torch.set_num_threads(1)
    return create_app(Settings(), configure=_plug_and_freeze)


def _plug_and_freeze(services: Services) -> None:
    from api.serving import plug_serving

    if services.settings.heavy_lane:
        plug_heavy_lane(services)  # first: the lane loads beside this process, at its lower priority
    plug_serving(services)
    # What is loaded by now (modules, the model, the movie features, the credits) lives as long
    # as the process: keep it out of the cyclic GC, whose full passes over it would stall
    # requests under load (docs/performance.md).
    gc.collect()
    gc.freeze()
