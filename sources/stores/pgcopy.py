"""Bulk writes to PostgreSQL with COPY, inside the caller's SQLAlchemy transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import Cursor
from sqlalchemy import Connection


def copy_rows(
    conn: Connection, table: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]], *, binary: bool = False
) -> None:
    """Stream ``rows`` into ``table`` with COPY (psycopg 3), in ``conn``'s open transaction.

    ``binary``: COPY's binary format, each value sent as the table's own column type (read from
    the catalogue), which costs the client and the server several times less per row than the
    text format (measured: docs/scale.md). For rows of plain values (numbers, text, timestamps)
    that already have those types; a value the type cannot take fails the COPY."""
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        types = column_types(cur, table, columns) if binary else None
        form = " (FORMAT BINARY)" if binary else ""
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN{form}") as copy:
            if types is not None:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)


def column_types(cur: Cursor[Any], table: str, columns: tuple[str, ...]) -> list[int]:
    """The type oids of ``table``'s ``columns``, in that order (a temp table is found too)."""
    cur.execute(
        "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (table,),
    )
    oids = {str(name): int(oid) for name, oid in cur.fetchall()}
    return [oids[c] for c in columns]
