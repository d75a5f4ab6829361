"""New titles (``addMovie``): the catalogue's writes across the three stores, and the content reads
the served retriever places a new movie with.

Order of writes, and why nothing is left half-written:

1. PostgreSQL, one transaction: the movie, its genres, its MiniLM title embedding and a
   ``movie_additions`` record (keyed by the client mutation id, ``status = 'pending'``).
   This is the commit point: the movie exists exactly when its record does. A duplicate
   title and year, or a clientMutationId reused for other input, rolls everything back.
2. The graph: ``MERGE`` of the movie node, its genre and credit edges (idempotent).
3. The online store: the movie's profile and embedding rows (``write_to_online_store``
   overwrites by key: idempotent).
4. The record becomes ``done``.

A failure after step 1 leaves a pending record, never a movie without one: a retry with the
same clientMutationId redoes steps 2-4 and answers the same movie, and ``marquee refresh``
finishes every pending record (``finish_pending``). The offline store needs no write: its movie
sources are queries over the PostgreSQL tables.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine

from sources.datasets import embeddings
from sources.datasets.movielens import MovieRecord
from sources.feature_store.names import MOVIE_EMBEDDING_VIEW, MOVIE_PROFILE_VIEW
from sources.stores.graph import GraphStore
from sources.vocabulary import ROLE_NAMES

log = logging.getLogger(__name__)

#: addMovie's transactions take this advisory lock: one new id and one duplicate check at a time
CATALOGUE_LOCK = 0x6D61_7271_6164_64  # "marqadd"
#: a role word of the API (``actor``…) → the graph's credit edge
ROLE_EDGES = {word: edge for edge, word in ROLE_NAMES.items()}


class CatalogueError(Exception):
    """An expected reason a movie was not added (the mutation answers it as a typed result)."""


class UnknownGenres(CatalogueError):
    def __init__(self, genres: list[str], known: list[str]) -> None:
        super().__init__(f"unknown genre(s) {', '.join(genres)}; known: {', '.join(known)}")
        self.genres = genres


class DuplicateMovie(CatalogueError):
    def __init__(self, title: str, year: int | None, movie_id: int) -> None:
        super().__init__(f"{title!r} ({year}) is already movie {movie_id}")
        self.movie_id = movie_id


class AdditionConflict(CatalogueError):
    """The client mutation id was used before for other input."""


@dataclass(frozen=True)
class NewMovie:
    """What ``addMovie`` was given, validated: people are (Freebase id, role word) pairs."""

    title: str
    year: int | None
    genres: tuple[str, ...]
    people: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "year": self.year, "genres": list(self.genres),
                "people": [list(p) for p in self.people]}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NewMovie:
        return cls(data["title"], data["year"], tuple(data["genres"]), tuple((p[0], p[1]) for p in data["people"]))

    def embedding_text(self) -> str:
        """The text a title embedding encodes, as at ingest (``embeddings.movie_text``)."""
        return embeddings.movie_text(MovieRecord(0, self.title, self.year, self.genres))


@dataclass(frozen=True)
class Added:
    """The result of ``add_movie``: the movie's id, whether the record already existed, its status."""

    movie_id: int
    replayed: bool
    status: str
    client_id: str = field(compare=False, default="")


def genre_ids(pg: Engine | Connection) -> dict[str, int]:
    """Genre name → id, the catalogue's fixed vocabulary."""
    sql = text("SELECT name, id FROM genres ORDER BY id")
    if isinstance(pg, Connection):
        return {str(n): int(i) for n, i in pg.execute(sql)}
    with pg.connect() as conn:
        return {str(n): int(i) for n, i in conn.execute(sql)}


def add_movie(
    pg: Engine, *, movie: NewMovie, embedding: np.ndarray, client_id: str | None, now: datetime | None = None
) -> Added:
    """Step 1 of the module docstring: one PostgreSQL transaction. Raises ``UnknownGenres``,
    ``DuplicateMovie`` or ``AdditionConflict`` with nothing written."""
    key = client_id or f"auto:{uuid.uuid4()}"
    added_at = now or datetime.now(UTC)
    with pg.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CATALOGUE_LOCK})
        existing = conn.execute(
            text("SELECT movie_id, input, status FROM movie_additions WHERE client_mutation_id = :c"), {"c": key}
        ).first()
        if existing is not None:
            if existing[1] != movie.to_json():
                raise AdditionConflict(f"clientMutationId {key!r} was already used to add a different movie")
            return Added(int(existing[0]), True, str(existing[2]), key)
        known = genre_ids(conn)
        unknown = [g for g in movie.genres if g not in known]
        if unknown:
            raise UnknownGenres(unknown, list(known))
        same = conn.execute(
            text("SELECT id FROM movies WHERE lower(title) = lower(:t) AND year IS NOT DISTINCT FROM :y LIMIT 1"),
            {"t": movie.title, "y": movie.year},
        ).scalar()
        if same is not None:
            raise DuplicateMovie(movie.title, movie.year, int(same))
        movie_id = int(conn.execute(text("SELECT coalesce(max(id), 0) + 1 FROM movies")).scalar_one())
        conn.execute(
            text("INSERT INTO movies (id, title, year, added_at) VALUES (:i, :t, :y, :a)"),
            {"i": movie_id, "t": movie.title, "y": movie.year, "a": added_at},
        )
        for name in movie.genres:
            conn.execute(text("INSERT INTO movie_genres (movie_id, genre_id) VALUES (:m, :g)"),
                         {"m": movie_id, "g": known[name]})  # fmt: skip
        conn.execute(
            text(
                "INSERT INTO movie_embeddings (movie_id, embedding, model, source_text) "
                "VALUES (:m, CAST(:e AS vector), :model, :s)"
            ),
            {"m": movie_id, "e": _vector(embedding), "model": embeddings.MODEL_NAME, "s": movie.embedding_text()},
        )
        conn.execute(
            text(
                "INSERT INTO movie_additions (client_mutation_id, movie_id, input, status) "
                "VALUES (:c, :m, CAST(:i AS jsonb), 'pending')"
            ),
            {"c": key, "m": movie_id, "i": json.dumps(movie.to_json())},
        )
    return Added(movie_id, False, "pending", key)


def _vector(values: np.ndarray) -> str:
    return "[" + ",".join(f"{float(v):.7g}" for v in values) + "]"


def write_graph(graph: GraphStore, *, movie_id: int, movie: NewMovie) -> None:
    """Step 2: the movie node, its genres and credits (``MERGE``: safe to run again)."""
    graph.write("MERGE (m:Movie {id: $id}) SET m.title = $title, m.year = $year",
                {"id": movie_id, "title": movie.title, "year": movie.year})  # fmt: skip
    for genre in movie.genres:
        graph.write("MATCH (m:Movie {id: $id}), (g:Genre {name: $g}) MERGE (m)-[:HAS_GENRE]->(g)",
                    {"id": movie_id, "g": genre})  # fmt: skip
    for person, role in movie.people:
        edge = ROLE_EDGES[role]  # validated by the mutation
        graph.write(f"MERGE (p:Person {{id: $p}}) WITH p MATCH (m:Movie {{id: $id}}) MERGE (p)-[:{edge}]->(m)",
                    {"p": person, "id": movie_id})  # fmt: skip


def content_frames(pg: Engine, movie_ids: list[int]) -> dict[str, pd.DataFrame]:
    """The online rows of the movies' profile and embedding views, as the Feast sources define
    them (feature_repo/definitions.py: valid from a second before ``added_at``)."""
    with pg.connect() as conn:
        genres = conn.execute(text("SELECT id, name FROM genres ORDER BY id")).all()
        movies = conn.execute(
            text(
                "SELECT m.id, m.year, m.added_at, e.embedding::real[] FROM movies m "
                "JOIN movie_embeddings e ON e.movie_id = m.id WHERE m.id = ANY(:ids)"
            ),
            {"ids": movie_ids},
        ).all()
        links = conn.execute(text("SELECT movie_id, genre_id FROM movie_genres WHERE movie_id = ANY(:ids)"),
                             {"ids": movie_ids}).all()  # fmt: skip
    has = {(int(m), int(g)) for m, g in links}
    profile, embedding = [], []
    for movie_id, year, added_at, vector in movies:
        at = (added_at or datetime.now(UTC)) - timedelta(seconds=1)
        mine = [(int(g), str(n)) for g, n in genres if (int(movie_id), int(g)) in has]
        profile.append({"movie_id": int(movie_id), "year": None if year is None else int(year),
                        "genres": "|".join(n for _, n in mine),
                        "genre_multi_hot": [int((int(movie_id), int(g)) in has) for g, _ in genres],
                        "event_timestamp": at, "created_timestamp": at})  # fmt: skip
        embedding.append({"movie_id": int(movie_id), "title_embedding": [float(x) for x in vector],
                          "event_timestamp": at, "created_timestamp": at})  # fmt: skip
    return {MOVIE_PROFILE_VIEW: pd.DataFrame(profile), MOVIE_EMBEDDING_VIEW: pd.DataFrame(embedding)}


def push_content(store: Any, pg: Engine, *, movie_id: int) -> None:
    """Step 3: the movie's content rows into the online store (a Feast ``FeatureStore``)."""
    for view, frame in content_frames(pg, [movie_id]).items():
        store.write_to_online_store(view, frame)


def mark_done(pg: Engine, client_id: str) -> None:
    """Step 4."""
    with pg.begin() as conn:
        conn.execute(text("UPDATE movie_additions SET status = 'done' WHERE client_mutation_id = :c"), {"c": client_id})


def pending(pg: Engine) -> list[tuple[str, int, NewMovie]]:
    """Additions whose graph or online-store steps may not have happened: (client id, movie id, input)."""
    with pg.connect() as conn:
        rows = conn.execute(text("SELECT client_mutation_id, movie_id, input FROM movie_additions "
                                 "WHERE status = 'pending' ORDER BY created_at")).all()  # fmt: skip
    return [(str(c), int(m), NewMovie.from_json(i)) for c, m, i in rows]


def finish(pg: Engine, graph: GraphStore, store: Any | None, *, client_id: str, movie_id: int, movie: NewMovie) -> bool:
    """Steps 2-4 for one addition; False (logged) when the online store is not there to push to."""
    write_graph(graph, movie_id=movie_id, movie=movie)
    if store is None:
        return False
    push_content(store, pg, movie_id=movie_id)
    mark_done(pg, client_id)
    return True


def finish_pending(pg: Engine, graph: GraphStore, store: Any | None) -> int:
    """Finish every pending addition (``marquee refresh``); the number finished."""
    done = 0
    for client_id, movie_id, movie in pending(pg):
        try:
            done += finish(pg, graph, store, client_id=client_id, movie_id=movie_id, movie=movie)
        except Exception:  # the next run tries again
            log.exception("could not finish the addition of movie %s", movie_id)
    return done


def movie_content(pg: Engine, movie_ids: list[int]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """What the retriever's movie tower reads for ``movie_ids`` (those with an embedding): their
    ids, title embeddings ``(n, 384)`` and genre multi-hot ``(n, n_genres)`` over every genre in
    id order (the training catalogue's columns, model/data/catalog.py)."""
    frames = content_frames(pg, movie_ids)
    profile, emb = frames[MOVIE_PROFILE_VIEW], frames[MOVIE_EMBEDDING_VIEW]
    if profile.empty:
        return [], np.zeros((0, embeddings.DIM), np.float32), np.zeros((0, 0), np.float32)
    ids = [int(m) for m in profile["movie_id"]]
    vectors = np.asarray(emb.set_index("movie_id").loc[ids, "title_embedding"].tolist(), dtype=np.float32)
    genres = np.asarray(profile["genre_multi_hot"].tolist(), dtype=np.float32)
    return ids, vectors, genres


def movies_not_in(pg: Engine, known: set[int]) -> list[int]:
    """Catalogue movies missing from ``known`` (a retriever's index): titles added since it was trained."""
    with pg.connect() as conn:
        ids = [int(m) for m in conn.execute(text("SELECT id FROM movies")).scalars()]
    return [m for m in ids if m not in known]
