"""MongoDB collections behind a catalog, so a reload becomes visible all at once.

Each load writes fresh physical collections (``reviews__7``, ``playback_logs__7`` for run 7)
and then flips one catalog document, ``marquee_catalog {_id: "live"}``, in a single atomic
update: readers see the old set or the new set, never a mix. Always reach a collection
through ``live(db, "reviews")``.

Why not ``renameCollection(dropTarget=True)``: it is atomic on MongoDB, but the embedded
nx-27017 server (0.8.1) reports success while moving the collection into the ``admin``
database, losing it (measured). The catalog works the same on both.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database

CATALOG = "marquee_catalog"
LOGICAL = ("reviews", "playback_logs")
#: The API's log of applied mutations (idempotency per clientMutationId). A reload replaces
#: the reviews and sessions those mutations wrote, so it clears this log with them.
MUTATION_LOG = "mutations"

MongoDb = Database[dict[str, Any]]


def live_names(db: MongoDb) -> dict[str, str]:
    doc = db[CATALOG].find_one({"_id": "live"}) or {}
    return {name: str(doc.get(name, name)) for name in LOGICAL}


def live(db: MongoDb, logical: str) -> Collection[dict[str, Any]]:
    """The collection that currently holds ``logical`` (e.g. "reviews")."""
    return db[live_names(db)[logical]]


def staging_names(run_id: int) -> dict[str, str]:
    return {name: f"{name}__{run_id}" for name in LOGICAL}


def create_indexes(db: MongoDb, physical: dict[str, str]) -> None:
    reviews, playback = db[physical["reviews"]], db[physical["playback_logs"]]
    reviews.create_index([("user_id", ASCENDING), ("ts", ASCENDING)])
    reviews.create_index([("movie_id", ASCENDING), ("ts", ASCENDING)])
    reviews.create_index([("ts", ASCENDING)])
    playback.create_index([("updated_at", ASCENDING)])


def publish(db: MongoDb, physical: dict[str, str]) -> None:
    """Make ``physical`` the live collections in one atomic update, then drop the old ones."""
    for name in physical.values():
        if name not in db.list_collection_names():
            db.create_collection(name)  # an empty dataset still publishes
    db[CATALOG].update_one({"_id": "live"}, {"$set": physical}, upsert=True)
    db.drop_collection(MUTATION_LOG)
    drop_unpublished(db)


def drop_unpublished(db: MongoDb) -> list[str]:
    """Drop collections left by earlier loads (replaced, or staged by a run that died)."""
    keep = set(live_names(db).values())
    dropped = []
    for name in db.list_collection_names():
        if any(name.startswith(f"{logical}__") for logical in LOGICAL) and name not in keep:
            db.drop_collection(name)
            dropped.append(name)
    return dropped
