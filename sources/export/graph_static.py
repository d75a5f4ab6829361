"""The static part of the graph (credits, genres, follows): per-entity counts, pagerank, neighbours.

These edges carry no time. Pagerank runs over Person–Movie credits and Movie–Genre edges
only (no user edges, so it leaks nothing from the future), in Python (scipy power
iteration) over an edge list read with Cypher: portable, no GDS. Neighbours are the 2-hop
over the same lists, as a sparse product: movies sharing people (1 each) or genres (0.1
each), top ``NEIGHBOURS``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from sources.stores.graph import GraphStore
from sources.vocabulary import CREDIT_ROLES

ROLES = CREDIT_ROLES
NEIGHBOURS = 20
DAMPING = 0.85


@dataclass
class StaticGraph:
    movie_ids: list[int]
    credits: list[tuple[str, str, int]]  # (person id, role, movie id), sorted
    genres: list[tuple[int, str]]  # (movie id, genre name), sorted
    follows: list[tuple[int, int]]  # (follower, followed), sorted
    digest: str = field(default="")

    def __post_init__(self) -> None:
        h = hashlib.sha256()
        for part in (self.movie_ids, self.credits, self.genres, self.follows):
            h.update(repr(part).encode())
        self.digest = h.hexdigest()


def read_static(graph: GraphStore, page: int = 20_000) -> StaticGraph:
    """The static edge lists, read in id-range pages of movies (bounded result sets)."""
    movie_ids = sorted(int(r["id"]) for r in graph.read("MATCH (m:Movie) RETURN m.id AS id"))
    credits: list[tuple[str, str, int]] = []
    genres: list[tuple[int, str]] = []
    step = max(1, page // 30)  # about 30 credits per movie in ML-100K's knowledge graph
    for i in range(0, len(movie_ids), step):
        lo, hi = movie_ids[i], movie_ids[min(i + step, len(movie_ids)) - 1]
        params = {"lo": lo, "hi": hi}
        credits += [
            (str(r["p"]), str(r["role"]), int(r["m"]))
            for r in graph.read(
                "MATCH (p:Person)-[r]->(m:Movie) WHERE m.id >= $lo AND m.id <= $hi "
                "AND type(r) IN ['ACTED_IN', 'DIRECTED', 'WROTE', 'PRODUCED'] "
                "RETURN p.id AS p, type(r) AS role, m.id AS m",
                params,
            )
        ]
        genres += [
            (int(r["m"]), str(r["g"]))
            for r in graph.read(
                "MATCH (m:Movie)-[:HAS_GENRE]->(g:Genre) WHERE m.id >= $lo AND m.id <= $hi "
                "RETURN m.id AS m, g.name AS g",
                params,
            )
        ]
    follows = [
        (int(r["a"]), int(r["b"]))
        for r in graph.read("MATCH (a:User)-[:FOLLOWS]->(b:User) RETURN a.id AS a, b.id AS b")
    ]
    return StaticGraph(movie_ids, sorted(set(credits)), sorted(set(genres)), sorted(set(follows)))


def pagerank(edges: Iterable[tuple[str, str]], nodes: Iterable[str], tol: float = 1e-12) -> dict[str, float]:
    """Pagerank of the undirected graph ``edges`` (each pair once, weight 1); sums to 1.

    Dangling (isolated) nodes spread their rank uniformly. Deterministic: nodes are sorted.
    """
    names = sorted(set(nodes) | {n for e in edges for n in e})
    if not names:
        return {}
    index = {n: i for i, n in enumerate(names)}
    pairs = sorted({(index[a], index[b]) for a, b in edges if a != b})
    rows = np.array([a for a, b in pairs] + [b for a, b in pairs], dtype=np.int64)
    cols = np.array([b for a, b in pairs] + [a for a, b in pairs], dtype=np.int64)
    n = len(names)
    adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    dangling = degree == 0
    inverse_degree = np.divide(1.0, degree, out=np.zeros(n), where=~dangling)
    transition = sparse.diags(inverse_degree) @ adjacency  # row-stochastic where degree > 0
    transpose = transition.T.tocsr()
    rank = np.full(n, 1.0 / n)
    for _ in range(1000):
        spread = DAMPING * (transpose @ rank + rank[dangling].sum() / n) + (1 - DAMPING) / n
        done = np.abs(spread - rank).sum() < tol
        rank = spread
        if done:
            break
    return {name: float(rank[i]) for i, name in enumerate(names)}


MovieStatic = tuple[int, int, int, int, int, float]  # movie, genres, people, actors, directors, pagerank


def movie_static(static: StaticGraph) -> list[MovieStatic]:
    people: dict[int, set[str]] = defaultdict(set)
    by_role: dict[tuple[int, str], set[str]] = defaultdict(set)
    for person, role, movie in static.credits:
        people[movie].add(person)
        by_role[movie, role].add(person)
    genre_count: dict[int, int] = defaultdict(int)
    for movie, _ in static.genres:
        genre_count[movie] += 1
    edges = [(f"p:{p}", f"m:{m}") for p, _, m in static.credits]
    edges += [(f"m:{m}", f"g:{g}") for m, g in static.genres]
    rank = pagerank(edges, [f"m:{m}" for m in static.movie_ids])
    return [
        (
            m,
            genre_count[m],
            len(people[m]),
            len(by_role[m, "ACTED_IN"]),
            len(by_role[m, "DIRECTED"]),
            rank[f"m:{m}"],
        )
        for m in static.movie_ids
    ]


def user_static(static: StaticGraph) -> list[tuple[int, int, int]]:
    """(user, followers, following) for every user with a FOLLOWS edge either way."""
    followers: dict[int, int] = defaultdict(int)
    following: dict[int, int] = defaultdict(int)
    for a, b in static.follows:
        following[a] += 1
        followers[b] += 1
    return [(u, followers[u], following[u]) for u in sorted(set(followers) | set(following))]


def neighbours(static: StaticGraph, k: int = NEIGHBOURS, block: int = 128) -> list[tuple[int, list[int], list[float]]]:
    """(movie, neighbour ids, scores) for every movie with at least one neighbour: the ``k``
    movies sharing the most with it, a distinct person counting 1 and a genre 0.1, ties by id.

    Computed here from the edge lists ``read_static`` already holds, as a sparse product
    (movies × people-and-genres, weighted, times its transpose), ``block`` movies at a time, so
    memory stays at ``block`` × movies scores. The same two-hop as a Cypher query grows with
    movies × the movies sharing a genre, one graph thread (measured: docs/scale.md).
    """
    ids = sorted(static.movie_ids)  # column order = id order: ties then break by id
    row = {m: i for i, m in enumerate(ids)}
    person = {p: j for j, p in enumerate(sorted({p for p, _, m in static.credits if m in row}))}
    genre = {g: len(person) + j for j, g in enumerate(sorted({g for m, g in static.genres if m in row}))}
    cells = {(row[m], person[p]) for p, _, m in static.credits if m in row}
    cells |= {(row[m], genre[g]) for m, g in static.genres if m in row}
    if not cells:
        return []
    rows, cols = np.array(sorted(cells), dtype=np.int64).T
    width = len(person) + len(genre)
    # Integers (a person 10, a genre 1) so that ties order exactly; /10 on output.
    weight = np.where(cols < len(person), 10, 1).astype(np.int32)
    incidence = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(ids), width))
    weighted_t = sparse.csr_matrix((weight, (cols, rows)), shape=(width, len(ids)))
    n = len(ids)
    out = []
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        scores = (incidence[lo:hi] @ weighted_t).toarray().astype(np.int64)
        scores[np.arange(hi - lo), np.arange(lo, hi)] = 0  # not its own neighbour
        # One key orders by score, then by id (a lower column is a lower id).
        key = scores * n + (n - 1 - np.arange(n))
        top = np.argpartition(-key, k - 1, axis=1)[:, :k] if n > k else np.tile(np.arange(n), (hi - lo, 1))
        for i in range(hi - lo):
            chosen = top[i][np.argsort(-key[i, top[i]])]
            chosen = chosen[scores[i, chosen] > 0]
            if len(chosen):
                out.append((ids[lo + i], [ids[j] for j in chosen], [int(scores[i, j]) / 10 for j in chosen]))
    return out
