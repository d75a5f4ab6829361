"""The spark offline engine gives the postgres engine's features: tables, point-in-time frames, online store.

On ML-100K, one small Spark session (``local[2]``, two shuffle partitions, no UI) for the whole
module: the Parquet export, Feast's Spark offline store and its Spark compute engine run for
real against the same PostgreSQL registry and online store (project ``marquee_spark``).

Tolerance: floats must agree within ``rtol=1e-9, atol=1e-12`` (both engines compute in
float64; sums may be added in another order); integers, strings, times and nulls exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from model.data.point_in_time import label_events, training_frame
from sources.export.features import TIME_SERIES
from sources.export.lake import TABLES, export_lake
from sources.feature_store.env import SPARK_PROJECT, feast_environment, open_feature_store
from sources.feature_store.materialize import apply_repo, materialize
from sources.feature_store.names import SERVING_SERVICE
from sources.settings import OfflineTarget
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore

RTOL, ATOL = 1e-9, 1e-12
LABELS = 2_000  # a seeded sample of the ML-100K ratings (every user and movie feature view is read)


@pytest.fixture(scope="module")
def spark_target(tmp_path_factory: pytest.TempPathFactory) -> OfflineTarget:
    small = (("spark.sql.shuffle.partitions", "2"), ("spark.default.parallelism", "2"))
    return OfflineTarget("spark", str(tmp_path_factory.mktemp("offline")), "local[2]", small)


@pytest.fixture(scope="module")
def spark_store(stores: Stores, feature_store: FeatureStore, spark_target: OfflineTarget) -> Iterator[FeatureStore]:
    """The Parquet tables exported, the spark project applied and materialized (after the postgres one)."""
    report = export_lake(stores, spark_target, quiet=True)
    assert set(report.rows) == set(TABLES)
    opened = open_feature_store(replace(stores.endpoints, offline=spark_target))
    assert opened.project == SPARK_PROJECT
    apply_repo(opened)
    materialize(opened)
    yield opened
    os.environ.update(feast_environment(stores.endpoints))  # the postgres engine's variables again


def _same(a: Any, b: Any) -> bool:
    """Equal values: nulls alike, arrays element-wise, floats within the stated tolerance."""
    a_null = a is None or (isinstance(a, float) and np.isnan(a))
    b_null = b is None or (isinstance(b, float) and np.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    if isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return False
    return bool((np.abs(x - y) <= ATOL + RTOL * np.abs(y)).all())  # np.allclose's rule, without its overhead


def assert_frames_equal(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Same columns, same rows; numbers compared column-wise, arrays and strings cell by cell."""
    assert list(left.columns) == list(right.columns)
    assert len(left) == len(right)
    for column in left.columns:
        a, b = left[column], right[column]
        if isinstance(a.dtype, pd.DatetimeTZDtype):
            assert a.equals(b), column
            continue
        if a.dtype != object and b.dtype != object:
            x, y = a.to_numpy(dtype=np.float64, na_value=np.nan), b.to_numpy(dtype=np.float64, na_value=np.nan)
            same = np.isclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True)
            assert same.all(), f"{column}: {int((~same).sum())} rows differ, e.g. {x[~same][:3]} vs {y[~same][:3]}"
            continue
        bad = [i for i, (p, q) in enumerate(zip(a, b, strict=True)) if not _same(p, q)]
        first = bad[0] if bad else 0
        assert not bad, f"{column}: {len(bad)} rows differ, first {a.iloc[first]!r} vs {b.iloc[first]!r}"


def test_every_feature_table_has_the_same_rows(
    stores: Stores, spark_store: FeatureStore, spark_target: OfflineTarget
) -> None:
    """Each time series Spark computed equals PostgreSQL's table, every row and column."""
    for feature in TIME_SERIES:
        columns = [feature.entity, "event_timestamp", *feature.columns]
        with stores.pg.connect() as conn:
            pg = pd.read_sql(f"SELECT {', '.join(columns)} FROM {feature.table}", conn)
        lake = pq.read_table(Path(spark_target.location) / feature.table, columns=columns).to_pandas()
        order = [feature.entity, "event_timestamp"]
        pg = pg.sort_values(order, ignore_index=True)
        lake = lake.sort_values(order, ignore_index=True)
        lake["event_timestamp"] = lake["event_timestamp"].dt.tz_convert("UTC").astype(pg["event_timestamp"].dtype)
        assert len(pg) > 0, feature.table
        assert_frames_equal(pg, lake)


def test_point_in_time_frames_are_equal(stores: Stores, feature_store: FeatureStore, spark_store: FeatureStore) -> None:
    """The same labels joined by Feast's PostgreSQL store and by its Spark store: the same frame."""
    labels = label_events(stores).sample(LABELS, random_state=7).reset_index(drop=True)
    from_postgres = training_frame(feature_store, labels)
    from_spark = training_frame(spark_store, labels)
    assert from_postgres.filter(like="__").notna().any(axis=None)  # features, not only nulls
    assert_frames_equal(from_postgres, from_spark)


def test_online_store_is_the_same_after_a_spark_materialization(
    stores: Stores, feature_store: FeatureStore, spark_store: FeatureStore
) -> None:
    """Every user and every movie read online from both projects: the same values."""
    with stores.pg.connect() as conn:
        users = pd.read_sql("SELECT id FROM users ORDER BY id", conn)["id"].tolist()
        movies = pd.read_sql("SELECT id FROM movies ORDER BY id", conn)["id"].tolist()
    rows = [{"user_id": users[i % len(users)], "movie_id": movie} for i, movie in enumerate(movies)]
    read = {}
    for name, store in (("postgres", feature_store), ("spark", spark_store)):
        service = store.get_feature_service(SERVING_SERVICE)
        read[name] = store.get_online_features(features=service, entity_rows=rows, full_feature_names=True).to_df()
    assert len(read["postgres"]) == len(movies)
    assert read["postgres"].filter(like="__").notna().any(axis=None)
    assert_frames_equal(read["postgres"], read["spark"])
