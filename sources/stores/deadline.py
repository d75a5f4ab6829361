"""A time budget for one unit of work (an API request), honoured by every store call inside it.

``with within(seconds): …`` sets the budget in a context variable, which follows the work into
the worker threads the API runs store calls in (anyio copies the context). Inside it:

- ``check()`` raises ``DeadlineExceeded`` once the budget is spent or the work was cancelled
  (the client went away), so a thread between two store calls stops at the next one;
- ``remaining()`` is what is left, for the stores' own timeouts: Mongo gets it through
  ``pymongo.timeout`` (sent as ``maxTimeMS``), the graph as its query timeout.

Outside ``within`` there is no budget: jobs and background threads run unbounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from sources.errors import MarqueeError


class DeadlineExceeded(MarqueeError):
    """The work's time budget is spent (or the work was cancelled); nothing more is started."""


@dataclass
class Budget:
    seconds: float
    deadline: float = field(init=False)
    #: set when the result is no longer wanted (the client disconnected)
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


_BUDGET: ContextVar[Budget | None] = ContextVar("marquee_budget", default=None)


@contextmanager
def within(seconds: float) -> Iterator[Budget]:
    """Run the block (and what it hands to threads or tasks) under a budget of ``seconds``."""
    budget = Budget(seconds)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


@contextmanager
def unbounded() -> Iterator[None]:
    """Run the block with no budget (work shared by several requests, e.g. a batch)."""
    token = _BUDGET.set(None)
    try:
        yield
    finally:
        _BUDGET.reset(token)


def remaining() -> float | None:
    """Seconds left in the current budget; None when there is none."""
    budget = _BUDGET.get()
    return None if budget is None else budget.remaining()


def check() -> float | None:
    """Seconds left (None: no budget); raises ``DeadlineExceeded`` when none are left."""
    budget = _BUDGET.get()
    if budget is None:
        return None
    if budget.cancelled:
        raise DeadlineExceeded("the request was cancelled")
    left = budget.remaining()
    if left <= 0:
        raise DeadlineExceeded(f"the request took longer than its {budget.seconds:g} s")
    return left
