"""movie_embeddings HNSW index rebuilt with ef_construction 256 (m 16), searched at ef_search 48

At 62,423 real title embeddings, the wider build keeps searchMovies' recall@10 above the 0.95
target at ef_search 48 (the new MARQUEE_HNSW_EF_SEARCH default), where 128 needed a wider,
slower search (docs/scale.md, "Search at catalogue size"). The rebuild reads every stored vector.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 16:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _build(ef_construction: int) -> None:
    op.execute("DROP INDEX IF EXISTS ix_movie_embeddings_hnsw")
    op.execute("SET LOCAL maintenance_work_mem = '1GB'")
    op.execute(
        "CREATE INDEX ix_movie_embeddings_hnsw ON movie_embeddings USING hnsw (embedding vector_cosine_ops) "
        f"WITH (m = 16, ef_construction = {ef_construction})"
    )


def upgrade() -> None:
    _build(256)


def downgrade() -> None:
    _build(128)
