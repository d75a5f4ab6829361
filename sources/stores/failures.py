"""One error for "a store did not answer", whichever client noticed.

``with store_call("mongo"): …`` turns a client library's connection error (psycopg through
SQLAlchemy, pymongo, redis for FalkorDB, the neo4j driver, plain ``OSError``) into
``StoreDown("mongo")``; any other error passes through untouched, so a bug is never mistaken
for an outage. The GraphQL layer maps ``StoreDown`` to the code ``STORE_UNAVAILABLE``, shows
only its message and logs its ``reason`` under the request's id.

``store_call(store, breakers)`` also goes through that store's ``CircuitBreaker``: after a
connection failure the store counts as down for ``cooldown_s``, and calls fail at once with
``CircuitOpen`` (a ``StoreDown``) without touching the client; after the cool-down one caller
is let through as the probe, whose success closes the breaker and whose failure re-opens it.
A dead store thus costs one request the connect timeout and the others milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from sources.errors import MarqueeError, StoreUnavailable, first_line
from sources.stores import deadline


class StoreDown(MarqueeError):
    """``store`` ("postgres", "mongo", "graph", "feature", …) did not answer.

    The message names the store and nothing else, so it is safe to show anyone; ``reason``
    (the driver's first line: it may hold hosts, paths, users) is for logs and the command
    line, and ``detail`` joins the two."""

    def __init__(self, store: str, reason: str = "") -> None:
        super().__init__(f"the {store} store is unavailable")
        self.store = store
        self.reason = reason

    @property
    def detail(self) -> str:
        """The message with the driver's reason, for logs and the command line (not for clients)."""
        return f"{self}: {self.reason}" if self.reason else str(self)


class CircuitOpen(StoreDown):
    """``store`` failed recently: refused without calling it (same message as ``StoreDown``)."""


Ping = Callable[[], None]


def _in_thread(work: Ping) -> None:
    threading.Thread(target=work, name="store-probe", daemon=True).start()


class CircuitBreaker:
    """Whether one store may be called: closed (yes), open (no, until ``cooldown_s`` after the
    last failure), half-open (one probe is out; the others are refused until it ends).

    With a ``ping``, the probe is that ping run in the background (``run``, a daemon thread by
    default): the caller that finds the cool-down over is refused like the others, so no request
    pays a dead store's timeout more than once. Without one, that caller is the probe.

    Thread-safe; ``clock`` (seconds, monotonic) and ``run`` are injectable for tests."""

    def __init__(
        self,
        store: str,
        cooldown_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        ping: Ping | None = None,
        run: Callable[[Ping], None] = _in_thread,
    ) -> None:
        self.store = store
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._ping = ping
        self._run = run
        self._lock = threading.Lock()
        self._opened_at: float | None = None  # None: closed
        self._probing = False
        self._reason = ""

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (a probe is out)."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._probing else "open"

    def acquire(self) -> bool:
        """May the caller go to the store? Raises ``CircuitOpen`` if not; True means the caller
        is the probe and must report back (``succeeded``/``failed(probe=True)``/``released``)."""
        with self._lock:
            if self._opened_at is None:
                return False
            waited = self._clock() - self._opened_at
            probe_now = waited >= self.cooldown_s and not self._probing
            if probe_now:
                self._probing = True
                if self._ping is None:
                    return True
            wait = max(self.cooldown_s - waited, 0.0)
            why = "probing" if self._probing else f"next probe in {wait:.1f}s"
            refused = CircuitOpen(self.store, f"failing fast ({why}) after: {self._reason or 'a failure'}")
        if probe_now:
            self._run(self._probe)
        raise refused

    def _probe(self) -> None:
        assert self._ping is not None
        try:
            self._ping()
        except Exception as exc:
            self.failed(first_line(exc), probe=True)
        else:
            self.succeeded()

    def succeeded(self) -> None:
        """The store answered: close."""
        with self._lock:
            self._opened_at, self._probing, self._reason = None, False, ""

    def failed(self, reason: str = "", *, probe: bool = False) -> None:
        """The store did not answer: open (again) for ``cooldown_s`` from now. ``probe``: this
        was the probe's answer (another call's failure leaves a probe that is out running)."""
        with self._lock:
            self._opened_at, self._reason = self._clock(), reason
            if probe:
                self._probing = False

    def released(self) -> None:
        """The probe ended without telling (another error, cancelled): the next caller probes."""
        with self._lock:
            self._probing = False


class Breakers:
    """One ``CircuitBreaker`` per store name, made on first use, probing with ``pings[name]``
    where there is one; owned by ``Stores``, so separate clients (tests, commands) never share
    state."""

    def __init__(
        self,
        cooldown_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        pings: Mapping[str, Ping] | None = None,
        run: Callable[[Ping], None] = _in_thread,
    ) -> None:
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._pings = dict(pings or {})
        self._run = run
        self._lock = threading.Lock()
        self._by_store: dict[str, CircuitBreaker] = {}

    def __getitem__(self, store: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._by_store.get(store)
            if breaker is None:
                breaker = self._by_store[store] = CircuitBreaker(
                    store, self.cooldown_s, self._clock, ping=self._pings.get(store), run=self._run
                )
            return breaker

    def states(self) -> dict[str, str]:
        """Each breaker made so far, by store: ``closed``, ``open`` or ``half-open``."""
        with self._lock:
            breakers = list(self._by_store.values())
        return {b.store: b.state for b in breakers}


def is_connection_error(exc: BaseException) -> bool:
    """Whether a client library error means "the store did not answer" (not a bug of ours)."""
    import pymongo.errors
    import sqlalchemy.exc

    if isinstance(exc, StoreUnavailable | ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(exc, pymongo.errors.ConnectionFailure | pymongo.errors.ServerSelectionTimeoutError):
        return True
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return True
    try:
        import redis.exceptions

        if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return True
    except ImportError:  # pragma: no cover - redis comes with falkordb
        pass
    try:
        import neo4j.exceptions

        if isinstance(exc, neo4j.exceptions.ServiceUnavailable | neo4j.exceptions.SessionExpired):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


def is_unreachable(exc: BaseException) -> bool:
    """A connection error that says the store is not there (refused, reset, no server to
    select), as opposed to one that only says it was slow to answer (a timeout)."""
    import pymongo.errors

    if isinstance(exc, pymongo.errors.ServerSelectionTimeoutError):
        return True
    if isinstance(exc, TimeoutError | pymongo.errors.NetworkTimeout):
        return False
    try:
        import redis.exceptions

        if isinstance(exc, redis.exceptions.TimeoutError):
            return False
    except ImportError:  # pragma: no cover - redis comes with falkordb
        pass
    return is_connection_error(exc)


@contextmanager
def store_call(store: str, breakers: Breakers | None = None, *, connect_timeout_s: float = 5.0) -> Iterator[None]:
    """Translate "store did not answer" errors from any client into ``StoreDown(store)``.

    Under a request's budget (``deadline.within``) the call is not started once the budget is
    spent, Mongo operations inside get the time left as their timeout (at most
    ``connect_timeout_s``, so a dead Mongo still fails in the connect timeout), and a failure
    after the budget ran out is ``DeadlineExceeded``, not an outage of the store.

    With ``breakers`` (``Stores.call`` passes its own), the call fails at once with
    ``CircuitOpen`` while the store's breaker is open, and its outcome feeds the breaker.
    """
    import pymongo

    left = deadline.check()
    breaker = breakers[store] if breakers is not None else None
    probe = breaker.acquire() if breaker is not None else False

    def release() -> None:  # the call told nothing about the store: the next caller probes
        if probe and breaker is not None:
            breaker.released()

    try:
        if left is None:
            yield
        else:
            with pymongo.timeout(min(left, connect_timeout_s)):
                yield
    except (CircuitOpen, deadline.DeadlineExceeded):
        release()
        raise
    except StoreDown as exc:
        if breaker is not None and exc.store == store:
            breaker.failed(exc.reason, probe=probe)
        else:
            release()
        raise
    except Exception as exc:
        after = deadline.remaining()
        # Under a budget pymongo waits all of it for a server to select, so a dead Mongo ends
        # when the budget does: still an outage (the breaker must hear of it), not a slow call.
        if after is not None and after <= 0 and not is_unreachable(exc):
            release()  # slow is not down
            raise deadline.DeadlineExceeded(f"the {store} call outlived the request's budget") from exc
        if is_connection_error(exc):
            down = StoreDown(store, first_line(exc))
            if breaker is not None:
                breaker.failed(down.reason, probe=probe)
            raise down from exc
        release()  # not an outage (maybe not even the store's doing)
        raise
    except BaseException:
        release()
        raise
    else:
        if breaker is not None:
            breaker.succeeded()
