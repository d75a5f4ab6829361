"""Per-movie content the two-tower's movie tower reads (title embeddings, genres), from PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sqlalchemy import text
from torch import Tensor

from model.data.engagement_frame import pg_vector
from model.data.interactions import Interactions
from sources.errors import DatasetError
from sources.stores.clients import Stores


@dataclass(frozen=True)
class Catalog:
    """Per-movie content the movie tower reads, in dense movie-id order."""

    content: Tensor  # (n_movies, 384) title embeddings
    genres: Tensor  # (n_movies, n_genres) multi-hot


def load_catalog(stores: Stores, data: Interactions) -> Catalog:
    """Title embeddings and genre multi-hot from PostgreSQL, in ``data``'s dense movie order."""
    index = data.movie_index()
    with stores.pg.connect() as conn:
        emb = conn.execute(text("SELECT movie_id, embedding FROM movie_embeddings")).all()
        genre_rows = conn.execute(text("SELECT movie_id, genre_id FROM movie_genres")).all()
        genre_ids = sorted(int(g) for g in conn.execute(text("SELECT id FROM genres")).scalars())
    if not emb:
        raise DatasetError("no movie embeddings in PostgreSQL: run marquee ingest first")
    dim = len(pg_vector(emb[0][1]))
    content = torch.zeros(data.n_movies, dim)
    for movie_id, vector in emb:
        if int(movie_id) in index:
            content[index[int(movie_id)]] = torch.from_numpy(pg_vector(vector))
    column = {g: i for i, g in enumerate(genre_ids)}
    genres = torch.zeros(data.n_movies, len(genre_ids))
    for movie_id, genre_id in genre_rows:
        if int(movie_id) in index:
            genres[index[int(movie_id)], column[int(genre_id)]] = 1.0
    return Catalog(content, genres)
