"""What every resolver can reach: the process-wide ``Services`` and this request's loaders.

``Services`` is built once per process in the app's lifespan (api/app.py) and lives on
``app.state``; ``get_context`` wraps it with fresh DataLoaders for each request.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import strawberry
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from api.fairness import CostBudgets
from api.lane import HeavyLane
from api.loaders import Loaders
from api.mutation_batcher import MutationBatcher
from api.queries.features import FeaturePusher, NoFeaturePusher, OnlineFeatureReader
from api.recommendations.batcher import RecommendationBatcher
from api.recommendations.contract import Recommender
from api.recommendations.history import RatingHistory
from api.recommendations.kept_lists import MutationFeed
from api.write_pusher import WritePusher
from sources.settings import Settings
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from api.recommendations.ranked import RankerRecommender
    from api.title_index import TitleIndex


class TextEncoder:
    """The MiniLM title model (sources/datasets/embeddings.py), loaded once per process in a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def _encode(self, text: str) -> list[float]:
        from sources.datasets import embeddings

        with self._lock:  # one load, and sentence-transformers is not re-entrant
            return [float(x) for x in embeddings.encode([text])[0]]

    async def encode(self, text: str) -> list[float]:
        return await run_in_threadpool(self._encode, text)


@dataclass
class Services:
    """Long-lived clients and plug-ins shared by all requests of one process."""

    settings: Settings
    stores: Stores
    #: users' ratings as the recommenders read them (the fallback and the ranker share it)
    history: RatingHistory
    recommender: Recommender
    feature_pusher: FeaturePusher = field(default_factory=NoFeaturePusher)
    #: None until a feature store is configured: ``User.onlineFeatures`` then reports it.
    online_features: OnlineFeatureReader | None = None
    encoder: TextEncoder = field(default_factory=TextEncoder)
    #: every title's embedding in memory for similar/searchMovies (api/title_index.py); None:
    #: pgvector answers them (``MARQUEE_SEARCH_INDEX=pgvector``, or the index failed to load)
    titles: TitleIndex | None = None
    #: the trained model path when a checkpoint is served (new titles, ``predictedAudience``,
    #: hot reload); None while the fallback answers alone
    ranked: RankerRecommender | None = None
    #: called when a mutation changed a user (api/mutations.py); plug-ins that keep per-user
    #: state (the recommendation cache) add theirs
    on_user_changed: list[Callable[[int], None]] = field(default_factory=list)
    #: called when a title was added (``addMovie``): what was ranked without it is dropped
    on_catalogue_changed: list[Callable[[], None]] = field(default_factory=list)
    #: called when the mutation log could not be read, so any change may have been missed
    on_changes_lost: list[Callable[[], None]] = field(default_factory=list)
    #: every worker's mutations, polled from the log (started by the app's lifespan)
    feed: MutationFeed | None = None
    #: writes and pushes acknowledged mutations in groups (api/write_pusher.py); None: each
    #: mutation writes and pushes its own event before it answers
    write_pusher: WritePusher | None = None
    #: what plug-ins started, stopped (last started first) by the app before the stores close
    closing: ExitStack = field(default_factory=ExitStack)
    #: how background work is doing, shown by ``/readyz`` (name -> a report with ``ok``);
    #: informational: serving goes on without it
    reports: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    #: concurrent ``recommendations`` requests are ranked together (api/recommendations/batcher.py)
    batcher: RecommendationBatcher = field(init=False)
    #: concurrent mutations are checked and logged together (api/mutation_batcher.py)
    mutations: MutationBatcher = field(init=False)
    #: each client's query-cost budget (api/fairness.py); None when turned off
    cost_budgets: CostBudgets | None = field(init=False)
    #: held by the one expensive operation running in this process (api/fairness.py)
    expensive_slot: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    #: operations abandoned by ``api/bounds.py``: "disconnected" (the client left), "timed out"
    abandoned: Counter[str] = field(default_factory=Counter)
    #: the process expensive operations are forwarded to (api/lane.py); None: they run here
    heavy_lane: HeavyLane | None = None
    #: closed on the event loop at shutdown, before ``closing`` (clients bound to the loop)
    async_closing: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.batcher = RecommendationBatcher(self.stores, lambda: self.recommender)
        self.mutations = MutationBatcher(self.stores)
        rate = self.settings.client_cost_per_s
        self.cost_budgets = CostBudgets(rate, self.settings.query_max_cost) if rate > 0 else None

    def user_changed(self, user_id: int) -> None:
        for hook in self.on_user_changed:
            hook(user_id)

    def catalogue_changed(self) -> None:
        for hook in self.on_catalogue_changed:
            hook()

    def changes_lost(self) -> None:
        for hook in self.on_changes_lost:
            hook()


#: an id a client may send (``X-Request-ID``) is kept when it is this plain; else one is made
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_for(request: Request | WebSocket | None) -> str:
    """The request's id for logs and errors: the client's ``X-Request-ID`` when plain, else new."""
    given = request.headers.get("x-request-id", "") if request is not None else ""
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


@dataclass
class Context:
    services: Services
    loaders: Loaders
    request: Request | WebSocket
    response: Response | None
    api_key: str | None
    #: names this request in the server log; errors that log details carry it (``requestId``)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def stores(self) -> Stores:
        return self.services.stores

    @property
    def client(self) -> str:
        """Who a request counts against: its API key when keys are configured, else its address."""
        if self.services.settings.api_keys and self.api_key:
            return f"key:{self.api_key}"
        address = self.request.client
        return f"addr:{address.host if address is not None else 'unknown'}"

    def charge_query(self, cost: int) -> float:
        """Take ``cost`` from this client's budget: 0.0 when admitted, else the seconds to wait
        (and the response becomes 429 with ``Retry-After``)."""
        budgets = self.services.cost_budgets
        if budgets is None:
            return 0.0
        wait = budgets.take(self.client, cost)
        if wait > 0 and self.response is not None:
            self.response.status_code = 429
            self.response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return wait

    def api_key_valid(self) -> bool:
        """True when no keys are configured or the request's X-API-Key is one of them."""
        keys = self.services.settings.api_keys
        if not keys:
            return True
        given = self.api_key or ""
        return any(secrets.compare_digest(given.encode(), key.encode()) for key in keys)


def build_context(services: Services, request: Request | WebSocket, response: Response | None) -> Context:
    request_id = request_id_for(request)
    if response is not None:
        response.headers["X-Request-ID"] = request_id
    return Context(
        services=services,
        loaders=Loaders(services.stores, services.titles),
        request=request,
        response=response,
        api_key=request.headers.get("x-api-key"),
        request_id=request_id,
    )


#: what every resolver receives as ``info``
Info: TypeAlias = strawberry.Info[Context, None]
