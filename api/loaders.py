"""Per-request DataLoaders: every field that reads a store goes through one of these, so a
page of N items costs one query per store and field, not N.

``Loaders`` is built fresh for each request (its caches must not outlive it). Each batch
function runs the synchronous store read (``api/queries/reads.py``) in a worker thread and
translates "store did not answer" into ``StoreDown`` for that field only.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from api.queries import reads
from api.threads import in_thread
from api.title_index import TitleIndex
from sources.stores import mongo
from sources.stores.clients import Stores

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _batched(
    stores: Stores,
    store: str,
    fetch: Callable[[list[Any]], dict[Any, Any]],
    default: Callable[[], Any] | None = None,
) -> Callable[[list[Any]], Awaitable[list[Any]]]:
    """A DataLoader batch function: one ``fetch(keys)`` in a thread (through the store's
    circuit breaker, ``Stores.call``), answers in key order."""

    def run(keys: list[Any]) -> dict[Any, Any]:
        with stores.call(store):
            return fetch(keys)

    async def load(keys: list[Any]) -> list[Any]:
        found = await in_thread(run, list(keys))
        return [found.get(key, default() if default else None) for key in keys]

    return load


class Loaders:
    """One DataLoader per store read; ``None`` answers mean "no such id"."""

    def __init__(self, stores: Stores, titles: TitleIndex | None = None) -> None:
        """``titles``: the in-memory title index ``similar`` asks first (pgvector for the rest)."""
        self._stores = stores
        self._mongo_names: dict[str, str] | None = None
        self._lock = threading.Lock()
        pg, graph = stores.pg_reads, stores.graph
        batched = functools.partial(_batched, stores)
        self.user = DataLoader(batched("postgres", lambda ids: reads.users_by_id(pg=pg, ids=ids)))
        self.movie = DataLoader(batched("postgres", lambda ids: reads.movies_by_id(pg=pg, ids=ids)))
        self.genres = DataLoader(batched("postgres", lambda ids: reads.genres_by_movie(pg=pg, ids=ids), list))
        self.payments = DataLoader(batched("postgres", lambda ids: reads.payments_by_user(pg=pg, ids=ids), list))
        from_pg = batched("postgres", self._similar, list)
        self.similar = DataLoader(self._similar_from_memory_first(titles, from_pg) if titles is not None else from_pg)
        self.rating_stats = DataLoader(
            batched("mongo", lambda ids: reads.rating_stats_by_movie(reviews=self._mongo("reviews"), ids=ids))
        )
        self.reviews = DataLoader(
            batched("mongo", lambda ids: reads.reviews_by_user(reviews=self._mongo("reviews"), ids=ids), list)
        )
        self.sessions = DataLoader(
            batched("mongo", lambda ids: reads.sessions_by_user(playback=self._mongo("playback_logs"), ids=ids), list)
        )
        self.people = DataLoader(batched("graph", lambda ids: reads.people_by_movie(graph=graph, ids=ids), dict))
        self.following = DataLoader(batched("graph", lambda ids: reads.following_by_user(graph=graph, ids=ids), list))
        self.followers = DataLoader(batched("graph", lambda ids: reads.followers_by_user(graph=graph, ids=ids), list))
        self.watched = DataLoader(batched("graph", lambda ids: reads.watched_by_user(graph=graph, ids=ids), list))

    def _mongo(self, logical: str) -> reads.MongoCollection:
        # The catalog is read once per request: every loader sees the same live collections.
        with self._lock:  # loaders run in worker threads, possibly at once
            if self._mongo_names is None:
                self._mongo_names = mongo.live_names(self._stores.mongo)
            return self._stores.mongo[self._mongo_names[logical]]

    @staticmethod
    def _similar_from_memory_first(
        titles: TitleIndex, from_pg: Callable[[list[tuple[int, int]]], Awaitable[list[Any]]]
    ) -> Callable[[list[tuple[int, int]]], Awaitable[list[Any]]]:
        """The title index answers the movies it holds, in a worker thread (a search each, off
        the event loop) and outside any store call; ``from_pg`` the rest (titles added in
        another process since its last refresh)."""

        def from_memory(keys: list[tuple[int, int]]) -> dict[tuple[int, int], list[tuple[int, float]] | None]:
            return {key: titles.similar(*key) for key in keys}

        async def load(keys: list[tuple[int, int]]) -> list[Any]:
            held = await in_thread(from_memory, keys)
            rest = [key for key, found in held.items() if found is None]
            fetched = dict(zip(rest, await from_pg(rest), strict=True)) if rest else {}
            return [held[key] if held[key] is not None else fetched[key] for key in keys]

        return load

    def _similar(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], list[tuple[int, float]]]:
        """Keys are (movie id, k); one pgvector query per distinct k in the batch."""
        out: dict[tuple[int, int], list[tuple[int, float]]] = {}
        for k in sorted({k for _, k in keys}):
            ids = [movie_id for movie_id, kk in keys if kk == k]
            found = reads.similar_movies(pg=self._stores.pg_reads, ids=ids, k=k)
            out.update({(movie_id, k): found.get(movie_id, []) for movie_id in ids})
        return out
