"""The cost per request the evaluation prints beside the quality (model/evaluate/cost.py)."""

from __future__ import annotations

import numpy as np

from model.data import interactions as inter
from model.evaluate.cost import first_users_history, history_requests, request_cost
from model.evaluate.report import Report
from model.train.ease import train_ease
from model.train.options import TrainOptions
from model.train.pipeline import to_checkpoint


def test_requests_read_each_users_history_oldest_first(data: inter.Interactions) -> None:
    split = inter.make_split(data, "recbole")
    history = inter.combined([split.train, split.valid])
    requests = history_requests(history, 5, 100)
    assert [r.user_id for r in requests] == data.user_ids[:5].tolist()
    first = history.users == 0
    expected = data.movie_ids[history.items[first][np.lexsort((history.items[first], history.ts[first]))]]
    assert requests[0].history == expected.tolist() and requests[0].exclude == set(expected.tolist())
    assert all(r.k == 100 and len(r.history) >= 16 for r in requests)  # ML-100K users have >= 20 ratings


def test_the_requests_read_only_the_first_users_events(data: inter.Interactions) -> None:
    split = inter.make_split(data, "time")  # not every user has events in train or valid here
    parts = [split.train, split.valid]
    cut = first_users_history(parts, 7)
    assert len(np.unique(cut.users)) == 7 and len(cut) < len(split.train) // 10
    every = history_requests(inter.combined(parts), 7, 50)
    assert [(r.user_id, r.history) for r in history_requests(cut, 7, 50)] == [(r.user_id, r.history) for r in every]


def test_each_retriever_timed_and_the_served_one_marked(data: inter.Interactions) -> None:
    split = inter.make_split(data, "recbole")
    trained = train_ease(split, TrainOptions(quiet=True), l2_grid=(700.0,), recency_grid=(10.0,))
    ease = to_checkpoint(trained, data, split)
    costs = request_cost(["ease"], {"ease": ease}, split, n_users=20)
    assert set(costs) == {"ease"} and costs["ease"]["users"] == 20
    assert 0 < costs["ease"]["median_ms"] <= costs["ease"]["p90_ms"]
    report = Report("recbole", split.describe(), costs=costs, served="ease")
    assert "| ease (served) |" in report.markdown() and report.to_dict()["cost_per_request"] == costs
