"""A request's budget reaches PostgreSQL as ``statement_timeout`` on the API's read pool
(sources/stores/clients.py ``bound_statement``); outside a budget statements run unbounded."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from sources.stores import deadline
from sources.stores.clients import Stores


def _timeout(stores: Stores) -> str:
    with stores.pg_reads.connect() as conn:
        return str(conn.execute(text("SHOW statement_timeout")).scalar_one())


def test_a_statement_past_the_budget_is_cancelled_by_postgres(stores: Stores) -> None:
    started = time.monotonic()
    cancelled = pytest.raises(OperationalError, match="statement timeout")
    with deadline.within(0.5), cancelled, stores.pg_reads.connect() as conn:
        conn.execute(text("SELECT pg_sleep(5)"))
    assert time.monotonic() - started < 3.0  # the budget, rounded up to a whole second, not 5 s


def test_the_timeout_follows_the_budget_and_goes_away_outside_it(stores: Stores) -> None:
    stores.pg_reads.dispose()  # one connection, reused by every statement below
    with deadline.within(10):
        assert _timeout(stores) == "10s"
    with deadline.within(9.5):
        assert _timeout(stores) == "10s"  # within a second of the budget: no new SET
    with deadline.within(3):
        assert _timeout(stores) == "3s"
    assert _timeout(stores) == "0"  # a job's statement: unbounded again
    with stores.pg.connect() as conn:  # the transactional pool is never bounded
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "0"
