"""Ranked lists reused for a while, and forgotten as soon as the user changes.

``CachedRecommender(inner, ttl_s)`` keeps ``inner``'s answers per (user, exclude_seen) for
``ttl_s`` (``MARQUEE_RECOMMENDATION_CACHE_S``; 0 keeps nothing): a frontend asks for the same
list on every page view, and ranking costs far more than reading a kept list
(docs/performance.md). A list is kept at the largest ``first`` asked; a smaller ``first`` gets
its prefix, which is what ranking afresh gives. Degraded answers are never kept.

A user's lists are forgotten when they change:

- a mutation through this process forgets its user once the write and feature push are done
  (``Services.user_changed``);
- ``MutationFeed`` polls the mutation log (every worker's writes) every ``poll_s`` and forgets
  each user with a mutation in the last ``settle_s``, which also covers a push landing late or
  clocks a few seconds apart; when the log cannot be read, everything kept is dropped;
- a ranking that began before a forget is not kept, and a ranking never replaces a list whose
  own ranking began later.

Other changes (another user's rating, ``marquee ingest``, ``marquee materialize``) reach a kept
list within ``ttl_s``. Lists past half their TTL when asked for go to ``on_old``, which ranks
them again in the background (``refresher.py``). Entries are tuples of plain values, which
CPython's cyclic collector stops tracking (see ``gc.freeze()`` in api/app.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from api.queries import writes
from api.queries.writes import MongoDb
from api.recommendations.contract import (
    Outcome,
    RecommendationRequest,
    RecommendationResult,
    Recommended,
    Recommender,
)
from api.recommendations.kept_entries import KeptEntries
from api.recommendations.shared_lists import SharedLists, made_at
from sources.errors import first_line
from sources.stores.failures import store_call

log = logging.getLogger(__name__)

CAPACITY = 20_000  # lists kept; ~3 KB each at first: 10
FORGET_HORIZON_S = 300.0  # no ranking takes longer: older forget times can go

_Item = tuple[int, float, int, str]  # Recommended's fields, in order
_List = tuple[int, str, tuple[_Item, ...]]  # (first, model version, items)


class CachedRecommender(Recommender):
    """``inner``'s answers kept per (user, exclude_seen) for ``ttl_s``; see the module docstring."""

    def __init__(
        self, inner: Recommender, *, ttl_s: float, capacity: int = CAPACITY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.inner, self.ttl_s, self.capacity, self._clock = inner, ttl_s, capacity, clock
        self._lists: KeptEntries[tuple[int, bool], _List] = KeptEntries(ttl_s, capacity)
        self._forgotten: dict[int, float] = {}  # user -> when last forgotten
        self._cleared_at = float("-inf")
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        #: the lists shared by every worker (shared_lists.py), looked up on a miss and written
        #: when ranked; None: this worker's memory only
        self.shared: SharedLists | None = None
        self.shared_hits = 0
        #: called with the kept lists a request found older than ``ttl_s / 2``, to be ranked
        #: again before they expire (api/recommendations/refresher.py); None: they just expire
        self.on_old: Callable[[list[RecommendationRequest]], None] | None = None

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        started = self._clock()
        old: list[RecommendationRequest] = []
        with self._lock:
            kept = [self._kept(r, started, old) for r in requests]
            missed = [r for r, found in zip(requests, kept, strict=True) if found is None]
            self.hits += len(requests) - len(missed)
            self.misses += len(missed)
        if old and self.on_old is not None:
            self.on_old(old)
        if not missed:
            return [found for found in kept if found is not None]
        if self.shared is not None:
            shared = self._from_shared(missed, started)
            kept = [found if found is not None else shared.get((r.user_id, r.exclude_seen, r.k))
                    for r, found in zip(requests, kept, strict=True)]  # fmt: skip
            missed = [r for r, found in zip(requests, kept, strict=True) if found is None]
            if not missed:
                return [found for found in kept if found is not None]
        fresh = iter(self.rank(missed, started))
        return [found if found is not None else next(fresh) for found in kept]

    def fill(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        """Lists nobody asked for yet (the warm-up): taken from the shared table when there, else
        ranked; kept as a request's would be, and not counted as hits or misses."""
        started = self._clock()
        found = self._from_shared(requests, started) if self.shared is not None else {}
        missed = [r for r in requests if (r.user_id, r.exclude_seen, r.k) not in found]
        fresh = iter(self.rank(missed, started) if missed else [])
        out: list[Outcome] = []
        for r in requests:
            shared = found.get((r.user_id, r.exclude_seen, r.k))
            out.append(shared if shared is not None else next(fresh))
        return out

    def _from_shared(
        self, requests: Sequence[RecommendationRequest], started: float
    ) -> dict[tuple[int, bool, int], RecommendationResult]:
        """The lists of ``requests`` found in the shared table (kept here too); a table that
        cannot be read is skipped (logged): the requests are ranked instead."""
        assert self.shared is not None
        try:
            rows = self.shared.read([(r.user_id, r.exclude_seen) for r in requests])
        except Exception as exc:
            log.warning("shared recommendation lists unreadable (%s); ranking instead", first_line(exc))
            return {}
        out: dict[tuple[int, bool, int], RecommendationResult] = {}
        version = self.shared.version
        with self._lock:
            for r in requests:
                row = rows.get((r.user_id, r.exclude_seen))
                if row is None or row[0] < r.k:
                    continue
                first, items, _ = row
                if max(self._forgotten.get(r.user_id, float("-inf")), self._cleared_at) < started:
                    self._lists.put((r.user_id, r.exclude_seen), (first, version, items), started)
                out[(r.user_id, r.exclude_seen, r.k)] = RecommendationResult(
                    [Recommended(*item) for item in items[: r.k]], version
                )
        self.shared_hits += len(out)
        return out

    def rank(self, requests: Sequence[RecommendationRequest], started: float | None = None) -> list[Outcome]:
        """``inner``'s answers, kept (the good ones) as a request's would be."""
        started = self._clock() if started is None else started
        ranked = self.inner.recommend_many(requests)
        share: list[tuple[int, bool, int, str, tuple[_Item, ...]]] = []
        with self._lock:
            for r, outcome in zip(requests, ranked, strict=True):
                if isinstance(outcome, RecommendationResult) and not outcome.degraded:
                    items = self._keep(r, outcome, started)
                    if items is not None:
                        share.append((r.user_id, r.exclude_seen, r.k, outcome.model_version, items))
        if share and self.shared is not None:
            try:
                self.shared.write(share, made_at(started))
            except Exception as exc:  # the lists are kept here all the same
                log.warning("could not write shared recommendation lists (%s)", first_line(exc))
        return ranked

    def forget(self, user_id: int) -> None:
        """Drop ``user_id``'s lists; a ranking of them already under way is not kept either."""
        now = self._clock()
        if self.shared is not None:
            self.shared.changed(user_id)
        with self._lock:
            self._lists.pop((user_id, True))
            self._lists.pop((user_id, False))
            self._forgotten[user_id] = now
            if len(self._forgotten) > self.capacity:
                horizon = now - FORGET_HORIZON_S
                self._forgotten = {u: at for u, at in self._forgotten.items() if at > horizon}

    def clear(self) -> None:
        """Forget everyone (the change feed could not be read, so any list may be stale),
        rankings under way included."""
        with self._lock:
            self._cleared_at = self._clock()
            self._lists.clear()

    def __len__(self) -> int:
        return len(self._lists)

    def _kept(
        self, r: RecommendationRequest, now: float, old: list[RecommendationRequest]
    ) -> RecommendationResult | None:
        """The kept answer to ``r``, if any; a list past half its TTL is added to ``old``."""
        entry = self._lists.get((r.user_id, r.exclude_seen), now)
        if entry is None:
            return None
        kept_at, (first, version, items) = entry
        if first < r.k:
            return None
        if now - kept_at >= self.ttl_s / 2:
            old.append(RecommendationRequest(r.user_id, first, r.exclude_seen))
        return RecommendationResult([Recommended(*item) for item in items[: r.k]], version)

    def kept_fresh(self, r: RecommendationRequest) -> bool:
        """Whether ``r`` would be answered from a list younger than half its TTL (no need to rank it)."""
        now = self._clock()
        with self._lock:
            entry = self._lists.get((r.user_id, r.exclude_seen), now)
        return entry is not None and entry[1][0] >= r.k and now - entry[0] < self.ttl_s / 2

    def _keep(self, r: RecommendationRequest, result: RecommendationResult, started: float) -> tuple[_Item, ...] | None:
        """Keep ``result`` unless the user changed meanwhile or a later ranking was kept; the items kept."""
        if max(self._forgotten.get(r.user_id, float("-inf")), self._cleared_at) >= started:
            return None  # the user (or anyone, unknown) changed while this was being ranked
        kept = self._lists.get((r.user_id, r.exclude_seen), started)
        if kept is not None and kept[0] > started and kept[1][0] >= r.k:
            return None  # a ranking that began later was kept meanwhile: it read newer state, and it was served
        items = tuple((i.movie_id, i.score, i.rank, i.explanation) for i in result.items)
        self._lists.put((r.user_id, r.exclude_seen), (r.k, result.model_version, items), started)
        return items


class MutationFeed:
    """Polls the mutation log every ``poll_s`` and calls ``forget`` for each user with a mutation
    in the last ``settle_s`` (and ``on_change`` with each such mutation); ``lost`` is called
    instead when the log cannot be read.

    Each poll is one indexed range on the log's ``at_ms`` (api/queries/writes.py
    ``changes_since``): it reads the last ``poll_s + settle_s`` seconds of mutations, so its cost
    follows the write rate, never the size of the log."""

    def __init__(self, db: MongoDb, forget: Callable[[int], None], lost: Callable[[], None], *,
                 poll_s: float = 1.0, settle_s: float = 5.0,
                 on_change: Callable[[writes.Change], None] | None = None) -> None:  # fmt: skip
        self.db, self.forget, self.lost, self.poll_s, self.settle_s = db, forget, lost, poll_s, settle_s
        self.on_change = on_change
        #: called once per poll with every user it saw (the shared lists delete theirs at once)
        self.on_users: list[Callable[[set[int]], None]] = []
        self._since = datetime.now(UTC) - timedelta(seconds=settle_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mutation-feed", daemon=True)
        self.failing: str | None = None  # why the last poll failed, while it does
        self.read = 0  # mutation records read by the polls since start

    def start(self) -> MutationFeed:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def poll(self) -> set[int]:
        """One poll: the users it forgot. It reaches back ``settle_s`` before the previous one,
        so a poll late by any amount (a busy process) skips nothing."""
        polled_at = datetime.now(UTC)
        with store_call("mongo"):
            changes = writes.changes_since(self.db, writes.epoch_ms(self._since))
        self.read += len(changes)
        users = {c.user_id for c in changes}
        if self.on_change is not None:
            for change in changes:
                self.on_change(change)
        for user_id in users:
            self.forget(user_id)
        for hook in self.on_users if users else ():
            try:
                hook(users)
            except Exception as exc:  # the in-memory forgets above are done; the table catches up next poll
                log.warning("forgetting shared lists failed (%s)", first_line(exc))
        self._since = polled_at - timedelta(seconds=self.settle_s)
        return users

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
                if self.failing is not None:
                    log.info("mutation log readable again")
                self.failing = None
            except Exception as exc:  # unknown changes: nothing kept may be trusted
                self.lost()
                if self.failing is None:
                    log.warning("mutation log unreadable (%s); ranking every request until it is back", first_line(exc))
                self.failing = first_line(exc)
