"""The serving stack, built once per process in the app's lifespan, in order.

``plug_serving`` is the ``create_app(configure=…)`` hook ``marquee serve`` uses; it plugs:

0. every title embedding in memory for ``similar``/``searchMovies`` (``plug_title_index``);
1. Feast online features (``plug_feature_store``), when the repository is applied, then the
   repair of the writes a crash or a failed push left unpushed (``repair_writes``);
2. the trained ranker in front of the fallback (``plug_model``), when its checkpoints fit
   the feature service; a checkpoint trained on another feature list is refused (logged),
   never scored with misread columns;
3. kept lists with background ranking (``plug_kept_lists``), over the lists every worker
   shares in PostgreSQL (``recommendation_lists``, filled by ``marquee recommend --all``);
4. the checkpoint watcher (``plug_reload``): a new checkpoint is loaded beside the serving one
   and swapped in, and the kept lists are dropped (api/recommendations/reload.py).

Each part is optional: without an applied repository the API serves everything but online
features; without a compatible checkpoint ``recommendations`` answers from the graph and
popularity fallback. Whatever a part starts is stopped through ``services.closing`` (an
``ExitStack``: the last started stops first, so background ranking stops before what it
reads is closed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from api.context import Services
from api.queries import reads, writes
from api.queries.feast_features import FeastUserFeatures
from api.recommendations.contract import RecommendationRequest
from api.recommendations.fallback import WithFallback
from api.recommendations.kept_lists import CachedRecommender
from api.recommendations.ranked import RankerRecommender
from api.recommendations.refresher import ListRefresher
from api.recommendations.reload import CheckpointWatcher
from api.recommendations.shared_lists import SharedLists
from api.title_index import TitleIndex, TitleRefresher
from sources.errors import first_line

log = logging.getLogger(__name__)

WARM_FIRST = 10  # the length of a list ranked at start: the schema's default ``first``


def plug_serving(services: Services) -> None:
    """Feast features, then the trained ranker, then kept lists (see the module docstring)."""
    plug_title_index(services)
    plug_feature_store(services)
    repair_writes(services)
    ranker = plug_model(services)
    if ranker is not None:
        warm = list(ranker.ranker.user_index)[: services.settings.recommendation_warm_users]
        settings = services.settings
        shared = None
        if settings.recommendation_lists_s > 0:
            shared = SharedLists(services.stores.pg, ranker.ranker.version, ttl_s=settings.recommendation_lists_s)
        cached = plug_kept_lists(services, settings.recommendation_cache_s, warm=warm, shared=shared)
        plug_reload(services, ranker, cached, shared)


def watched_checkpoints(folder: Path) -> list[Path]:
    """Every checkpoint whose change may change what is served: each retriever the Ranker may
    choose (a newly trained VAE or fusion can win validation) and the engagement re-ranker."""
    from model.checkpoint import checkpoint_path
    from model.serve.ranker import RETRIEVERS

    return [checkpoint_path(folder, kind) for kind in (*RETRIEVERS, "engagement")]


def plug_reload(
    services: Services,
    primary: RankerRecommender,
    cached: CachedRecommender | None,
    shared: SharedLists | None = None,
    poll_s: float | None = None,
) -> CheckpointWatcher | None:
    """Watch the served checkpoints; swap a new one in without a restart (``model_reload_s``)."""
    poll_s = services.settings.model_reload_s if poll_s is None else poll_s
    if poll_s <= 0 or not isinstance(services.online_features, FeastUserFeatures):
        return None
    from model.serve.ranker import Ranker, service_features

    store: Any = services.online_features.store
    folder = services.settings.models_dir / "time"

    def load() -> Ranker:
        return Ranker.load(services.settings.models_dir, expected_features=service_features(store))

    def swap(ranker: Ranker) -> str:
        version = primary.swap(ranker)
        if shared is not None:
            shared.version = version  # the shared table's lists of the old model are not served
        if cached is not None:
            cached.clear()  # lists ranked by the old model
        return version

    def tick() -> None:  # titles another process added; the trend prior's recent counts
        if primary.add_new_movies():
            services.catalogue_changed()
        primary.refresh_trend_if_due()

    watcher = CheckpointWatcher(watched_checkpoints(folder), load, swap, poll_s=poll_s, tick=tick).start()
    services.closing.callback(watcher.close)
    services.reports["model_reload"] = lambda: {"ok": watcher.failing is None, "error": watcher.failing,
                                                "serving": primary.ranker.version, "swaps": watcher.swaps}  # fmt: skip
    return watcher


def plug_title_index(services: Services) -> TitleIndex | None:
    """Every title embedding in memory for ``similar`` and ``searchMovies`` (api/title_index.py),
    refreshed in the background; with ``MARQUEE_SEARCH_INDEX=pgvector``, or when it cannot be
    read (logged), pgvector answers them."""
    if services.settings.search_index != "memory":
        return None
    try:
        index = TitleIndex.load(services.stores.pg)
    except Exception as exc:  # PostgreSQL down or not migrated: pgvector answers, as before
        log.warning("title index not loaded, pgvector answers searches: %s", first_line(exc))
        return None
    refresher = TitleRefresher(index, services.stores.pg).start()
    services.closing.callback(refresher.close)
    services.reports["title_index"] = refresher.report
    services.titles = index
    return index


def plug_feature_store(services: Services) -> None:
    """Use Feast for online features and pushes when its repository has been applied."""
    from sources.feature_store.env import open_feature_store

    try:
        store = open_feature_store(services.stores.endpoints)
        feast = FeastUserFeatures(services.stores, store)
    except Exception as exc:  # no feature store yet: the API still serves everything else
        log.warning("online features unavailable: %s", first_line(exc))
        return
    services.online_features = feast
    services.feature_pusher = feast


def repair_writes(services: Services) -> writes.RepairReport | None:
    """Finish the mutations a crash or a failed push left (``writes.repair``), before serving:
    a replay of their clientMutationId then answers ``replayed: true`` and their events are
    in the online features. Needs the feature store; a failure is logged, not raised."""
    if not isinstance(services.feature_pusher, FeastUserFeatures):
        return None
    try:
        report = writes.repair(services.stores.mongo, services.feature_pusher.push)
    except Exception as exc:  # a store down now: the next start tries again
        log.warning("repair of unfinished mutations skipped: %s", first_line(exc))
        return None
    if report.finished or report.pushed or report.failed:
        log.info(
            "repaired mutations: %d finished, %d pushed, %d could not be pushed",
            report.finished, report.pushed, report.failed,
        )  # fmt: skip
    return report


def plug_model(services: Services) -> RankerRecommender | None:
    """The ranker in front of the plugged recommender, when Feast is plugged and the checkpoints fit."""
    if not isinstance(services.online_features, FeastUserFeatures):
        return None
    store: Any = services.online_features.store
    try:
        from model.serve.pair_features import CachedPairFeatures
        from model.serve.ranker import Ranker, service_features

        ranker = Ranker.load(services.settings.models_dir, expected_features=service_features(store))
        pair_features = CachedPairFeatures(store, reads.movie_ids(pg=services.stores.pg))
    except Exception as exc:  # no checkpoint yet, or one for other features: serve the fallback
        log.warning("model recommendations unavailable: %s", first_line(exc))
        return None
    services.closing.callback(pair_features.close)
    services.reports["movie_features"] = lambda: {"ok": pair_features.refresh_error is None,
                                                  "error": pair_features.refresh_error}  # fmt: skip
    primary = RankerRecommender(services.stores, ranker, pair_features, services.history)
    try:
        primary.add_new_movies()  # titles added since the checkpoint was trained
    except Exception as exc:
        log.warning("titles added since training not placed yet: %s", first_line(exc))
    primary.refresh_trend()
    services.reports["trend_prior"] = lambda: {"ok": primary.trend_error is None, "error": primary.trend_error}
    primary.warm()
    services.ranked = primary
    services.recommender = WithFallback(primary, services.recommender)
    return primary


def plug_kept_lists(
    services: Services,
    ttl_s: float,
    poll_s: float | None = None,
    warm: Sequence[int] = (),
    shared: SharedLists | None = None,
) -> CachedRecommender | None:
    """Keep the plugged recommender's answers for ``ttl_s`` (api/recommendations/kept_lists.py),
    forgotten on this process's mutations and, through the app's change feed of the mutation
    log (``services.feed``, polled every ``poll_s`` when given), on other processes'; lists
    getting old, and those of the ``warm`` users, are ranked in the background
    (api/recommendations/refresher.py). With ``shared``, a list missing here is looked up in the
    ``recommendation_lists`` table every worker shares before it is ranked, and written there
    once ranked (api/recommendations/shared_lists.py). ``ttl_s <= 0`` keeps nothing."""
    if ttl_s <= 0:
        return None
    cached = CachedRecommender(services.recommender, ttl_s=ttl_s)
    cached.shared = shared
    feed = services.feed
    if feed is not None and shared is not None:
        feed.on_users.append(shared.forget)
    if feed is not None and poll_s is not None:
        feed.poll_s = poll_s
    refresher = ListRefresher(cached).start()
    services.closing.callback(refresher.close)  # stops first: its rankings read what is closed above
    cached.on_old = refresher.ahead
    refresher.warm([RecommendationRequest(user_id, WARM_FIRST) for user_id in warm])
    services.recommender = cached
    services.on_user_changed.append(cached.forget)
    services.on_catalogue_changed.append(cached.clear)
    services.on_changes_lost.append(cached.clear)
    services.reports["recommendation_cache"] = lambda: {
        # else nothing kept is served until the mutation log reads again
        "ok": feed is None or feed.failing is None,
        "error": feed.failing if feed is not None else None,
        "lists": len(cached),
        "hits": cached.hits,
        "misses": cached.misses,
        "background": {"queued": refresher.pending, "ranked": refresher.ranked, "error": refresher.failing},
        **({"shared": {"found": shared.found, "written": shared.written}} if shared is not None else {}),
    }
    return cached
