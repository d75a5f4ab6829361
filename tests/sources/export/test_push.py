"""The API's grouped push (sources/export/push.py): one upsert per feature table leaves exactly
the rows the export's delete-and-recompute would, including rows after an event dropped into
the middle of an entity's history, and returns each changed entity's newest row.

Users 907-908 and movies 1320-1322 are ones no other test asserts on; everything is undone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from sources.export import features
from sources.export.push import Event, apply_events
from sources.export.run import export
from sources.ingest import IngestReport
from sources.stores.clients import Stores

USERS = (907, 908)
MOVIES = (1320, 1321, 1322)
CHECKED = ((features.USER_REVIEWS, USERS), (features.MOVIE_REVIEWS, MOVIES), (features.USER_PLAYBACK, USERS))


def _rows(stores: Stores, feature: features.FeatureSql, keys: tuple[int, ...]) -> list[tuple[object, ...]]:
    """The feature rows of ``keys``, created_timestamp left out (each write sets its own)."""
    columns = ", ".join((feature.entity, "event_timestamp", *feature.columns))
    with stores.pg.connect() as conn:
        found = conn.execute(
            text(f"SELECT {columns} FROM {feature.table} WHERE {feature.entity} = ANY(:k) ORDER BY 1, 2"),
            {"k": list(keys)},
        )
        return [tuple(r) for r in found]


def _recompute_all(stores: Stores, since: datetime) -> None:
    """The export's own delete-and-recompute for every checked entity from ``since``."""
    with stores.pg.begin() as conn:
        for feature, keys in CHECKED:
            features.create_affected(conn, feature.entity)
            conn.execute(text(f"DELETE FROM _affected_{feature.entity}"))
            values = ", ".join(f"({k}, CAST('{since.isoformat()}' AS timestamptz))" for k in keys)
            features.mark_affected(conn, feature.entity, f"SELECT * FROM (VALUES {values}) v")
            features.recompute(conn, feature)


@pytest.fixture
def events(stores: Stores, loaded: IngestReport) -> Iterator[list[Event]]:
    export(stores, quiet=True)
    with stores.pg.connect() as conn:
        first, last = conn.execute(
            text("SELECT min(ts), max(ts) FROM raw_reviews WHERE user_id = ANY(:u)"), {"u": list(USERS)}
        ).one()
    middle = first + (last - first) / 2  # earlier than rows both users and movies already have
    made = [
        Event("rating", f"push-test-{u}-{m}-{i}", u, m, at, 1.0 + (u + m) % 5)
        for i, at in enumerate((middle, last + timedelta(days=1)))
        for u in USERS
        for m in MOVIES
    ]
    made += [Event("playback", f"push-test-play-{u}-{i}", u, MOVIES[0], at, 600.0 + i, "tv")
             for i, at in enumerate((middle, last + timedelta(days=2))) for u in USERS]  # fmt: skip
    yield made
    ids = [e.record_id for e in made]
    with stores.pg.begin() as conn:
        conn.execute(text("DELETE FROM raw_reviews WHERE review_id = ANY(:ids)"), {"ids": ids})
        conn.execute(text("DELETE FROM raw_playback_sessions WHERE session_id = ANY(:ids)"), {"ids": ids})
    _recompute_all(stores, first)


def test_a_grouped_push_leaves_the_rows_a_full_recompute_would(stores: Stores, events: list[Event]) -> None:
    before = {feature.table: _rows(stores, feature, keys) for feature, keys in CHECKED}
    newest = apply_events(stores, events)
    pushed = {feature.table: _rows(stores, feature, keys) for feature, keys in CHECKED}
    assert all(len(pushed[t]) > len(before[t]) for t in pushed), "the events added rows"
    _recompute_all(stores, min(e.ts for e in events))
    assert {feature.table: _rows(stores, feature, keys) for feature, keys in CHECKED} == pushed
    for feature, keys in CHECKED:
        returned = {row[feature.entity]: row["event_timestamp"] for row in newest[feature.table]}
        expected = {key: max(ts for k, ts, *_ in pushed[feature.table] if k == key) for key in keys}
        assert returned == expected, feature.table
    # pushed again (a retried group): nothing changes
    apply_events(stores, events)
    assert {feature.table: _rows(stores, feature, keys) for feature, keys in CHECKED} == pushed
