"""The static part of the graph (credits, genres, follows): per-entity counts, pagerank, neighbours.

These edges carry no time. Pagerank runs over Person–Movie credits and Movie–Genre edges
only (no user edges, so it leaks nothing from the future), in Python (scipy power
iteration) over an edge list read with Cypher: portable, no GDS. Neighbours are a Cypher
2-hop: movies sharing people (1 each) or genres (0.1 each), top ``NEIGHBOURS``.
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


# Distinct people (10) and genres (1) shared, as integers so ties order exactly; /10 on output.
NEIGHBOURS_CYPHER = """
MATCH (m:Movie)-[:ACTED_IN|DIRECTED|WROTE|PRODUCED|HAS_GENRE]-(x)
      -[:ACTED_IN|DIRECTED|WROTE|PRODUCED|HAS_GENRE]-(n:Movie)
WHERE m.id >= $lo AND m.id <= $hi AND n.id <> m.id
WITH DISTINCT m.id AS mid, n.id AS nid, x, CASE WHEN x:Genre THEN 1 ELSE 10 END AS weight
WITH mid, nid, sum(weight) AS score
ORDER BY mid, score DESC, nid
WITH mid, collect(nid) AS ids, collect(score) AS scores
RETURN mid, ids[0..$k] AS ids, scores[0..$k] AS scores
"""


def neighbours(graph: GraphStore, movie_ids: list[int], page: int = 100) -> list[tuple[int, list[int], list[float]]]:
    """(movie, neighbour ids, scores) for every movie with at least one neighbour."""
    out = []
    for i in range(0, len(movie_ids), page):
        lo, hi = movie_ids[i], movie_ids[min(i + page, len(movie_ids)) - 1]
        for r in graph.read(NEIGHBOURS_CYPHER, {"lo": lo, "hi": hi, "k": NEIGHBOURS}):
            out.append((int(r["mid"]), [int(n) for n in r["ids"]], [int(s) / 10 for s in r["scores"]]))
    return sorted(out)
