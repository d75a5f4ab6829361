"""Batched reads from the three stores: one query per store per batch of ids.

Every function takes keyword-only arguments and a whole batch of keys, and returns a dict
keyed by id (missing ids are simply absent), so the DataLoaders in ``api/loaders.py`` can
answer a page of 50 movies with one query per store. Functions are synchronous (the store
clients are); the loaders run them in a worker thread. Mongo is read with ``find`` only:
the embedded server's aggregation engine gives wrong answers (STACK.md).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
from pgvector import Vector
from pymongo.collection import Collection
from sqlalchemy import Engine, text

from sources.stores.graph import GraphStore

MongoCollection = Collection[dict[str, Any]]

#: Graph relationship types from a Person to a Movie, and the role each one names.
ROLES = {"ACTED_IN": "actor", "DIRECTED": "director", "WROTE": "writer", "PRODUCED": "producer"}


@dataclass(frozen=True)
class UserRow:
    id: int
    age: int | None
    gender: str | None
    occupation: str | None
    zip_code: str | None
    city: str
    signed_up_at: datetime
    tier: str | None
    monthly_price: Decimal | None
    subscribed_at: datetime | None


@dataclass(frozen=True)
class MovieRow:
    id: int
    title: str
    year: int | None
    freebase_id: str | None
    imdb_id: str | None


@dataclass(frozen=True)
class PaymentRow:
    amount: Decimal
    currency: str
    method: str
    paid_at: datetime


@dataclass
class RatingStatsRow:
    count: int = 0
    total: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])

    @property
    def average(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass(frozen=True)
class ReviewRow:
    movie_id: int
    rating: float
    ts: datetime


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    movie_id: int
    timestamp: datetime
    duration_seconds: int
    device: str
    buffer_rate: float
    errors: int


@dataclass(frozen=True)
class WatchedRow:
    movie_id: int
    ts: int
    duration_seconds: int


# PostgreSQL ------------------------------------------------------------------------------

_USER_COLUMNS = """
    u.id, u.age, u.gender, u.occupation, u.zip_code, u.city, u.signed_up_at,
    t.name AS tier, t.monthly_price, s.started_at AS subscribed_at
"""
_USER_FROM = """
    FROM users u
    LEFT JOIN subscriptions s ON s.user_id = u.id AND s.ended_at IS NULL
    LEFT JOIN subscription_tiers t ON t.id = s.tier_id
"""


def users_by_id(*, pg: Engine, ids: list[int]) -> dict[int, UserRow]:
    sql = f"SELECT {_USER_COLUMNS} {_USER_FROM} WHERE u.id = ANY(:ids)"
    with pg.connect() as conn:
        return {row.id: UserRow(**row._mapping) for row in conn.execute(text(sql), {"ids": ids})}


def users_page(*, pg: Engine, after: int | None, first: int) -> tuple[list[UserRow], bool, int]:
    """Users ordered by id after ``after``: (rows, has_next_page, total_count)."""
    sql = f"SELECT {_USER_COLUMNS} {_USER_FROM} WHERE u.id > :after ORDER BY u.id LIMIT :limit"
    with pg.connect() as conn:
        rows = [UserRow(**r._mapping) for r in conn.execute(text(sql), {"after": after or 0, "limit": first + 1})]
        total = conn.execute(text("SELECT count(*) FROM users")).scalar_one()
    return rows[:first], len(rows) > first, int(total)


def movies_by_id(*, pg: Engine, ids: list[int]) -> dict[int, MovieRow]:
    sql = "SELECT id, title, year, freebase_id, imdb_id FROM movies WHERE id = ANY(:ids)"
    with pg.connect() as conn:
        return {row.id: MovieRow(**row._mapping) for row in conn.execute(text(sql), {"ids": ids})}


def movies_page(
    *,
    pg: Engine,
    search: str | None,
    genre: str | None,
    year_from: int | None,
    year_to: int | None,
    after: int | None,
    first: int,
) -> tuple[list[MovieRow], bool, int]:
    """Movies matching the filters, ordered by id after ``after``: (rows, has_next_page, total_count)."""
    where = ["TRUE"]
    params: dict[str, Any] = {"after": after or 0, "limit": first + 1}
    if search:
        # Title substring; escape LIKE wildcards so "50%" means a literal percent sign.
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("m.title ILIKE :search")
        params["search"] = f"%{escaped}%"
    if genre:
        where.append(
            "EXISTS (SELECT 1 FROM movie_genres mg JOIN genres g ON g.id = mg.genre_id "
            "WHERE mg.movie_id = m.id AND lower(g.name) = lower(:genre))"
        )
        params["genre"] = genre
    if year_from is not None:
        where.append("m.year >= :year_from")
        params["year_from"] = year_from
    if year_to is not None:
        where.append("m.year <= :year_to")
        params["year_to"] = year_to
    condition = " AND ".join(where)
    page_sql = (
        f"SELECT m.id, m.title, m.year, m.freebase_id, m.imdb_id FROM movies m "
        f"WHERE {condition} AND m.id > :after ORDER BY m.id LIMIT :limit"
    )
    with pg.connect() as conn:
        rows = [MovieRow(**r._mapping) for r in conn.execute(text(page_sql), params)]
        total = conn.execute(text(f"SELECT count(*) FROM movies m WHERE {condition}"), params).scalar_one()
    return rows[:first], len(rows) > first, int(total)


def genre_names(*, pg: Engine) -> list[str]:
    with pg.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT name FROM genres ORDER BY name"))]


def genres_by_movie(*, pg: Engine, ids: list[int]) -> dict[int, list[str]]:
    sql = (
        "SELECT mg.movie_id, g.name FROM movie_genres mg JOIN genres g ON g.id = mg.genre_id "
        "WHERE mg.movie_id = ANY(:ids) ORDER BY mg.movie_id, g.name"
    )
    out: dict[int, list[str]] = defaultdict(list)
    with pg.connect() as conn:
        for movie_id, name in conn.execute(text(sql), {"ids": ids}):
            out[movie_id].append(name)
    return out


def payments_by_user(*, pg: Engine, ids: list[int]) -> dict[int, list[PaymentRow]]:
    """Each user's payments, newest first."""
    sql = (
        "SELECT user_id, amount, currency, method, paid_at FROM payments "
        "WHERE user_id = ANY(:ids) ORDER BY user_id, paid_at DESC"
    )
    out: dict[int, list[PaymentRow]] = defaultdict(list)
    with pg.connect() as conn:
        for row in conn.execute(text(sql), {"ids": ids}):
            out[row.user_id].append(PaymentRow(row.amount, row.currency, row.method, row.paid_at))
    return out


def similar_movies(*, pg: Engine, ids: list[int], k: int) -> dict[int, list[tuple[int, float]]]:
    """For each movie, its ``k`` nearest titles by cosine similarity (pgvector HNSW), best first.

    One statement for the whole batch: a LATERAL subquery per movie keeps the
    ``ORDER BY embedding <=> … LIMIT k`` shape that the HNSW index serves.
    """
    sql = """
        SELECT q.id AS source, n.movie_id, n.similarity
        FROM unnest(CAST(:ids AS int[])) AS q(id)
        CROSS JOIN LATERAL (
            SELECT e.movie_id, 1 - (e.embedding <=> (SELECT embedding FROM movie_embeddings WHERE movie_id = q.id))
                   AS similarity
            FROM movie_embeddings e
            WHERE e.movie_id <> q.id
            ORDER BY e.embedding <=> (SELECT embedding FROM movie_embeddings WHERE movie_id = q.id)
            LIMIT :k
        ) n
        ORDER BY q.id, n.similarity DESC
    """
    out: dict[int, list[tuple[int, float]]] = defaultdict(list)
    with pg.connect() as conn:
        for source, movie_id, similarity in conn.execute(text(sql), {"ids": ids, "k": k}):
            if similarity is not None:
                out[source].append((movie_id, float(similarity)))
    return out


NEAREST_SQL = (
    "SELECT movie_id, embedding <=> CAST(:v AS vector) AS distance FROM movie_embeddings ORDER BY distance LIMIT :k"
)


def nearest_to_vector(*, pg: Engine, vector: list[float], k: int) -> list[tuple[int, float]]:
    """Movies whose title embedding is nearest ``vector`` (cosine, HNSW), best first.

    The vector goes to the server once, in binary (``pg_engine``'s connections dump ``Vector``
    so): the ``ORDER BY`` names the selected distance, which the planner matches to the HNSW
    index's ordering (checked in the tests' plan), so the similarity needs no second copy."""
    with pg.connect() as conn:
        rows = conn.execute(text(NEAREST_SQL), {"v": Vector(vector), "k": k})
        return [(row[0], 1.0 - float(row[1])) for row in rows]


TITLE_PAGE = 5_000  # embeddings read per statement by ``title_embeddings``


def title_embeddings(*, pg: Engine, after: int = 0, page: int = TITLE_PAGE) -> tuple[np.ndarray, np.ndarray]:
    """Every title embedding with a movie id above ``after``: ids ``(n,)`` in id order and their
    vectors ``(n, d)`` float32, read ``page`` rows a statement (keyset order: one statement's
    rows in memory, however large the catalogue).

    The rows come in PostgreSQL's binary format (a cursor of the driver's, ``binary=True``): a
    vector is then its 4-byte header and big-endian float32s, read without parsing, where the
    text form is 384 decimal numbers to print and parse per title. No loader is registered, so
    the pooled connection's other queries are unchanged."""
    ids: list[int] = []
    parts: list[np.ndarray] = []
    sql = "SELECT movie_id, embedding FROM movie_embeddings WHERE movie_id > %s ORDER BY movie_id LIMIT %s"
    with pg.connect() as conn, conn.connection.dbapi_connection.cursor(binary=True) as cursor:  # type: ignore[union-attr]
        while True:
            rows = cursor.execute(sql, (after, page)).fetchall()
            if not rows:
                break
            ids.extend(int(r[0]) for r in rows)
            parts.append(np.stack([np.frombuffer(r[1], dtype=">f4", offset=4) for r in rows]).astype(np.float32))
            after = ids[-1]
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.asarray(ids, dtype=np.int64), np.concatenate(parts)


def title_count(*, pg: Engine) -> int:
    """How many titles have an embedding."""
    with pg.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM movie_embeddings")).scalar_one())


# MongoDB ---------------------------------------------------------------------------------


def rating_stats_by_movie(*, reviews: MongoCollection, ids: list[int]) -> dict[int, RatingStatsRow]:
    """Count, mean and 1-5 histogram of each movie's ratings, from one ``find`` (computed here)."""
    out: dict[int, RatingStatsRow] = {movie_id: RatingStatsRow() for movie_id in ids}
    cursor = reviews.find({"movie_id": {"$in": ids}}, {"_id": 0, "movie_id": 1, "rating": 1}, batch_size=10_000)
    for doc in cursor:
        stats = out[int(doc["movie_id"])]
        rating = float(doc["rating"])
        stats.count += 1
        stats.total += rating
        stats.histogram[min(max(round(rating), 1), 5) - 1] += 1
    return out


def reviews_by_user(*, reviews: MongoCollection, ids: list[int]) -> dict[int, list[ReviewRow]]:
    """Each user's reviews, newest first."""
    out: dict[int, list[ReviewRow]] = defaultdict(list)
    cursor = reviews.find(
        {"user_id": {"$in": ids}}, {"_id": 0, "user_id": 1, "movie_id": 1, "rating": 1, "ts": 1}, batch_size=10_000
    )
    for doc in cursor:
        out[int(doc["user_id"])].append(ReviewRow(int(doc["movie_id"]), float(doc["rating"]), doc["ts"]))
    for rows in out.values():
        rows.sort(key=lambda r: r.ts, reverse=True)
    return out


def sessions_by_user(*, playback: MongoCollection, ids: list[int]) -> dict[int, list[SessionRow]]:
    """Each user's playback sessions, newest first."""
    out: dict[int, list[SessionRow]] = {}
    for doc in playback.find({"_id": {"$in": ids}}, {"sessions": 1}):
        rows = [
            SessionRow(
                str(s["session_id"]),
                int(s["movie_id"]),
                s["timestamp"],
                int(s["duration_seconds"]),
                str(s["device"]),
                float(s.get("buffer_rate", 0.0)),
                int(s.get("errors", 0)),
            )
            for s in doc.get("sessions", [])
        ]
        rows.sort(key=lambda r: r.timestamp, reverse=True)
        out[int(doc["_id"])] = rows
    return out


# Graph -----------------------------------------------------------------------------------


def people_by_movie(*, graph: GraphStore, ids: list[int]) -> dict[int, dict[str, list[str]]]:
    """Movie id → role ("actor", "director", ...) → Freebase ids of the people credited."""
    rows = graph.read(
        "MATCH (p:Person)-[r]->(m:Movie) WHERE m.id IN $ids RETURN m.id AS movie, type(r) AS rel, p.id AS person",
        {"ids": ids},
    )
    out: dict[int, dict[str, list[str]]] = {movie_id: defaultdict(list) for movie_id in ids}
    for row in rows:
        role = ROLES.get(row["rel"])
        if role is not None:
            out[int(row["movie"])][role].append(str(row["person"]))
    for by_role in out.values():
        for people in by_role.values():
            people.sort()
    return out


def following_by_user(*, graph: GraphStore, ids: list[int]) -> dict[int, list[int]]:
    rows = graph.read(
        "MATCH (u:User)-[:FOLLOWS]->(v:User) WHERE u.id IN $ids RETURN u.id AS user, v.id AS other", {"ids": ids}
    )
    return _group_pairs(rows)


def followers_by_user(*, graph: GraphStore, ids: list[int]) -> dict[int, list[int]]:
    rows = graph.read(
        "MATCH (v:User)-[:FOLLOWS]->(u:User) WHERE u.id IN $ids RETURN u.id AS user, v.id AS other", {"ids": ids}
    )
    return _group_pairs(rows)


def watched_by_user(*, graph: GraphStore, ids: list[int]) -> dict[int, list[WatchedRow]]:
    """Each user's WATCHED edges, newest first."""
    rows = graph.read(
        "MATCH (u:User)-[w:WATCHED]->(m:Movie) WHERE u.id IN $ids "
        "RETURN u.id AS user, m.id AS movie, w.ts AS ts, w.duration AS duration",
        {"ids": ids},
    )
    out: dict[int, list[WatchedRow]] = defaultdict(list)
    for row in rows:
        out[int(row["user"])].append(WatchedRow(int(row["movie"]), int(row["ts"]), int(row["duration"])))
    for watched in out.values():
        watched.sort(key=lambda w: (w.ts, w.movie_id), reverse=True)
    return out


def _group_pairs(rows: list[dict[str, Any]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        out[int(row["user"])].append(int(row["other"]))
    for others in out.values():
        others.sort()
    return out


def movie_ids(*, pg: Engine) -> list[int]:
    """Every movie id, ascending: the catalogue the served movie features are kept for."""
    with pg.connect() as conn:
        return [int(m) for m in conn.execute(text("SELECT id FROM movies ORDER BY id")).scalars()]


def recent_movie_counts(*, pg: Engine, days: float) -> dict[int, int]:
    """Reviews per movie in the ``days`` days up to the newest review (the data's clock, so a
    replayed dataset and a live service read the same way; the landed ``raw_reviews``, which
    include the API's ratings). One index lookup for the clock, one range scan of the window."""
    sql = text(
        "SELECT movie_id, count(*) FROM raw_reviews "
        "WHERE ts > (SELECT max(ts) FROM raw_reviews) - make_interval(secs => :secs) GROUP BY movie_id"
    )
    with pg.connect() as conn:
        return {int(m): int(c) for m, c in conn.execute(sql, {"secs": days * 86_400.0})}
