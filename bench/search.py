"""HNSW search at catalogue size for ``marquee bench search`` (printed, never asserted).

A scratch table of ``n`` clustered unit vectors (384-d, the title embeddings' width) gets
pgvector's HNSW index; each ``hnsw.ef_search`` value is then timed in-process on the query
shape ``similar`` uses (a stored vector's nearest others, ``LIMIT k``), and its recall@k is
computed against exact search (numpy over the same vectors). The vectors are synthetic
(clusters with noise), not real title embeddings: the numbers say how ef_search trades
latency for recall at that size, they are not a promise for every catalogue.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from sources.stores.pgcopy import copy_rows

TABLE = "bench_search_vectors"
NOISE_SD = 0.1


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    centres = rng.normal(size=(max(1, n // 50), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # noise of norm ~2 against unit centres: a vector's nearest neighbours sit at cosine
    # ~0.2-0.3, as a title's do among MiniLM embeddings, so HNSW has to search for them
    points = centres[rng.integers(0, len(centres), n)] + rng.normal(0.0, NOISE_SD, size=(n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def _literal(v: np.ndarray) -> str:
    return "[" + ",".join(map(str, v.tolist())) + "]"


def bench_search(
    pg: Engine,
    *,
    n: int = 62_423,
    dim: int = 384,
    queries: int = 200,
    k: int = 10,
    ef_values: tuple[int, ...] = (40, 64, 100, 160),
    m: int = 16,
    ef_construction: int = 64,
    seed: int = 42,
) -> dict[str, Any]:
    """p50/p99 latency (ms) and recall@k per ef_search over a scratch HNSW index (dropped after)."""
    vectors = _vectors(n, dim, seed)
    rng = np.random.default_rng([seed, 8])
    picks = rng.choice(n, size=min(queries, n), replace=False)
    exact = []
    for q in picks:
        sims = vectors @ vectors[q]
        sims[q] = -np.inf
        exact.append(set(np.argpartition(-sims, k)[:k].tolist()))
    out: dict[str, Any] = {"vectors": n, "dim": dim, "m": m, "ef_construction": ef_construction, "k": k}
    try:
        t0 = time.perf_counter()
        with pg.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
            conn.execute(text(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, embedding vector({dim}))"))
            copy_rows(conn, TABLE, ("id", "embedding"), ((i, _literal(v)) for i, v in enumerate(vectors)))
        t1 = time.perf_counter()
        with pg.begin() as conn:
            conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            conn.execute(
                text(
                    f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops) "
                    f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
                )
            )
        out["load_s"], out["index_s"] = round(t1 - t0, 1), round(time.perf_counter() - t1, 1)
        sql = text(f"SELECT id FROM {TABLE} WHERE id <> :q ORDER BY embedding <=> CAST(:v AS vector) LIMIT :k")
        literals = {int(q): _literal(vectors[q]) for q in picks}
        rows = []
        with pg.connect() as conn:
            for ef in ef_values:
                conn.execute(text(f"SET hnsw.ef_search = {int(ef)}"))
                for q in picks[:20]:  # warm the index pages
                    conn.execute(sql, {"q": int(q), "v": literals[int(q)], "k": k}).all()
                times, hits = [], 0
                for q, truth in zip(picks, exact, strict=True):
                    t = time.perf_counter()
                    found = conn.execute(sql, {"q": int(q), "v": literals[int(q)], "k": k}).scalars().all()
                    times.append(time.perf_counter() - t)
                    hits += len(truth & set(found))
                ms = np.array(times) * 1000
                rows.append(
                    {
                        "ef_search": ef,
                        "p50_ms": round(float(np.percentile(ms, 50)), 2),
                        "p99_ms": round(float(np.percentile(ms, 99)), 2),
                        f"recall@{k}": round(hits / (k * len(picks)), 3),
                    }
                )
            conn.rollback()
        out["by_ef_search"] = rows
    finally:
        with pg.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
    return out
