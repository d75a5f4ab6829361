"""Append to an array inside documents of a live collection, in place, on the embedded server.

The playback logs keep a user's sessions in one document (MongoDB's bucket pattern), so a
session recorded through the API is an append to an array of hundreds of entries. A real
MongoDB does that with ``$push``; the embedded server (nx-27017 0.8.1) turns every element
of the array into a JSON string when it applies ``$push`` (docs/embedded-stores.md), so the
API read the whole document and replaced it: the server decoding and encoding every session
of the user in Python, ~6 ms per user's document at ML-100K, while the mutation log's
inserts (each acknowledgement) waited behind it in the same single server process.

``append(stores, logical, by_id, ...)`` does the append inside the server's SQLite file
instead, one statement per new element, in C: ``json_set(data, '$.<array>[#]', …)``
guarded by ``NOT EXISTS`` over the array's keys (an element already there is never appended
twice, so a retried append adds nothing) and setting the document's time field (the export's
watermark, which the server's expression index on it follows). One transaction per call,
short, so the server (WAL mode, waiting on the file's lock) is held for milliseconds, with
the durability the server gives its own writes (``synchronous = NORMAL``, neosqlite's WAL
default). The elements are written in the form the server writes (``mongo_bulk.server_form``)
and read back by ``find`` as the documents the server wrote.

Against a real MongoDB, or a file whose table is not the layout we know, ``append`` returns
None and the caller does its own read-and-replace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sources.stores import mongo
from sources.stores.clients import Stores
from sources.stores.mongo_bulk import open_table, server_form


def append(
    stores: Stores,
    logical: str,
    by_id: Mapping[int, Sequence[dict[str, Any]]],
    *,
    array: str,
    key: str,
    stamp: str,
    at: datetime,
) -> list[int] | None:
    """Append each id's elements to ``array`` of its document in the live ``logical`` collection,
    skipping an element whose ``key`` is there already, and set ``stamp`` to ``at`` on every
    document appended to. Returns the ids that have no document (nothing written for them), or
    None when the store is not the embedded server's file (nothing written at all)."""
    sqlite_file = stores.mongo_file()
    if sqlite_file is None or not by_id:
        return None if sqlite_file is None else []
    table = mongo.live(stores.mongo, logical).name
    con = open_table(sqlite_file, table)
    if con is None:
        return None
    stamp_json = json.dumps(server_form(at))
    update = (
        f"UPDATE \"{table}\" SET data = json_set(data, '$.{array}[#]', json(?), '$.{stamp}', json(?)) "
        f"WHERE _id = ? AND NOT EXISTS (SELECT 1 FROM json_each(data, '$.{array}') "
        f"WHERE json_extract(value, '$.{key}') = ?)"
    )
    missing: list[int] = []
    try:
        con.execute("PRAGMA synchronous = NORMAL")  # the server's own setting in WAL mode (neosqlite's default)
        con.execute("BEGIN IMMEDIATE")
        try:
            for doc_id, elements in by_id.items():
                if con.execute(f'SELECT 1 FROM "{table}" WHERE _id = ?', (str(doc_id),)).fetchone() is None:
                    missing.append(doc_id)
                    continue
                for element in elements:
                    con.execute(update, (json.dumps(server_form(element)), stamp_json, str(doc_id), element[key]))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return missing
