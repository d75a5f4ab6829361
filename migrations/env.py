"""Alembic environment: URL from Marquee's Settings, metadata from sources.tables.schema."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from sources.settings import Settings
from sources.stores.clients import pg_engine, resolve_endpoints
from sources.tables.schema import METADATA

target_metadata = METADATA

# Tables Feast creates and owns; autogenerate must not try to drop them.
FOREIGN_PREFIXES = ("feast_", "fs_")


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    if type_ == "table" and reflected and compare_to is None:
        return name in target_metadata.tables
    return True


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:  # called from `marquee migrate` with an open connection
        run(connection)
        return
    engine = pg_engine(resolve_endpoints(Settings()))
    with engine.connect() as conn:
        run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run against a database")
run_online()
