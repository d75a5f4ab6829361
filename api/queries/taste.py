"""The reads behind a recommendation: who rated and made what, and what is popular.

Every function is one store round trip and returns plain rows; the callers in
``api/recommendations/`` decide what to keep in memory and for how long. Cypher stays
portable between Neo4j and FalkorDB (no APOC); Mongo is read with ``find`` only (the
embedded server's aggregation engine cannot be trusted).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from pymongo.database import Database
from sqlalchemy import Engine, text

from sources.stores import mongo
from sources.stores.graph import GraphStore
from sources.vocabulary import CREDITS

MongoDb = Database[dict[str, Any]]


class Credit(NamedTuple):
    movie_id: int
    title: str
    person: str
    role: str  # a relationship type of ``sources.vocabulary.CREDIT_ROLES``


class SharedPerson(NamedTuple):
    candidate: int  # a movie sharing ``person`` with ``source``
    source: int
    source_title: str
    person: str
    role: str  # the person's relationship to the candidate


class Popularity(NamedTuple):
    movie_id: int
    raters: int
    average: float


#: one user's loaded ratings as three parallel tuples (movie ids, stars, epoch seconds); plain
#: tuples of numbers, which CPython's cyclic collector stops tracking when they are kept
UserRatings = tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]


def credits(*, graph: GraphStore) -> Iterator[Credit]:
    """Every (person)-[credit]->(movie) edge of the graph."""
    rows = graph.read(
        f"MATCH (p:Person)-[r:{CREDITS}]->(m:Movie) RETURN m.id AS movie, m.title AS title, p.id AS person, "
        "type(r) AS rel"
    )
    for row in rows:
        yield Credit(int(row["movie"]), str(row["title"]), str(row["person"]), str(row["rel"]))


def sharing_people(*, graph: GraphStore, movie_ids: Sequence[int]) -> Iterator[SharedPerson]:
    """Movies that share a credited person with any of ``movie_ids`` (one row per shared credit)."""
    rows = graph.read(
        f"MATCH (m:Movie)<-[:{CREDITS}]-(p:Person)-[r2:{CREDITS}]->(c:Movie) "
        "WHERE m.id IN $ids AND c.id <> m.id "
        "RETURN c.id AS candidate, m.id AS source, m.title AS title, p.id AS person, type(r2) AS rel",
        {"ids": list(movie_ids)},
    )
    for row in rows:
        yield SharedPerson(int(row["candidate"]), int(row["source"]), str(row["title"]), str(row["person"]),
                           str(row["rel"]))  # fmt: skip


def titles_and_genres(*, pg: Engine) -> tuple[dict[int, str], dict[int, frozenset[str]]]:
    """(movie id → title, movie id → its genre names) for the whole catalogue."""
    with pg.connect() as conn:
        titles = {int(row[0]): str(row[1]) for row in conn.execute(text("SELECT id, title FROM movies"))}
        genres: dict[int, set[str]] = defaultdict(set)
        rows = conn.execute(text("SELECT mg.movie_id, g.name FROM movie_genres mg JOIN genres g ON g.id = mg.genre_id"))
        for movie_id, name in rows:
            genres[int(movie_id)].add(str(name))
    return titles, {m: frozenset(g) for m, g in genres.items()}


def most_rated(*, graph: GraphStore, k: int) -> list[Popularity]:
    """The ``k`` movies with the most RATED edges, most first (ties: lower id first)."""
    rows = graph.read(
        "MATCH (:User)-[r:RATED]->(m:Movie) RETURN m.id AS id, count(r) AS n, avg(r.score) AS avg "
        "ORDER BY n DESC, id LIMIT $k",
        {"k": k},
    )
    return [Popularity(int(r["id"]), int(r["n"]), float(r["avg"])) for r in rows]


def most_reviewed(*, db: MongoDb, k: int) -> list[Popularity]:
    """``most_rated`` from the reviews in Mongo, the system of record (a full scan: slow)."""
    counts: dict[int, list[float]] = defaultdict(lambda: [0, 0.0])
    reviews = mongo.live(db, "reviews")
    for doc in reviews.find({}, {"_id": 0, "movie_id": 1, "rating": 1}, batch_size=20_000):
        entry = counts[int(doc["movie_id"])]
        entry[0] += 1
        entry[1] += float(doc["rating"])
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
    return [Popularity(movie_id, int(n), total / n) for movie_id, (n, total) in ranked]


def loaded_ratings(*, graph: GraphStore, user_ids: Sequence[int]) -> dict[int, UserRatings]:
    """The RATED edges of ``user_ids``: one row per user with three lists (a third less parsing
    than a row per rating). Users with no edge are absent."""
    rows = graph.read(
        "MATCH (u:User)-[r:RATED]->(m:Movie) WHERE u.id IN $users "
        "RETURN u.id AS user, collect(m.id) AS movies, collect(r.score) AS scores, collect(r.ts) AS ts",
        {"users": list(user_ids)},
    )
    return {
        int(row["user"]): (
            tuple(int(m) for m in row["movies"]),
            tuple(float(s) for s in row["scores"]),
            tuple(float(t) for t in row["ts"]),
        )
        for row in rows
    }


def reviews_of(*, db: MongoDb, user_ids: Sequence[int]) -> Iterator[tuple[int, int, datetime, float]]:
    """(user, movie, time, stars) of every review by ``user_ids`` in Mongo (a scan on the embedded server)."""
    reviews = mongo.live(db, "reviews")
    query = {"user_id": {"$in": list(user_ids)}}
    for doc in reviews.find(query, {"_id": 0, "user_id": 1, "movie_id": 1, "rating": 1, "ts": 1}):
        yield int(doc["user_id"]), int(doc["movie_id"]), doc["ts"], float(doc["rating"])
