"""The write path at a service's rate (api/write_pusher.py, api/queries/writes.py): mutations
logged by one insert, their events written and pushed in groups (one SQL recompute for the
group), none lost when the process stops in the middle of a group, and the per-request and
per-poll reads of the mutation log going through its indexes.

Real stores and the real Feast online store; users 905-906 are ones no other test asserts on,
and everything written is undone at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
from sqlalchemy import text

from api.queries import writes
from api.queries.feast_features import VIEW_OF_TABLE, FeastUserFeatures
from api.queries.features import FeatureEvent
from api.recommendations.api_ratings import ApiRatings
from api.write_pusher import WritePusher
from sources.export import features
from sources.stores import mongo
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore

USERS = (905, 906)
MOVIES = range(1300, 1312)  # each user rates each once: 24 mutations


class CountingPusher:
    """Feast's grouped push, counted (how many groups, how many events in each)."""

    def __init__(self, feast: FeastUserFeatures) -> None:
        self.feast, self.groups = feast, []

    def push(self, event: FeatureEvent) -> bool:
        self.groups.append(1)
        return self.feast.push(event)

    def push_many(self, events: Sequence[FeatureEvent]) -> bool:
        self.groups.append(len(events))
        return self.feast.push_many(events)


@pytest.fixture
def undo(stores: Stores, feature_store: FeatureStore) -> Iterator[datetime]:
    started = datetime.now(UTC) - timedelta(seconds=1)
    yield started
    db = stores.mongo
    mongo.live(db, "reviews").delete_many({"user_id": {"$in": list(USERS)}, "ts": {"$gte": started}})
    db[writes.MUTATIONS].delete_many({"user_id": {"$in": list(USERS)}})
    since = {"users": list(USERS), "t": started}
    with stores.pg.begin() as conn:
        conn.execute(text("DELETE FROM raw_reviews WHERE user_id = ANY(:users) AND ts >= :t"), since)
        for entity, keys in (("user_id", USERS), ("movie_id", MOVIES)):
            features.create_affected(conn, entity)
            values = ", ".join(f"({k}, CAST('{started.isoformat()}' AS timestamptz))" for k in keys)
            features.mark_affected(conn, entity, f"SELECT * FROM (VALUES {values}) v")
        for feature in (features.USER_REVIEWS, features.MOVIE_REVIEWS):
            features.recompute(conn, feature)
    for table, entity, keys in (("feat_user_reviews", "user_id", USERS), ("feat_movie_reviews", "movie_id", MOVIES)):
        with stores.pg.connect() as conn:
            rows = conn.execute(
                text(f"SELECT DISTINCT ON ({entity}) * FROM {table} WHERE {entity} = ANY(:k) "
                     f"ORDER BY {entity}, event_timestamp DESC"), {"k": list(keys)},
            ).mappings().all()  # fmt: skip
        if rows:
            feature_store.write_to_online_store(VIEW_OF_TABLE[table], pd.DataFrame([dict(r) for r in rows]))


def _accept_all(stores: Stores) -> list[writes.Accepted]:
    return [
        writes.accept_rating(stores.mongo, user_id=u, movie_id=m, rating=1 + m % 5, client_id=f"pusher-{u}-{m}")
        for u in USERS
        for m in MOVIES
    ]


def _online_reviews(store: FeatureStore, user_id: int) -> int:
    found = store.get_online_features(features=["user_reviews:review_count"], entity_rows=[{"user_id": user_id}])
    return int(found.to_dict()["review_count"][0] or 0)


def _in_mongo(stores: Stores, user_id: int) -> list[str]:
    return sorted(d["_id"] for d in mongo.live(stores.mongo, "reviews").find({"user_id": user_id}, {"_id": 1}))


def test_pushes_are_grouped_one_recompute_per_group(
    stores: Stores, feature_store: FeatureStore, undo: datetime
) -> None:
    before = {u: (_online_reviews(feature_store, u), len(_in_mongo(stores, u))) for u in USERS}
    counting = CountingPusher(FeastUserFeatures(stores, feature_store))
    changed: list[int] = []
    pusher = WritePusher(stores, lambda: counting, on_pushed=changed.append)
    accepted = _accept_all(stores)
    assert all(not a.replayed and a.record["status"] == "pending" for a in accepted)
    done = [pusher.submit(a) for a in accepted]
    assert pusher.run_once() == len(accepted) and pusher.run_once() == 0
    assert counting.groups == [len(accepted)], "one grouped push for everything queued"
    assert all(d.result() is True for d in done) and sorted(changed) == list(USERS)
    records = list(stores.mongo[writes.MUTATIONS].find({"user_id": {"$in": list(USERS)}}))
    assert len(records) == len(accepted) and all(r["status"] == "done" and r["pushed"] is True for r in records)
    for user_id in USERS:
        n_online, n_mongo = before[user_id]
        assert len(_in_mongo(stores, user_id)) == n_mongo + len(MOVIES)
        assert _online_reviews(feature_store, user_id) == n_online + len(MOVIES)
    # A replay of a finished mutation is answered from its record: nothing to write again.
    again = writes.accept_rating(stores.mongo, user_id=USERS[0], movie_id=MOVIES[0], rating=1 + MOVIES[0] % 5,
                                 client_id=f"pusher-{USERS[0]}-{MOVIES[0]}")  # fmt: skip
    assert again.replayed and again.written == accepted[0].written


def test_none_lost_when_the_process_stops_mid_group(
    stores: Stores, feature_store: FeatureStore, undo: datetime
) -> None:
    """The process stops after half a group's events reached Mongo and before any push or mark
    (all acknowledged): the repair at the next start (api/serving.py) finishes every one, once."""
    before = {u: (_online_reviews(feature_store, u), len(_in_mongo(stores, u))) for u in USERS}
    accepted = _accept_all(stores)
    writes.write_events(stores.mongo, accepted[: len(accepted) // 2])  # then the process is gone
    report = writes.repair(stores.mongo, FeastUserFeatures(stores, feature_store).push)
    assert report.finished == len(accepted) and report.pushed == len(accepted) and report.failed == 0
    for user_id in USERS:
        n_online, n_mongo = before[user_id]
        reviews = _in_mongo(stores, user_id)
        assert len(reviews) == len(set(reviews)) == n_mongo + len(MOVIES), "each event written exactly once"
        assert _online_reviews(feature_store, user_id) == n_online + len(MOVIES)
    assert writes.repair(stores.mongo, FeastUserFeatures(stores, feature_store).push).pushed == 0


def _plan(stores: Stores, query: dict[str, Any]) -> str:
    return str(stores.mongo.command("explain", {"find": writes.MUTATIONS, "filter": query}))


def test_history_and_change_feed_read_only_through_indexes(stores: Stores, undo: datetime) -> None:
    """A user's API ratings and the change feed's poll are indexed reads of the log (not a scan,
    which costs what the whole log holds), and a kept user costs no read at all."""
    writes.ensure_indexes(stores.mongo)
    accepted = _accept_all(stores)
    user_plan = _plan(stores, {"user_id": USERS[0], "kind": "rateMovie"})
    poll_plan = _plan(stores, {"at_ms": {"$gte": writes.epoch_ms(undo)}})
    assert "USING INDEX idx_mutations_user_id" in user_plan or "IXSCAN" in user_plan, user_plan
    assert "USING INDEX idx_mutations_at_ms" in poll_plan or "IXSCAN" in poll_plan, poll_plan
    changes = writes.changes_since(stores.mongo, writes.epoch_ms(undo))
    mine = [c for c in changes if c.user_id in USERS]
    assert len(mine) == len(accepted) and all(c.rating is not None for c in mine)

    api = ApiRatings(stores.mongo)
    first = api.read([USERS[0]])[USERS[0]]
    assert sorted(first) == list(MOVIES) and api.reads == 1
    later = accepted[0].written.rated_at + timedelta(seconds=5)
    api.add(USERS[0], 1, later, 4.0)  # acknowledged or polled: counted, no read
    assert api.read([USERS[0]])[USERS[0]][1] == (later.timestamp(), 4.0) and api.reads == 1


class FailingOnce(CountingPusher):
    """Feast's grouped push, failing its first call (the feature store blinked)."""

    def push_many(self, events: Sequence[FeatureEvent]) -> bool:
        if not self.groups:
            self.groups.append(0)
            raise RuntimeError("online store away")
        return super().push_many(events)


def test_a_failed_group_is_tried_again(stores: Stores, feature_store: FeatureStore, undo: datetime) -> None:
    failing = FailingOnce(FeastUserFeatures(stores, feature_store))
    pusher = WritePusher(stores, lambda: failing)
    accepted = _accept_all(stores)[:4]
    done = [pusher.submit(a) for a in accepted]
    assert pusher.run_once() == 4 and pusher.failing == "online store away" and pusher.pending == 4
    assert not any(d.done() for d in done)
    assert pusher.run_once() == 4 and pusher.failing is None and pusher.pending == 0
    assert all(d.result() is True for d in done) and failing.groups == [0, 4]
    ids = {a.record["_id"] for a in accepted}
    records = [r for r in stores.mongo[writes.MUTATIONS].find({"user_id": {"$in": list(USERS)}}) if r["_id"] in ids]
    assert len(records) == 4 and all(r["pushed"] is True for r in records)


def test_a_groups_sessions_are_appended_once_per_user_in_one_bulk_write(stores: Stores, undo: datetime) -> None:
    """Sessions of several users in one group: each appended exactly once, also when the group
    is written again (a retry), and a user without a playback document gets one."""
    playback = mongo.live(stores.mongo, "playback_logs")
    kept = {u: playback.find_one({"_id": u}) for u in USERS}
    playback.delete_one({"_id": USERS[1]})  # a user who never played anything yet
    try:
        accepted = [
            writes.accept_playback(
                stores.mongo,
                user_id=u,
                movie_id=m,
                duration_seconds=60 + m,
                device="tv",
                client_id=f"pusher-play-{u}-{m}",
            )
            for u in USERS
            for m in MOVIES[:3]
        ]
        writes.write_events(stores.mongo, accepted[:2])  # the process stopped after part of the group
        writes.write_events(stores.mongo, accepted)
        writes.write_events(stores.mongo, accepted)
        for user_id in USERS:
            doc = playback.find_one({"_id": user_id})
            assert doc is not None
            expected = {a.written.session_id for a in accepted if a.written.user_id == user_id}
            mine = [s["session_id"] for s in doc["sessions"] if s["session_id"] in expected]
            assert sorted(mine) == sorted(expected), "each session exactly once"
            old = len(kept[user_id]["sessions"]) if user_id == USERS[0] and kept[user_id] else 0
            assert len(doc["sessions"]) == old + len(expected)
    finally:
        for user_id, doc in kept.items():
            if doc is None:
                playback.delete_one({"_id": user_id})
            else:
                playback.replace_one({"_id": user_id}, doc, upsert=True)
