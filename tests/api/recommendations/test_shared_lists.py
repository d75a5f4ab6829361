"""Ranked lists shared by every worker in PostgreSQL (api/recommendations/shared_lists.py, the
``recommendation_lists`` table): kept, read by another app instance without ranking, forgotten
on a user's mutation in every instance, and still there after a restart.

Two app instances on the same stores stand for two Uvicorn workers (as in test_kept_lists.py);
the recommender under the lists is the graph and popularity fallback (no model to train).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from starlette.testclient import TestClient

from api.app import create_app
from api.context import Services
from api.queries import lists
from api.recommendations.contract import Outcome, RecommendationRequest, Recommender
from api.recommendations.kept_lists import CachedRecommender
from api.recommendations.shared_lists import SharedLists
from api.serving import plug_kept_lists
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores import mongo
from sources.stores.clients import Stores

RECOMMEND = "query($u: Int!) { recommendations(userId: $u, first: 5) { modelVersion items { movie { movieId } } } }"
RATE = """mutation($u: Int!, $m: Int!, $c: String!) {
  rateMovie(userId: $u, movieId: $m, rating: 4, clientMutationId: $c) { __typename } }"""
USERS = (11, 12)


class Counted(Recommender):
    """The plugged recommender, with the users it was asked to rank counted."""

    def __init__(self, inner: Recommender) -> None:
        self.inner, self.asked = inner, []

    def recommend_many(self, requests: Sequence[RecommendationRequest]) -> list[Outcome]:
        self.asked.extend(r.user_id for r in requests)
        return self.inner.recommend_many(requests)


def _answer(client: TestClient, user: int) -> tuple[str, list[int]]:
    body = client.post("/graphql", json={"query": RECOMMEND, "variables": {"u": user}}).json()
    assert "errors" not in body, body
    found = body["data"]["recommendations"]
    return found["modelVersion"], [item["movie"]["movieId"] for item in found["items"]]


def test_lists_are_shared_forgotten_in_every_worker_and_survive_a_restart(
    settings: Settings, stores: Stores, loaded: IngestReport
) -> None:
    with stores.pg.begin() as conn:
        conn.execute(text("DELETE FROM recommendation_lists WHERE user_id = ANY(:u)"), {"u": list(USERS)})
    with TestClient(create_app(settings, stores=stores)) as probe:
        version, _ = _answer(probe, USERS[0])  # the fallback's version names the lists it ranks
    apps: dict[str, tuple[CachedRecommender, Counted]] = {}

    def plugged(name: str) -> Any:
        def plug(services: Services) -> None:
            counted = Counted(services.recommender)
            services.recommender = counted
            cached = plug_kept_lists(services, ttl_s=600, poll_s=0.1,
                                     shared=SharedLists(stores.pg, version, ttl_s=3600))  # fmt: skip
            assert cached is not None
            apps[name] = (cached, counted)

        return plug

    client_id = f"shared-test-{uuid.uuid4()}"
    try:
        with (
            TestClient(create_app(settings, stores=stores, configure=plugged("a"))) as a,
            TestClient(create_app(settings, stores=stores, configure=plugged("b"))) as b,
        ):
            before = _answer(a, USERS[0])[1]
            assert _answer(a, USERS[1])[1] and apps["a"][1].asked == list(USERS)  # ranked once each, by A
            assert _answer(b, USERS[0])[1] == before and apps["b"][1].asked == []  # B read A's list
            assert apps["b"][0].shared is not None and apps["b"][0].shared.found == 1

            rated = before[0]
            answer = a.post("/graphql", json={"query": RATE, "variables": {"u": USERS[0], "m": rated, "c": client_id}})
            assert answer.json()["data"]["rateMovie"]["__typename"] == "RatingRecorded", answer.text
            assert rated not in _answer(a, USERS[0])[1]  # A forgot the user at once
            deadline = time.monotonic() + 5
            while rated in (b_ids := _answer(b, USERS[0])[1]) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert rated not in b_ids, "B kept serving a list from before the rating"
            made = lists.read_lists(stores.pg, [(USERS[0], True)], model_version=version,
                                    made_after=datetime.now(UTC) - timedelta(hours=1))  # fmt: skip
            kept = made.get((USERS[0], True), (0, (), None))[1]  # deleted, or ranked again since
            assert rated not in [item[0] for item in kept], "the table kept the list from before the rating"

        # A restart (a new instance): the lists are still there and nothing is ranked for them.
        with TestClient(create_app(settings, stores=stores, configure=plugged("c"))) as c:
            assert _answer(c, USERS[1])[1] and apps["c"][1].asked == []
    finally:
        mongo.live(stores.mongo, "reviews").delete_many({"user_id": USERS[0], "movie_id": rated})
        stores.mongo[mongo.MUTATION_LOG].delete_many({"_id": client_id})
        with stores.pg.begin() as conn:
            conn.execute(text("DELETE FROM recommendation_lists WHERE user_id = ANY(:u)"), {"u": list(USERS)})


def test_a_list_by_another_model_or_made_before_a_change_is_not_served(stores: Stores, loaded: IngestReport) -> None:
    shared = SharedLists(stores.pg, "model@1", ttl_s=3600)
    item = (5, 0.9, 1, "because")
    made = datetime.now(UTC) - timedelta(seconds=10)
    lists.write_lists(stores.pg, [(USERS[1], True, 10, "model@1", [item]), (USERS[1], False, 10, "model@0", [item])],
                      made)  # fmt: skip
    try:
        assert shared.read([(USERS[1], True), (USERS[1], False)]) == {(USERS[1], True): (10, (item,), made)}
        lists.write_lists(stores.pg, [(USERS[1], True, 10, "model@1", [])], made - timedelta(seconds=5))
        assert shared.read([(USERS[1], True)])[(USERS[1], True)][1] == (item,), "an older ranking never replaces"
        shared.changed(USERS[1])
        assert shared.read([(USERS[1], True)]) == {}
        assert SharedLists(stores.pg, "model@2", ttl_s=3600).read([(USERS[1], True)]) == {}
        shared.forget([USERS[1]])
        assert lists.users_with_lists(stores.pg, model_version="model@1", made_after=made - timedelta(1)) == set()
    finally:
        lists.forget_lists(stores.pg, [USERS[1]])
