"""Each client's query-cost budget (api/fairness.py): a client in debt gets 429 with
Retry-After before anything runs; other clients are unaffected."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.fairness import CostBudgets
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores.clients import Stores

# 100 users with 100 recommendations each: allowed (cost 15,002), and expensive.
HEAVY = "{ users(first: 100) { edges { node { recommendations(first: 100) { items { score movie { title } } } } } } }"
LIGHT = "{ movie(id: 1) { title } }"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_budget_admits_while_not_in_debt_and_says_how_long_to_wait() -> None:
    clock = Clock()
    budgets = CostBudgets(rate_per_s=10, burst=100, clock=clock)
    assert budgets.take("a", 60) == 0.0 and budgets.take("a", 60) == 0.0  # 100 -> 40 -> -20: admitted
    assert budgets.take("a", 1) == pytest.approx(2.0)  # 20 in debt at 10/s
    assert budgets.take("b", 100) == 0.0  # another client is not charged for it
    clock.now += 2.0
    assert budgets.take("a", 1) == 0.0 and budgets.refused == 1
    clock.now += 1000
    assert budgets.take("a", 0) == 0.0 and budgets.take("a", 150) == 0.0  # refilled to the burst, no more


def test_a_client_past_its_budget_gets_429_and_others_are_served(
    settings: Settings, stores: Stores, loaded: IngestReport
) -> None:
    keyed = settings.model_copy(update={"client_cost_per_s": 1.0, "api_keys": ["flood", "calm"]})
    with TestClient(create_app(keyed, stores=stores)) as client:
        for _ in range(2):  # 20,000 -> 4,998 -> -10,004: both admitted, the second into debt
            admitted = client.post("/graphql", json={"query": HEAVY}, headers={"x-api-key": "flood"})
            assert admitted.status_code == 200 and "errors" not in admitted.json()
        second = client.post("/graphql", json={"query": HEAVY}, headers={"x-api-key": "flood"})
        light = client.post("/graphql", json={"query": LIGHT}, headers={"x-api-key": "flood"})
        calm = client.post("/graphql", json={"query": LIGHT}, headers={"x-api-key": "calm"})
    assert second.status_code == 429 and int(second.headers["retry-after"]) > 9_000
    error = second.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED" and second.json().get("data") is None
    assert light.status_code == 429  # in debt: even a light query waits
    assert calm.status_code == 200 and calm.json() == {"data": {"movie": {"title": "Toy Story"}}}
