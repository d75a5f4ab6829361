"""Apply events the API just wrote to Mongo to the offline feature tables, as export would.

The API's background pusher (api/write_pusher.py) writes a group of mutations' events to Mongo
(the system of record) and then calls ``apply_events``: in one transaction it lands the very
raw rows the next ``marquee export`` would land (same keys, so that export skips them), with
one multi-row insert per raw table, and recomputes the affected entities' feature rows with the
export's own SQL definitions, in one statement per feature table for all the group's users and
movies (``features.upsert_newest``: events are only added here), which also returns the newest
feature row of each changed entity, ready for the online store. So a group costs five
statements (two landings, three recomputes) in one transaction, whatever its size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import text

from sources.export import features
from sources.stores.clients import Stores


@dataclass(frozen=True)
class Event:
    kind: Literal["rating", "playback"]
    record_id: str  # the review's _id or the session's session_id in Mongo
    user_id: int
    movie_id: int
    ts: datetime
    value: float  # stars for a rating, seconds for a playback
    device: str | None = None
    buffer_rate: float = 0.0
    errors: int = 0


def apply_events(stores: Stores, events: Sequence[Event]) -> dict[str, list[dict[str, Any]]]:
    """Land a group of events and recompute their entities' features once for the whole group;
    feature table → the newest row of each changed entity (one per user or movie)."""
    ratings = [e for e in events if e.kind == "rating"]
    plays = [e for e in events if e.kind != "rating"]
    out: dict[str, list[dict[str, Any]]] = {}
    with stores.pg.begin() as conn:
        if ratings:
            conn.execute(
                text(
                    "INSERT INTO raw_reviews (review_id, user_id, movie_id, rating, ts) "
                    "VALUES (:id, :u, :m, :v, :ts) ON CONFLICT DO NOTHING"
                ),
                [{"id": e.record_id, "u": e.user_id, "m": e.movie_id, "v": e.value, "ts": e.ts} for e in ratings],
            )
            out[features.USER_REVIEWS.table] = features.upsert_newest(
                conn, features.USER_REVIEWS, _earliest((e.user_id, e.ts) for e in ratings)
            )
            out[features.MOVIE_REVIEWS.table] = features.upsert_newest(
                conn, features.MOVIE_REVIEWS, _earliest((e.movie_id, e.ts) for e in ratings)
            )
        if plays:
            conn.execute(
                text(
                    "INSERT INTO raw_playback_sessions "
                    "(session_id, user_id, movie_id, ts, duration_s, device, buffer_rate, errors) "
                    "VALUES (:id, :u, :m, :ts, :v, :d, :b, :e) ON CONFLICT DO NOTHING"
                ),
                [{"id": e.record_id, "u": e.user_id, "m": e.movie_id, "ts": e.ts, "v": e.value, "d": e.device,
                  "b": e.buffer_rate, "e": e.errors} for e in plays],
            )  # fmt: skip
            out[features.USER_PLAYBACK.table] = features.upsert_newest(
                conn, features.USER_PLAYBACK, _earliest((e.user_id, e.ts) for e in plays)
            )
    return out


def _earliest(pairs: Iterable[tuple[int, datetime]]) -> dict[int, datetime]:
    """entity → its earliest time among ``pairs``."""
    out: dict[int, datetime] = {}
    for key, ts in pairs:
        if key not in out or ts < out[key]:
            out[key] = ts
    return out
