"""Mutations' writes to Mongo, the system of record, idempotent per client mutation id.

A ``mutations`` collection holds one document per mutation (``_id``: the client mutation
id, or ``auto:<uuid>`` when none was sent): the input, the result, and ``status`` pending →
done. The record is written *before* the event with the event's final id and time in it,
and the event's ``_id`` is derived from it, so a retry after a crash at any point finishes
the same write instead of adding a second one; a replay of a finished mutation returns the
first result. The collection doubles as the log of what the API wrote since the stores
were loaded, which the fallback recommender reads instead of scanning ``reviews``.

A finished record gets ``pushed: true`` once the event reached the feature store
(``mark_pushed``). What a crash (or a failed push) leaves behind, a record still pending or
done but not pushed, is finished by ``repair`` when the app starts (api/serving.py): the
event is written if it is missing, the push is redone (it is idempotent), and the record is
marked. ``marquee export`` also re-reads the events of records not pushed, whatever their
time (sources/export/extract.py), so they reach the offline tables even before a restart.

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

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from api.queries.features import FeatureEvent
from sources.stores import mongo
from sources.stores.failures import StoreDown, store_call
from sources.stores.mongo import MUTATION_LOG as MUTATIONS

CAS_ATTEMPTS = 8
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
    db[MUTATIONS].create_index([("input.user_id", 1), ("kind", 1)])
    db[MUTATIONS].create_index("at")  # the change feed of cached recommendations (api/recommendations/kept_lists.py)


def api_ratings(db: MongoDb, user_ids: Sequence[int]) -> dict[int, dict[int, tuple[datetime, float]]]:
    """Ratings this API wrote for each of ``user_ids``: user → movie id → (time, rating), latest
    per movie (one query for all of them).

    Pending records count too: their review may already be in ``reviews`` (a crash between
    the two writes), and for "has the user seen it" a false positive is the safe side.
    """
    out: dict[int, dict[int, tuple[datetime, float]]] = {int(u): {} for u in user_ids}
    query = {"input.user_id": {"$in": list(out)}, "kind": "rateMovie"}
    for doc in db[MUTATIONS].find(query, {"input": 1, "result": 1}):
        inputs = doc["input"]
        user_id, movie_id, rating = int(inputs["user_id"]), int(inputs["movie_id"]), float(inputs["rating"])
        at, mine = doc["result"]["rated_at"], out[user_id]
        if movie_id not in mine or at >= mine[movie_id][0]:
            mine[movie_id] = (at, rating)
    return out


def users_changed_since(db: MongoDb, since: datetime) -> set[int]:
    """The users with a mutation logged at or after ``since`` (any worker's, any kind)."""
    # The whole ``input``: the embedded server returns a dotted projection flattened.
    docs = db[MUTATIONS].find({"at": {"$gte": since}}, {"input": 1})
    return {int(doc["input"]["user_id"]) for doc in docs}


def _claim(db: MongoDb, client_id: str, kind: str, inputs: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The record for ``client_id``: ours if new, else the existing one (input must match)."""
    record = {"_id": client_id, "kind": kind, "input": inputs, "result": result, "status": "pending", "at": _now()}
    try:
        db[MUTATIONS].insert_one(record)
        return record
    except DuplicateKeyError:
        existing = db[MUTATIONS].find_one({"_id": client_id})
        if existing is None:  # removed in between: try once more
            db[MUTATIONS].insert_one(record)
            return record
    if existing.get("kind") != kind or existing.get("input") != inputs:
        raise MutationIdConflict(
            f"clientMutationId {client_id!r} was already used for {existing.get('kind')} with different input"
        )
    return existing


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


def _write_review(db: MongoDb, written: RatingWritten) -> None:
    review = {
        "_id": written.review_id,
        "user_id": written.user_id,
        "movie_id": written.movie_id,
        "rating": float(written.rating),
        "ts": written.rated_at,
    }
    with contextlib.suppress(DuplicateKeyError):  # a retry of a write that landed before a crash
        mongo.live(db, "reviews").insert_one(review)


def rate_movie(
    db: MongoDb, *, user_id: int, movie_id: int, rating: int, client_id: str | None
) -> tuple[RatingWritten, bool]:
    """Record a rating in ``reviews``; returns (what was written, whether this was a replay)."""
    with store_call("mongo"):
        at = _now()
        fresh = RatingWritten(f"{user_id}:{movie_id}:{int(at.timestamp())}", user_id, movie_id, rating, at)
        inputs = {"user_id": user_id, "movie_id": movie_id, "rating": rating}
        record = _claim(db, client_id or _auto_id(), "rateMovie", inputs, _result(fresh))
        written = _rating(record)
        replay = record.get("status") == "done"
        if not replay:
            _write_review(db, written)
            _finish(db, record)
        return written, replay


def record_playback(
    db: MongoDb, *, user_id: int, movie_id: int, duration_seconds: int, device: str, client_id: str | None
) -> tuple[PlaybackWritten, bool]:
    """Append a session to the user's ``playback_logs`` document; (what was written, replay?)."""
    with store_call("mongo"):
        at = _now()
        session_id = str(uuid.uuid5(PLAYBACK_NAMESPACE, client_id)) if client_id else str(uuid.uuid4())
        fresh = PlaybackWritten(session_id, user_id, movie_id, duration_seconds, device, at)
        inputs = {"user_id": user_id, "movie_id": movie_id, "duration_seconds": duration_seconds, "device": device}
        record = _claim(db, client_id or _auto_id(), "recordPlayback", inputs, _result(fresh))
        written = _playback(record)
        replay = record.get("status") == "done"
        if not replay:
            _append_session(db, written)
            _finish(db, record)
        return written, replay


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
    session = {
        "session_id": written.session_id,
        "movie_id": written.movie_id,
        "timestamp": written.started_at,
        "duration_seconds": written.duration_seconds,
        "device": written.device,
        "buffer_rate": 0.0,
        "errors": 0,
    }
    playback = mongo.live(db, "playback_logs")
    for _ in range(CAS_ATTEMPTS):
        doc = playback.find_one({"_id": written.user_id})
        if doc is None:
            try:
                playback.insert_one(
                    {"_id": written.user_id, "user_id": written.user_id, "sessions": [session], "updated_at": _now()}
                )
                return
            except DuplicateKeyError:
                continue
        sessions = list(doc.get("sessions", []))
        if any(s.get("session_id") == written.session_id for s in sessions):
            return  # already appended by an earlier attempt
        replaced = playback.replace_one(
            {"_id": written.user_id, "updated_at": doc.get("updated_at")},
            {**doc, "sessions": [*sessions, session], "updated_at": _now()},
        )
        if replaced.matched_count:
            return
    raise StoreDown("mongo", f"playback log of user {written.user_id} kept changing; try again")
