"""The recommender plug-in point: a failing model path falls back (degraded) through
WithFallback, and an unplugged failure is masked rather than leaked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.context import Services
from api.recommend import FallbackRecommender, RecommendationResult, WithFallback
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores import Stores

SECRET = "model checkpoint /secret/path is corrupt"
QUERY = "{ recommendations(userId: 3, first: 5) { degraded modelVersion items { rank movie { movieId } } } }"


class BrokenModel:
    """Stands in for a model-backed recommender whose checkpoint cannot be used."""

    def recommend(self, user_id: int, k: int, exclude_seen: bool = True) -> RecommendationResult:
        raise RuntimeError(SECRET)


@pytest.fixture(scope="module")
def with_fallback(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[TestClient]:
    def plug(services: Services) -> None:
        services.recommender = WithFallback(BrokenModel(), services.recommender)

    with TestClient(create_app(settings, stores=stores, configure=plug)) as client:
        yield client


@pytest.fixture(scope="module")
def unplugged(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[TestClient]:
    def plug(services: Services) -> None:
        services.recommender = BrokenModel()

    with TestClient(create_app(settings, stores=stores, configure=plug)) as client:
        yield client


def test_a_failing_model_falls_back_degraded(with_fallback: TestClient, stores: Stores) -> None:
    body = with_fallback.post("/graphql", json={"query": QUERY}).json()
    assert "errors" not in body
    result = body["data"]["recommendations"]
    assert result["degraded"] is True
    assert [i["rank"] for i in result["items"]] == [1, 2, 3, 4, 5]
    direct = FallbackRecommender(stores).recommend(3, 5)
    assert [i["movie"]["movieId"] for i in result["items"]] == [i.movie_id for i in direct.items]
    assert result["modelVersion"] == direct.model_version


def test_unexpected_errors_are_masked(unplugged: TestClient) -> None:
    response = unplugged.post("/graphql", json={"query": QUERY})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert SECRET not in response.text


def test_too_many_global_ids(unplugged: TestClient) -> None:
    ids = ["VXNlcjox"] * 101
    body = unplugged.post(
        "/graphql", json={"query": "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", "variables": {"ids": ids}}
    ).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "between 1 and 100, got 101" in body["errors"][0]["message"]
