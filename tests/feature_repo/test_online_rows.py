"""Online rows written through ``OnlineRows`` are Feast's own: byte for byte, and read back by Feast."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
from sqlalchemy import text

from api.queries.feast_features import VIEW_OF_TABLE
from sources.feature_store.online_rows import OnlineRows
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore

KEYS = [3, 5, 8]  # users and movies with reviews and playback in ML-100K and the synthetic logs
ENTITY = {"feat_user_reviews": "user_id", "feat_movie_reviews": "movie_id", "feat_user_playback": "user_id"}


def _newest(stores: Stores, table: str) -> list[dict[str, Any]]:
    entity = ENTITY[table]
    with stores.pg.connect() as conn:
        rows = conn.execute(
            text(f"SELECT DISTINCT ON ({entity}) * FROM {table} WHERE {entity} = ANY(:k) "
                 f"ORDER BY {entity}, event_timestamp DESC"), {"k": KEYS},
        ).mappings()  # fmt: skip
        return [dict(r) for r in rows]


def _stored(stores: Stores, store: FeatureStore, view: str) -> list[tuple[Any, ...]]:
    """Every stored online row of ``view``, as Feast's PostgreSQL online store keeps it."""
    with stores.pg.connect() as conn:
        rows = conn.execute(
            text(f'SELECT * FROM feast_online."{store.project}_{view}" ORDER BY entity_key, feature_name')
        )
        return [tuple(r) for r in rows]


def _online(store: FeatureStore, view: str, entity: str, feature: str) -> list[Any]:
    got = store.get_online_features(features=[f"{view}:{feature}"], entity_rows=[{entity: k} for k in KEYS]).to_dict()
    return list(got[feature])


@pytest.mark.parametrize("table", list(ENTITY))
def test_rows_are_feasts_own_and_read_back(stores: Stores, feature_store: FeatureStore, table: str) -> None:
    view, entity = VIEW_OF_TABLE[table], ENTITY[table]
    rows = _newest(stores, table)
    assert len(rows) == len(KEYS)
    feature_store.write_to_online_store(view, pd.DataFrame(rows))
    by_feast = _stored(stores, feature_store, view)

    writer = OnlineRows(feature_store, [view])
    feature = "review_count" if "reviews" in table else "session_count"
    changed = [{**r, feature: r[feature] + 1000} for r in rows]
    assert writer.write(view, changed) == len(KEYS)
    assert _online(feature_store, view, entity, feature) == [r[feature] + 1000 for r in rows]  # what Feast reads

    writer.write(view, rows)
    assert _stored(stores, feature_store, view) == by_feast  # the same bytes as Feast's own write
    assert _online(feature_store, view, entity, feature) == [r[feature] for r in rows]
