"""``indexes_deferred``: a bulk load's secondary indexes dropped and built again, in one transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, text

from sources.stores.clients import Stores
from sources.stores.pgcopy import copy_rows, indexes_deferred

TABLE = "_test_deferred"


def indexes(conn: Connection) -> list[tuple[str, str]]:
    query = text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t ORDER BY 1")
    rows = conn.execute(query, {"t": TABLE})
    return [(str(a), str(b)) for a, b in rows]


@pytest.fixture()
def table(stores: Stores) -> list[tuple[str, str]]:
    with stores.pg.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
        conn.execute(text(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, user_id int, ts int)"))
        conn.execute(text(f"CREATE INDEX ix_{TABLE}_user_ts ON {TABLE} (user_id, ts)"))
        conn.execute(text(f"CREATE INDEX ix_{TABLE}_ts ON {TABLE} (ts DESC)"))
        return indexes(conn)


def test_indexes_are_dropped_for_the_block_and_built_again(stores: Stores, table: list[tuple[str, str]]) -> None:
    assert len(table) == 3
    with stores.pg.begin() as conn:
        with indexes_deferred(conn, TABLE):
            assert [name for name, _ in indexes(conn)] == [f"{TABLE}_pkey"]  # the key stays: ON CONFLICT needs it
            copy_rows(conn, TABLE, ("id", "user_id", "ts"), ((i, i % 7, i) for i in range(1000)))
            conn.execute(text(f"INSERT INTO {TABLE} VALUES (5, 0, 0) ON CONFLICT DO NOTHING"))
        assert indexes(conn) == table  # the same definitions, built over the loaded rows
    with stores.pg.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar() == 1000


def test_a_failure_in_the_block_keeps_the_indexes(stores: Stores, table: list[tuple[str, str]]) -> None:
    with pytest.raises(RuntimeError, match="cut"), stores.pg.begin() as conn, indexes_deferred(conn, TABLE):
        copy_rows(conn, TABLE, ("id", "user_id", "ts"), [(1, 1, 1)])
        raise RuntimeError("cut")
    with stores.pg.connect() as conn:
        assert indexes(conn) == table
        assert conn.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar() == 0
