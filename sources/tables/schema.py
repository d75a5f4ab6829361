"""The whole PostgreSQL schema in one ``MetaData``, the one Alembic compares against.

Importing this module registers every table: the systems of record (``records``) and the
feature tables (``features``) and the tables the API serves from (``serving``).
"""

from __future__ import annotations

from sqlalchemy import MetaData

from sources.tables import features, records, serving
from sources.tables.base import Base

__all__ = ["METADATA", "features", "records", "serving"]

METADATA: MetaData = Base.metadata
