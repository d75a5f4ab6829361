"""One error for "a store did not answer", whichever client noticed.

``with store_call("mongo"): …`` turns a client library's connection error (psycopg through
SQLAlchemy, pymongo, redis for FalkorDB, the neo4j driver, plain ``OSError``) into
``StoreDown("mongo")``; any other error passes through untouched, so a bug is never mistaken
for an outage. The GraphQL layer maps ``StoreDown`` to the code ``STORE_UNAVAILABLE``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sources.errors import MarqueeError, StoreUnavailable, first_line


class StoreDown(MarqueeError):
    """``store`` ("postgres", "mongo", "graph", "feature_store", …) did not answer."""

    def __init__(self, store: str, reason: str = "") -> None:
        tail = f": {reason}" if reason else ""
        super().__init__(f"the {store} store is unavailable{tail}")
        self.store = store


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
