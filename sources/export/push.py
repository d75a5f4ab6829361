"""Apply events the API just wrote to Mongo to the offline feature tables, as export would.

The API's background pusher (api/write_pusher.py) writes a group of mutations' events to Mongo
(the system of record) and then calls ``apply_events``: in one transaction it lands the very
raw rows the next ``marquee export`` would land (same keys, so that export skips them), with
one multi-row insert per raw table, and recomputes the affected entities' feature rows with the
export's own SQL, once per feature table for all the group's users and movies. It returns the
newest feature row of each changed entity, ready for the online store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, text

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
            _recompute(conn, features.USER_REVIEWS, {(e.user_id, e.ts) for e in ratings}, out)
            _recompute(conn, features.MOVIE_REVIEWS, {(e.movie_id, e.ts) for e in ratings}, out)
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
            _recompute(conn, features.USER_PLAYBACK, {(e.user_id, e.ts) for e in plays}, out)
    return out


def _recompute(
    conn: Connection,
    feature: features.FeatureSql,
    changed: set[tuple[int, datetime]],
    out: dict[str, list[dict[str, Any]]],
) -> None:
    """Recompute ``feature`` for the ``changed`` (entity, time) pairs only, and add their newest rows to ``out``."""
    features.create_affected(conn, feature.entity)
    conn.execute(text(f"DELETE FROM _affected_{feature.entity}"))  # what an earlier feature of this group marked
    pairs = ", ".join(f"({int(key)}, CAST('{ts.isoformat()}' AS timestamptz))" for key, ts in sorted(changed))
    features.mark_affected(conn, feature.entity, f"SELECT * FROM (VALUES {pairs}) v")
    features.recompute(conn, feature, features.POSTGRES_FEW)
    rows = conn.execute(
        text(
            f"SELECT DISTINCT ON ({feature.entity}) * FROM {feature.table} WHERE {feature.entity} = ANY(:keys) "
            f"ORDER BY {feature.entity}, event_timestamp DESC"
        ),
        {"keys": sorted({key for key, _ in changed})},
    )
    out[feature.table] = [dict(row) for row in rows.mappings()]
