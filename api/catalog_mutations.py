"""``addMovie``: a new title in all three stores and the online features, recommendable at once.

The writes and their order are in api/queries/catalog.py (PostgreSQL first, as the commit
point; then the graph, the online store, and the record marked done). Expected failures are
members of ``AddMovieResult``: ``InvalidMovie`` (empty title, year or person out of range),
``UnknownGenre``, ``DuplicateMovie`` and ``InvalidClientMutationId``; each leaves nothing
written. A failure after the commit point (graph or feature store away) is answered
``MovieAdded`` with ``complete: false``: the movie exists, and a retry with the same
clientMutationId (or ``marquee refresh``) finishes it.
"""

from __future__ import annotations

import logging
import re
from enum import Enum
from typing import Annotated

import numpy as np
import strawberry

from api.context import Info
from api.mutations import InvalidClientMutationId, MutationError
from api.permissions import HasApiKey
from api.queries import catalog
from api.queries.feast_features import FeastUserFeatures
from api.threads import in_thread
from api.types.movie import Movie

log = logging.getLogger(__name__)

MAX_TITLE = 300
MAX_CLIENT_ID = 128
YEARS = (1870, 2100)
MAX_PEOPLE = 200
FREEBASE_ID = re.compile(r"m\.[0-9a-z_]{2,16}")


@strawberry.enum(description="A person's credit on a movie (the graph's ACTED_IN, DIRECTED, WROTE, PRODUCED).")
class Role(Enum):
    ACTOR = "actor"
    DIRECTOR = "director"
    WRITER = "writer"
    PRODUCER = "producer"


@strawberry.input(description="A person credited on a new movie, by Freebase id.")
class CreditInput:
    freebase_id: str = strawberry.field(description="Freebase machine id, e.g. m.02cbcl.")
    role: Role


@strawberry.input(description="A new title: genres are names from the catalogue (e.g. Comedy, Sci-Fi).")
class AddMovieInput:
    title: str
    year: int | None = None
    genres: list[str]
    people: list[CreditInput] | None = None


@strawberry.type(description="The movie is in PostgreSQL (with its title embedding), the graph and the online store.")
class MovieAdded:
    movie: Movie
    client_mutation_id: str | None
    replayed: bool = strawberry.field(description="True when this clientMutationId had already added it.")
    complete: bool = strawberry.field(
        description="False when the graph or the online store could not be written yet: the movie exists, "
        "and a retry with the same clientMutationId (or `marquee refresh`) finishes it."
    )
    recommendable: bool = strawberry.field(
        description="True when the served retriever can rank it: by content (two-tower), or by its recent "
        "ratings under the trend prior (EASE)."
    )


@strawberry.type(description="The input is not a valid movie (empty title, year out of range, bad person id).")
class InvalidMovie(MutationError):
    field: str


@strawberry.type(description="A genre name the catalogue does not have.")
class UnknownGenre(MutationError):
    genres: list[str]


@strawberry.type(description="The catalogue already has a movie with this title and year.")
class DuplicateMovie(MutationError):
    movie: Movie


AddMovieResult = Annotated[
    MovieAdded | InvalidMovie | UnknownGenre | DuplicateMovie | InvalidClientMutationId,
    strawberry.union("AddMovieResult"),
]


def validate(data: AddMovieInput) -> catalog.NewMovie | InvalidMovie:
    """The input as a ``NewMovie`` (title trimmed, genres deduplicated in order) or why not."""
    title = " ".join(data.title.split())
    if not title or len(title) > MAX_TITLE:
        return InvalidMovie(message=f"title must be 1 to {MAX_TITLE} characters (not only spaces)", field="title")
    if data.year is not None and not YEARS[0] <= data.year <= YEARS[1]:
        return InvalidMovie(message=f"year must be from {YEARS[0]} to {YEARS[1]}, got {data.year}", field="year")
    genres = tuple(dict.fromkeys(g.strip() for g in data.genres))
    if not genres or "" in genres:
        return InvalidMovie(message="give at least one genre name", field="genres")
    people = tuple(dict.fromkeys((p.freebase_id, p.role.value) for p in data.people or []))
    if len(people) > MAX_PEOPLE:
        return InvalidMovie(message=f"at most {MAX_PEOPLE} people", field="people")
    for person, _ in people:
        if not FREEBASE_ID.fullmatch(person):
            return InvalidMovie(message=f"{person[:40]!r} is not a Freebase machine id (m.…)", field="people")
    return catalog.NewMovie(title, data.year, genres, people)


@strawberry.type
class CatalogMutation:
    @strawberry.mutation(
        description="Add a new title: PostgreSQL (with its MiniLM title embedding), the graph (genres, people) "
        "and the online store; the served retriever places it by content at once. Idempotent per "
        "clientMutationId.",
        permission_classes=[HasApiKey],
    )
    async def add_movie(
        self, info: Info, input: AddMovieInput, client_mutation_id: str | None = None
    ) -> AddMovieResult:
        if client_mutation_id is not None and not 1 <= len(client_mutation_id) <= MAX_CLIENT_ID:
            return InvalidClientMutationId(
                message=f"clientMutationId must be 1 to {MAX_CLIENT_ID} characters",
                client_mutation_id=client_mutation_id,
            )
        movie = validate(input)
        if isinstance(movie, InvalidMovie):
            return movie
        services, stores = info.context.services, info.context.stores
        vector = np.asarray(await services.encoder.encode(movie.embedding_text()), dtype=np.float32)

        def commit() -> catalog.Added:
            with stores.call("postgres"):
                return catalog.add_movie(stores.pg, movie=movie, embedding=vector, client_id=client_mutation_id)

        try:
            added = await in_thread(commit)
        except catalog.UnknownGenres as exc:
            return UnknownGenre(message=str(exc), genres=exc.genres)
        except catalog.DuplicateMovie as exc:
            row = await info.context.loaders.movie.load(exc.movie_id)
            if row is None:  # removed in between: report it as invalid rather than fail
                return InvalidMovie(message=str(exc), field="title")
            return DuplicateMovie(message=str(exc), movie=Movie.from_row(row))
        except catalog.AdditionConflict as exc:
            return InvalidClientMutationId(message=str(exc), client_mutation_id=client_mutation_id or "")
        if services.titles is not None:  # searchable here at once; other processes within REFRESH_S
            services.titles.add([added.movie_id], vector[None, :])
        complete = added.status == "done"
        if not complete:
            complete = await in_thread(_finish, info, added, movie)
        recommendable = await in_thread(_place, info, added.movie_id)
        row = await info.context.loaders.movie.load(added.movie_id)
        if row is None:  # deleted by someone else in between
            return InvalidMovie(message=f"movie {added.movie_id} was removed meanwhile", field="title")
        return MovieAdded(movie=Movie.from_row(row), client_mutation_id=client_mutation_id, replayed=added.replayed,
                          complete=complete, recommendable=recommendable)  # fmt: skip


def _finish(info: Info, added: catalog.Added, movie: catalog.NewMovie) -> bool:
    """Steps 2-4 (graph, online store, done); a failure is logged and left for a retry."""
    services, stores = info.context.services, info.context.stores
    feast = services.feature_pusher
    store = feast.store if isinstance(feast, FeastUserFeatures) else None
    try:
        with stores.call("graph"):
            return catalog.finish(stores.pg, stores.graph, store, client_id=added.client_id,
                                  movie_id=added.movie_id, movie=movie)  # fmt: skip
    except Exception:
        log.exception("movie %s added to PostgreSQL; graph or online store not written yet", added.movie_id)
        return False


def _place(info: Info, movie_id: int) -> bool:
    """The served retriever gets the new movie's content vector; kept lists are dropped."""
    services = info.context.services
    ranked = services.ranked
    if ranked is None:
        return False
    try:
        ranked.add_new_movies()
    except Exception:
        log.exception("the served retriever could not place movie %s yet", movie_id)
        return False
    services.catalogue_changed()
    return movie_id in ranked.ranker.movie_index
