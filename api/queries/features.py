"""The API's two touch points with the feature store, as small protocols.

- ``OnlineFeatureReader``: a user's current online features (Feast ``get_online_features``);
  ``User.onlineFeatures`` is null with a STORE_UNAVAILABLE error while none is configured.
- ``FeaturePusher``: called after a mutation wrote its event to Mongo (the system of record)
  so the online store can reflect it (a Feast push source or ``write_to_online_store``).
  ``NoFeaturePusher`` is the default while no feature store is configured.

Both are synchronous: the API calls them in a worker thread. Plug them in through
``create_app(settings, configure=...)``, which runs once the stores are open::

    def plug_feast(services: Services) -> None:
        store = open_feature_store(services.stores.endpoints)   # sources/feature_store/env.py
        services.online_features = FeastUserFeatures(store)     # .user_features(user_id)
        services.feature_pusher = FeastPusher(store)            # .push(event) -> bool
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class FeatureEvent:
    """One event a mutation recorded, as the feature pipeline sees it."""

    kind: Literal["rating", "playback"]
    user_id: int
    movie_id: int
    ts: datetime
    #: the rating (1-5) for "rating", the duration in seconds for "playback"
    value: float
    device: str | None = None
    #: the review's ``_id`` / the session's ``session_id`` in Mongo (export lands the same key)
    record_id: str = ""


class OnlineFeatureReader(Protocol):
    def user_features(self, user_id: int) -> dict[str, Any]:
        """Feature name → current value for one user (empty when the user has no row)."""
        ...


class FeaturePusher(Protocol):
    def push(self, event: FeatureEvent) -> bool:
        """Make ``event`` visible to online features; True when something was pushed."""
        ...


@runtime_checkable
class GroupFeaturePusher(Protocol):
    def push_many(self, events: Sequence[FeatureEvent]) -> bool:
        """Make a group of events visible at once (one recompute for all); True when something was pushed."""
        ...


class NoFeaturePusher:
    """No feature store configured: nothing to push."""

    def push(self, event: FeatureEvent) -> bool:
        return False
