"""feature tables: raw events landed by `marquee export`, feature time series (Feast offline store)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 07:47:15.109142
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('export_watermarks',
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('watermark', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rows', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('ingest_run_id', sa.Integer(), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('source')
    )
    op.create_table('feat_movie_graph',
    sa.Column('movie_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('event_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rated_degree', sa.Integer(), nullable=False),
    sa.Column('watched_degree', sa.Integer(), nullable=False),
    sa.Column('genre_count', sa.Integer(), nullable=False),
    sa.Column('people_count', sa.Integer(), nullable=False),
    sa.Column('actor_count', sa.Integer(), nullable=False),
    sa.Column('director_count', sa.Integer(), nullable=False),
    sa.Column('pagerank', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('movie_id', 'event_timestamp')
    )
    op.create_table('feat_movie_neighbours',
    sa.Column('movie_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('event_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('neighbour_ids', postgresql.ARRAY(sa.Integer()), nullable=False),
    sa.Column('neighbour_scores', postgresql.ARRAY(sa.Double()), nullable=False),
    sa.PrimaryKeyConstraint('movie_id', 'event_timestamp')
    )
    op.create_table('feat_movie_reviews',
    sa.Column('movie_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('event_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('review_count', sa.Integer(), nullable=False),
    sa.Column('mean_rating', sa.Double(), nullable=False),
    sa.Column('days_since_previous', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('movie_id', 'event_timestamp')
    )
    op.create_table('feat_user_graph',
    sa.Column('user_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('event_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('followers', sa.Integer(), nullable=False),
    sa.Column('following', sa.Integer(), nullable=False),
    sa.Column('watched_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'event_timestamp')
    )
    op.create_table('feat_user_playback',
    sa.Column('user_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('event_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('session_count', sa.Integer(), nullable=False),
    sa.Column('mean_duration_s', sa.Double(), nullable=False),
    sa.Column('total_duration_s', sa.Double(), nullable=False),
    sa.Column('mean_buffer_rate', sa.Double(), nullable=False),
    sa.Column('share_tv', sa.Double(), nullable=False),
    sa.Column('share_mobile', sa.Double(), nullable=False),
    sa.Column('share_desktop', sa.Double(), nullable=False),
    sa.Column('share_tablet', sa.Double(), nullable=False),
    sa.Column('last5_durations', postgresql.ARRAY(sa.Double()), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'event_timestamp')
    )
    op.create_table('feat_user_reviews',
    sa.Column('user_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('event_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('review_count', sa.Integer(), nullable=False),
    sa.Column('mean_rating', sa.Double(), nullable=False),
    sa.Column('days_since_previous', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'event_timestamp')
    )
    op.create_table('raw_graph_edges',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('movie_id', sa.Integer(), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('value', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('kind', 'user_id', 'movie_id', 'ts')
    )
    op.create_index('ix_raw_graph_edges_movie_kind_ts', 'raw_graph_edges', ['movie_id', 'kind', 'ts'], unique=False)
    op.create_index('ix_raw_graph_edges_user_kind_ts', 'raw_graph_edges', ['user_id', 'kind', 'ts'], unique=False)
    op.create_table('raw_graph_movie_static',
    sa.Column('movie_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('genre_count', sa.Integer(), nullable=False),
    sa.Column('people_count', sa.Integer(), nullable=False),
    sa.Column('actor_count', sa.Integer(), nullable=False),
    sa.Column('director_count', sa.Integer(), nullable=False),
    sa.Column('pagerank', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('movie_id')
    )
    op.create_table('raw_graph_user_static',
    sa.Column('user_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('followers', sa.Integer(), nullable=False),
    sa.Column('following', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('raw_playback_sessions',
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('movie_id', sa.Integer(), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_s', sa.Double(), nullable=False),
    sa.Column('device', sa.String(length=16), nullable=False),
    sa.Column('buffer_rate', sa.Double(), nullable=False),
    sa.Column('errors', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('session_id')
    )
    op.create_index('ix_raw_playback_sessions_user_ts', 'raw_playback_sessions', ['user_id', 'ts'], unique=False)
    op.create_table('raw_reviews',
    sa.Column('review_id', sa.Text(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('movie_id', sa.Integer(), nullable=False),
    sa.Column('rating', sa.Double(), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('review_id')
    )
    op.create_index('ix_raw_reviews_movie_ts', 'raw_reviews', ['movie_id', 'ts'], unique=False)
    op.create_index('ix_raw_reviews_user_ts', 'raw_reviews', ['user_id', 'ts'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_raw_reviews_user_ts', table_name='raw_reviews')
    op.drop_index('ix_raw_reviews_movie_ts', table_name='raw_reviews')
    op.drop_table('raw_reviews')
    op.drop_index('ix_raw_playback_sessions_user_ts', table_name='raw_playback_sessions')
    op.drop_table('raw_playback_sessions')
    op.drop_table('raw_graph_user_static')
    op.drop_table('raw_graph_movie_static')
    op.drop_index('ix_raw_graph_edges_user_kind_ts', table_name='raw_graph_edges')
    op.drop_index('ix_raw_graph_edges_movie_kind_ts', table_name='raw_graph_edges')
    op.drop_table('raw_graph_edges')
    op.drop_table('feat_user_reviews')
    op.drop_table('feat_user_playback')
    op.drop_table('feat_user_graph')
    op.drop_table('feat_movie_reviews')
    op.drop_table('feat_movie_neighbours')
    op.drop_table('feat_movie_graph')
    op.drop_table('export_watermarks')
