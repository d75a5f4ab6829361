"""Reading a whole Mongo collection in bounded memory: a ``find`` cursor, or the embedded server's file.

A real MongoDB streams a ``find`` cursor batch by batch. The embedded server (nx-27017 0.8.1)
does not: it answers a ``find`` by building every matching document as a Python object in the
server (its handler's ``docs = list(cursor)``) and hands out batches from that list, and it
uses no index for ``find`` (docs/embedded-stores.md). A scan of 5M reviews therefore held all
of them in the server process, and read 5M reviews 12.8× slower than 1M (docs/scale.md). At
the ML-25M shape it would not fit in this machine's memory.

So on the embedded server, a scan reads the collection's rows straight from the server's
SQLite file (a read-only connection: a consistent snapshot, the server keeps serving), a page
of ``batch_size`` rows at a time, ordered and filtered through the index the server keeps
on the field (``sources.stores.mongo.create_indexes``), and turns each row back into what
pymongo returns (dates as aware UTC datetimes). The rows are in the form the server itself
writes (``sources.stores.mongo_bulk``: the document as JSON, dates as ``{"$date": iso}``).
A real MongoDB (``MARQUEE_MONGO_URI``) or a file without that layout gets the ``find``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING

from sources.stores import mongo
from sources.stores.clients import Stores
from sources.stores.mongo_bulk import open_table, server_form


def scan(
    stores: Stores, logical: str, *, field: str | None = None, since: datetime | None = None, batch_size: int = 10_000
) -> Iterator[dict[str, Any]]:
    """Every document of the live ``logical`` collection (``"reviews"``, ``"playback_logs"``),
    ``batch_size`` at a time. With ``field`` (a date field the collection is indexed on):
    ordered by (``field``, ``_id``), and only those with ``field >= since`` when ``since`` is
    given (on the embedded server ``since`` counts to the millisecond, as BSON dates do)."""
    if since is not None and field is None:
        raise ValueError("since filters on a field: name it")
    if field is not None and not field.isidentifier():
        raise ValueError(f"not a field name: {field!r}")
    collection = mongo.live(stores.mongo, logical)
    sqlite_file = stores.mongo_file()
    con = open_table(sqlite_file, collection.name, read_only=True) if sqlite_file is not None else None
    if con is None:
        query = {} if since is None or field is None else {field: {"$gte": since}}
        order = [(field, ASCENDING), ("_id", ASCENDING)] if field is not None else None
        yield from collection.find(query, sort=order, batch_size=batch_size)
        return
    try:
        yield from _rows(con, collection.name, field, since, batch_size)
    finally:
        con.close()


def count(stores: Stores, logical: str) -> int:
    """How many documents the live ``logical`` collection holds, exactly.

    On the embedded server a ``count_documents`` builds every document in the server first
    (it runs as an aggregation over a ``find``), which at millions of documents takes minutes
    and gigabytes (docs/scale.md); the file's own row count answers at once."""
    collection = mongo.live(stores.mongo, logical)
    sqlite_file = stores.mongo_file()
    con = open_table(sqlite_file, collection.name, read_only=True) if sqlite_file is not None else None
    if con is None:
        return collection.count_documents({})
    try:
        return int(con.execute(f'SELECT count(*) FROM "{collection.name}"').fetchone()[0])
    finally:
        con.close()


def _rows(
    con: sqlite3.Connection, table: str, field: str | None, since: datetime | None, batch_size: int
) -> Iterator[dict[str, Any]]:
    # The expression is the server's own index on the field, so SQLite reads in index order.
    key = f"json_extract(data, '$.{field}')"
    sql, params = f'SELECT data FROM "{table}"', []
    if field is not None and since is not None:
        sql += f" WHERE {key} >= ?"  # {"$date":"<iso>"} texts order as their times do
        params.append(json.dumps(server_form(since), separators=(",", ":")))
    if field is not None:
        sql += f" ORDER BY {key}, _id"
    cursor = con.execute(sql, params)
    while rows := cursor.fetchmany(batch_size):
        for (data,) in rows:
            yield json.loads(data, object_hook=_restored)


def _restored(obj: dict[str, Any]) -> Any:
    """``{"$date": iso}`` (naive UTC) back to the aware datetime pymongo gives; other objects as they are."""
    if len(obj) == 1 and "$date" in obj:
        return datetime.fromisoformat(obj["$date"]).replace(tzinfo=UTC)
    return obj
