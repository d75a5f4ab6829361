"""Evaluation plumbing on hand-computed tiny cases, and the splits against an independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor

from model.data import interactions as inter
from model.evaluate.ranking import HistoryIndex, full_ranking
from model.evaluate.report import Report, candidates_for, rerank_scores, write_report
from sources.ingest import IngestReport
from sources.stores.clients import Stores

SCORES = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])


class Fixed:
    def __init__(self, scores: Tensor) -> None:
        self.scores = scores

    def score_all(self, user_ids: Tensor) -> Tensor:
        return self.scores[user_ids]


def tiny(pairs: list[tuple[int, int]]) -> inter.Interactions:
    users, items = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True))
    n = len(users)
    return inter.Interactions(users, items, np.full(n, 4.0, np.float32), np.arange(n, dtype=np.int64),
                              np.array([10, 20]), np.array([1, 2, 3, 4, 5]))  # fmt: skip


TRAIN = tiny([(0, 0), (1, 4)])
TEST = tiny([(0, 2), (1, 0), (1, 3)])


def test_full_ranking_matches_hand_computation() -> None:
    # user 0: movie 0 seen -> ranking 1,2,3,4; relevant 2 at rank 2.
    # user 1: movie 4 seen -> ranking 3,2,1,0; relevant 3 at rank 1 and 0 at rank 4.
    m = full_ranking(Fixed(SCORES), TEST, [TRAIN], k=10)
    ndcg0 = 1 / math.log2(3)
    ndcg1 = (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg0 + ndcg1) / 2, abs=1e-6)
    assert (m["recall@10"], m["mrr@10"], m["hit@10"], m["users"]) == pytest.approx((1.0, 0.75, 1.0, 2.0))

    m2 = full_ranking(Fixed(SCORES), TEST, [TRAIN], k=2)  # top-2: user 0 [1, 2], user 1 [3, 2]
    assert m2["ndcg@2"] == pytest.approx((ndcg0 + 1 / (1 + 1 / math.log2(3))) / 2, abs=1e-6)
    assert (m2["recall@2"], m2["mrr@2"]) == pytest.approx((0.75, 0.75))
    assert m2["coverage"] == pytest.approx(3 / 5)  # movies 1, 2, 3


def test_a_user_slice_counts_only_its_users() -> None:
    m = full_ranking(Fixed(SCORES), TEST, [TRAIN], k=10, users=np.array([0]))
    assert (m["users"], m["mrr@10"]) == (1.0, 0.5)


def test_rerank_keeps_only_candidates_and_never_seen_movies() -> None:
    exclude = torch.zeros(2, 5, dtype=torch.bool)
    exclude[0, 0] = True
    cands = candidates_for(SCORES, exclude, 2)
    out = rerank_scores(cands, 5, 0.0)
    assert torch.isfinite(out[0]).nonzero().squeeze(1).tolist() == [1, 2]  # 0 is seen
    assert torch.isfinite(out[1]).nonzero().squeeze(1).tolist() == [3, 4]
    # an engagement logit strong enough flips user 1's pair: 0.4 + 1.0 * 0.5 > 0.5 + 1.0 * 0.0
    cands.engagement = torch.tensor([[0.0, 0.0], [0.0, 0.5]])
    assert rerank_scores(cands, 5, 1.0)[1].argmax().item() == 3
    assert rerank_scores(cands, 5, 0.0)[1].argmax().item() == 4


def test_history_batches_drop_the_target() -> None:
    index = HistoryIndex([tiny([(0, 0), (0, 2), (0, 3), (1, 4)])])
    h = index.batch(torch.tensor([0, 1]), drop=torch.tensor([2, 0]))
    assert h.items.tolist() == [0, 2, 3, 4] and h.offsets.tolist() == [0, 3]
    # user 0 keeps 2 movies (weight 1/sqrt 2), its target gets 0; user 1 keeps its 1 movie
    assert h.weights.tolist() == pytest.approx([1 / math.sqrt(2), 0.0, 1 / math.sqrt(2), 1.0])


def test_causal_history_is_the_prefix_before_each_event() -> None:
    data = tiny([(0, 3), (1, 4), (0, 1), (0, 2)])  # user 0 meets 3, then 1, then 2
    assert inter_positions(data) == [0, 0, 1, 2]
    h = HistoryIndex([data]).batch(torch.tensor([0, 0, 1]), prefix=torch.tensor([0, 2, 1]))
    assert h.items.tolist() == [3, 1, 4] and h.offsets.tolist() == [0, 0, 2]
    assert h.weights.tolist() == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2), 1.0])


def inter_positions(data: inter.Interactions) -> list[int]:
    return HistoryIndex.positions(data).tolist()


@pytest.mark.parametrize(("total", "counts"), [(10, [8, 1, 1]), (5, [3, 1, 1]), (2, [1, 0, 1]), (1, [1, 0, 0]),
                                               (23, [19, 2, 2])])  # fmt: skip
def test_recbole_rounding(total: int, counts: list[int]) -> None:
    assert inter.recbole_counts(total) == counts


def test_splits_agree_with_the_training_data_module(stores: Stores, loaded: IngestReport) -> None:
    from model.data import point_in_time as training_data

    data = inter.from_stores(stores)
    labels = pd.DataFrame({"user_id": data.user_ids[data.users], "movie_id": data.movie_ids[data.items],
                           "event_timestamp": pd.to_datetime(data.ts, unit="s", utc=True)})  # fmt: skip
    labels = labels.sort_values(["event_timestamp", "user_id", "movie_id"], ignore_index=True)
    ours = inter.recbole_split(data)
    theirs = training_data.recbole_split(labels)
    for mine, other in zip((ours.train, ours.valid, ours.test), theirs, strict=True):
        keys = set(zip(data.user_ids[mine.users].tolist(), data.movie_ids[mine.items].tolist(), strict=True))
        assert keys == set(zip(other.user_id.tolist(), other.movie_id.tolist(), strict=True))
    split = inter.time_split(data)
    assert split.train.max_ts <= split.valid.ts.min() and split.valid.max_ts <= split.test.ts.min()
    r = inter.random_split(data, seed=1)
    assert (len(r.train), len(r.valid), len(r.test)) == (70_000, 10_000, 20_000)


def test_report_files(tmp_path: pd.DataFrame) -> None:
    report = Report("time", {"name": "time"})
    report.rows["pop"] = {"ndcg@10": 0.1, "recall@10": 0.05, "mrr@10": 0.2, "hit@10": 0.4, "coverage": 0.02}
    report.rows["engagement (rating)"] = {"rmse": 0.95, "mae": 0.75}
    report.cold["pop / cold users"] = {"users": 3.0, "ndcg@10": 0.0}
    paths = write_report(report, tmp_path)
    assert "| pop | 0.1000 | 0.0500 |" in paths["markdown"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert '"rmse": 0.95' in paths["json"].read_text()
    assert "| pop / cold users | 3 | 0.0000 |" in paths["markdown"].read_text()  # a count, not 3.0
    assert '"users": 3,' in paths["json"].read_text()
    assert paths["markdown"].name == "evaluation_time.md"


def test_a_subset_report_has_a_clean_name_beside_the_full_one(tmp_path: pd.DataFrame) -> None:
    report = Report("time", {"name": "time"}, complete=False, models=["engagement", "two_tower"])
    report.rows["two_tower"] = {"ndcg@10": 0.1, "recall@10": 0.05, "mrr@10": 0.2, "hit@10": 0.4, "coverage": 0.02}
    report.rows["two_tower, history incl. valid"] = dict(report.rows["two_tower"])
    report.rows["engagement served (re-ranked two_tower top 100)"] = dict(report.rows["two_tower"])
    paths = write_report(report, tmp_path)
    assert {p.name for p in paths.values()} == {
        f"evaluation_time_two_tower-engagement.{s}" for s in ("md", "json", "png")
    }
