"""Which entities' online features were written since the last look (Feast's PostgreSQL store).

The serving hot path holds the catalogue's movie features in memory (model/serve/pair_features.py).
Re-reading them all through Feast costs Python time per movie, so it grows with the catalogue
(figures in docs/performance.md): too much to repeat on a timer inside a serving process,
where it competes with requests for the GIL. So the holder asks this instead, every few
seconds, and re-reads only the movies it names.

Every row PostgreSQL writes carries the id of the transaction that wrote it (``xmin``), for a
materialization and a push alike, so "which entity keys were written by a transaction at or
after W" is one scan inside PostgreSQL and no Python per unchanged row. W is the oldest
transaction still running at the previous look (``pg_snapshot_xmin``), so a write that commits
after a look is seen at the next one rather than missed; a row seen twice is only re-read
twice. When the 32-bit transaction counter has wrapped since (its epoch, the high half of the
64-bit snapshot ids, changed), the answer is "unknown" and the caller re-reads everything.

This reads Feast's table layout (one ``<project>_<view>`` table per view, keys serialized with
Feast's own encoding), so it is only offered for Feast's ``postgres`` online store: with any
other the caller re-reads on a timer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

EPOCH = 1 << 32


@dataclass(frozen=True)
class Changes:
    """What a look found: the entities written since the mark (None: unknown, re-read all) and
    the mark to keep once the caller has applied them."""

    keys: set[int] | None
    mark: int


class OnlineChanges:
    """``look()`` → the single-key entities (e.g. movie ids) of ``views`` written since ``mark``."""

    def __init__(self, store: Any, views: Sequence[str]) -> None:
        from feast.infra.online_stores.helpers import compute_table_id

        config = store.config
        versioning = config.registry.enable_online_feature_view_versioning
        self.online = config.online_store
        self.tables = [compute_table_id(config.project, store.get_feature_view(v), versioning) for v in views]
        self.key_version = config.entity_key_serialization_version
        self.mark: int | None = None  # the 64-bit horizon of the last applied look

    @classmethod
    def for_store(cls, store: Any, views: Sequence[str]) -> OnlineChanges | None:
        """A watcher of ``views``' online tables, or None when the online store is not Feast's ``postgres``."""
        return cls(store, views) if getattr(store.config.online_store, "type", None) == "postgres" else None

    def look(self) -> Changes:
        """The entity keys written since ``self.mark`` (``keys`` None: unknown, re-read all) and
        the mark the caller stores in ``self.mark`` once it has applied them."""
        from feast.infra.key_encoding_utils import deserialize_entity_key

        from sources.feature_store.postgres import connect

        with connect(self.online) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            row = cur.fetchone()
            assert row is not None
            horizon = int(row[0])
            if self.mark is None or horizon // EPOCH != self.mark // EPOCH:
                return Changes(None, horizon)
            branches = [
                sql.SQL("SELECT entity_key FROM {} WHERE xmin::text::bigint >= %(since)s").format(
                    sql.Identifier(self.online.db_schema, table)
                )
                for table in self.tables
            ]
            cur.execute(sql.SQL(" UNION ").join(branches), {"since": self.mark % EPOCH})
            written = [bytes(r[0]) for r in cur.fetchall()]
        keys = set()
        for serialized in written:
            value = deserialize_entity_key(serialized, self.key_version).entity_values[0]
            keys.add(int(getattr(value, str(value.WhichOneof("val")))))
        return Changes(keys, horizon)
