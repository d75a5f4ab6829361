"""Bulk writes to PostgreSQL (COPY, indexes built after the load), inside the caller's SQLAlchemy transaction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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


@contextmanager
def indexes_deferred(conn: Connection, table: str, *, work_mem: str = "256MB") -> Iterator[None]:
    """Drop ``table``'s secondary indexes (those no constraint owns) for the block and build
    them again after it, all in ``conn``'s open transaction.

    For a bulk load into an emptied table: each index is then built once by a sort instead of
    updated row by row (measured: docs/scale.md). Constraint indexes (the primary key) stay,
    so ``ON CONFLICT`` still works inside the block. A failure in the block rolls the drops
    back with everything else; the caller holds the table's lock (a TRUNCATE takes it), so no
    reader sees the table without its indexes."""
    found = conn.execute(
        text(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = CAST(:t AS regclass) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) "
            "ORDER BY 1"
        ),
        {"t": table},
    ).all()
    for name, _ in found:
        conn.execute(text(f"DROP INDEX {name}"))
    yield
    conn.execute(text(f"SET LOCAL maintenance_work_mem = '{work_mem}'"))
    for _, definition in found:
        conn.execute(text(definition))
