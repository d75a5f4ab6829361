"""Bulk inserts into a staging MongoDB collection: the embedded server's file, or ``insert_many``.

The embedded server (nx-27017 0.8.1) inserts one document at a time in Python behind the
wire protocol: ~10,500 small documents/s whatever the batch size or the number of clients
(docs/scale.md). It keeps each collection in a SQLite table ``(id, _id, data)`` of one
database file, ``data`` being the document as JSON with dates as ``{"$date": iso}``
(naive UTC, millisecond precision, as BSON carries them). So for a load into a collection
that no reader sees yet (a staging collection, published later through the catalog), the
embedded path writes those rows straight into the file, one SQLite transaction per batch,
in exactly the form the server writes itself; the server (WAL mode) keeps serving
meanwhile, and reads the rows like its own. A real MongoDB (``MARQUEE_MONGO_URI``), or a
file whose table does not have that layout, gets plain ``insert_many``.

Only ever use it on a collection that no one reads or writes until the load is published.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo.database import Database

EXPECTED_COLUMNS = ("id", "_id", "data")


def server_form(value: Any) -> Any:
    """``value`` as the embedded server stores it: datetimes become ``{"$date": naive UTC iso}``
    truncated to milliseconds (what a BSON date holds), containers are converted throughout."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return {"$date": value.replace(microsecond=value.microsecond // 1000 * 1000).isoformat()}
    if isinstance(value, dict):
        return {k: server_form(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [server_form(v) for v in value]
    return value


class BulkInserter:
    """Inserts batches of documents (each with an ``_id``) into one staging collection."""

    def __init__(self, db: Database[dict[str, Any]], collection: str, sqlite_file: Path | None) -> None:
        self.db, self.collection = db, collection
        if collection not in db.list_collection_names():
            db.create_collection(collection)  # the server makes the table and its _id index
        self._con = open_table(sqlite_file, collection) if sqlite_file is not None else None

    @property
    def direct(self) -> bool:
        """True when batches go straight into the embedded server's file."""
        return self._con is not None

    def insert(self, docs: Sequence[dict[str, Any]]) -> None:
        if not docs:
            return
        if self._con is None:
            self.db[self.collection].insert_many(list(docs), ordered=False)
            return
        rows = [(json.dumps(server_form(d)), str(d["_id"])) for d in docs]
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(f'INSERT INTO "{self.collection}" (data, _id) VALUES (?, ?)', rows)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def open_table(sqlite_file: Path, collection: str, *, read_only: bool = False) -> sqlite3.Connection | None:
    """A connection to the file holding ``collection``, or None when it is not the layout we
    know (``read_only``: one that cannot write, for ``sources.stores.mongo_scan``)."""
    if not sqlite_file.is_file() or not collection.replace("_", "").isalnum():
        return None
    target = f"{sqlite_file.resolve().as_uri()}?mode=ro" if read_only else str(sqlite_file)
    con = sqlite3.connect(target, timeout=30.0, isolation_level=None, check_same_thread=False, uri=read_only)
    columns = tuple(row[1] for row in con.execute(f'PRAGMA table_info("{collection}")'))
    if columns != EXPECTED_COLUMNS:
        con.close()
        return None
    return con
