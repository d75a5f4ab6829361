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
from collections.abc import Callable, Iterator
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


class CircuitBreaker:
    """Whether one store may be called: closed (yes), open (no, until ``cooldown_s`` after the
    last failure), half-open (one probe is out; the others are refused until it ends).

    Thread-safe; ``clock`` (seconds, monotonic) is injectable for tests."""

    def __init__(self, store: str, cooldown_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.cooldown_s = cooldown_s
        self._clock = clock
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
        is the probe and must report back (``succeeded``/``failed``/``released``)."""
        with self._lock:
            if self._opened_at is None:
                return False
            waited = self._clock() - self._opened_at
            if waited >= self.cooldown_s and not self._probing:
                self._probing = True
                return True
            wait = max(self.cooldown_s - waited, 0.0)
            why = "a probe is out" if self._probing else f"next probe in {wait:.1f}s"
            raise CircuitOpen(self.store, f"failing fast ({why}) after: {self._reason or 'a failure'}")

    def succeeded(self) -> None:
        """The store answered: close."""
        with self._lock:
            self._opened_at, self._probing, self._reason = None, False, ""

    def failed(self, reason: str = "") -> None:
        """The store did not answer: open (again) for ``cooldown_s`` from now."""
        with self._lock:
            self._opened_at, self._probing = self._clock(), False
            self._reason = reason

    def released(self) -> None:
        """The probe ended without telling (another error, cancelled): the next caller probes."""
        with self._lock:
            self._probing = False


class Breakers:
    """One ``CircuitBreaker`` per store name, made on first use; owned by ``Stores``, so
    separate clients (tests, commands) never share state."""

    def __init__(self, cooldown_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._by_store: dict[str, CircuitBreaker] = {}

    def __getitem__(self, store: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._by_store.get(store)
            if breaker is None:
                breaker = self._by_store[store] = CircuitBreaker(store, self.cooldown_s, self._clock)
            return breaker

    def states(self) -> dict[str, str]:
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


@contextmanager
def store_call(store: str, breakers: Breakers | None = None) -> Iterator[None]:
    """Translate "store did not answer" errors from any client into ``StoreDown(store)``.

    Under a request's budget (``deadline.within``) the call is not started once the budget is
    spent, Mongo operations inside get the time left as their timeout, and a failure after the
    budget ran out is ``DeadlineExceeded``, not an outage of the store.

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
            with pymongo.timeout(left):
                yield
    except (CircuitOpen, deadline.DeadlineExceeded):
        release()
        raise
    except StoreDown as exc:
        if breaker is not None and exc.store == store:
            breaker.failed(exc.reason)
        else:
            release()
        raise
    except Exception as exc:
        after = deadline.remaining()
        if after is not None and after <= 0:
            release()  # slow is not down
            raise deadline.DeadlineExceeded(f"the {store} call outlived the request's budget") from exc
        if is_connection_error(exc):
            down = StoreDown(store, first_line(exc))
            if breaker is not None:
                breaker.failed(down.reason)
            raise down from exc
        release()  # not an outage (maybe not even the store's doing)
        raise
    except BaseException:
        release()
        raise
    else:
        if breaker is not None:
            breaker.succeeded()
