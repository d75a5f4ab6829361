"""Ranked lists shared by every worker and kept across restarts, in PostgreSQL.

``SharedLists`` is the second level under a worker's kept lists (kept_lists.py): a list missing
from memory is looked up in ``recommendation_lists`` (api/queries/lists.py) before it is ranked,
and a list ranked (on a request, in the background, or by ``marquee recommend --all``) is
written there, so N workers rank a user once, and a restarted worker ranks nothing it finds.

A row counts only when it was ranked by the model now served (``model_version``), within
``ttl_s``, and after the last change of its user this worker knows of. A user's rows are
deleted when they change: by the change feed's poll in every worker (``forget``, one DELETE per
poll for all the users it saw), which also catches a list written by a ranking that began
before the change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from api.queries import lists
from api.queries.lists import Item

#: (user, exclude_seen) → (first, items, made at)
Found = dict[tuple[int, bool], tuple[int, tuple[Item, ...], datetime]]
FORGET_HORIZON_S = 300.0


class SharedLists:
    """``read``/``write``/``forget`` lists in the shared table for the model ``version``."""

    def __init__(self, pg: Engine, version: str, *, ttl_s: float,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:  # fmt: skip
        self.pg, self.version, self.ttl_s, self._wall = pg, version, ttl_s, wall
        self._changed: dict[int, datetime] = {}  # user → when this worker last learnt they changed
        self._lock = threading.Lock()
        self.found = self.written = 0

    def read(self, keys: Sequence[tuple[int, bool]]) -> Found:
        now = self._wall()
        rows = lists.read_lists(
            self.pg, keys, model_version=self.version, made_after=now - timedelta(seconds=self.ttl_s)
        )
        with self._lock:
            fresh = {k: row for k, row in rows.items() if row[2] > self._changed.get(k[0], row[2] - timedelta(1))}
        self.found += len(fresh)
        return fresh

    def write(self, rows: Sequence[tuple[int, bool, int, str, Sequence[Item]]], made_at: datetime) -> None:
        mine = [row for row in rows if row[3] == self.version]
        lists.write_lists(self.pg, mine, made_at)
        self.written += len(mine)

    def changed(self, user_id: int) -> None:
        """This worker learnt that ``user_id`` changed: rows made before now no longer count here."""
        now = self._wall()
        with self._lock:
            self._changed[user_id] = now
            if len(self._changed) > 100_000:
                horizon = now - timedelta(seconds=FORGET_HORIZON_S)
                self._changed = {u: t for u, t in self._changed.items() if t > horizon}

    def forget(self, user_ids: Collection[int]) -> None:
        """Delete these users' rows (one statement)."""
        for user_id in user_ids:
            self.changed(user_id)
        lists.forget_lists(self.pg, user_ids)


def made_at(started_monotonic: float) -> datetime:
    """The wall time of a moment taken with ``time.monotonic``."""
    return datetime.now(UTC) - timedelta(seconds=time.monotonic() - started_monotonic)
