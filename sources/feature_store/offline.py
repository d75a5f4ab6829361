"""Feast's PostgreSQL offline store with a point-in-time join that scales: one index lookup per label.

Why: Feast 0.67's postgres template (``MULTIPLE_FEATURE_VIEW_POINT_IN_TIME_JOIN``) first joins
every label row with *every* earlier feature row of its entity (the ``__base`` CTE), then ranks
them with ROW_NUMBER to keep the latest (feast issues #3867, #3003). Its cost grows with
labels x history per entity: on MovieLens-100K a heavy user has ~700 ratings and ~700 feature
rows per view; 10,000 labels already make 1.45 million ``__base`` rows for user_playback
alone (figures in docs/feature-store.md). No index helps a join that materializes every pair.

What we do instead: the same Feast query context (views, projections, field mappings, TTLs,
created_timestamp tie-break; on-demand views applied afterwards by Feast's RetrievalJob), but
each view is joined with

    LEFT JOIN LATERAL (SELECT ... FROM source WHERE key = label.key AND event_timestamp <= label.ts
                       ORDER BY event_timestamp DESC, created_timestamp DESC LIMIT 1)

which PostgreSQL answers with one backward scan of the (entity, event_timestamp) index per
label row and view (the feat_* tables' primary key). Same answer as Feast's template: the
latest row at or before the label time within the TTL, ties broken by created_timestamp.
Labels are uploaded with COPY and rows fetched in binary format. Non-entity (date range) and
SQL-entity retrieval, materialization and everything else are Feast's own code.

Selected in feature_store.yaml: ``offline_store: {type: sources.feature_store.offline.LateralPostgreSQLOfflineStore}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
    PostgreSQLOfflineStore,
    PostgreSQLOfflineStoreConfig,
    PostgreSQLRetrievalJob,
    _get_entity_df_event_timestamp_range,
    _get_entity_schema,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.type_map import pg_type_code_to_arrow
from psycopg import sql

from sources.feature_store.postgres import connect, create_table_sql


class LateralPostgreSQLOfflineStoreConfig(PostgreSQLOfflineStoreConfig):
    # Feast finds this class from the store's `type` (the class name + "Config").
    type: Literal["sources.feature_store.offline.LateralPostgreSQLOfflineStore"] = (
        "sources.feature_store.offline.LateralPostgreSQLOfflineStore"  # type: ignore[assignment]
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lateral_point_in_time_query(
    contexts: list[dict[str, Any]],
    *,
    entity_table: str,
    timestamp_column: str,
    entity_columns: list[str],
    full_feature_names: bool,
    filter_by_created_timestamp: bool,
) -> str:
    """The SQL joining each label row of ``entity_table`` to each view's latest row at or before it."""
    label_ts = f"labels.{_quote(timestamp_column)}"
    selected = [f"labels.{_quote(c)}" for c in entity_columns]
    joins = []
    for i, fv in enumerate(contexts):
        alias = f"fv_{i}"
        outputs = []
        for feature in fv["features"]:
            name = fv["field_mapping"].get(feature, feature)
            out = f"{fv['name']}__{name}" if full_feature_names else name
            outputs.append(f"sub.{_quote(feature)} AS {_quote(out)}")
            selected.append(f"{alias}.{_quote(out)}")
        timestamp = f"sub.{_quote(fv['timestamp_field'])}"
        where = [f"{timestamp} <= {label_ts}"]
        for selection in fv["entity_selections"]:  # "source_column AS join_key"
            column, key = selection.split(" AS ")
            where.append(f"sub.{_quote(column)} = labels.{_quote(key)}")
        if fv["ttl"]:
            where.append(f"{timestamp} >= {label_ts} - {int(fv['ttl'])} * interval '1 second'")
        order = [f"{timestamp} DESC"]
        created = fv["created_timestamp_column"]
        if created:
            order.append(f"sub.{_quote(created)} DESC")
            if filter_by_created_timestamp:
                where.append(f"sub.{_quote(created)} <= {label_ts}")
        joins.append(
            f"LEFT JOIN LATERAL (SELECT {', '.join(outputs) or 'NULL AS _none'} "
            f"FROM {fv['table_subquery']} AS sub WHERE {' AND '.join(where)} "
            f"ORDER BY {', '.join(order)} LIMIT 1) AS {alias} ON TRUE"
        )
    return f"SELECT {', '.join(selected)} FROM {entity_table} AS labels\n" + "\n".join(joins)


def upload_entity_df(config: Any, entity_df: pd.DataFrame, table_name: str) -> None:
    """The label frame into a table with COPY (Feast's own upload runs one INSERT per row),
    analyzed so the planner knows its size."""
    with connect(config.offline_store) as conn, conn.cursor() as cur:
        cur.execute(create_table_sql(entity_df, table_name))
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in entity_df.columns)
        rows = entity_df.astype(object).where(entity_df.notna(), None).itertuples(index=False, name=None)
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table_name), columns)) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table_name)))


class BinaryPostgreSQLRetrievalJob(PostgreSQLRetrievalJob):
    """Feast's job, fetching rows in PostgreSQL's binary format and building arrow column-wise:
    the 384-float title embeddings parse faster than from text."""

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        with (
            self._query_generator() as query,
            connect(self.config.offline_store) as conn,
            conn.cursor(binary=True) as cur,
        ):
            conn.read_only = True
            cur.execute(query)
            if not cur.description:
                raise ValueError("point-in-time query returned no columns")
            fields = [(c.name, pg_type_code_to_arrow(c.type_code)) for c in cur.description]
            rows = cur.fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in fields]
        return pa.Table.from_arrays([pa.array(col) for col in columns], schema=pa.schema(fields))


class LateralPostgreSQLOfflineStore(PostgreSQLOfflineStore):
    @staticmethod
    def get_historical_features(
        config: Any,
        feature_views: list[Any],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: Any,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        if not isinstance(entity_df, pd.DataFrame):  # SQL or date-range retrieval: Feast's own path
            return PostgreSQLOfflineStore.get_historical_features(
                config,
                feature_views,
                feature_refs,
                entity_df,
                registry,
                project,
                full_feature_names,
                filter_by_created_timestamp,
                **kwargs,
            )
        frame: pd.DataFrame = entity_df
        entity_schema = _get_entity_schema(frame, config)
        timestamp_column = offline_utils.infer_event_timestamp_from_entity_df(entity_schema)
        timestamp_range = _get_entity_df_event_timestamp_range(frame, timestamp_column, config)

        @contextlib.contextmanager
        def query_generator() -> Iterator[str]:
            table_name = offline_utils.get_temp_entity_table_name()
            expected = offline_utils.get_expected_join_keys(project, feature_views, registry)
            offline_utils.assert_expected_columns_in_entity_df(entity_schema, expected, timestamp_column)
            contexts = offline_utils.get_feature_view_query_context(
                feature_refs, feature_views, registry, project, timestamp_range
            )
            try:
                upload_entity_df(config, frame, table_name)
                yield lateral_point_in_time_query(
                    [asdict(c) for c in contexts],
                    entity_table=_quote(table_name),
                    timestamp_column=timestamp_column,
                    entity_columns=list(entity_schema),
                    full_feature_names=full_feature_names,
                    filter_by_created_timestamp=filter_by_created_timestamp,
                )
            finally:
                with connect(config.offline_store) as conn, conn.cursor() as cur:
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table_name)))

        return BinaryPostgreSQLRetrievalJob(
            query=query_generator,
            config=config,
            full_feature_names=full_feature_names,
            on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry),
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=list(entity_schema.keys() - {timestamp_column}),
                min_event_timestamp=timestamp_range[0],
                max_event_timestamp=timestamp_range[1],
            ),
        )
