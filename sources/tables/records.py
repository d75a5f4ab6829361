"""The PostgreSQL system of record as SQLAlchemy 2.0 models (Alembic autogenerates from here).

Times are ``timestamptz`` in UTC. Fields MovieLens does not have (city, subscription tier
and price, payments) are generated deterministically at ingest: see ``sources/datasets/enrich.py``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from sources.tables.base import Base

EMBEDDING_DIM = 384
PAYMENT_METHODS = ("Card", "PayPal", "UPI")


class SubscriptionTier(Base):
    __tablename__ = "subscription_tiers"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    monthly_price: Mapped[Decimal] = mapped_column(Numeric(6, 2))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    age: Mapped[int | None] = mapped_column(SmallInteger)
    gender: Mapped[str | None] = mapped_column(String(1))
    occupation: Mapped[str | None] = mapped_column(String(64))
    zip_code: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str] = mapped_column(String(64))
    signed_up_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Subscription(Base):
    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    tier_id: Mapped[int] = mapped_column(ForeignKey("subscription_tiers.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint(f"method IN {PAYMENT_METHODS!r}", name="payments_method_known"),
        Index("ix_payments_user_paid_at", "user_id", "paid_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    amount: Mapped[Decimal] = mapped_column(Numeric(8, 2))
    currency: Mapped[str] = mapped_column(String(3), server_default="USD")
    method: Mapped[str] = mapped_column(String(16))
    paid_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Movie(Base):
    __tablename__ = "movies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(Text)
    year: Mapped[int | None] = mapped_column(SmallInteger)
    freebase_id: Mapped[str | None] = mapped_column(String(32))
    imdb_id: Mapped[str | None] = mapped_column(String(16))
    # When the movie entered the catalogue: its first rating in the data.
    added_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Genre(Base):
    __tablename__ = "genres"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(32), unique=True)


class MovieGenre(Base):
    __tablename__ = "movie_genres"

    movie_id: Mapped[int] = mapped_column(ForeignKey("movies.id", ondelete="CASCADE"), primary_key=True)
    genre_id: Mapped[int] = mapped_column(ForeignKey("genres.id", ondelete="CASCADE"), primary_key=True, index=True)


class MovieEmbedding(Base):
    __tablename__ = "movie_embeddings"
    __table_args__ = (
        Index(
            "ix_movie_embeddings_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
            # chosen by `marquee bench search` on real title embeddings (docs/scale.md)
            postgresql_with={"m": 16, "ef_construction": 128},
        ),
    )

    movie_id: Mapped[int] = mapped_column(ForeignKey("movies.id", ondelete="CASCADE"), primary_key=True)
    embedding: Mapped[list[float]] = mapped_column(Vector(EMBEDDING_DIM))
    model: Mapped[str] = mapped_column(String(64))
    # The exact text that was embedded: a re-ingest reuses vectors whose text is unchanged.
    source_text: Mapped[str] = mapped_column(Text)


class MovieAddition(Base):
    """One row per ``addMovie`` (api/queries/catalog.py), keyed by its client mutation id.

    Written in the same transaction as the movie, so the movie exists exactly when its
    record does; ``status`` goes pending → done once the graph and the online store have it
    (a pending row is finished by a replay of its id or by ``marquee refresh``)."""

    __tablename__ = "movie_additions"
    __table_args__ = (CheckConstraint("status IN ('pending', 'done')", name="movie_additions_status"),)

    client_mutation_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    movie_id: Mapped[int] = mapped_column(ForeignKey("movies.id", ondelete="CASCADE"), unique=True)
    input: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IngestRun(Base):
    """One row per load of a dataset; a 'running' row left behind marks an interrupted run."""

    __tablename__ = "ingest_runs"
    __table_args__ = (CheckConstraint("status IN ('running', 'complete', 'failed')", name="ingest_runs_status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    counts: Mapped[dict[str, int] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
