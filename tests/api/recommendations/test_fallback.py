"""The recommender plug-in point: a failing model path falls back (degraded) through
WithFallback, and an unplugged failure is masked rather than leaked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.context import Services
from api.recommendations.contract import Outcome, RecommendationRequest, RecommendationResult, Recommender
from api.recommendations.fallback import FallbackRecommender, WithFallback
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores.clients import Stores
from tests.api.conftest import ServeInThread

SECRET = "model checkpoint /secret/path is corrupt"
QUERY = "{ recommendations(userId: 3, first: 5) { degraded modelVersion items { rank movie { movieId } } } }"


class BrokenModel(Recommender):
    """Stands in for a model-backed recommender whose checkpoint cannot be used."""

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
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


class Recording(Recommender):
    """The fallback recommender, recording the batches it is asked (the first one slowly, so
    the requests sent meanwhile must queue up and go together)."""

    def __init__(self, stores: Stores) -> None:
        self.inner = FallbackRecommender(stores)
        self.batches: list[list[int]] = []

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        if not self.batches:
            time.sleep(0.5)
        self.batches.append([r.user_id for r in requests])
        return [self.inner.recommend(r.user_id, r.k, r.exclude_seen) for r in requests]


def test_concurrent_requests_are_ranked_together(
    settings: Settings, stores: Stores, loaded: IngestReport, serve_in_thread: ServeInThread
) -> None:
    """Requests that arrive while a batch is ranked go together in the next one; each still
    gets its own answer, and an unknown user gets NOT_FOUND without failing the others."""
    recording = Recording(stores)

    def plug(services: Services) -> None:
        services.recommender = recording

    users = [1, 2, 99_999, 3, 4, 5]
    query = "query($u: Int!) { recommendations(userId: $u, first: 4) { items { rank movie { movieId title } } } }"

    async def ask_all(url: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def ask(user: int, delay: float) -> dict[str, Any]:
                await asyncio.sleep(delay)  # the first request starts a batch; the others queue
                response = await client.post("/graphql", json={"query": query, "variables": {"u": user}})
                assert response.status_code == 200
                body: dict[str, Any] = response.json()
                return body

            return await asyncio.gather(*(ask(u, 0.0 if i == 0 else 0.2) for i, u in enumerate(users)))

    with serve_in_thread(create_app(settings, stores=stores, configure=plug), lifespan="on") as url:
        answers = asyncio.run(ask_all(url))
    assert recording.batches[0] == [1]
    assert sorted(recording.batches[1]) == [2, 3, 4, 5], recording.batches  # 99999 never reaches the ranker
    for user, body in zip(users, answers, strict=True):
        if user == 99_999:
            assert body["data"] is None
            assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            assert body["errors"][0]["message"] == "no user with id 99999"
            continue
        alone = FallbackRecommender(stores).recommend(user, 4)
        items = body["data"]["recommendations"]["items"]
        assert [i["movie"]["movieId"] for i in items] == [i.movie_id for i in alone.items]
        assert all(i["movie"]["title"] for i in items)


def test_only_the_requests_the_model_failed_fall_back(stores: Stores, loaded: IngestReport) -> None:
    """In a batch, a request the primary failed alone is answered by the fallback (degraded);
    the others keep the primary's answer."""
    answered = RecommendationResult([], "model-v1")

    class HalfBroken(Recommender):
        def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
            return [answered if r.user_id != 3 else RuntimeError("user 3 is newer than the model") for r in requests]

    both = WithFallback(HalfBroken(), FallbackRecommender(stores))
    first, second = both.recommend_many([RecommendationRequest(1, 5), RecommendationRequest(3, 5)])
    assert first is answered
    assert isinstance(second, RecommendationResult) and second.degraded
    assert [i.movie_id for i in second.items] == [i.movie_id for i in FallbackRecommender(stores).recommend(3, 5).items]
