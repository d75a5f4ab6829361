"""Ranked lists made in the background, so requests find them kept.

``ListRefresher(cache)`` ranks queued lists into a ``CachedRecommender`` (kept_lists.py) in
batches of up to ``MAX_BATCH`` on a thread of its own:

- *refresh-ahead* (``ahead``): a request answered from a list older than half its TTL asks for
  that list to be ranked again, so the lists of users who keep coming back never expire;
- *warm-up* (``warm``): at start the served app queues the users the ranker knows (up to
  ``MARQUEE_RECOMMENDATION_WARM_USERS``, 0 by default: the lists every worker shares in
  PostgreSQL, shared_lists.py, replace it), after any refresh-ahead; a list found in the
  shared table is taken from there instead of ranked. A list a request already
  had ranked is skipped. A batch with nothing worth keeping (degraded: a store is away) ends
  the warm-up, which would otherwise only compete with requests for the fallback's slow reads.

A list ranked here is kept exactly as a request's would be. A user whose list is missing or
was forgotten (they rated a movie) is still ranked on their own request. Figures:
docs/performance.md.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence

from api.recommendations.batcher import MAX_BATCH
from api.recommendations.contract import RecommendationRequest, RecommendationResult
from api.recommendations.kept_lists import CachedRecommender
from sources.errors import first_line

log = logging.getLogger(__name__)


class ListRefresher:
    """Ranks queued lists into ``cache`` on a background thread; see the module docstring."""

    def __init__(self, cache: CachedRecommender, *, batch: int = MAX_BATCH) -> None:
        self.cache, self.batch = cache, batch
        self._ahead: OrderedDict[tuple[int, bool], RecommendationRequest] = OrderedDict()
        self._warm: deque[RecommendationRequest] = deque()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="list-refresher", daemon=True)
        self.ranked = 0  # lists ranked here since start
        self.failing: str | None = None  # why the last batch failed, while it does

    def start(self) -> ListRefresher:
        self._thread.start()
        return self

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def ahead(self, requests: Sequence[RecommendationRequest]) -> None:
        """Rank these again soon (their kept lists are getting old); one entry per list."""
        with self._wake:
            for r in requests:
                key = (r.user_id, r.exclude_seen)
                queued = self._ahead.get(key)
                if queued is None or queued.k < r.k:
                    self._ahead[key] = r
            self._wake.notify()

    def warm(self, requests: Sequence[RecommendationRequest]) -> None:
        """Rank these when nothing more urgent is queued."""
        with self._wake:
            self._warm.extend(requests)
            self._wake.notify()

    @property
    def pending(self) -> int:
        with self._wake:
            return len(self._ahead) + len(self._warm)

    def run_once(self) -> int:
        """Rank one batch now, in this thread: how many lists it held (0: nothing queued)."""
        with self._wake:
            ahead = [self._ahead.popitem(last=False)[1] for _ in range(min(self.batch, len(self._ahead)))]
            warm: list[RecommendationRequest] = []
            while self._warm and len(ahead) + len(warm) < self.batch:
                request = self._warm.popleft()
                if not self.cache.kept_fresh(request):  # a request already had it ranked: keep that one
                    warm.append(request)
        batch = ahead + warm
        if batch:
            # Refresh-ahead ranks again; a warm-up list is taken from the shared lists when there.
            outcomes = (self.cache.rank(ahead) if ahead else []) + (self.cache.fill(warm) if warm else [])
            self.ranked += len(batch)
            if not any(isinstance(o, RecommendationResult) and not o.degraded for o in outcomes):
                self._stop_warm_up()
        return len(batch)

    def _stop_warm_up(self) -> None:
        """A batch with no list worth keeping means a store or the model is away: the fallback
        answers, slowly and never kept, so the rest of the warm-up would only compete with
        requests. Those users are ranked on their own requests instead."""
        with self._wake:
            dropped = len(self._warm)
            self._warm.clear()
        if dropped:
            log.warning("warm-up stopped: a batch came back degraded or failed; %d lists left to requests", dropped)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._ahead and not self._warm:
                    self._wake.wait()
                if self._stop:
                    return
            try:
                self.run_once()
                if self.failing is not None:
                    log.info("background ranking works again")
                self.failing = None
            except Exception as exc:  # requests rank on their own meanwhile; keep going
                if self.failing is None:
                    log.warning("background ranking failed (%s); requests will rank their own lists", first_line(exc))
                self.failing = first_line(exc)
