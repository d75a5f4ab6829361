"""HNSW search at catalogue size for ``marquee bench search`` (printed, never asserted).

The vectors are, by default, **real title embeddings**: ``n`` movies named the way
``marquee synth`` names them (``sources.datasets.synth``, seeded), each encoded by the
installed sentence model exactly as ingest encodes a title (``embeddings.movie_text``), and
cached as a ``.npy`` under ``<data dir>/bench/`` so a second run skips the encoding.
``vectors="synthetic"`` keeps the older clustered random unit vectors instead.

They go into a scratch schema (``bench_search``) holding a table shaped like
``movie_embeddings``; for each HNSW build (``m`` × ``ef_construction``, build seconds printed)
and each ``hnsw.ef_search``, the API's own query functions run against it in-process
(``api.queries.reads``: ``similar_movies`` by a stored movie's vector, ``nearest_to_vector``
by an embedded free-text query, as ``searchMovies`` does), their p50/p99 timed, and their
recall@k computed against exact search (numpy over the same vectors, ties counted as hits:
``recall_at_k``). The scratch schema is dropped at the end.

First, the same queries through the in-memory title index the API serves from by default
(``api.title_index``, ``MARQUEE_SEARCH_INDEX=memory``), one row per ``index_candidates``;
``m_values`` empty measures it alone.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import Engine, text

from api.queries.reads import nearest_to_vector, similar_movies
from api.title_index import CANDIDATES, DIMS, TitleIndex
from sources.datasets import embeddings
from sources.datasets.movielens import GENRES
from sources.datasets.synth import GENERATOR_VERSION, synthetic
from sources.stores.clients import Stores, pg_engine
from sources.stores.pgcopy import copy_rows

SCHEMA = "bench_search"
NOISE_SD = 0.1
#: a hit may sit this far below the k-th exact similarity and still count (float32 ties)
TIE_TOLERANCE = 1e-5
Vectors = Literal["titles", "synthetic"]

# Free-text queries as a viewer types them: a subject, then a genre (searchMovies' shape).
_SUBJECTS = (
    "space adventure with robots", "a heist that goes wrong", "lonely detective in a rainy city",
    "family road trip", "a haunted house in winter", "war story of two brothers", "a wedding in Paris",
    "spy thriller on a train", "coming of age summer", "a ghost who falls in love", "revenge in the desert",
    "an island mystery", "a kingdom at war", "friends start a band", "a child and a talking animal",
    "courtroom drama about a witness", "a storm at sea", "gangsters in Chicago", "a journey to Mars",
    "the last day of school", "a dancer in New York", "a secret letter", "cowboys and a train robbery",
    "a killer in the suburbs", "a frozen planet", "a musician's comeback", "prison escape",
    "a dog finds its way home", "vampires in a small town", "a forgotten prophecy",
)  # fmt: skip


def title_vectors(data_dir: Path, n: int, seed: int) -> np.ndarray:
    """``(n, 384)`` float32 unit vectors: the embeddings of ``n`` synth-named titles, cached."""
    path = data_dir / "bench" / f"search-titles-{GENERATOR_VERSION}-n{n}-s{seed}-{embeddings.MODEL_NAME}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape == (n, embeddings.DIM):
            return np.asarray(cached, dtype=np.float32)
    movies = synthetic(users=1, movies=n, ratings=0, seed=seed).movies
    texts = [embeddings.movie_text(m) for m in movies]
    out = np.empty((n, embeddings.DIM), dtype=np.float32)
    step = 4096
    started = time.perf_counter()
    for i in range(0, n, step):
        out[i : i + step] = embeddings.encode(texts[i : i + step])
        sys.stderr.write(f"\rencoding titles: {min(i + step, n):,}/{n:,} ({time.perf_counter() - started:.0f}s)")
    sys.stderr.write("\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def synthetic_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """``(n, dim)`` clustered random unit vectors (easier for HNSW than real titles)."""
    rng = np.random.default_rng([seed, 7])
    centres = rng.normal(size=(max(1, n // 50), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = centres[rng.integers(0, len(centres), n)] + rng.normal(0.0, NOISE_SD, size=(n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def query_texts(count: int, seed: int) -> list[str]:
    """``count`` distinct free-text queries (a subject and a genre), seeded."""
    rng = np.random.default_rng([seed, 9])
    pairs = [(s, g) for s in _SUBJECTS for g in GENRES]
    picks = rng.choice(len(pairs), size=min(count, len(pairs)), replace=False)
    return [f"{pairs[i][0]}, {pairs[i][1].lower()}" for i in picks.tolist()]


def recall_at_k(
    vectors: np.ndarray, query: np.ndarray, found: Sequence[int], k: int, exclude: int | None = None
) -> float:
    """Share of the exact top ``k`` (cosine over unit ``vectors``, row ``exclude`` left out)
    that ``found`` (row numbers) holds; a found row as similar as the k-th exact one counts,
    so ties at the cut are not misses. ``(n, d), (d,) -> [0, 1]``."""
    sims = vectors @ query
    if exclude is not None:
        sims[exclude] = -np.inf
    kth = float(np.partition(sims, len(sims) - k)[len(sims) - k])
    hits = {int(i) for i in found if int(i) != exclude and sims[int(i)] >= kth - TIE_TOLERANCE}
    return min(len(hits), k) / k


def _literal(v: np.ndarray) -> str:
    return "[" + ",".join(map(str, v.tolist())) + "]"


def _load(pg: Engine, vectors: np.ndarray) -> None:
    dim = int(vectors.shape[1])
    with pg.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        conn.execute(
            text(f"CREATE TABLE {SCHEMA}.movie_embeddings (movie_id int PRIMARY KEY, embedding vector({dim}))")
        )
        copy_rows(conn, f"{SCHEMA}.movie_embeddings", ("movie_id", "embedding"),
                  ((i + 1, _literal(v)) for i, v in enumerate(vectors)))  # fmt: skip
        conn.execute(text(f"ANALYZE {SCHEMA}.movie_embeddings"))


def build_index(pg: Engine, *, m: int, ef_construction: int) -> float:
    """(Re)build the scratch table's HNSW index; seconds taken."""
    started = time.perf_counter()
    with pg.begin() as conn:
        conn.execute(text(f"DROP INDEX IF EXISTS {SCHEMA}.bench_search_hnsw"))
        conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
        conn.execute(
            text(
                f"CREATE INDEX bench_search_hnsw ON {SCHEMA}.movie_embeddings USING hnsw "
                f"(embedding vector_cosine_ops) WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
            )
        )
    return time.perf_counter() - started


def scratch_engine(stores: Stores, ef_search: int) -> Engine:
    """An engine whose sessions see the scratch ``movie_embeddings`` first, at ``ef_search``; a
    sequential scan is ruled out, so the index is what is measured even on a small table."""
    options = f"-c search_path={SCHEMA},public -c hnsw.ef_search={int(ef_search)} -c enable_seqscan=off"
    return pg_engine(stores.endpoints, connect_args={"options": options}, isolation_level="AUTOCOMMIT", pool_size=1)


Similar = Callable[[int], list[tuple[int, float]]]  # movie id -> (movie id, similarity) best first
Nearest = Callable[[np.ndarray], list[tuple[int, float]]]  # query vector -> the same


def pgvector_search(engine: Engine, k: int) -> tuple[Similar, Nearest]:
    """The API's pgvector functions (``api.queries.reads``) on ``engine``'s sessions."""
    return (lambda movie_id: similar_movies(pg=engine, ids=[movie_id], k=k).get(movie_id, []),
            lambda query: nearest_to_vector(pg=engine, vector=query.tolist(), k=k))  # fmt: skip


def index_search(index: TitleIndex, k: int) -> tuple[Similar, Nearest]:
    """The in-memory title index the API serves from (``api.title_index``)."""
    return (lambda movie_id: index.similar(movie_id, k) or [], lambda query: index.nearest(query, k))


def measure(
    search: tuple[Similar, Nearest], vectors: np.ndarray, picks: Sequence[int], queries: np.ndarray, k: int
) -> dict[str, dict[str, float]]:
    """p50/p99 ms and mean recall@k of both query shapes through ``search`` (movie ids are
    row numbers + 1)."""
    similar, nearest = search
    shapes: dict[str, dict[str, float]] = {}
    for shape in ("similar", "search"):
        times, recalls = [], []
        count = len(picks) if shape == "similar" else len(queries)
        for warm in (True, False):
            for i in range(min(20, count) if warm else count):
                started = time.perf_counter()
                if shape == "similar":
                    row = int(picks[i])
                    found = [mid - 1 for mid, _ in similar(row + 1)]
                    query, exclude = vectors[row], row
                else:
                    query, exclude = queries[i], None
                    found = [mid - 1 for mid, _ in nearest(query)]
                elapsed = time.perf_counter() - started
                if not warm:
                    times.append(elapsed * 1000)
                    recalls.append(recall_at_k(vectors, query, found, k, exclude))
        shapes[shape] = {
            "p50_ms": round(float(np.percentile(times, 50)), 2),
            "p99_ms": round(float(np.percentile(times, 99)), 2),
            f"recall@{k}": round(float(np.mean(recalls)), 3),
        }
    return shapes


def bench_search(
    stores: Stores,
    *,
    vectors: Vectors = "titles",
    n: int = 62_423,
    queries: int = 200,
    k: int = 10,
    m_values: tuple[int, ...] = (16, 32),
    ef_construction_values: tuple[int, ...] = (64, 128),
    ef_values: tuple[int, ...] = (40, 64, 100, 200),
    index_candidates: tuple[int, ...] = (CANDIDATES,),
    seed: int = 42,
) -> dict[str, Any]:
    """Per HNSW build and ef_search: p50/p99 ms and recall@k of ``similar`` and ``searchMovies``'
    queries over ``n`` vectors (see the module docstring)."""
    started = time.perf_counter()
    if vectors == "titles":
        points = title_vectors(stores.settings.data_dir, n, seed)
        texts = query_texts(queries, seed)
        embeddings.encode(texts[:1])  # the model loads on the first call: not a query's cost
        encode_ms = []
        for t in texts[:50]:
            t0 = time.perf_counter()
            embeddings.encode([t])
            encode_ms.append((time.perf_counter() - t0) * 1000)
        query_vectors = embeddings.encode(texts)
    else:
        points = synthetic_vectors(n, embeddings.DIM, seed)
        query_vectors = synthetic_vectors(queries, embeddings.DIM, seed + 1)
        encode_ms = []
    digest = hashlib.sha256(points.tobytes()).hexdigest()[:12]
    picks = np.random.default_rng([seed, 8]).choice(n, size=min(queries, n), replace=False).tolist()
    ready_s = round(time.perf_counter() - started, 1)
    out: dict[str, Any] = {"vectors": f"{vectors} ({digest})", "n": n, "dim": int(points.shape[1]), "k": k,
                           "queries per shape": len(picks), "vectors ready s": ready_s}  # fmt: skip
    if encode_ms:
        out["query text encode p50/p99 ms"] = [round(float(np.percentile(encode_ms, q)), 1) for q in (50, 99)]
    out["title_index"] = []
    for candidates in index_candidates:
        t0 = time.perf_counter()
        index = TitleIndex(np.arange(1, n + 1), points, candidates=candidates)
        row: dict[str, Any] = {"dims": DIMS, "candidates": candidates, "build_s": round(time.perf_counter() - t0, 1)}
        for shape, figures in measure(index_search(index, k), points, picks, query_vectors, k).items():
            row.update({f"{shape} {name}": value for name, value in figures.items()})
        sys.stderr.write(f"title index: {row}\n")
        out["title_index"].append(row)
    if not m_values:
        return out
    rows = []
    try:
        t0 = time.perf_counter()
        _load(stores.pg, points)
        out["load_s"] = round(time.perf_counter() - t0, 1)
        for m in m_values:
            for ef_construction in ef_construction_values:
                build_s = build_index(stores.pg, m=m, ef_construction=ef_construction)
                sys.stderr.write(f"m {m}, ef_construction {ef_construction}: built in {build_s:.1f}s\n")
                for ef in ef_values:
                    engine = scratch_engine(stores, ef)
                    try:
                        shapes = measure(pgvector_search(engine, k), points, picks, query_vectors, k)
                    finally:
                        engine.dispose()
                    row = {"m": m, "ef_construction": ef_construction, "build_s": round(build_s, 1),
                           "ef_search": ef}  # fmt: skip
                    for shape, figures in shapes.items():
                        row.update({f"{shape} {name}": value for name, value in figures.items()})
                    sys.stderr.write(f"  {row}\n")
                    rows.append(row)
    finally:
        with stores.pg.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    out["by_build_and_ef_search"] = rows
    return out
