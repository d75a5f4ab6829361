"""The background half of a mutation: features pushed, then events written, in groups.

A mutation is acknowledged once its record is in the mutation log (api/queries/writes.py,
``accept_many``: one Mongo insert for the mutations that arrived together, durable). ``WritePusher.submit`` then
queues it, and two threads work through the queue in groups:

1. the **push thread** takes whatever is queued (up to ``batch``) and gives it to the feature
   store at once (``push_many``: raw rows landed, one SQL statement per feature table for all
   the group's users and movies, one online write per view), then announces each user changed
   (``on_pushed``: their kept lists are forgotten again, since a list ranked between the
   acknowledgement and the push read the old features), and hands the group on;
2. the **log thread** takes every pushed group waiting and writes their events to Mongo
   (``writes.write_events``: one ``insert_many`` of reviews, the sessions appended in place in
   the embedded server's file, or one read and one ``bulk_write`` of the users' playback
   documents on a real MongoDB), then marks the records done and pushed (one ``bulk_write``).

The push needs nothing from step 2: the record already holds the event, so the user's features
follow the acknowledgement by one group's push, while the Mongo writes of the groups before run
beside it. While a group is being pushed the next one gathers, and a group waits up to
``linger_s`` after its first mutation (``MARQUEE_WRITE_LINGER_MS``) before it goes: each group
costs a fixed number of statements whatever its size, and the fewer groups, the less the push
takes from the requests beside it (docs/performance.md). Nothing is lost when the process stops
at any point: a record not marked pushed is finished by ``writes.repair`` at the next start
(api/serving.py: its event written if missing, the push redone, both idempotent) and its event
is read by ``marquee export`` meanwhile. A step that fails is tried again a second later,
twice; then the group goes on unpushed (its events are still written), or, when its events
cannot be written, is left to that repair.

``submit`` returns a future resolved with whether the features were pushed, once the events are
written too, for callers that answer only then (``MARQUEE_WRITE_ACK=pushed``). ``delays`` keeps
the last acknowledgement-to-push delays in seconds (features online, lists forgotten),
``done_delays`` the acknowledgement-to-written ones (events in Mongo, record marked), and
``stages`` the seconds spent in each step (``marquee bench writes`` prints them, to show where
a group's time goes).
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
    """Pushes acknowledged mutations and writes their events in groups, on two threads; see the
    module docstring. ``run_once`` does one group's both steps in the calling thread."""

    def __init__(self, stores: Stores, pusher: Callable[[], FeaturePusher], *,
                 on_pushed: Callable[[int], None] = lambda user_id: None, batch: int = 256,
                 linger_s: float = 0.0) -> None:  # fmt: skip
        self.stores, self.pusher, self.on_pushed, self.batch = stores, pusher, on_pushed, batch
        self.linger_s = linger_s
        self._queue: deque[_Queued] = deque()  # acknowledged, to push
        self._pushed: deque[tuple[list[_Queued], bool]] = deque()  # pushed (or given up), to write
        self._unfinished = 0  # submitted and not yet written (or left to the repair)
        self._wake = threading.Condition()
        self._stop = False
        self._push_stopped = False  # the push thread has drained the queue and stopped
        self._threads = [threading.Thread(target=self._run_push, name="write-pusher", daemon=True),
                         threading.Thread(target=self._run_log, name="write-logger", daemon=True)]  # fmt: skip
        self.groups = 0  # groups pushed since start
        self.written = 0  # mutations written since start
        self.delays: deque[float] = deque(maxlen=DELAYS_KEPT)
        self.done_delays: deque[float] = deque(maxlen=DELAYS_KEPT)
        self._push_failing: str | None = None
        self._log_failing: str | None = None
        #: seconds spent since start: "push" (feature store), "events" (Mongo writes), "mark" (log)
        self.stages: dict[str, float] = {"push": 0.0, "events": 0.0, "mark": 0.0}

    @property
    def failing(self) -> str | None:
        """Why the last push or the last write failed, while it does."""
        return self._push_failing or self._log_failing

    def start(self) -> WritePusher:
        for thread in self._threads:
            thread.start()
        return self

    def close(self, timeout_s: float = 30.0) -> None:
        """Push and write what is queued, then stop (what is left after ``timeout_s`` waits for the repair)."""
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def submit(self, accepted: writes.Accepted) -> Future[bool]:
        queued = _Queued(accepted, time.monotonic())
        with self._wake:
            self._queue.append(queued)
            self._unfinished += 1
            self._wake.notify_all()
        return queued.done

    @property
    def pending(self) -> int:
        """Mutations submitted whose events are not written yet."""
        with self._wake:
            return self._unfinished

    def run_once(self) -> int:
        """Push one group and write the events of every pushed group now, in this thread: how
        many mutations the pushed group held (see ``push_once`` and ``write_once``)."""
        pushed = self.push_once()
        self.write_once()
        return pushed

    def push_once(self) -> int:
        """Push one group to the feature store: how many mutations it held. A group that fails
        is queued again at the front (tried ``ATTEMPTS`` times, ``RETRY_S`` apart); then it goes
        on to be written unpushed, and its push is left to ``writes.repair`` at the next start."""
        with self._wake:
            group = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
        if not group:
            return 0
        accepted = [q.accepted for q in group]
        try:
            started = time.perf_counter()
            pushed = push_group(self.pusher(), [event_of(a) for a in accepted])
            self.stages["push"] += time.perf_counter() - started
            if self._push_failing is not None:
                log.info("grouped pushes work again")
            self._push_failing = None
        except Exception as exc:
            if self._push_failing is None:
                log.warning("%d grouped pushes failed (%s); trying again", len(group), first_line(exc))
            self._push_failing = first_line(exc)
            if group[0].attempts + 1 < ATTEMPTS:
                with self._wake:
                    for q in reversed(group):
                        q.attempts += 1
                        self._queue.appendleft(q)
                return len(group)
            log.warning("%d grouped pushes left to the repair at the next start", len(group))
            pushed = False
        for user_id in dict.fromkeys(a.written.user_id for a in accepted):
            self.on_pushed(user_id)
        now = time.monotonic()
        self.delays.extend(now - q.at for q in group)
        self.groups += 1
        for q in group:
            q.attempts = 0
        with self._wake:
            self._pushed.append((group, pushed))
            self._wake.notify_all()
        return len(group)

    def write_once(self) -> int:
        """Write the events of every pushed group waiting, and mark their records: how many
        mutations. A failure puts them back (tried ``ATTEMPTS`` times, ``RETRY_S`` apart); then
        they are left to ``writes.repair`` at the next start, and to ``marquee export``."""
        with self._wake:
            batches = list(self._pushed)
            self._pushed.clear()
        if not batches:
            return 0
        group = [q for queued, _ in batches for q in queued]
        pushed_ids = {id(q) for queued, pushed in batches if pushed for q in queued}
        accepted = [q.accepted for q in group]
        db, written = self.stores.mongo, False
        try:
            started = time.perf_counter()
            writes.write_events(db, accepted, stores=self.stores)
            written = True
            events_done = time.perf_counter()
            marked_pushed = [q.accepted.record for q in group if id(q) in pushed_ids]
            marked_only = [q.accepted.record for q in group if id(q) not in pushed_ids]
            writes.mark_done(db, marked_pushed, pushed=True)
            writes.mark_done(db, marked_only, pushed=False)
            self.stages["events"] += events_done - started
            self.stages["mark"] += time.perf_counter() - events_done
            if self._log_failing is not None:
                log.info("grouped writes work again")
            self._log_failing = None
        except Exception as exc:
            if self._log_failing is None:
                log.warning("%d grouped writes failed (%s); trying again", len(group), first_line(exc))
            self._log_failing = first_line(exc)
            if group[0].attempts + 1 < ATTEMPTS:
                with self._wake:
                    for q in group:
                        q.attempts += 1
                    for batch in reversed(batches):
                        self._pushed.appendleft(batch)
                return len(group)
            log.warning("%d grouped writes left to the repair at the next start", len(group))
            if written:
                try:
                    writes.mark_done(db, [a.record for a in accepted], pushed=False)
                except Exception:
                    log.exception("could not mark a failed group done")
            pushed_ids = set()
        now = time.monotonic()
        for q in group:
            self.done_delays.append(now - q.at)
            q.done.set_result(id(q) in pushed_ids)
        self.written += len(group)
        with self._wake:
            self._unfinished -= len(group)
        return len(group)

    def _run_push(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._queue:
                    self._wake.wait()
                if self._stop and not self._queue:
                    self._push_stopped = True
                    self._wake.notify_all()  # the log thread may stop once it has written the rest
                    return
                self._linger()
            self.push_once()
            if self._push_failing is not None:
                with self._wake:
                    self._wake.wait(RETRY_S)  # a store away: do not spin on it

    def _linger(self) -> None:
        """With the lock held and a mutation queued: wait until the oldest queued one is
        ``linger_s`` old, the group is full, or the pusher stops (a retried group, already old,
        goes at once)."""
        while not self._stop and 0 < len(self._queue) < self.batch:
            left = self.linger_s - (time.monotonic() - self._queue[0].at)
            if left <= 0:
                return
            self._wake.wait(left)

    def _pushes_over(self) -> bool:
        """Nothing more will be pushed: the push thread stopped (or died)."""
        return self._stop and (self._push_stopped or not self._threads[0].is_alive())

    def _run_log(self) -> None:
        while True:
            with self._wake:
                while not self._pushed and not self._pushes_over():
                    self._wake.wait(0.5)  # woken by each pushed group; the timeout covers a dead push thread
                if not self._pushed and self._pushes_over():
                    return
            self.write_once()
            if self._log_failing is not None:
                with self._wake:
                    self._wake.wait(RETRY_S)
