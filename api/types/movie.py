"""Movie and what hangs off it: genres, people, rating statistics, similar titles, graph neighbours."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types.lazy_type import LazyType

from api.context import Info
from api.errors import BadUserInput, NotFound
from api.queries import neighbours as graph_neighbours
from api.queries.reads import MovieRow
from api.threads import in_thread
from api.types.paging import check_first

NAMES_UNKNOWN = (
    "The dataset identifies people only by Freebase machine id (e.g. m.0abc12); it holds no names, "
    "so none are shown rather than invented."
)


@strawberry.type(description="A person credited on a movie, known only by Freebase id.")
class Person:
    freebase_id: str = strawberry.field(description="Freebase machine id, e.g. m.02cbcl.")

    @strawberry.field(description=f"Always null: {NAMES_UNKNOWN}")
    def name(self) -> str | None:
        return None


@strawberry.type(description=f"The people credited on a movie, by role. {NAMES_UNKNOWN}")
class MoviePeople:
    actors: list[Person]
    directors: list[Person]
    writers: list[Person]
    producers: list[Person]
    names_known: bool = strawberry.field(default=False, description="False: the data has no names (see Person).")


@strawberry.type(description="Ratings of a movie in the reviews store (Mongo), ratings 1-5.")
class RatingStats:
    count: int
    average: float | None = strawberry.field(description="Mean rating; null when nobody rated the movie.")
    histogram: list[int] = strawberry.field(description="Number of ratings of 1, 2, 3, 4 and 5 stars.")


@strawberry.type(description="A movie whose title embedding is near another's.")
class SimilarMovie:
    movie: Movie
    similarity: float = strawberry.field(description="Cosine similarity of the title embeddings, -1..1.")


#: ``User`` (api/types/user.py imports this module): Strawberry's lazy reference breaks the circle
LAZY_USER: LazyType[Any, Any] = LazyType("User", "api.types.user")


@strawberry.type(description="A user the served retriever expects to engage with a movie.")
class AudienceMember:
    user: Annotated["User", strawberry.lazy("api.types.user")]  # type: ignore[name-defined]  # noqa: F821, UP037
    score: float = strawberry.field(
        description="The probability the served retriever gives this movie among the whole catalogue for the user."
    )


#: the graph query's own enum, registered with the schema under its GraphQL name
NeighbourRelation = strawberry.enum(
    graph_neighbours.Relation, name="NeighbourRelation", description="Which graph links make two movies neighbours."
)


@strawberry.type(description="One node on the path from a movie to its neighbour.")
class PathStep:
    kind: str = strawberry.field(description="Movie, Person or Genre.")
    key: str = strawberry.field(description="Movie id, Freebase id of the person, or genre name.")
    relationship: str | None = strawberry.field(
        description="Graph relationship type joining the previous node to this one (null on the first)."
    )
    title: str | None = strawberry.field(description="The movie's title, for Movie steps.")


@strawberry.type(description="A movie linked to another through the graph store.")
class Neighbour:
    movie: Movie
    depth: int = strawberry.field(description="1: shares a person/genre; 2: through one intermediate movie.")
    shared: int = strawberry.field(description="How many people or genres the last step shares.")
    path: list[PathStep]
    description: str = strawberry.field(description="The path in one line, e.g. Toy Story -[ACTED_IN]- person ...")


@strawberry.type(description="A movie from MovieLens, with data from all three stores.")
class Movie(relay.Node):
    id: relay.NodeID[int]
    title: str
    year: int | None
    freebase_id: str | None = strawberry.field(description="Freebase machine id, when MovieLens links one.")
    imdb_id: str | None

    @strawberry.field(description="The MovieLens movie id (the global `id` wraps it).")
    def movie_id(self) -> int:
        return self.id

    @classmethod
    def from_row(cls, row: MovieRow) -> Movie:
        return cls(id=row.id, title=row.title, year=row.year, freebase_id=row.freebase_id, imdb_id=row.imdb_id)

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Movie | None]:
        return [await load_movie(info, node_id) for node_id in node_ids]

    @strawberry.field(description="Genre names (PostgreSQL).")
    async def genres(self, info: Info) -> list[str]:
        names: list[str] = await info.context.loaders.genres.load(self.id)
        return names

    @strawberry.field(description=f"People credited, by role (graph store). {NAMES_UNKNOWN}")
    async def people(self, info: Info) -> MoviePeople | None:
        by_role: dict[str, list[str]] = await info.context.loaders.people.load(self.id)

        def persons(role: str) -> list[Person]:
            return [Person(freebase_id=mid) for mid in by_role.get(role, [])]

        return MoviePeople(
            actors=persons("actor"),
            directors=persons("director"),
            writers=persons("writer"),
            producers=persons("producer"),
        )

    @strawberry.field(description="Count, mean and histogram of this movie's ratings (reviews store).")
    async def rating_stats(self, info: Info) -> RatingStats | None:
        stats = await info.context.loaders.rating_stats.load(self.id)
        if stats is None:
            return None
        return RatingStats(count=stats.count, average=stats.average, histogram=list(stats.histogram))

    @strawberry.field(
        description="Movies with the nearest title embeddings by cosine (an in-memory index, or pgvector's "
        "HNSW: MARQUEE_SEARCH_INDEX)."
    )
    async def similar(self, info: Info, first: int = 10) -> list[SimilarMovie]:
        check_first(first)
        found: list[tuple[int, float]] = await info.context.loaders.similar.load((self.id, first))
        movies = await info.context.loaders.movie.load_many([movie_id for movie_id, _ in found])
        return [
            SimilarMovie(movie=Movie.from_row(row), similarity=similarity)
            for (_, similarity), row in zip(found, movies, strict=True)
            if row is not None
        ]

    @strawberry.field(
        description="The users most likely to engage with this movie, new or not, best first (the served "
        "two-tower: each user's vector from their history, the movie's from the checkpoint or, for a title "
        "added since, from its content). Null when no trained model is served."
    )
    async def predicted_audience(self, info: Info, first: int = 10) -> list[AudienceMember] | None:
        check_first(first)
        ranked = info.context.services.ranked
        if ranked is None:
            return None
        user_type = LAZY_USER.resolve_type()
        found = await in_thread(ranked.audience, self.id, first)
        rows = await info.context.loaders.user.load_many([user_id for user_id, _ in found])
        return [
            AudienceMember(user=user_type.from_row(row), score=round(score, 8))
            for (_, score), row in zip(found, rows, strict=True)
            if row is not None
        ]

    @strawberry.field(
        description="Movies linked to this one in the graph store, closest first, each with the path that links it."
    )
    async def neighbours(
        self,
        info: Info,
        relation: graph_neighbours.Relation = graph_neighbours.Relation.PERSON,  # registered as NeighbourRelation
        depth: Annotated[int, strawberry.argument(description="1 or 2 steps of the relation.")] = 1,
        first: int = 10,
    ) -> list[Neighbour] | None:
        check_first(first)
        if depth not in (1, 2):
            raise BadUserInput(f"`depth` must be 1 or 2, got {depth}", argument="depth")
        stores = info.context.stores

        def read() -> list[graph_neighbours.NeighbourRow]:
            with stores.call("graph"):
                return graph_neighbours.neighbours(
                    graph=stores.graph,
                    movie_id=self.id,
                    title=self.title,
                    relation=relation,
                    depth=depth,
                    first=first,
                )

        rows = await in_thread(read)
        movies = await info.context.loaders.movie.load_many([row.movie_id for row in rows])
        return [
            Neighbour(
                movie=Movie.from_row(movie),
                depth=row.depth,
                shared=row.shared,
                path=[PathStep(kind=s.kind, key=s.key, relationship=s.relationship, title=s.title) for s in row.path],
                description=row.describe(),
            )
            for row, movie in zip(rows, movies, strict=True)
            if movie is not None
        ]


def parse_id(value: Any, what: str) -> int:
    """An id argument as an integer, or BAD_USER_INPUT naming what it was for."""
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise BadUserInput(f"{what} id must be an integer, got {str(value)[:40]!r}") from exc


async def load_movie(info: Info, movie_id: Any) -> Movie:
    """The movie with this id, or NOT_FOUND."""
    key = parse_id(movie_id, "movie")
    row = await info.context.loaders.movie.load(key)
    if row is None:
        raise NotFound(f"no movie with id {key}", movie_id=key)
    return Movie.from_row(row)


async def movie_or_none(info: Info, movie_id: int) -> Movie | None:
    """The movie a record points at, through the request's loader; None if it is gone."""
    row = await info.context.loaders.movie.load(movie_id)
    return Movie.from_row(row) if row else None
