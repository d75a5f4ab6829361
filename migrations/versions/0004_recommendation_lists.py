"""recommendation_lists: ranked lists shared by every API worker (filled by `marquee recommend --all`)

Revision ID: 0004
Revises: 0003_movie_additions
Create Date: 2026-12-02 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = "0003_movie_additions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('recommendation_lists',
    sa.Column('user_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('exclude_seen', sa.Boolean(), nullable=False),
    sa.Column('first', sa.Integer(), nullable=False),
    sa.Column('model_version', sa.Text(), nullable=False),
    sa.Column('items', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('made_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'exclude_seen')
    )
    op.create_index('ix_recommendation_lists_made_at', 'recommendation_lists', ['made_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_recommendation_lists_made_at', table_name='recommendation_lists')
    op.drop_table('recommendation_lists')
