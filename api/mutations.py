"""Mutations: record a rating or a playback in Mongo, then push the event to the feature store.

A mutation is acknowledged once its record is in the mutation log (durable and idempotent per
clientMutationId: api/queries/writes.py), logged together with the mutations arriving at the
same moment (api/mutation_batcher.py: one check of their users and movies, one insert). Its
user's kept lists are forgotten and its rating counts for their recommendations at once; its
event, raw rows, features and online row follow within about a second, written in groups by the background
pusher (api/write_pusher.py). With ``MARQUEE_WRITE_ACK=pushed`` the answer waits for that
group's push instead (``featuresPushed`` then says whether it happened).

Expected failures are members of the result unions (``MovieNotFound``, ``InvalidRating``…),
so clients branch on ``__typename``; a missing or wrong X-API-Key (when keys are
configured) and an unavailable store are GraphQL errors with codes UNAUTHENTICATED and
STORE_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from api.context import Info
from api.mutation_batcher import UnknownSubject
from api.permissions import HasApiKey
from api.queries import writes
from api.threads import in_thread
from api.types.movie import Movie
from api.types.user import User
from api.write_pusher import WritePusher

log = logging.getLogger(__name__)

MAX_DURATION_S = 24 * 3600
MAX_CLIENT_ID = 128


@strawberry.enum
class Device(Enum):
    TV = "tv"
    MOBILE = "mobile"
    DESKTOP = "desktop"
    TABLET = "tablet"


@strawberry.interface(description="An expected reason a mutation did not happen.")
class MutationError:
    message: str


@strawberry.type
class UserNotFound(MutationError):
    user_id: int


@strawberry.type
class MovieNotFound(MutationError):
    movie_id: int


@strawberry.type
class InvalidRating(MutationError):
    rating: int


@strawberry.type
class InvalidDuration(MutationError):
    duration_seconds: int


@strawberry.type(description="The clientMutationId was used before for a different mutation or input.")
class InvalidClientMutationId(MutationError):
    client_mutation_id: str


@strawberry.type(description="The rating is stored in the reviews store (Mongo).")
class RatingRecorded:
    review_id: str
    rating: int
    rated_at: datetime
    client_mutation_id: str | None
    replayed: bool = strawberry.field(description="True when this clientMutationId was already applied (no new write).")
    features_pushed: bool = strawberry.field(
        description="True when the online feature store was updated before this answer; by default the "
        "answer comes once the rating is durable and the features follow within about a second."
    )
    user: User
    movie: Movie


@strawberry.type(description="The playback session is stored in the playback logs (Mongo).")
class PlaybackRecorded:
    session_id: str
    duration_seconds: int
    device: Device
    started_at: datetime
    client_mutation_id: str | None
    replayed: bool
    features_pushed: bool
    user: User
    movie: Movie


RateMovieResult = Annotated[
    RatingRecorded | UserNotFound | MovieNotFound | InvalidRating | InvalidClientMutationId,
    strawberry.union("RateMovieResult"),
]
RecordPlaybackResult = Annotated[
    PlaybackRecorded | UserNotFound | MovieNotFound | InvalidDuration | InvalidClientMutationId,
    strawberry.union("RecordPlaybackResult"),
]


async def _log(
    info: Info, mutation: writes.MutationInput
) -> tuple[writes.Accepted, User, Movie] | UserNotFound | MovieNotFound | InvalidClientMutationId:
    """Log the mutation with the others arriving now (api/mutation_batcher.py): what was logged
    with its user and movie, or the typed error saying why nothing was."""
    try:
        logged = await info.context.services.mutations.log(mutation)
    except UnknownSubject as exc:
        if exc.kind == "user":
            return UserNotFound(message=str(exc), user_id=exc.subject_id)
        return MovieNotFound(message=str(exc), movie_id=exc.subject_id)
    except writes.MutationIdConflict as exc:
        return InvalidClientMutationId(message=str(exc), client_mutation_id=mutation.client_id or "")
    loaders = info.context.loaders
    loaders.user.prime(mutation.user_id, logged.user)
    loaders.movie.prime(mutation.movie_id, logged.movie)
    return logged.accepted, User.from_row(logged.user), Movie.from_row(logged.movie)


def _check_client_id(client_mutation_id: str | None) -> InvalidClientMutationId | None:
    if client_mutation_id is not None and not 1 <= len(client_mutation_id) <= MAX_CLIENT_ID:
        return InvalidClientMutationId(
            message=f"clientMutationId must be 1 to {MAX_CLIENT_ID} characters", client_mutation_id=client_mutation_id
        )
    return None


async def _acknowledged(info: Info, accepted: writes.Accepted) -> bool:
    """What follows a mutation logged for the first time: the user changed now (their kept lists
    go, a rating counts for their recommendations), and the event goes to the grouped pusher.
    True when its features were pushed before the answer (``MARQUEE_WRITE_ACK=pushed``, or no
    pusher running); a failed push is logged by the pusher and redone by the next start's repair."""
    services = info.context.services
    written = accepted.written
    if isinstance(written, writes.RatingWritten):
        services.history.api.add(written.user_id, written.movie_id, written.rated_at, float(written.rating))
    services.user_changed(written.user_id)
    pusher = services.write_pusher
    if pusher is None:  # a hand-built app: write and push this one now
        pusher = WritePusher(info.context.stores, lambda: services.feature_pusher, on_pushed=services.user_changed)
        done = pusher.submit(accepted)
        await in_thread(pusher.run_once)
        return done.result()
    done = pusher.submit(accepted)
    if services.settings.write_ack == "pushed":
        return await asyncio.wrap_future(done)
    return False


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Rate a movie 1-5 stars. Idempotent per clientMutationId.", permission_classes=[HasApiKey]
    )
    async def rate_movie(
        self, info: Info, user_id: int, movie_id: int, rating: int, client_mutation_id: str | None = None
    ) -> RateMovieResult:
        if bad_id := _check_client_id(client_mutation_id):
            return bad_id
        if not 1 <= rating <= 5:
            return InvalidRating(message=f"rating must be a whole number from 1 to 5, got {rating}", rating=rating)
        logged = await _log(info, writes.RatingInput(user_id, movie_id, rating, client_mutation_id))
        if not isinstance(logged, tuple):
            return logged
        accepted, user, movie = logged
        written, replayed = accepted.written, accepted.replayed
        assert isinstance(written, writes.RatingWritten)
        pushed = False if replayed else await _acknowledged(info, accepted)
        return RatingRecorded(
            review_id=written.review_id,
            rating=written.rating,
            rated_at=written.rated_at,
            client_mutation_id=client_mutation_id,
            replayed=replayed,
            features_pushed=pushed,
            user=user,
            movie=movie,
        )

    @strawberry.mutation(
        description="Record a playback session. Idempotent per clientMutationId.", permission_classes=[HasApiKey]
    )
    async def record_playback(
        self,
        info: Info,
        user_id: int,
        movie_id: int,
        duration_seconds: int,
        device: Device,
        client_mutation_id: str | None = None,
    ) -> RecordPlaybackResult:
        if bad_id := _check_client_id(client_mutation_id):
            return bad_id
        if not 1 <= duration_seconds <= MAX_DURATION_S:
            return InvalidDuration(
                message=f"durationSeconds must be from 1 to {MAX_DURATION_S}, got {duration_seconds}",
                duration_seconds=duration_seconds,
            )
        mutation = writes.PlaybackInput(user_id, movie_id, duration_seconds, device.value, client_mutation_id)
        logged = await _log(info, mutation)
        if not isinstance(logged, tuple):
            return logged
        accepted, user, movie = logged
        written, replayed = accepted.written, accepted.replayed
        assert isinstance(written, writes.PlaybackWritten)
        pushed = False if replayed else await _acknowledged(info, accepted)
        return PlaybackRecorded(
            session_id=written.session_id,
            duration_seconds=written.duration_seconds,
            device=Device(written.device),
            started_at=written.started_at,
            client_mutation_id=client_mutation_id,
            replayed=replayed,
            features_pushed=pushed,
            user=user,
            movie=movie,
        )
