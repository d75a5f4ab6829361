"""movie additions: one row per addMovie, the idempotency record of a new title

Revision ID: 0003_movie_additions
Revises: 0002
Create Date: 2026-12-02 04:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_movie_additions"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "movie_additions",
        sa.Column("client_mutation_id", sa.String(length=160), nullable=False),
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("input", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'done')", name="movie_additions_status"),
        sa.ForeignKeyConstraint(["movie_id"], ["movies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("client_mutation_id"),
        sa.UniqueConstraint("movie_id"),
    )


def downgrade() -> None:
    op.drop_table("movie_additions")
