"""``marquee bench search``: its recall against exact search, and the scratch index it times."""

from __future__ import annotations

import numpy as np
from sqlalchemy import text

from bench.search import SCHEMA, bench_search, recall_at_k, synthetic_vectors
from sources.stores.clients import Stores


def test_recall_counts_the_exact_neighbours_and_nothing_else() -> None:
    vectors = synthetic_vectors(300, 16, seed=3)
    query = vectors[0]
    order = np.argsort(-(vectors @ query))  # row 0 first: itself
    exact = order[1:11].tolist()
    assert recall_at_k(vectors, query, exact, 10, exclude=0) == 1.0
    half = exact[:5] + order[-5:].tolist()
    assert recall_at_k(vectors, query, half, 10, exclude=0) == 0.5
    # the excluded row is never a hit, and a row found twice counts once
    assert recall_at_k(vectors, query, [0, *exact[:3], exact[0]], 10, exclude=0) == 0.3


def test_recall_counts_a_tie_at_the_cut_as_a_hit() -> None:
    vectors = synthetic_vectors(50, 8, seed=4)
    vectors = np.vstack([vectors, vectors[:1], vectors[:1]])  # rows 50, 51 equal row 0
    # the query is row 0 itself, excluded: its two copies are the exact top 2, in either order
    assert recall_at_k(vectors, vectors[0], [51, 50], 2, exclude=0) == 1.0
    assert recall_at_k(vectors, vectors[0], [51, 1], 2, exclude=0) == 0.5


def test_the_api_queries_on_the_scratch_index_find_the_exact_neighbours(stores: Stores) -> None:
    with stores.pg.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM movie_embeddings")).scalar_one()
    out = bench_search(
        stores, vectors="synthetic", n=300, queries=20, m_values=(8,), ef_construction_values=(32,), ef_values=(5, 300),
        index_candidates=(8, 300),
    )  # fmt: skip
    few, every = out["title_index"]  # the in-memory index, its first stage keeping 8 titles or all 300
    assert every["similar recall@10"] == 1.0 and every["search recall@10"] == 1.0
    assert few["similar recall@10"] < 1.0 or few["search recall@10"] < 1.0  # 8 candidates for 10 results
    narrow, wide = out["by_build_and_ef_search"]
    assert (wide["m"], wide["ef_construction"], wide["ef_search"]) == (8, 32, 300)
    # ef_search past the table's size walks the whole graph: exact; a width of 5 cannot be
    assert wide["similar recall@10"] >= 0.99 and wide["search recall@10"] >= 0.99
    assert narrow["similar recall@10"] < 1.0 or narrow["search recall@10"] < 1.0
    with stores.pg.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM movie_embeddings")).scalar_one() == before
        gone = conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": SCHEMA}).scalar_one()
    assert gone == 0
