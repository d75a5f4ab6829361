"""The declarative base every Marquee table derives from (``sources/tables/schema.py`` gathers them)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
