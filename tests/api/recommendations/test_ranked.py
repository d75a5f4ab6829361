"""The app as ``marquee serve`` plugs it (api/recommendations/ranked.py): a two-tower + engagement ranker trained
on Feast's features, the movie features held in memory, kept ranked lists, over real stores.

The checkpoints are trained briefly (a few batches, on a sample of the labels joined through
Feast) into a temporary models folder: the point is the serving path, not the model quality.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.serving import plug_serving
from sources.settings import Settings
from sources.stores.clients import Stores
from tests.api.conftest import undo_rating

if TYPE_CHECKING:
    from feast import FeatureStore

RECOMMEND = """query($u: Int!) { recommendations(userId: $u, first: 10) {
  modelVersion degraded items { rank score explanation movie { movieId title } } } }"""
RATE = """mutation($u: Int!, $m: Int!, $c: String!) { rateMovie(userId: $u, movieId: $m, rating: 5,
  clientMutationId: $c) { __typename ... on RatingRecorded { reviewId ratedAt featuresPushed } } }"""


@pytest.fixture(scope="module")
def served(served_settings: Settings, stores: Stores) -> Iterator[TestClient]:
    # The warm-up is off by default (the shared lists replace it); these tests exercise it.
    warmed = served_settings.model_copy(update={"recommendation_warm_users": 20_000})
    with TestClient(create_app(warmed, stores=stores, configure=plug_serving)) as client:
        yield client


def _recommend(client: TestClient, user: int) -> dict[str, Any]:
    body = client.post("/graphql", json={"query": RECOMMEND, "variables": {"u": user}}).json()
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["recommendations"]
    return result


def test_the_served_app_ranks_with_the_trained_model_and_keeps_the_lists(served: TestClient) -> None:
    first = _recommend(served, 3)
    assert "+engagement@" in first["modelVersion"] and first["degraded"] is False
    assert [i["rank"] for i in first["items"]] == list(range(1, 11))
    assert all("predicted rating" in i["explanation"] and i["movie"]["title"] for i in first["items"])
    assert _recommend(served, 3) == first  # the kept list
    status = served.get("/readyz").json()["serving"]
    assert status["movie_features"] == {"ok": True, "error": None}
    assert status["recommendation_cache"]["ok"] is True and status["recommendation_cache"]["hits"] >= 1


def test_a_rating_reaches_the_served_ranking_at_once(
    served: TestClient, stores: Stores, feature_store: FeatureStore
) -> None:
    """rateMovie through the served app: the rated movie leaves the user's kept list at once,
    and the list is ranked again on the user's new history (the user tower reads it)."""
    user = 8
    before = _recommend(served, user)
    rated = before["items"][0]["movie"]["movieId"]
    variables = {"u": user, "m": rated, "c": f"served-{uuid.uuid4()}"}
    recorded = served.post("/graphql", json={"query": RATE, "variables": variables}).json()["data"]["rateMovie"]
    assert recorded["__typename"] == "RatingRecorded" and recorded["featuresPushed"] is True, recorded
    try:
        after = _recommend(served, user)
        scores = {i["movie"]["movieId"]: i["score"] for i in after["items"]}
        assert rated not in scores
        still = [i for i in before["items"] if i["movie"]["movieId"] in scores]
        assert any(scores[i["movie"]["movieId"]] != i["score"] for i in still), "not ranked again"
    finally:
        at = datetime.fromisoformat(recorded["ratedAt"])
        undo_rating(stores, feature_store, recorded["reviewId"], user, rated, at)


def test_every_users_list_is_ranked_in_the_background_at_start(served: TestClient) -> None:
    """The warm-up (api/recommendations/refresher.py): a user's first request finds their list kept."""
    deadline = time.monotonic() + 120
    while (report := served.get("/readyz").json()["serving"]["recommendation_cache"])["background"]["queued"]:
        assert time.monotonic() < deadline, f"the warm-up did not finish: {report}"
        time.sleep(0.2)
    assert report["background"]["error"] is None and report["background"]["ranked"] >= 900  # ML-100K: 943 users
    never_asked = _recommend(served, 20)
    assert "+engagement@" in never_asked["modelVersion"] and len(never_asked["items"]) == 10
    after = served.get("/readyz").json()["serving"]["recommendation_cache"]
    assert (after["hits"], after["misses"]) == (report["hits"] + 1, report["misses"])
