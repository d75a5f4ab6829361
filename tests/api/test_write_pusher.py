"""The write path at a service's rate (api/mutation_batcher.py, api/write_pusher.py,
api/queries/writes.py): mutations arriving together logged by one insert, their events
written and pushed in groups (one SQL recompute for the group), none lost when the process
stops in the middle of a group, and the per-request and per-poll reads of the mutation log
going through its indexes.

Real stores and the real Feast online store; users 905-906 are ones no other test asserts on,
and everything written is undone at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
import pymongo
import pytest
from pymongo import monitoring
from sqlalchemy import text

from api.mutation_batcher import Logged, MutationBatcher, UnknownSubject
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
        writes.accept_one(stores.mongo, writes.RatingInput(u, m, 1 + m % 5, f"pusher-{u}-{m}"))
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
    again = writes.accept_one(
        stores.mongo, writes.RatingInput(USERS[0], MOVIES[0], 1 + MOVIES[0] % 5, f"pusher-{USERS[0]}-{MOVIES[0]}")
    )
    assert again.replayed and again.written == accepted[0].written


def test_a_group_lingers_to_gather_the_mutations_that_follow(
    stores: Stores, feature_store: FeatureStore, undo: datetime
) -> None:
    """With ``linger_s``, the push thread lets a group gather after its first mutation: three
    mutations acknowledged 50 ms apart go as one group, pushed no sooner than the linger after
    the first (without it, the first would go alone at once)."""
    linger = 1.0
    counting = CountingPusher(FeastUserFeatures(stores, feature_store))
    pusher = WritePusher(stores, lambda: counting, linger_s=linger).start()
    try:
        accepted = _accept_all(stores)[:3]
        done = []
        for a in accepted:
            done.append(pusher.submit(a))
            time.sleep(0.05)
        assert all(d.result(timeout=30) is True for d in done)
    finally:
        pusher.close()
    assert counting.groups == [3], "one group: the two that followed within the linger joined the first"
    assert max(pusher.delays) >= linger, "the first waited for the others"


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
            writes.accept_one(stores.mongo, writes.PlaybackInput(u, m, 60 + m, "tv", f"pusher-play-{u}-{m}"))
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


class InsertCounter(monitoring.CommandListener):
    """Counts the ``insert`` commands a client sends (pymongo's command monitoring)."""

    def __init__(self) -> None:
        self.inserts: list[int] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.inserts.append(len(event.command.get("documents", [])))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_group_is_logged_by_one_insert_each_mutation_with_its_own_outcome(stores: Stores, undo: datetime) -> None:
    """``accept_many``: one insert for the group; a new id is logged, a done one replays, an id
    reused for another input is refused, two of one id in the group share one record."""
    u0, u1 = USERS
    first = writes.accept_one(stores.mongo, writes.RatingInput(u0, MOVIES[0], 4, "group-done"))
    writes.mark_done(stores.mongo, [first.record], pushed=True)
    group: list[writes.MutationInput] = [
        writes.RatingInput(u0, MOVIES[1], 3, "group-new"),
        writes.RatingInput(u0, MOVIES[0], 4, "group-done"),  # a retry of a finished mutation
        writes.RatingInput(u1, MOVIES[2], 5, "group-done"),  # the same id, another input
        writes.PlaybackInput(u1, MOVIES[3], 90, "tv", "group-twice"),
        writes.PlaybackInput(u1, MOVIES[3], 90, "tv", "group-twice"),  # sent twice at once
        writes.RatingInput(u1, MOVIES[4], 2),  # no client id: logged under an id of its own
    ]
    counter = InsertCounter()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        stores.endpoints.mongo_uri, tz_aware=True, event_listeners=[counter]
    )
    try:
        outcomes = writes.accept_many(client[stores.mongo.name], group)
    finally:
        client.close()
    assert counter.inserts == [len(group)], "one insert command carrying the whole group"
    new, replay, conflict, twice_a, twice_b, auto = outcomes
    assert isinstance(new, writes.Accepted) and not new.replayed and new.record["status"] == "pending"
    assert isinstance(replay, writes.Accepted) and replay.replayed and replay.written == first.written
    assert isinstance(conflict, writes.MutationIdConflict)
    assert isinstance(twice_a, writes.Accepted) and isinstance(twice_b, writes.Accepted)
    assert twice_a.written == twice_b.written and twice_a.record["_id"] == twice_b.record["_id"] == "group-twice"
    assert isinstance(auto, writes.Accepted) and str(auto.record["_id"]).startswith("auto:")
    logged = {d["_id"] for d in stores.mongo[writes.MUTATIONS].find({"user_id": {"$in": list(USERS)}}, {"_id": 1})}
    assert logged == {"group-done", "group-new", "group-twice", auto.record["_id"]}


def test_concurrent_mutations_are_checked_and_logged_together(stores: Stores, undo: datetime) -> None:
    """``MutationBatcher``: mutations arriving together share one group; an unknown user or
    movie fails only its own mutation, and nothing is logged for it."""
    batcher = MutationBatcher(stores)
    mutations: list[writes.MutationInput] = [
        writes.RatingInput(u, m, 1 + m % 5, f"together-{u}-{m}") for u in USERS for m in MOVIES
    ]
    mutations += [writes.RatingInput(999_999, MOVIES[0], 3, "together-no-user"),
                  writes.PlaybackInput(USERS[0], 999_999, 60, "tv", "together-no-movie")]  # fmt: skip

    async def log_all() -> list[Logged | BaseException]:
        return await asyncio.gather(*(batcher.log(m) for m in mutations), return_exceptions=True)

    outcomes = asyncio.run(log_all())
    *known, no_user, no_movie = outcomes
    assert isinstance(no_user, UnknownSubject) and (no_user.kind, no_user.subject_id) == ("user", 999_999)
    assert isinstance(no_movie, UnknownSubject) and (no_movie.kind, no_movie.subject_id) == ("movie", 999_999)
    assert all(isinstance(o, Logged) and o.user.id == o.accepted.written.user_id for o in known)
    assert sum(size * n for size, n in batcher.batch_sizes.items()) == len(mutations)
    assert max(batcher.batch_sizes) > 1, f"mutations arriving together were not grouped: {batcher.batch_sizes}"
    logged = list(stores.mongo[writes.MUTATIONS].find({"_id": {"$regex": "^together-"}}, {"_id": 1}))
    assert len(logged) == len(known)
