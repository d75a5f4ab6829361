"""Feature rows written straight into Feast's online store, in Feast's own format.

``FeatureStore.write_to_online_store`` reloads and deserialises every feature view from the
registry, builds a DataFrame, an Arrow table and then the protos on every call; for the API's
grouped pushes (api/write_pusher.py) that overhead, not the database write, was most of the
time (docs/performance.md). ``OnlineRows`` does the same write with the pieces Feast itself
uses, looked up once:

- the feature views (``FeatureStore.get_feature_view``) for their features' and join keys'
  value types and their timestamp columns;
- Feast's ``python_values_to_proto_values`` for the values and the entity keys (so the
  bytes are Feast's: serialized ``ValueProto`` and ``serialize_entity_key`` of the configured
  version, applied by the online store);
- the configured online store's own ``online_write_batch`` (for PostgreSQL, one
  ``INSERT … ON CONFLICT DO UPDATE`` per feature, sent by psycopg as one pipeline).

So what ``get_online_features`` reads back is what ``write_to_online_store`` would have
written (tests/feature_repo/test_online_rows.py compares the stored rows byte for byte).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.infra.online_stores.online_store import OnlineStore
    from feast.value_type import ValueType


@dataclass(frozen=True)
class _View:
    view: FeatureView
    join_keys: tuple[tuple[str, ValueType], ...]
    features: tuple[tuple[str, ValueType], ...]
    timestamp: str
    created: str | None


class OnlineRows:
    """``write(view, rows)``: rows of an offline feature table (column → value) into ``view``'s
    online rows; the views are read from the registry once, at construction."""

    def __init__(self, store: FeatureStore, view_names: Sequence[str]) -> None:
        from feast.infra.online_stores.helpers import get_online_store_from_config

        self._config = store.config
        self._online: OnlineStore = get_online_store_from_config(store.config.online_store)
        self._views = {name: _describe(store.get_feature_view(name)) for name in view_names}

    def write(self, view_name: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Upsert one online row per entity of ``rows`` (their newest values); how many."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.type_map import python_values_to_proto_values

        if not rows:
            return 0
        described = self._views[view_name]
        keys = [(name, python_values_to_proto_values([r[name] for r in rows], kind))
                for name, kind in described.join_keys]  # fmt: skip
        values = {name: python_values_to_proto_values([_plain(r[name]) for r in rows], kind)
                  for name, kind in described.features}  # fmt: skip
        data: list[tuple[Any, dict[str, Any], datetime, datetime | None]] = []
        for i, row in enumerate(rows):
            entity_key = EntityKeyProto(join_keys=[name for name, _ in keys], entity_values=[v[i] for _, v in keys])
            created = row[described.created] if described.created else None
            data.append((entity_key, {name: column[i] for name, column in values.items()}, row[described.timestamp],
                         created))  # fmt: skip
        self._online.online_write_batch(self._config, described.view, data, None)
        return len(data)


def _describe(view: FeatureView) -> _View:
    source = view.batch_source
    if source is None:
        raise LookupError(f"feature view {view.name} has no batch source")
    return _View(
        view,
        tuple((c.name, c.dtype.to_value_type()) for c in view.entity_columns),
        tuple((f.name, f.dtype.to_value_type()) for f in view.features),
        source.timestamp_field,
        source.created_timestamp_column or None,
    )


def _plain(value: Any) -> Any:
    """A database value as Feast's proto conversion takes it (a Decimal as a float)."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    return value
