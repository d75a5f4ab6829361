"""Errors Marquee reports to people: each carries a one-line message naming the problem.

    MarqueeError
    ├── StoreUnavailable    a configured or embedded store does not answer
    ├── DatasetError        dataset files missing, corrupt or of the wrong shape
    └── IngestError         a load failed; nothing of it was made visible

Library errors are translated at the boundary with ``raise XError(...) from exc`` so the
command line can print one line (no traceback unless ``--debug``) and never a password.
"""

from __future__ import annotations


class MarqueeError(Exception):
    """Base of every error Marquee explains to its user in one line."""


class StoreUnavailable(MarqueeError):
    def __init__(self, store: str, uri: str, reason: str) -> None:
        reason = " ".join(reason.split())[:300]  # driver messages span lines; keep one
        super().__init__(f"{store} at {uri} does not answer: {reason}")
        self.store = store


class DatasetError(MarqueeError):
    """The input data cannot be loaded as given."""


class IngestError(MarqueeError):
    """A load failed part-way; the stores keep what they held before it."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (the driver's, when SQLAlchemy wraps one): what a
    one-line report or log shows. Falls back to the error's type name."""
    exc = getattr(exc, "orig", None) or exc
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]
