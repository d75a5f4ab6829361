"""The ``recommendation_lists`` table (sources/tables/serving.py): read, write and forget ranked
lists shared by every worker. One statement per call, whatever the number of users."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

#: (movie id, score, rank, explanation)
Item = tuple[int, float, int, str]


def read_lists(
    pg: Engine, keys: Sequence[tuple[int, bool]], *, model_version: str, made_after: datetime
) -> dict[tuple[int, bool], tuple[int, tuple[Item, ...], datetime]]:
    """(user, exclude_seen) → (first, items, made at) for the lists of ``keys`` ranked by
    ``model_version`` after ``made_after``."""
    if not keys:
        return {}
    wanted = set(keys)
    out: dict[tuple[int, bool], tuple[int, tuple[Item, ...], datetime]] = {}
    with pg.connect() as conn:
        found = conn.execute(
            text(
                "SELECT user_id, exclude_seen, first, items, made_at FROM recommendation_lists "
                "WHERE user_id = ANY(:users) AND model_version = :v AND made_at > :after"
            ),
            {"users": sorted({u for u, _ in keys}), "v": model_version, "after": made_after},
        )
        for user_id, exclude_seen, first, items, made_at in found:
            key = (int(user_id), bool(exclude_seen))
            if key in wanted:
                out[key] = (int(first), tuple((int(m), float(s), int(r), str(e)) for m, s, r, e in items), made_at)
    return out


def write_lists(pg: Engine, rows: Sequence[tuple[int, bool, int, str, Sequence[Item]]], made_at: datetime) -> None:
    """Upsert (user, exclude_seen, first, model version, items) rows made at ``made_at``; a row
    already made later is kept (it read newer state)."""
    if not rows:
        return
    params: list[dict[str, Any]] = [
        {"u": u, "x": x, "f": f, "v": v, "i": json.dumps([list(item) for item in items]), "t": made_at}
        for u, x, f, v, items in rows
    ]
    with pg.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO recommendation_lists (user_id, exclude_seen, first, model_version, items, made_at) "
                "VALUES (:u, :x, :f, :v, CAST(:i AS jsonb), :t) ON CONFLICT (user_id, exclude_seen) DO UPDATE SET "
                "first = EXCLUDED.first, model_version = EXCLUDED.model_version, items = EXCLUDED.items, "
                "made_at = EXCLUDED.made_at WHERE recommendation_lists.made_at <= EXCLUDED.made_at"
            ),
            params,
        )


def forget_lists(pg: Engine, user_ids: Collection[int]) -> None:
    """Delete these users' lists (they changed)."""
    if user_ids:
        with pg.begin() as conn:
            conn.execute(text("DELETE FROM recommendation_lists WHERE user_id = ANY(:u)"), {"u": sorted(user_ids)})


def users_with_lists(pg: Engine, *, model_version: str, made_after: datetime) -> set[int]:
    """Users whose (exclude_seen) list by ``model_version`` was made after ``made_after``
    (what a resumed ``marquee recommend --all`` skips)."""
    with pg.connect() as conn:
        found = conn.execute(
            text("SELECT user_id FROM recommendation_lists WHERE exclude_seen AND model_version = :v AND made_at > :t"),
            {"v": model_version, "t": made_after},
        )
        return {int(row[0]) for row in found}
