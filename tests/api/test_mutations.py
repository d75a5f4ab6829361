"""rateMovie / recordPlayback: written to Mongo, idempotent per clientMutationId, typed errors,
API keys, the feature-push hook, and recommendations that see the new rating at once.

Every test undoes its writes (reviews, playback sessions, mutation records) so the stores
hold exactly the ingested data afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.context import Services
from api.queries.features import FeatureEvent
from api.queries.writes import MUTATIONS
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores import mongo
from sources.stores.clients import Stores

Query = Callable[..., dict[str, Any]]
USER = 2  # a user no other api test writes for

RATE = """mutation($u: Int!, $m: Int!, $r: Int!, $c: String) {
  rateMovie(userId: $u, movieId: $m, rating: $r, clientMutationId: $c) {
    __typename
    ... on RatingRecorded { reviewId rating ratedAt replayed featuresPushed clientMutationId
                            user { userId } movie { title } }
    ... on MutationError { message }
  } }"""

PLAY = """mutation($u: Int!, $m: Int!, $d: Int!, $dev: Device!, $c: String) {
  recordPlayback(userId: $u, movieId: $m, durationSeconds: $d, device: $dev, clientMutationId: $c) {
    __typename
    ... on PlaybackRecorded { sessionId durationSeconds device replayed featuresPushed }
    ... on MutationError { message }
  } }"""


class Undo:
    """Remembers what a test wrote and restores the stores when it ends."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.client_ids: list[str] = []
        self.playback: dict[int, dict[str, Any] | None] = {}
        self.review_counts = {u: self.n_reviews(u) for u in (USER, 1)}

    def reviews(self) -> Any:
        return mongo.live(self.stores.mongo, "reviews")

    def n_reviews(self, user_id: int) -> int:
        # find() on the indexed field: count_documents takes seconds on the embedded server.
        return len(list(self.reviews().find({"user_id": user_id}, {"_id": 1})))

    def client_id(self) -> str:
        self.client_ids.append(f"test-{uuid.uuid4()}")
        return self.client_ids[-1]

    def keep_playback(self, user_id: int) -> None:
        self.playback.setdefault(user_id, mongo.live(self.stores.mongo, "playback_logs").find_one({"_id": user_id}))

    def restore(self) -> None:
        reviews = self.reviews()
        # Ingested review ids are "u:m:ts" with ts from 1997-98; anything newer was written here.
        for user_id in self.review_counts:
            for doc in reviews.find({"user_id": user_id}, {"_id": 1, "ts": 1}):
                if doc["ts"].year >= 2020:
                    reviews.delete_one({"_id": doc["_id"]})
        playback = mongo.live(self.stores.mongo, "playback_logs")
        for user_id, doc in self.playback.items():
            if doc is None:
                playback.delete_one({"_id": user_id})
            else:
                playback.replace_one({"_id": user_id}, doc)
        # The mutation log: records with our client ids, and the "auto:" ones logged for writes
        # sent without one (only these tests write for these users).
        self.stores.mongo[MUTATIONS].delete_many({"_id": {"$in": self.client_ids}})
        self.stores.mongo[MUTATIONS].delete_many({"input.user_id": {"$in": list(self.review_counts)}})
        after = {u: self.n_reviews(u) for u in self.review_counts}
        assert after == self.review_counts


@pytest.fixture
def undo(stores: Stores, loaded: IngestReport) -> Iterator[Undo]:
    tracker = Undo(stores)
    try:
        yield tracker
    finally:
        tracker.restore()


def test_rate_movie_writes_a_review_once_per_client_mutation_id(gql: Query, undo: Undo) -> None:
    client_id = undo.client_id()
    first = gql(RATE, {"u": USER, "m": 1, "r": 4, "c": client_id})["data"]["rateMovie"]
    assert first["__typename"] == "RatingRecorded"
    assert first["replayed"] is False and first["featuresPushed"] is False  # no feature store configured
    assert first["user"]["userId"] == USER and first["movie"]["title"] == "Toy Story"
    stored = undo.reviews().find_one({"_id": first["reviewId"]})
    assert stored is not None and (stored["user_id"], stored["movie_id"], stored["rating"]) == (USER, 1, 4.0)
    assert stored["ts"].year >= 2020

    again = gql(RATE, {"u": USER, "m": 1, "r": 4, "c": client_id})["data"]["rateMovie"]
    assert again["replayed"] is True
    assert {k: again[k] for k in ("reviewId", "ratedAt", "rating")} == {
        k: first[k] for k in ("reviewId", "ratedAt", "rating")
    }
    assert undo.n_reviews(USER) == undo.review_counts[USER] + 1

    reused = gql(RATE, {"u": USER, "m": 2, "r": 4, "c": client_id})["data"]["rateMovie"]
    assert reused["__typename"] == "InvalidClientMutationId"
    assert "already used" in reused["message"]
    assert undo.n_reviews(USER) == undo.review_counts[USER] + 1


@pytest.mark.parametrize("rating", [0, 6, -3])
def test_out_of_range_ratings_are_typed_errors(gql: Query, undo: Undo, rating: int) -> None:
    result = gql(RATE, {"u": USER, "m": 1, "r": rating, "c": undo.client_id()})["data"]["rateMovie"]
    assert result == {
        "__typename": "InvalidRating",
        "message": f"rating must be a whole number from 1 to 5, got {rating}",
    }


def test_fractional_rating_is_a_graphql_error(gql: Query, undo: Undo) -> None:
    body = gql(RATE.replace("$r: Int!", "$r: Float!"), {"u": USER, "m": 1, "r": 3.7})
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"  # Float variable into an Int argument
    literal = gql(f"mutation {{ rateMovie(userId: {USER}, movieId: 1, rating: 3.7) {{ __typename }} }}")
    assert literal["errors"][0]["message"] == "Int cannot represent non-integer value: 3.7"
    assert literal["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_unknown_user_or_movie_write_nothing(gql: Query, undo: Undo) -> None:
    movie = gql(RATE, {"u": USER, "m": 999_999, "r": 3})["data"]["rateMovie"]
    assert movie == {"__typename": "MovieNotFound", "message": "no movie with id 999999"}
    user = gql(RATE, {"u": 999_999, "m": 1, "r": 3})["data"]["rateMovie"]
    assert user == {"__typename": "UserNotFound", "message": "no user with id 999999"}
    assert undo.n_reviews(USER) == undo.review_counts[USER]


@pytest.mark.parametrize("with_client_id", [True, False])
def test_rating_a_recommended_movie_removes_it_from_recommendations(
    gql: Query, undo: Undo, with_client_id: bool
) -> None:
    query = "query($u: Int!) { recommendations(userId: $u, first: 10) { degraded items { movie { movieId } } } }"
    before = [i["movie"]["movieId"] for i in gql(query, {"u": USER})["data"]["recommendations"]["items"]]
    top = before[0]
    client_id = undo.client_id() if with_client_id else None
    result = gql(RATE, {"u": USER, "m": top, "r": 5, "c": client_id})["data"]["rateMovie"]
    assert result["__typename"] == "RatingRecorded"
    after_body = gql(query, {"u": USER})["data"]["recommendations"]
    after = [i["movie"]["movieId"] for i in after_body["items"]]
    assert top not in after and after_body["degraded"] is False
    latest = gql("query($u: Int!) { user(id: $u) { reviews(first: 1) { movieId rating } } }", {"u": USER})
    assert latest["data"]["user"]["reviews"] == [{"movieId": top, "rating": 5.0}]


def test_record_playback_appends_a_session_once(gql: Query, undo: Undo) -> None:
    undo.keep_playback(USER)
    before = gql("query($u: Int!) { user(id: $u) { recentSessions(first: 100) { sessionId } } }", {"u": USER})
    n_before = len(before["data"]["user"]["recentSessions"])
    client_id = undo.client_id()
    variables = {"u": USER, "m": 50, "d": 3600, "dev": "TV", "c": client_id}
    first = gql(PLAY, variables)["data"]["recordPlayback"]
    assert first["__typename"] == "PlaybackRecorded"
    assert (first["durationSeconds"], first["device"], first["replayed"]) == (3600, "TV", False)
    again = gql(PLAY, variables)["data"]["recordPlayback"]
    assert again["replayed"] is True and again["sessionId"] == first["sessionId"]
    after = gql(
        "query($u: Int!) { user(id: $u) { recentSessions(first: 100) { sessionId movieId device durationSeconds } } }",
        {"u": USER},
    )
    sessions = after["data"]["user"]["recentSessions"]
    assert sessions[0] == {"sessionId": first["sessionId"], "movieId": 50, "device": "tv", "durationSeconds": 3600}
    assert len(sessions) == min(n_before + 1, 100)
    doc = mongo.live(undo.stores.mongo, "playback_logs").find_one({"_id": USER})
    assert doc is not None and sum(s["session_id"] == first["sessionId"] for s in doc["sessions"]) == 1
    assert all(isinstance(s, dict) for s in doc["sessions"])  # whole-document writes keep sub-documents


@pytest.mark.parametrize("duration", [0, -5, 86_401])
def test_bad_durations_are_typed_errors(gql: Query, undo: Undo, duration: int) -> None:
    undo.keep_playback(USER)
    result = gql(PLAY, {"u": USER, "m": 1, "d": duration, "dev": "MOBILE"})["data"]["recordPlayback"]
    assert result["__typename"] == "InvalidDuration" and str(duration) in result["message"]


def test_unknown_device_is_a_graphql_error(gql: Query) -> None:
    body = gql(PLAY, {"u": USER, "m": 1, "d": 60, "dev": "TOASTER"})
    assert body["data"] is None and "TOASTER" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


class RecordingPusher:
    """A FeaturePusher that keeps the events (stands in for the Feast push the lead plugs in)."""

    def __init__(self) -> None:
        self.events: list[FeatureEvent] = []

    def push(self, event: FeatureEvent) -> bool:
        self.events.append(event)
        return True


@pytest.fixture(scope="module")
def keyed(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[tuple[TestClient, RecordingPusher]]:
    pusher = RecordingPusher()

    def plug(services: Services) -> None:
        services.feature_pusher = pusher

    app = create_app(settings.model_copy(update={"api_keys": ["k-one", "k-two"]}), stores=stores, configure=plug)
    with TestClient(app) as client:
        yield client, pusher


def test_mutations_need_an_api_key_when_keys_are_set(keyed: tuple[TestClient, RecordingPusher], undo: Undo) -> None:
    client, pusher = keyed
    variables = {"u": USER, "m": 1, "r": 3, "c": undo.client_id()}
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        body = client.post("/graphql", json={"query": RATE, "variables": variables}, headers=headers).json()
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert "X-API-Key" in body["errors"][0]["message"]
    assert undo.n_reviews(USER) == undo.review_counts[USER]
    assert pusher.events == []
    # Reads stay open.
    read = client.post("/graphql", json={"query": "{ movie(id: 1) { title } }"}).json()
    assert read == {"data": {"movie": {"title": "Toy Story"}}}

    body = client.post("/graphql", json={"query": RATE, "variables": variables}, headers={"X-API-Key": "k-two"}).json()
    result = body["data"]["rateMovie"]
    assert result["__typename"] == "RatingRecorded" and result["featuresPushed"] is True
    (event,) = pusher.events
    assert (event.kind, event.user_id, event.movie_id, event.value) == ("rating", USER, 1, 3.0)
    # A replay writes nothing and pushes nothing.
    client.post("/graphql", json={"query": RATE, "variables": variables}, headers={"X-API-Key": "k-one"})
    assert len(pusher.events) == 1
