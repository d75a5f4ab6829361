"""Mutations: record a rating or a playback in Mongo, then push the event to the feature store.

Expected failures are members of the result unions (``MovieNotFound``, ``InvalidRating``…),
so clients branch on ``__typename``; a missing or wrong X-API-Key (when keys are
configured) and an unavailable store are GraphQL errors with codes UNAUTHENTICATED and
STORE_UNAVAILABLE.
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from api.context import Info
from api.permissions import HasApiKey
from api.queries import writes
from api.queries.features import FeatureEvent
from api.threads import in_thread
from api.types.movie import Movie
from api.types.user import User

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
    features_pushed: bool = strawberry.field(description="True when the online feature store was updated.")
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


async def _subjects(info: Info, user_id: int, movie_id: int) -> tuple[User, Movie] | UserNotFound | MovieNotFound:
    """The user and the movie a mutation is about, or the typed error for the one missing."""
    user_row = await info.context.loaders.user.load(user_id)
    if user_row is None:
        return UserNotFound(message=f"no user with id {user_id}", user_id=user_id)
    movie_row = await info.context.loaders.movie.load(movie_id)
    if movie_row is None:
        return MovieNotFound(message=f"no movie with id {movie_id}", movie_id=movie_id)
    return User.from_row(user_row), Movie.from_row(movie_row)


def _check_client_id(client_mutation_id: str | None) -> InvalidClientMutationId | None:
    if client_mutation_id is not None and not 1 <= len(client_mutation_id) <= MAX_CLIENT_ID:
        return InvalidClientMutationId(
            message=f"clientMutationId must be 1 to {MAX_CLIENT_ID} characters", client_mutation_id=client_mutation_id
        )
    return None


async def _push(info: Info, event: FeatureEvent, log_id: str) -> bool:
    """Tell the feature store; the write already happened, so a failed push is logged, not raised.
    A push that happened is marked in the mutation log (one not marked is redone by
    ``writes.repair`` at the next start). Either way the user changed: what was kept for them
    (ranked lists) is forgotten."""
    services = info.context.services
    try:
        pushed: bool = await in_thread(services.feature_pusher.push, event)
    except Exception:
        log.exception("feature push failed for user %s", event.user_id)
        return False
    finally:
        services.user_changed(event.user_id)
    if pushed:
        try:
            await in_thread(writes.mark_pushed, info.context.stores.mongo, log_id)
        except Exception:  # the push is done; at worst the next start's repair redoes it
            log.exception("could not mark mutation %s pushed", log_id)
    return pushed


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
        subjects = await _subjects(info, user_id, movie_id)
        if not isinstance(subjects, tuple):
            return subjects
        user, movie = subjects
        stores = info.context.stores

        def write_rating() -> tuple[writes.RatingWritten, bool]:
            with stores.call("mongo"):  # fails at once while Mongo's breaker is open
                return writes.rate_movie(
                    stores.mongo, user_id=user_id, movie_id=movie_id, rating=rating, client_id=client_mutation_id
                )

        try:
            written, replayed = await in_thread(write_rating)
        except writes.MutationIdConflict as exc:
            return InvalidClientMutationId(message=str(exc), client_mutation_id=client_mutation_id or "")
        pushed = False
        if not replayed:
            event = FeatureEvent(
                "rating", user_id, movie_id, written.rated_at, float(rating), record_id=written.review_id
            )
            pushed = await _push(info, event, written.log_id)
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
        subjects = await _subjects(info, user_id, movie_id)
        if not isinstance(subjects, tuple):
            return subjects
        user, movie = subjects
        stores = info.context.stores

        def write_playback() -> tuple[writes.PlaybackWritten, bool]:
            with stores.call("mongo"):  # fails at once while Mongo's breaker is open
                return writes.record_playback(
                    stores.mongo,
                    user_id=user_id,
                    movie_id=movie_id,
                    duration_seconds=duration_seconds,
                    device=device.value,
                    client_id=client_mutation_id,
                )

        try:
            written, replayed = await in_thread(write_playback)
        except writes.MutationIdConflict as exc:
            return InvalidClientMutationId(message=str(exc), client_mutation_id=client_mutation_id or "")
        pushed = False
        if not replayed:
            event = FeatureEvent(
                "playback",
                user_id,
                movie_id,
                written.started_at,
                float(duration_seconds),
                device.value,
                record_id=written.session_id,
            )
            pushed = await _push(info, event, written.log_id)
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
