"""movie_embeddings HNSW index rebuilt with ef_construction 128 (m 16): chosen by `marquee bench search`

At 62,423 real title embeddings, ef_construction 128 lifted searchMovies' recall@10 at every
ef_search (docs/scale.md, "Search at catalogue size"); the rebuild reads every stored vector.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 11:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _build(options: str) -> None:
    op.execute("DROP INDEX IF EXISTS ix_movie_embeddings_hnsw")
    op.execute("SET LOCAL maintenance_work_mem = '1GB'")
    op.execute(
        f"CREATE INDEX ix_movie_embeddings_hnsw ON movie_embeddings USING hnsw (embedding vector_cosine_ops){options}"
    )


def upgrade() -> None:
    _build(" WITH (m = 16, ef_construction = 128)")


def downgrade() -> None:
    _build("")
