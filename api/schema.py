"""The Marquee GraphQL schema: queries, mutations, limits and error policy.

``build_schema(introspection=..., max_cost=...)`` is what the app serves (limits: depth,
aliases, tokens, and the query cost of ``api/cost.py``); ``python -m api.schema`` prints
the SDL that is committed as ``schema.graphql`` (a test fails when it is stale).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import cast

import strawberry
from graphql.error import GraphQLError
from strawberry import relay
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.printer import print_schema
from strawberry.types import ExecutionContext

from api.catalog_mutations import CatalogMutation
from api.context import Info
from api.cost import DEFAULT_MAX_COST, query_cost_limit
from api.errors import ApiError, BadUserInput, ErrorPolicy, is_user_error
from api.mutations import Mutation as RecordingMutation
from api.queries import reads
from api.security import DirectiveLimit, HideSuggestions
from api.threads import in_thread
from api.types.movie import Movie, load_movie
from api.types.paging import MAX_FIRST, check_first, decode_cursor, encode_cursor
from api.types.recommendation import RecommendationList, recommend
from api.types.user import User, load_user

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 2000
# Distinct query texts whose parse and validation are kept: frontends send a handful of
# queries over and over, and validating one costs more than most resolvers.
QUERY_CACHE_SIZE = 256
MAX_SEARCH_CHARS = 200
MIN_YEAR, MAX_YEAR = 1800, 2100


@strawberry.type(name="MovieConnection", description="A page of movies.")
class MovieConnection(relay.Connection[Movie]):
    total_count: int = strawberry.field(description="Movies matching the filters, over all pages.")


@strawberry.type(name="UserConnection", description="A page of users.")
class UserConnection(relay.Connection[User]):
    total_count: int


@strawberry.type(description="A movie found by semantic search, with its similarity to the query text.")
class MovieSearchHit:
    movie: Movie
    similarity: float = strawberry.field(description="Cosine similarity of the query and title embeddings, -1..1.")


def _page_info(keys: list[int], has_next: bool, after: int | None) -> relay.PageInfo:
    return relay.PageInfo(
        has_next_page=has_next,
        has_previous_page=after is not None,
        start_cursor=encode_cursor(keys[0]) if keys else None,
        end_cursor=encode_cursor(keys[-1]) if keys else None,
    )


def _check_text(value: str | None, name: str, *, required: bool) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if required and not value:
        raise BadUserInput(f"`{name}` must not be empty", argument=name)
    if len(value) > MAX_SEARCH_CHARS:
        raise BadUserInput(f"`{name}` is {len(value)} characters; at most {MAX_SEARCH_CHARS} allowed", argument=name)
    return value or None


def _check_year(value: int | None, name: str) -> int | None:
    if value is not None and not MIN_YEAR <= value <= MAX_YEAR:
        raise BadUserInput(f"`{name}` must be between {MIN_YEAR} and {MAX_YEAR}, got {value}", argument=name)
    return value


@strawberry.type
class Mutation(RecordingMutation, CatalogMutation):
    """Every mutation: recording events (api/mutations.py) and adding titles (api/catalog_mutations.py)."""


@strawberry.type
class Query:
    @strawberry.field(description="Any object by its global ID (Relay).")
    async def node(self, info: Info, id: relay.GlobalID) -> relay.Node | None:
        return await _resolve_node(info, id)

    @strawberry.field(description="Objects by global ID (Relay), in the order given.")
    async def nodes(self, info: Info, ids: list[relay.GlobalID]) -> list[relay.Node | None]:
        check_first(len(ids) or 1, name="ids (count)", maximum=MAX_FIRST)
        # One unknown id nulls its own entry with an error at its index (graphql-core raises
        # an exception found in a list in place), not the whole list.
        results = await asyncio.gather(*(_resolve_node(info, gid) for gid in ids), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ApiError):
                raise result
        return cast(list[relay.Node | None], results)

    @strawberry.field(description="A user by MovieLens user id.")
    async def user(self, info: Info, id: int) -> User | None:
        return await load_user(info, id)

    @strawberry.field(description="Users ordered by id (cursor paging).")
    async def users(self, info: Info, first: int = 20, after: str | None = None) -> UserConnection:
        check_first(first)
        after_id = decode_cursor(after)
        pg = info.context.stores.pg_reads

        def read() -> tuple[list[reads.UserRow], bool, int]:
            with info.context.stores.call("postgres"):
                return reads.users_page(pg=pg, after=after_id, first=first)

        rows, has_next, total = await in_thread(read)
        for row in rows:
            info.context.loaders.user.prime(row.id, row)
        edges = [relay.Edge(cursor=encode_cursor(r.id), node=User.from_row(r)) for r in rows]
        return UserConnection(
            edges=edges, page_info=_page_info([r.id for r in rows], has_next, after_id), total_count=total
        )

    @strawberry.field(description="A movie by MovieLens movie id.")
    async def movie(self, info: Info, id: int) -> Movie | None:
        return await load_movie(info, id)

    @strawberry.field(description="Movies filtered by title substring, genre and year range, ordered by id.")
    async def movies(
        self,
        info: Info,
        search: str | None = None,
        genre: str | None = None,
        year_from: int | None = None,
        year_to: int | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> MovieConnection:
        check_first(first)
        after_id = decode_cursor(after)
        search = _check_text(search, "search", required=False)
        genre = _check_text(genre, "genre", required=False)
        year_from, year_to = _check_year(year_from, "yearFrom"), _check_year(year_to, "yearTo")
        if year_from is not None and year_to is not None and year_from > year_to:
            raise BadUserInput(f"`yearFrom` ({year_from}) is after `yearTo` ({year_to})", argument="yearFrom")
        pg = info.context.stores.pg_reads

        def read() -> tuple[list[reads.MovieRow], bool, int]:
            with info.context.stores.call("postgres"):
                if genre is not None and genre.lower() not in {g.lower() for g in reads.genre_names(pg=pg)}:
                    raise BadUserInput(f"unknown genre {genre!r}", argument="genre")
                return reads.movies_page(
                    pg=pg,
                    search=search,
                    genre=genre,
                    year_from=year_from,
                    year_to=year_to,
                    after=after_id,
                    first=first,
                )

        rows, has_next, total = await in_thread(read)
        for row in rows:
            info.context.loaders.movie.prime(row.id, row)
        edges = [relay.Edge(cursor=encode_cursor(r.id), node=Movie.from_row(r)) for r in rows]
        return MovieConnection(
            edges=edges, page_info=_page_info([r.id for r in rows], has_next, after_id), total_count=total
        )

    @strawberry.field(description="All genre names.")
    async def genres(self, info: Info) -> list[str]:
        pg = info.context.stores.pg_reads

        def read() -> list[str]:
            with info.context.stores.call("postgres"):
                return reads.genre_names(pg=pg)

        return await in_thread(read)

    @strawberry.field(
        description="Semantic search: the text is embedded with the same MiniLM model as the titles "
        "and matched against them by cosine (an in-memory index, or pgvector's HNSW: MARQUEE_SEARCH_INDEX)."
    )
    async def search_movies(self, info: Info, text: str, first: int = 10) -> list[MovieSearchHit]:
        check_first(first)
        query = _check_text(text, "text", required=True)
        assert query is not None
        vector = await info.context.services.encoder.encode(query)
        titles, pg = info.context.services.titles, info.context.stores.pg_reads

        def read() -> list[tuple[int, float]]:
            if titles is not None:
                return titles.nearest(vector, first)
            with info.context.stores.call("postgres"):
                return reads.nearest_to_vector(pg=pg, vector=vector, k=first)

        hits = await in_thread(read)
        rows = await info.context.loaders.movie.load_many([movie_id for movie_id, _ in hits])
        return [
            MovieSearchHit(movie=Movie.from_row(row), similarity=similarity)
            for (_, similarity), row in zip(hits, rows, strict=True)
            if row is not None
        ]

    @strawberry.field(description="Movies recommended for a user, best first.")
    async def recommendations(
        self, info: Info, user_id: int, first: int = 10, exclude_seen: bool = True
    ) -> RecommendationList:
        return await recommend(info, user_id=user_id, first=first, exclude_seen=exclude_seen)


#: Node type name → its loader (NOT_FOUND for unknown ids).
NODE_LOADERS: dict[str, Callable[[Info, str], Awaitable[relay.Node]]] = {"User": load_user, "Movie": load_movie}


async def _resolve_node(info: Info, gid: relay.GlobalID) -> relay.Node:
    load = NODE_LOADERS.get(gid.type_name)
    if load is None:
        known = ", ".join(NODE_LOADERS)
        raise BadUserInput(f"global ID names type {gid.type_name[:40]!r}; known node types: {known}", argument="id")
    return await load(info, gid.node_id)


class MarqueeSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        # Expected errors (ours, bad queries) are answers, not incidents: log only the unexpected.
        unexpected = [
            e for e in errors if e.path is not None and e.original_error and not is_user_error(e.original_error)
        ]
        super().process_errors(unexpected, execution_context)


class QueryParseCache(ParserCache):
    """ParserCache that leaves a query that fails to parse to Strawberry's own parse, so the
    error is reported (and given its code) like any other parse error."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        with contextlib.suppress(GraphQLError):
            context.graphql_document = self.cached_parse_document(context.query, **context.parse_options)
        yield


def build_schema(*, introspection: bool = True, max_cost: int = DEFAULT_MAX_COST) -> strawberry.Schema:
    # The limit rules are classes built once: the validation cache keys on them, and a class
    # made per request (what QueryDepthLimiter() does) would make every lookup miss.
    limit_rules = [
        *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
        *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
        DirectiveLimit,
    ]
    # Factories, so each request gets fresh extension instances (they hold per-request state).
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: AddValidationRules(limit_rules),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: QueryParseCache(maxsize=QUERY_CACHE_SIZE),
        lambda: ValidationCache(maxsize=QUERY_CACHE_SIZE),
        # After the (cached) validation: the cost depends on the request's variables.
        query_cost_limit(max_cost),
        ErrorPolicy,
    ]
    if not introspection:  # and no "Did you mean …?" hints, which would spell the schema out anyway
        extensions += [DisableIntrospection, HideSuggestions]
    return MarqueeSchema(query=Query, mutation=Mutation, types=[User, Movie], extensions=extensions)


def sdl() -> str:
    return print_schema(build_schema()) + "\n"


if __name__ == "__main__":
    print(sdl(), end="")
