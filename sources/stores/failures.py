"""One error for "a store did not answer", whichever client noticed.

``with store_call("mongo"): …`` turns a client library's connection error (psycopg through
SQLAlchemy, pymongo, redis for FalkorDB, the neo4j driver, plain ``OSError``) into
``StoreDown("mongo")``; any other error passes through untouched, so a bug is never mistaken
for an outage. The GraphQL layer maps ``StoreDown`` to the code ``STORE_UNAVAILABLE``, shows
only its message and logs its ``reason`` under the request's id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sources.errors import MarqueeError, StoreUnavailable, first_line


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
def store_call(store: str) -> Iterator[None]:
    """Translate "store did not answer" errors from any client into ``StoreDown(store)``."""
    try:
        yield
    except StoreDown:
        raise
    except Exception as exc:
        if is_connection_error(exc):
            raise StoreDown(store, first_line(exc)) from exc
        raise
