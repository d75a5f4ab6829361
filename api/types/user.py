"""User and what hangs off it: subscription and payments (PostgreSQL), reviews and playback
sessions (Mongo), online features (Feast), follows and watch history (graph), recommendations."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from api.context import Info
from api.errors import user_not_found
from api.queries.reads import UserRow
from api.threads import in_thread
from api.types.movie import Movie, movie_or_none, parse_id
from api.types.paging import check_first
from api.types.recommendation import RecommendationList, recommend
from sources.stores.failures import StoreDown


@strawberry.type(description="The user's current subscription (PostgreSQL).")
class Subscription:
    tier: str
    monthly_price: Decimal
    started_at: datetime | None


@strawberry.type(description="A subscription payment (PostgreSQL).")
class Payment:
    amount: Decimal
    currency: str
    method: str
    paid_at: datetime


@strawberry.type(description="A rating the user gave (reviews store, Mongo).")
class Review:
    movie_id: int
    rating: float
    rated_at: datetime

    @strawberry.field
    async def movie(self, info: Info) -> Movie | None:
        return await movie_or_none(info, self.movie_id)


@strawberry.type(description="A playback session (playback logs, Mongo).")
class PlaybackSession:
    session_id: str
    movie_id: int
    started_at: datetime
    duration_seconds: int
    device: str
    buffer_rate: float
    errors: int

    @strawberry.field
    async def movie(self, info: Info) -> Movie | None:
        return await movie_or_none(info, self.movie_id)


@strawberry.type(description="A WATCHED edge in the graph store.")
class WatchedMovie:
    movie_id: int
    watched_at: datetime
    duration_seconds: int

    @strawberry.field
    async def movie(self, info: Info) -> Movie | None:
        return await movie_or_none(info, self.movie_id)


@strawberry.type(description="A MovieLens user, with data from all three stores and the feature store.")
class User(relay.Node):
    id: relay.NodeID[int]
    age: int | None
    gender: str | None
    occupation: str | None
    city: str = strawberry.field(description="Generated from the user's zip code (MovieLens has no city).")
    zip_code: str | None
    signed_up_at: datetime
    subscription: Subscription | None

    @strawberry.field(description="The MovieLens user id (the global `id` wraps it).")
    def user_id(self) -> int:
        return self.id

    @classmethod
    def from_row(cls, row: UserRow) -> User:
        subscription = None
        if row.tier is not None and row.monthly_price is not None:
            subscription = Subscription(tier=row.tier, monthly_price=row.monthly_price, started_at=row.subscribed_at)
        return cls(
            id=row.id,
            age=row.age,
            gender=row.gender,
            occupation=row.occupation,
            city=row.city,
            zip_code=row.zip_code,
            signed_up_at=row.signed_up_at,
            subscription=subscription,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[User | None]:
        return [await load_user(info, node_id) for node_id in node_ids]

    @strawberry.field(description="Payments, newest first (PostgreSQL).")
    async def payments(self, info: Info, first: int = 10) -> list[Payment]:
        check_first(first)
        rows = await info.context.loaders.payments.load(self.id)
        return [Payment(amount=p.amount, currency=p.currency, method=p.method, paid_at=p.paid_at) for p in rows[:first]]

    @strawberry.field(description="Ratings, newest first (Mongo).")
    async def reviews(self, info: Info, first: int = 10) -> list[Review] | None:
        check_first(first)
        rows = await info.context.loaders.reviews.load(self.id)
        return [Review(movie_id=r.movie_id, rating=r.rating, rated_at=r.ts) for r in rows[:first]]

    @strawberry.field(description="Playback sessions, newest first (Mongo).")
    async def recent_sessions(self, info: Info, first: int = 10) -> list[PlaybackSession] | None:
        check_first(first)
        rows = await info.context.loaders.sessions.load(self.id)
        return [
            PlaybackSession(
                session_id=s.session_id,
                movie_id=s.movie_id,
                started_at=s.timestamp,
                duration_seconds=s.duration_seconds,
                device=s.device,
                buffer_rate=s.buffer_rate,
                errors=s.errors,
            )
            for s in rows[:first]
        ]

    @strawberry.field(
        description="The user's current online features from the feature store (Feast), name → value; "
        "null with a STORE_UNAVAILABLE error while no feature store is configured."
    )
    async def online_features(self, info: Info) -> JSON | None:
        reader = info.context.services.online_features
        if reader is None:
            raise StoreDown("feature", "no feature store is configured for this API process")
        try:
            features: dict[str, Any] = await in_thread(reader.user_features, self.id)
        except Exception as exc:
            raise StoreDown("feature", type(exc).__name__) from exc
        return cast(JSON, features)

    @strawberry.field(description="Users this user follows (graph store).")
    async def following(self, info: Info, first: int = 20) -> list[User] | None:
        check_first(first)
        return await _users(info, (await info.context.loaders.following.load(self.id))[:first])

    @strawberry.field(description="Users following this user (graph store).")
    async def followers(self, info: Info, first: int = 20) -> list[User] | None:
        check_first(first)
        return await _users(info, (await info.context.loaders.followers.load(self.id))[:first])

    @strawberry.field(description="Movies watched, newest first (graph store).")
    async def watched(self, info: Info, first: int = 10) -> list[WatchedMovie] | None:
        check_first(first)
        rows = await info.context.loaders.watched.load(self.id)
        return [
            WatchedMovie(
                movie_id=w.movie_id,
                watched_at=datetime.fromtimestamp(w.ts, tz=UTC),
                duration_seconds=w.duration_seconds,
            )
            for w in rows[:first]
        ]

    @strawberry.field(description="Movies recommended for this user, best first.")
    async def recommendations(self, info: Info, first: int = 10, exclude_seen: bool = True) -> RecommendationList:
        return await recommend(info, user_id=self.id, first=first, exclude_seen=exclude_seen)


async def _users(info: Info, ids: list[int]) -> list[User]:
    rows = await info.context.loaders.user.load_many(ids)
    return [User.from_row(row) for row in rows if row is not None]


async def load_user(info: Info, user_id: Any) -> User:
    """The user with this id, or NOT_FOUND."""
    key = parse_id(user_id, "user")
    row = await info.context.loaders.user.load(key)
    if row is None:
        raise user_not_found(key)
    return User.from_row(row)
