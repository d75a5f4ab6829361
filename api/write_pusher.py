"""The background half of a mutation: events written, features recomputed and pushed, in groups.

A mutation is acknowledged once its record is in the mutation log (api/queries/writes.py,
``accept_rating``/``accept_playback``: one Mongo insert, durable). ``WritePusher.submit`` then
queues it, and one thread takes whatever is queued (up to ``batch``) as a group:

1. the group's events are written to Mongo (``writes.write_events``: one ``insert_many`` of
   reviews, one append per user's playback document);
2. the feature store gets them at once (``push_many``: raw rows landed, one SQL recompute per
   feature table for all the group's users and movies, one online write per view);
3. the records are marked done and pushed (one ``bulk_write``), and each user is announced
   changed (``on_pushed``: their kept lists are forgotten again, since a list ranked between
   the acknowledgement and the push read the old features).

While a group is being pushed the next one gathers, so the groups grow with the rate and no
timer is needed. Nothing is lost when the process stops at any point: a record not marked
pushed is finished by ``writes.repair`` at the next start (api/serving.py) and its event is
read by ``marquee export`` meanwhile. A group that fails is tried again a second later, twice;
then it is marked done when its events were written, and left to that repair.

``submit`` returns a future resolved with whether the features were pushed, for callers that
answer only after the push (``MARQUEE_WRITE_ACK=pushed``). ``delays`` keeps the last
acknowledgement-to-push delays in seconds, and ``stages`` the seconds spent in each step of
the groups (``marquee bench writes`` prints both, to show where a group's time goes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from api.queries import writes
from api.queries.features import FeatureEvent, FeaturePusher, GroupFeaturePusher
from sources.errors import first_line
from sources.stores.clients import Stores

log = logging.getLogger(__name__)

DELAYS_KEPT = 100_000
ATTEMPTS = 3  # tries of a failing group, RETRY_S apart, before it is left to the repair
RETRY_S = 1.0


@dataclass
class _Queued:
    accepted: writes.Accepted
    at: float  # when acknowledged (time.monotonic)
    done: Future[bool] = field(default_factory=Future)
    attempts: int = 0


def event_of(accepted: writes.Accepted) -> FeatureEvent:
    written = accepted.written
    if isinstance(written, writes.RatingWritten):
        return writes.rating_event(written)
    return writes.playback_event(written)


def push_group(pusher: FeaturePusher, events: Sequence[FeatureEvent]) -> bool:
    """One grouped push when the pusher can (Feast's), else one push per event."""
    if not events:
        return False
    if isinstance(pusher, GroupFeaturePusher):
        return pusher.push_many(events)
    return all([pusher.push(event) for event in events])


class WritePusher:
    """Writes and pushes acknowledged mutations in groups on a thread; see the module docstring."""

    def __init__(self, stores: Stores, pusher: Callable[[], FeaturePusher], *,
                 on_pushed: Callable[[int], None] = lambda user_id: None, batch: int = 256) -> None:  # fmt: skip
        self.stores, self.pusher, self.on_pushed, self.batch = stores, pusher, on_pushed, batch
        self._queue: deque[_Queued] = deque()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="write-pusher", daemon=True)
        self.groups = 0  # groups written since start
        self.written = 0  # mutations written since start
        self.delays: deque[float] = deque(maxlen=DELAYS_KEPT)
        self.failing: str | None = None  # why the last group failed, while it does
        #: seconds spent since start: "events" (Mongo writes), "push" (feature store), "mark" (log)
        self.stages: dict[str, float] = {"events": 0.0, "push": 0.0, "mark": 0.0}

    def start(self) -> WritePusher:
        self._thread.start()
        return self

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, then stop (what is left after ``timeout_s`` waits for the repair)."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def submit(self, accepted: writes.Accepted) -> Future[bool]:
        queued = _Queued(accepted, time.monotonic())
        with self._wake:
            self._queue.append(queued)
            self._wake.notify()
        return queued.done

    @property
    def pending(self) -> int:
        with self._wake:
            return len(self._queue)

    def run_once(self) -> int:
        """Write and push one group now, in this thread: how many mutations it held. A group
        that fails is queued again at the front (tried ``ATTEMPTS`` times, ``RETRY_S`` apart);
        then it is left to ``writes.repair`` at the next start, and to ``marquee export``."""
        with self._wake:
            group = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
        if not group:
            return 0
        accepted = [q.accepted for q in group]
        db, pushed, written = self.stores.mongo, False, False
        try:
            started = time.perf_counter()
            writes.write_events(db, accepted)
            written = True
            events_done = time.perf_counter()
            pushed = push_group(self.pusher(), [event_of(a) for a in accepted])
            push_done = time.perf_counter()
            writes.mark_done(db, [a.record for a in accepted], pushed=pushed)
            self.stages["events"] += events_done - started
            self.stages["push"] += push_done - events_done
            self.stages["mark"] += time.perf_counter() - push_done
            if self.failing is not None:
                log.info("grouped writes work again")
            self.failing = None
        except Exception as exc:
            if self.failing is None:
                log.warning("%d grouped writes failed (%s); trying again", len(group), first_line(exc))
            self.failing = first_line(exc)
            if group[0].attempts + 1 < ATTEMPTS:
                with self._wake:
                    for q in reversed(group):
                        q.attempts += 1
                        self._queue.appendleft(q)
                return len(group)
            log.warning("%d grouped writes left to the repair at the next start", len(group))
            if written:
                try:
                    writes.mark_done(db, [a.record for a in accepted], pushed=False)
                except Exception:
                    log.exception("could not mark a failed group done")
        now = time.monotonic()
        for user_id in dict.fromkeys(a.written.user_id for a in accepted):
            self.on_pushed(user_id)
        for q in group:
            self.delays.append(now - q.at)
            q.done.set_result(pushed)
        self.groups += 1
        self.written += len(group)
        return len(group)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._queue:
                    self._wake.wait()
                if self._stop and not self._queue:
                    return
            self.run_once()
            if self.failing is not None:
                with self._wake:
                    self._wake.wait(RETRY_S)  # a store away: do not spin on it
