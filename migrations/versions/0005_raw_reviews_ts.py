"""raw_reviews(ts) index: the served trend prior reads the newest review and the last days' window

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 08:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_raw_reviews_ts', 'raw_reviews', ['ts'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_raw_reviews_ts', table_name='raw_reviews')
