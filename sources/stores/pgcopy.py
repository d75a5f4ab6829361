"""Bulk writes to PostgreSQL with COPY, inside the caller's SQLAlchemy transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, text


def copy_rows(
    conn: Connection,
    table: str,
    columns: tuple[str, ...],
    rows: Iterable[tuple[Any, ...]],
    *,
    types: Sequence[int] | None = None,
) -> None:
    """Stream ``rows`` into ``table`` with COPY (psycopg 3), in ``conn``'s open transaction.

    ``types``: the columns' type oids (``column_types``), for COPY's binary format, which costs
    the client and the server several times less per row than the text format (measured:
    docs/scale.md). For rows of plain values (numbers, text, timestamps) that already have
    those types; a value its type cannot take fails the COPY."""
    raw = conn.connection.driver_connection
    assert raw is not None
    form = " (FORMAT BINARY)" if types is not None else ""
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN{form}") as copy:
        if types is not None:
            copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def column_types(conn: Connection, table: str, columns: tuple[str, ...]) -> list[int]:
    """The type oids of ``table``'s ``columns``, in that order (a temp table is found too)."""
    found = conn.execute(
        text(
            "SELECT attname, atttypid::int FROM pg_attribute "
            "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"
        ),
        {"t": table},
    ).all()
    oids = {str(name): int(oid) for name, oid in found}
    return [oids[c] for c in columns]
