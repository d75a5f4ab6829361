"""``recent_movie_counts``: the trend prior's window on the real landed reviews (api/queries/reads.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import text

from api.queries.reads import recent_movie_counts
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore


def test_the_window_ends_at_the_newest_review_and_counts_movies(stores: Stores, feature_store: FeatureStore) -> None:
    with stores.pg.connect() as conn:
        rows = conn.execute(text("SELECT movie_id, extract(epoch FROM ts) FROM raw_reviews")).all()
    movies, ts = np.array([int(r[0]) for r in rows]), np.array([float(r[1]) for r in rows])
    for days in (3.0, 14.0):
        recent = movies[ts > ts.max() - days * 86_400]
        ids, counts = np.unique(recent, return_counts=True)
        assert recent_movie_counts(pg=stores.pg, days=days) == dict(zip(ids.tolist(), counts.tolist(), strict=True))
    assert 0 < sum(recent_movie_counts(pg=stores.pg, days=3.0).values()) < len(movies)  # ML-100K ends in April 1998
