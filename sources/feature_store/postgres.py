"""Connections to Feast's PostgreSQL offline and online stores, from their public config.

Feast connects with a private helper; this is the same connection (its conninfo, search path
and TLS settings) built from the fields of ``PostgreSQLConfig``, so Marquee relies on Feast's
configuration format only.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
from feast.type_map import arrow_to_pg_type
from psycopg.conninfo import make_conninfo


def connect(config: Any) -> psycopg.Connection[Any]:
    """A new connection to the store ``config`` (a Feast ``PostgreSQLConfig``) describes.

    The search path is the config's schema then ``public``, as Feast's own connections have it.
    """
    search_path = (config.db_schema or config.user).strip()
    if search_path != "public":
        search_path += ",public"
    conninfo = make_conninfo(
        "", user=config.user, password=config.password, host=config.host, port=int(config.port),
        dbname=config.database,
    )  # fmt: skip
    return psycopg.connect(
        conninfo,
        keepalives_idle=config.keepalives_idle,
        sslmode=config.sslmode,
        sslkey=config.sslkey_path,
        sslcert=config.sslcert_path,
        sslrootcert=config.sslrootcert_path,
        options=f"-c search_path={search_path}",
    )


def create_table_sql(frame: pd.DataFrame, table_name: str) -> str:
    """``CREATE TABLE`` for ``frame``'s columns with Feast's arrow → PostgreSQL type mapping."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    columns = ", ".join(f'"{f.name}" {arrow_to_pg_type(str(f.type))}' for f in schema)
    return f'CREATE TABLE "{table_name}" ({columns})'
