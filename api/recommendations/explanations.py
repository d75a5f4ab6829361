"""Who made which movie, held in memory for explaining recommendations.

An explanation ("shares director m.0xyz with Star Wars (1977), which you rated 5") joins the
candidates to the user's liked movies through shared people. A graph query per request would
cost a large share of the model path (docs/performance.md); the credits change only when a
dataset is loaded, so they are read once (ML-100K: ~47K edges) and re-read after ``ttl_s``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from api.queries import taste
from sources.stores.clients import Stores
from sources.stores.failures import StoreDown
from sources.vocabulary import ROLE_NAMES


@dataclass(frozen=True)
class _Credits:
    people: dict[int, list[tuple[str, str]]]  # movie -> [(person, relationship)]
    movies: dict[str, set[int]]  # person -> movies
    titles: dict[int, str]


class CreditIndex:
    """Movie ↔ person credits from the graph, refreshed after ``ttl_s``."""

    def __init__(self, stores: Stores, ttl_s: float = 600.0) -> None:
        self.stores, self.ttl_s = stores, ttl_s
        self._lock = threading.Lock()
        self._credits: _Credits | None = None
        self._loaded_at = float("-inf")

    def _current(self) -> _Credits:
        with self._lock:
            if self._credits is None or time.monotonic() - self._loaded_at > self.ttl_s:
                try:
                    self._credits = self._read()
                    self._loaded_at = time.monotonic()
                except StoreDown:
                    if self._credits is None:
                        raise  # nothing to explain with; a stale index beats none
            return self._credits

    def _read(self) -> _Credits:
        people: dict[int, list[tuple[str, str]]] = defaultdict(list)
        movies: dict[str, set[int]] = defaultdict(set)
        titles: dict[int, str] = {}
        with self.stores.call("graph"):
            for credit in taste.credits(graph=self.stores.graph):
                people[credit.movie_id].append((credit.person, credit.role))
                movies[credit.person].add(credit.movie_id)
                titles[credit.movie_id] = credit.title
        for credits in people.values():
            credits.sort()
        return _Credits(dict(people), dict(movies), titles)

    def explain(self, ratings: dict[int, float], movie_ids: Sequence[int]) -> dict[int, str]:
        """Why each movie: a person it shares with the best-rated movie (rated ≥ 4) of the user's."""
        liked = {m: r for m, r in ratings.items() if r >= 4}
        if not liked or not movie_ids:
            return {}
        try:
            credits = self._current()
        except StoreDown:
            return {}
        out: dict[int, str] = {}
        liked_ids = set(liked)  # set & set walks the smaller one; set & dict.keys() copies the keys each time
        for candidate in movie_ids:
            best: tuple[float, int, str, str] | None = None  # (-rating, source, person, rel): min wins
            for person, rel in credits.people.get(candidate, ()):
                for source in credits.movies[person] & liked_ids:
                    if source != candidate:
                        key = (-liked[source], source, person, rel)
                        best = key if best is None or key < best else best
            if best is not None:
                rating, source, person, rel = -best[0], best[1], best[2], best[3]
                title = credits.titles.get(source, f"movie {source}")
                out[candidate] = (
                    f"shares {ROLE_NAMES.get(rel, 'person')} {person} with {title}, which you rated {rating:g}"
                )
        return out
