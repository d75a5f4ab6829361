"""``marquee recommend --all``: the batch job that fills the shared ``recommendation_lists``.

It builds the same ranking stack a served worker plugs (api/serving.py: Feast features, the
trained ranker) in this process, and ranks every user the ranker knows in batches of
``batch``, each batch written to the table with one statement (api/recommendations/
shared_lists.py), exactly as a worker writes a list it ranked on a miss. Every worker then
serves these lists; none ranks them at its start.

Resumable: users whose list by the current model was made within
``MARQUEE_RECOMMENDATION_LISTS_S`` are skipped, so a run stopped half-way (Ctrl-C, a crash)
continues where it stopped, and a second run does nothing (``--again`` ranks everyone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from api.context import Services
from api.queries import lists
from api.recommendations.contract import RecommendationRequest, RecommendationResult
from api.recommendations.fallback import FallbackRecommender
from api.recommendations.history import RatingHistory
from api.recommendations.kept_lists import CachedRecommender
from api.recommendations.shared_lists import SharedLists
from api.serving import WARM_FIRST, plug_feature_store, plug_model
from sources.errors import MarqueeError
from sources.progress import progress_bar
from sources.settings import Settings
from sources.stores.clients import Stores


@dataclass(frozen=True)
class ListsReport:
    users: int  # users the ranker knows
    skipped: int  # already had a current list
    ranked: int  # ranked by this run
    written: int  # lists written (a degraded answer is not)
    model_version: str


def recommend_all(settings: Settings, *, batch: int = 64, again: bool = False, quiet: bool = False) -> ListsReport:
    if settings.recommendation_lists_s <= 0:
        raise MarqueeError("shared lists are off (MARQUEE_RECOMMENDATION_LISTS_S=0): nothing to fill")
    with Stores.open(settings) as stores:
        stores.require_all()
        history = RatingHistory(stores, loaded_ratings_ttl_s=0)
        services = Services(settings=settings, stores=stores, history=history,
                            recommender=FallbackRecommender(stores, history))  # fmt: skip
        with services.closing:
            plug_feature_store(services)
            ranker = plug_model(services)
            if ranker is None:
                raise MarqueeError("no trained ranker fits the applied features: run `marquee train` first")
            version = ranker.ranker.version
            shared = SharedLists(stores.pg, version, ttl_s=settings.recommendation_lists_s)
            cached = CachedRecommender(ranker, ttl_s=60.0, capacity=batch)
            cached.shared = shared
            users = list(ranker.ranker.user_index)
            done: set[int] = set()
            if not again:
                since = datetime.now(UTC) - timedelta(seconds=settings.recommendation_lists_s)
                done = lists.users_with_lists(stores.pg, model_version=version, made_after=since)
            todo = [u for u in users if u not in done]
            ranked = 0
            with progress_bar(quiet=quiet) as bar:
                task = bar.add_task("ranking shared lists", total=len(todo))
                for start in range(0, len(todo), batch):
                    requests = [RecommendationRequest(u, WARM_FIRST) for u in todo[start : start + batch]]
                    outcomes = cached.rank(requests)
                    if not any(isinstance(o, RecommendationResult) and not o.degraded for o in outcomes):
                        raise MarqueeError("a batch came back degraded (a store is away); run again to resume")
                    ranked += len(requests)
                    bar.advance(task, len(requests))
    return ListsReport(len(users), len(users) - len(todo), ranked, shared.written, version)
