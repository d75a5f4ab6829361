"""Feast behind the API's feature protocols (api/queries/features.py).

- ``FeastUserFeatures.user_features``: the user's online features, one ``get_online_features``
  call for one entity (Feast's SDK is slow for many entities at once; we never ask for many).
- ``FeastUserFeatures.push_many``: the same for a group of events (api/write_pusher.py): one
  transaction and one recompute per feature table, one online write per feature view.
- ``FeastUserFeatures.push``: after a mutation wrote to Mongo, land the event and recompute
  the user's (and the movie's) feature rows with the export's own SQL
  (``sources.export.push``), then write the newest rows to the online store with
  ``write_to_online_store`` so the next ``recommendations`` sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from api.queries.features import FeatureEvent
from sources.export.push import Event, apply_event, apply_events
from sources.feature_store.names import USER_VIEWS
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
        rows = apply_event(
            self._stores,
            Event(event.kind, event.record_id, event.user_id, event.movie_id, event.ts, event.value, event.device),
        )
        for table, row in rows.items():
            frame = pd.DataFrame([row])
            self._store.write_to_online_store(VIEW_OF_TABLE[table], frame)
        return bool(rows)

    def push_many(self, events: Sequence[FeatureEvent]) -> bool:
        rows = apply_events(
            self._stores, [Event(e.kind, e.record_id, e.user_id, e.movie_id, e.ts, e.value, e.device) for e in events]
        )
        for table, found in rows.items():
            if found:
                self._store.write_to_online_store(VIEW_OF_TABLE[table], pd.DataFrame(found))
        return any(rows.values())
