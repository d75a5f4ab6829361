"""Mutations' writes to Mongo, the system of record, idempotent per client mutation id.

A ``mutations`` collection holds one document per mutation (``_id``: the client mutation
id, or ``auto:<uuid>`` when none was sent): the input, the result, and ``status`` pending →
done. The record is written *before* the event with the event's final id and time in it,
and the event's ``_id`` is derived from it, so a retry after a crash at any point finishes
the same write instead of adding a second one; a replay of a finished mutation returns the
first result. The collection doubles as the log of what the API wrote since the stores
were loaded, which the fallback recommender reads instead of scanning ``reviews``.

Every record also carries its user (``user_id``) and its time as integer epoch milliseconds
(``at_ms``) at the top level, each indexed: the embedded Mongo server (nx-27017 0.8.1) answers
an equality or range on such a field through its index, but scans every document for a
dotted path, an ``$in``, an ``$or`` or a datetime range (measured: docs/performance.md). So a
user's API ratings (``api_ratings``) and the records since a moment (``changes_since``) cost
what they return, not what the log holds.

The API acknowledges a mutation once its record is in the log (``accept_many``: one
``insert_many`` for all the mutations that arrived together, a group commit), and a
background pusher (api/write_pusher.py) pushes a whole group of records and writes their
events at once (``write_events``). A finished record gets ``pushed: true`` once the event
reached the feature store (``mark_done`` or ``mark_pushed``). What a crash (or a failed push)
leaves behind, a record still pending or done but not pushed, is finished by ``repair`` when
the app starts (api/serving.py): the event is written if it is missing, the push is redone
(it is idempotent), and the record is marked. ``marquee export`` also re-reads the events of
records not pushed, whatever their time (sources/export/extract.py), so they reach the offline
tables even before a restart.

Only whole-document writes (``insert_one``/``replace_one``) are used: the embedded Mongo
server (nx-27017 0.8.1) stores a ``$set`` of a top-level datetime as a string and a
``$push`` of a sub-document as a JSON string (docs/embedded-stores.md), which would corrupt the data.
A playback append is a read-modify-replace guarded by ``updated_at`` (compare-and-set).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from api.queries.features import FeatureEvent
from sources.stores import mongo, mongo_append
from sources.stores.clients import Stores
from sources.stores.failures import StoreDown, store_call
from sources.stores.mongo import MUTATION_LOG as MUTATIONS

CAS_ATTEMPTS = 8
DUPLICATE_KEY = 11000  # Mongo's error code for an _id already taken
# Deterministic session ids for mutations that carry a client id (a replay makes the same id).
PLAYBACK_NAMESPACE = uuid.UUID("0c6f3c55-3f7e-4a5e-a7a8-7d7f0f5e9b21")

MongoDb = Database[dict[str, Any]]
log = logging.getLogger(__name__)
#: the mutation log's query for records whose event may not have reached the feature store
NOT_PUSHED: dict[str, Any] = {"pushed": {"$ne": True}}


class MutationIdConflict(Exception):
    """The client mutation id was already used for a different mutation or input."""


@dataclass(frozen=True)
class RatingWritten:
    review_id: str
    user_id: int
    movie_id: int
    rating: int
    rated_at: datetime
    #: the mutation log record's ``_id`` (not part of the stored result)
    log_id: str = field(default="", compare=False)


@dataclass(frozen=True)
class PlaybackWritten:
    session_id: str
    user_id: int
    movie_id: int
    duration_seconds: int
    device: str
    started_at: datetime
    log_id: str = field(default="", compare=False)


def _now() -> datetime:
    # Mongo keeps milliseconds; truncate so a replayed result equals the stored one.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _auto_id() -> str:
    """Log id for a mutation sent without a clientMutationId (logged all the same, never replayed)."""
    return f"auto:{uuid.uuid4()}"


def ensure_indexes(db: MongoDb) -> None:
    """The two indexes every per-request and per-poll read goes through (see the module docstring)."""
    db[MUTATIONS].create_index("user_id")  # a user's API ratings (api/recommendations/history.py)
    db[MUTATIONS].create_index("at_ms")  # the change feed (api/recommendations/kept_lists.py)


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(frozen=True)
class Change:
    """One logged mutation as the change feed sees it; ``rating`` is None for a playback."""

    user_id: int
    movie_id: int
    at: datetime
    rating: float | None
    at_ms: int


def _change(doc: dict[str, Any]) -> Change | None:
    inputs = doc.get("input") or {}
    if "user_id" not in inputs or "movie_id" not in inputs:
        return None
    rating = float(inputs["rating"]) if doc.get("kind") == "rateMovie" else None
    result = doc.get("result") or {}
    at = result.get("rated_at") or result.get("started_at") or doc["at"]
    return Change(int(inputs["user_id"]), int(inputs["movie_id"]), at, rating, int(doc.get("at_ms", 0)))


def api_ratings(db: MongoDb, user_ids: Sequence[int]) -> dict[int, dict[int, tuple[datetime, float]]]:
    """Ratings this API wrote for each of ``user_ids``: user → movie id → (time, rating), latest
    per movie; one indexed equality query per user (an ``$in`` would scan the whole log on the
    embedded server), so the cost follows these users' own records, not the log's size.

    Pending records count too: their review may not be in ``reviews`` yet (the pusher writes it
    within a second), and for "has the user seen it" a false positive is the safe side.
    """
    out: dict[int, dict[int, tuple[datetime, float]]] = {int(u): {} for u in user_ids}
    for user_id, mine in out.items():
        for doc in db[MUTATIONS].find({"user_id": user_id, "kind": "rateMovie"}, {"input": 1, "result": 1}):
            inputs = doc["input"]
            movie_id, rating = int(inputs["movie_id"]), float(inputs["rating"])
            at = doc["result"]["rated_at"]
            if movie_id not in mine or at >= mine[movie_id][0]:
                mine[movie_id] = (at, rating)
    return out


def changes_since(db: MongoDb, since_ms: int) -> list[Change]:
    """The mutations logged at or after ``since_ms`` (epoch ms; any worker's, any kind), oldest
    first: an indexed range on ``at_ms``, so a poll reads only what is new."""
    docs = db[MUTATIONS].find({"at_ms": {"$gte": since_ms}}, {"kind": 1, "input": 1, "result": 1, "at": 1, "at_ms": 1})
    changes = [c for c in map(_change, docs) if c is not None]
    return sorted(changes, key=lambda c: c.at_ms)


def users_changed_since(db: MongoDb, since: datetime) -> set[int]:
    """The users with a mutation logged at or after ``since`` (any worker's, any kind)."""
    return {c.user_id for c in changes_since(db, epoch_ms(since))}


def log_record(
    client_id: str, kind: str, inputs: dict[str, Any], result: dict[str, Any], at: datetime, status: str = "pending"
) -> dict[str, Any]:
    """A mutation log record, as ``accept_*`` insert it (``marquee bench serve --history`` bulk-loads these)."""
    return {"_id": client_id, "kind": kind, "user_id": int(inputs["user_id"]), "input": inputs, "result": result,
            "status": status, "at": at, "at_ms": epoch_ms(at)}  # fmt: skip


def _finish(db: MongoDb, record: dict[str, Any]) -> None:
    if record.get("status") != "done":
        db[MUTATIONS].replace_one({"_id": record["_id"]}, {**record, "status": "done"})


def _result(written: RatingWritten | PlaybackWritten) -> dict[str, Any]:
    """What the record keeps of a write (its own ``_id`` is the log id)."""
    result = asdict(written)
    del result["log_id"]
    return result


def _rating(record: dict[str, Any]) -> RatingWritten:
    return RatingWritten(**record["result"], log_id=str(record["_id"]))


def _playback(record: dict[str, Any]) -> PlaybackWritten:
    return PlaybackWritten(**record["result"], log_id=str(record["_id"]))


def _review(written: RatingWritten) -> dict[str, Any]:
    return {
        "_id": written.review_id,
        "user_id": written.user_id,
        "movie_id": written.movie_id,
        "rating": float(written.rating),
        "ts": written.rated_at,
    }


def _write_review(db: MongoDb, written: RatingWritten) -> None:
    with contextlib.suppress(DuplicateKeyError):  # a retry of a write that landed before a crash
        mongo.live(db, "reviews").insert_one(_review(written))


@dataclass(frozen=True)
class Accepted:
    """A mutation whose record is logged: what it wrote (or will write), and its state.

    ``replayed``: the record was done before this call (nothing is left to write); otherwise
    its event still has to be written and pushed (``write_events``; idempotent, so a record
    another process is finishing at the same time is finished twice, harmlessly)."""

    written: RatingWritten | PlaybackWritten
    record: dict[str, Any]
    replayed: bool


@dataclass(frozen=True)
class RatingInput:
    """A ``rateMovie`` as the log takes it (validated by the API before)."""

    user_id: int
    movie_id: int
    rating: int
    client_id: str | None = None


@dataclass(frozen=True)
class PlaybackInput:
    """A ``recordPlayback`` as the log takes it."""

    user_id: int
    movie_id: int
    duration_seconds: int
    device: str
    client_id: str | None = None


MutationInput = RatingInput | PlaybackInput


def _fresh_record(mutation: MutationInput, at: datetime) -> dict[str, Any]:
    """The log record a mutation makes when its client id is new, with its event's final id and time."""
    client_id = mutation.client_id or _auto_id()
    if isinstance(mutation, RatingInput):
        user_id, movie_id = mutation.user_id, mutation.movie_id
        rating = RatingWritten(f"{user_id}:{movie_id}:{int(at.timestamp())}", user_id, movie_id, mutation.rating, at)
        inputs = {"user_id": user_id, "movie_id": movie_id, "rating": mutation.rating}
        return log_record(client_id, "rateMovie", inputs, _result(rating), at)
    session_id = str(uuid.uuid5(PLAYBACK_NAMESPACE, mutation.client_id)) if mutation.client_id else str(uuid.uuid4())
    playback = PlaybackWritten(session_id, mutation.user_id, mutation.movie_id, mutation.duration_seconds,
                               mutation.device, at)  # fmt: skip
    played: dict[str, Any] = {"user_id": mutation.user_id, "movie_id": mutation.movie_id,
              "duration_seconds": mutation.duration_seconds, "device": mutation.device}  # fmt: skip
    return log_record(client_id, "recordPlayback", played, _result(playback), at)


def _accepted(record: dict[str, Any]) -> Accepted:
    written = _rating(record) if record["kind"] == "rateMovie" else _playback(record)
    return Accepted(written, record, record.get("status") == "done")


def accept_many(db: MongoDb, mutations: Sequence[MutationInput]) -> list[Accepted | MutationIdConflict]:
    """Log a group of mutations with one ``insert_many`` (a group commit): each is durable from
    here on, its event written later by ``write_events``. One outcome per mutation, in order: the
    record it wrote, or the earlier record of its client id (a replay when that one is done), or
    ``MutationIdConflict`` when that id was used for another mutation or input. The insert is
    unordered, so a duplicate id fails only its own document; two mutations of one group with
    the same id get the same record. One round trip for the whole group is what lets the API
    acknowledge at a service's rate (docs/performance.md): a request's insert was most of its cost.
    """
    if not mutations:
        return []
    with store_call("mongo"):
        at = _now()
        records = [_fresh_record(m, at) for m in mutations]
        duplicates: set[int] = set()
        try:
            db[MUTATIONS].insert_many(records, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise StoreDown("mongo", f"the mutation log refused a write: {errors[0].get('errmsg')}") from exc
            duplicates = {int(e["index"]) for e in errors}
        return [_existing(db, record) if i in duplicates else _accepted(record) for i, record in enumerate(records)]


def _existing(db: MongoDb, record: dict[str, Any]) -> Accepted | MutationIdConflict:
    """The outcome of a record whose id was taken: the record there, when it is the same mutation."""
    existing = db[MUTATIONS].find_one({"_id": record["_id"]})
    if existing is None:  # removed in between: write this one after all
        db[MUTATIONS].insert_one(record)
        return _accepted(record)
    if existing.get("kind") != record["kind"] or existing.get("input") != record["input"]:
        return MutationIdConflict(
            f"clientMutationId {record['_id']!r} was already used for {existing.get('kind')} with different input"
        )
    return _accepted(existing)


def accept_one(db: MongoDb, mutation: MutationInput) -> Accepted:
    """``accept_many`` of one mutation; its ``MutationIdConflict`` is raised."""
    outcome = accept_many(db, [mutation])[0]
    if isinstance(outcome, MutationIdConflict):
        raise outcome
    return outcome


def write_events(db: MongoDb, accepted: Sequence[Accepted], *, stores: Stores | None = None) -> None:
    """Write the events of a group of logged mutations: one ``insert_many`` for the reviews; the
    sessions appended to their users' playback documents, in place in the embedded server's file
    when ``stores`` is given and it is embedded (``mongo_append``: no document read or rewritten
    whole), else by one read of the documents and one ``bulk_write`` of compare-and-set replaces
    (``_append_sessions_many``). Idempotent: a review already there (same ``_id``) and a session
    already appended (same ``session_id``) are left as they are."""
    with store_call("mongo"):
        reviews = [_review(a.written) for a in accepted if isinstance(a.written, RatingWritten)]
        if reviews:
            with contextlib.suppress(BulkWriteError):  # only duplicates can fail: a write finished earlier
                mongo.live(db, "reviews").insert_many(reviews, ordered=False)
        sessions: dict[int, list[PlaybackWritten]] = {}
        for a in accepted:
            if isinstance(a.written, PlaybackWritten):
                sessions.setdefault(a.written.user_id, []).append(a.written)
        if sessions and stores is not None:
            by_user = {user_id: [_session(w) for w in written] for user_id, written in sessions.items()}
            missing = mongo_append.append(
                stores, "playback_logs", by_user, array="sessions", key="session_id", stamp="updated_at", at=_now()
            )
            if missing is not None:  # appended in place; users without a document yet go through the server
                sessions = {user_id: sessions[user_id] for user_id in missing}
        if sessions:
            _append_sessions_many(db, sessions)


def mark_done(db: MongoDb, records: Sequence[dict[str, Any]], *, pushed: bool) -> None:
    """Mark a group of records done (their events written) and, when ``pushed``, pushed: one
    ``bulk_write`` of whole-document replaces."""
    if not records:
        return
    marks = {"status": "done", "pushed": True} if pushed else {"status": "done"}
    with store_call("mongo"):
        db[MUTATIONS].bulk_write([ReplaceOne({"_id": r["_id"]}, {**r, **marks}) for r in records], ordered=False)


def rate_movie(
    db: MongoDb, *, user_id: int, movie_id: int, rating: int, client_id: str | None
) -> tuple[RatingWritten, bool]:
    """Log and write a rating at once (no pusher); returns (what was written, whether a replay)."""
    accepted = accept_one(db, RatingInput(user_id, movie_id, rating, client_id))
    if not accepted.replayed:
        write_events(db, [accepted])
        with store_call("mongo"):
            _finish(db, accepted.record)
    return accepted.written, accepted.replayed  # type: ignore[return-value]


def record_playback(
    db: MongoDb, *, user_id: int, movie_id: int, duration_seconds: int, device: str, client_id: str | None
) -> tuple[PlaybackWritten, bool]:
    """Log and append a playback session at once (no pusher); (what was written, replay?)."""
    accepted = accept_one(db, PlaybackInput(user_id, movie_id, duration_seconds, device, client_id))
    if not accepted.replayed:
        write_events(db, [accepted])
        with store_call("mongo"):
            _finish(db, accepted.record)
    return accepted.written, accepted.replayed  # type: ignore[return-value]


def rating_event(written: RatingWritten) -> FeatureEvent:
    """The feature store's view of a rating."""
    return FeatureEvent(
        "rating",
        written.user_id,
        written.movie_id,
        written.rated_at,
        float(written.rating),
        record_id=written.review_id,
    )


def playback_event(written: PlaybackWritten) -> FeatureEvent:
    """The feature store's view of a playback session."""
    return FeatureEvent(
        "playback",
        written.user_id,
        written.movie_id,
        written.started_at,
        float(written.duration_seconds),
        written.device,
        record_id=written.session_id,
    )


def mark_pushed(db: MongoDb, log_id: str) -> None:
    """The event of a finished record reached the feature store (a whole-document replace)."""
    with store_call("mongo"):
        record = db[MUTATIONS].find_one({"_id": log_id})
        if record is not None and record.get("status") == "done" and record.get("pushed") is not True:
            db[MUTATIONS].replace_one({"_id": log_id, "status": "done"}, {**record, "pushed": True})


@dataclass
class RepairReport:
    """What ``repair`` found: records it finished (event written), pushed, and could not push."""

    finished: int = 0
    pushed: int = 0
    failed: int = 0


def repair(db: MongoDb, push: Callable[[FeatureEvent], bool], limit: int = 10_000) -> RepairReport:
    """Finish what a crash (or a failed push) left: every record not marked pushed, oldest first.

    A pending record is rolled forward: its event is written with the id and time the record
    already holds (so a retry of its clientMutationId then replays the same result), and the
    record is marked done. Then the event is pushed again (landing and recomputing are
    idempotent) and the record is marked pushed. A push that fails leaves the record for the
    next start; ``marquee export`` re-reads its event meanwhile.
    """
    report = RepairReport()
    with store_call("mongo"):
        records = list(db[MUTATIONS].find(NOT_PUSHED, sort=[("at", 1)], limit=limit))
    for record in records:
        kind = record.get("kind")
        if kind not in ("rateMovie", "recordPlayback"):
            continue
        with store_call("mongo"):
            if kind == "rateMovie":
                rating = _rating(record)
                if record.get("status") != "done":
                    _write_review(db, rating)
                elif mongo.live(db, "reviews").find_one({"_id": rating.review_id}) is None:
                    continue  # the review was removed since: nothing to push
                event = rating_event(rating)
            else:
                playback = _playback(record)
                if record.get("status") != "done":
                    _append_session(db, playback)
                elif not _has_session(db, playback):
                    continue
                event = playback_event(playback)
            if record.get("status") != "done":
                _finish(db, record)
                report.finished += 1
        try:
            pushed = push(event)
        except Exception:
            log.exception("repair: the push of mutation %s failed", record["_id"])
            pushed = False
        if pushed:
            mark_pushed(db, str(record["_id"]))
            report.pushed += 1
        else:
            report.failed += 1
    return report


def _has_session(db: MongoDb, written: PlaybackWritten) -> bool:
    doc = mongo.live(db, "playback_logs").find_one({"_id": written.user_id})
    return doc is not None and any(s.get("session_id") == written.session_id for s in doc.get("sessions", []))


def _append_session(db: MongoDb, written: PlaybackWritten) -> None:
    _append_sessions(db, [written])


def _session(w: PlaybackWritten) -> dict[str, Any]:
    return {"session_id": w.session_id, "movie_id": w.movie_id, "timestamp": w.started_at,
            "duration_seconds": w.duration_seconds, "device": w.device, "buffer_rate": 0.0, "errors": 0}  # fmt: skip


def _append_sessions_many(db: MongoDb, by_user: dict[int, list[PlaybackWritten]]) -> None:
    """Append each user's sessions to their playback document, for many users in a few round
    trips: one ``find`` of their documents by ``_id`` (``$in`` on ``_id`` goes through the index,
    also on the embedded server) and one ``bulk_write`` of replaces, each a compare-and-set on
    ``updated_at``. When some did not match (a document changed in between), those users are
    read and tried again; a user with no document yet goes through ``_append_sessions``. A
    session already there is never appended twice. One find and one replace per user cost the
    pusher ~2 round trips per user (most of a group's time: docs/performance.md)."""
    playback = mongo.live(db, "playback_logs")
    pending = dict(by_user)
    for _ in range(CAS_ATTEMPTS):
        docs = {doc["_id"]: doc for doc in playback.find({"_id": {"$in": sorted(pending)}})}
        replaces, tried = [], []
        for user_id, written in pending.items():
            doc = docs.get(user_id)
            if doc is None:
                _append_sessions(db, written)
                continue
            sessions = list(doc.get("sessions", []))
            there = {s.get("session_id") for s in sessions}
            missing = [_session(w) for w in written if w.session_id not in there]
            if missing:
                tried.append(user_id)
                replaced = {**doc, "sessions": [*sessions, *missing], "updated_at": _now()}
                replaces.append(ReplaceOne({"_id": user_id, "updated_at": doc.get("updated_at")}, replaced))
        if not replaces or playback.bulk_write(replaces, ordered=False).matched_count == len(replaces):
            return
        pending = {user_id: pending[user_id] for user_id in tried}  # re-read: the ones that landed are skipped
    raise StoreDown("mongo", f"playback logs of {len(pending)} users kept changing; try again")


def _append_sessions(db: MongoDb, written: Sequence[PlaybackWritten]) -> None:
    """Append one user's sessions to their playback document (a compare-and-set on ``updated_at``);
    a session already there is not appended again."""
    user_id = written[0].user_id
    new = [_session(w) for w in written]
    playback = mongo.live(db, "playback_logs")
    for _ in range(CAS_ATTEMPTS):
        doc = playback.find_one({"_id": user_id})
        if doc is None:
            try:
                playback.insert_one({"_id": user_id, "user_id": user_id, "sessions": new, "updated_at": _now()})
                return
            except DuplicateKeyError:
                continue
        sessions = list(doc.get("sessions", []))
        there = {s.get("session_id") for s in sessions}
        missing = [s for s in new if s["session_id"] not in there]
        if not missing:
            return  # already appended by an earlier attempt
        replaced = playback.replace_one(
            {"_id": user_id, "updated_at": doc.get("updated_at")},
            {**doc, "sessions": [*sessions, *missing], "updated_at": _now()},
        )
        if replaced.matched_count:
            return
    raise StoreDown("mongo", f"playback log of user {user_id} kept changing; try again")
