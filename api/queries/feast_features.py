"""Feast behind the API's feature protocols (api/queries/features.py).

- ``FeastUserFeatures.user_features``: the user's online features, one ``get_online_features``
  call for one entity (Feast's SDK is slow for many entities at once; we never ask for many).
- ``FeastUserFeatures.push_many``: the same for a group of events (api/write_pusher.py): one
  transaction and one recompute per feature table, one online write per feature view.
- ``FeastUserFeatures.push``: after a mutation wrote to Mongo, land the event and recompute
  the user's (and the movie's) feature rows with the export's own SQL
  (``sources.export.push``), then write the newest rows to the online store so the next
  ``recommendations`` sees them.

The online rows go through Feast's own online store with the views looked up once
(sources/feature_store/online_rows.py), not ``write_to_online_store``, whose per-call registry,
DataFrame and Arrow work cost more than the write itself. ``timings`` adds up the seconds
spent recomputing and writing online rows (``marquee bench writes`` prints them).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from api.queries.features import FeatureEvent
from sources.export.push import Event, apply_events
from sources.feature_store.names import USER_VIEWS
from sources.feature_store.online_rows import OnlineRows
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore

#: offline feature table → the feature view materialized from it
VIEW_OF_TABLE = {
    "feat_user_reviews": "user_reviews",
    "feat_movie_reviews": "movie_reviews",
    "feat_user_playback": "user_playback",
}


class FeastUserFeatures:
    """Reads a user's online features and pushes mutations' effects into them."""

    def __init__(self, stores: Stores, store: FeatureStore) -> None:
        self._stores, self._store = stores, store
        views = {view.name: view for view in store.list_feature_views()}
        missing = [name for name in USER_VIEWS if name not in views]
        if missing:
            raise LookupError(f"feature views not applied: {', '.join(missing)} (run `marquee apply`)")
        self._refs = [f"{name}:{field.name}" for name in USER_VIEWS for field in views[name].features]
        self._online: OnlineRows | None = None
        #: seconds spent since start: "recompute" (landing and SQL), "online" (online rows written)
        self.timings: dict[str, float] = {"recompute": 0.0, "online": 0.0}

    @property
    def store(self) -> FeatureStore:
        return self._store

    def user_features(self, user_id: int) -> dict[str, Any]:
        found = self._store.get_online_features(
            features=self._refs, entity_rows=[{"user_id": user_id}], full_feature_names=True
        ).to_dict()
        values = {name: column[0] for name, column in found.items() if name != "user_id"}
        return values if any(v is not None for v in values.values()) else {}

    def push(self, event: FeatureEvent) -> bool:
        return self.push_many([event])

    def push_many(self, events: Sequence[FeatureEvent]) -> bool:
        started = time.perf_counter()
        rows = apply_events(
            self._stores, [Event(e.kind, e.record_id, e.user_id, e.movie_id, e.ts, e.value, e.device) for e in events]
        )
        recomputed = time.perf_counter()
        self.timings["recompute"] += recomputed - started
        online = self._online_rows()
        for table, found in rows.items():
            online.write(VIEW_OF_TABLE[table], found)
        self.timings["online"] += time.perf_counter() - recomputed
        return any(rows.values())

    def _online_rows(self) -> OnlineRows:
        if self._online is None:
            self._online = OnlineRows(self._store, list(VIEW_OF_TABLE.values()))
        return self._online
