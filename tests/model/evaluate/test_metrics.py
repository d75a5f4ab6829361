"""Ranking metrics against values worked out by hand on tiny rankings."""

from __future__ import annotations

import math

import pytest
import torch

from model.evaluate import metrics as rm
from model.evaluate.metrics import catalog_coverage, mae, ranking_metrics, rmse, top_k_items

LOG2_3 = math.log2(3)  # rank-2 discount is 1/log2(2+1)

# 4 users x 5 items, k = 3. Rankings (best first) implied by the scores:
#   u0: 0 1 2 3 4        relevant {1, 4}
#   u1: 0 4 2 1 3        relevant {0, 2}   (all scores negative on purpose)
#   u2: 4 3 2 1 0        relevant {0}
#   u3: anything         relevant {}       -> not averaged in
SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5],
        [-0.1, -0.5, -0.3, -2.0, -0.2],
        [0.1, 0.2, 0.3, 0.4, 0.5],
        [0.3, 0.1, 0.2, 0.5, 0.4],
    ]
)
RELEVANT: list[set[int]] = [{1, 4}, {0, 2}, {0}, set()]

# u0: top3 = 0 1 2, one hit at rank 2.
#   recall = 1/2; DCG = 1/log2(3); IDCG (2 relevant) = 1/log2(2) + 1/log2(3); RR = 1/2
U0_NDCG = (1 / LOG2_3) / (1 + 1 / LOG2_3)  # 0.38685
# u1: top3 = 0 4 2, hits at ranks 1 and 3.
#   recall = 2/2; DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3); RR = 1
U1_NDCG = 1.5 / (1 + 1 / LOG2_3)  # 0.91972
# u2: top3 = 4 3 2, no hit -> every metric 0.


def test_hand_computed_values() -> None:
    got = ranking_metrics(SCORES, RELEVANT, k=3)
    assert got.keys() == {"recall@3", "ndcg@3", "mrr@3", "hit@3"}
    assert got["recall@3"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert got["ndcg@3"] == pytest.approx((U0_NDCG + U1_NDCG + 0.0) / 3)
    assert got["mrr@3"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert got["hit@3"] == pytest.approx(2 / 3)


def test_bool_mask_equals_sets() -> None:
    mask = torch.zeros(4, 5, dtype=torch.bool)
    for user, items in enumerate(RELEVANT):
        mask[user, list(items)] = True
    assert ranking_metrics(SCORES, mask, k=3) == pytest.approx(ranking_metrics(SCORES, RELEVANT, k=3))


def test_excluded_items_are_really_excluded() -> None:
    exclude = torch.zeros(4, 5, dtype=torch.bool)
    exclude[0, 0] = True  # u0's top item was seen in training
    exclude[2, 0] = True  # u2's only relevant item is also a training item -> u2 drops out
    # u0 now ranks 1 2 3 (4) (0): hit at rank 1.
    #   recall = 1/2; NDCG = 1 / (1 + 1/log2(3)); RR = 1.  u1 unchanged.
    got = ranking_metrics(SCORES, RELEVANT, k=3, exclude=exclude)
    assert got["recall@3"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["ndcg@3"] == pytest.approx((1 / (1 + 1 / LOG2_3) + U1_NDCG) / 2)
    assert got["mrr@3"] == pytest.approx(1.0)
    assert got["hit@3"] == pytest.approx(1.0)
    top = top_k_items(SCORES, k=3, exclude=exclude)
    assert top[0].tolist() == [1, 2, 3]
    assert not exclude.gather(1, top).any()


def test_ties_go_to_lower_item_id() -> None:
    flat = torch.zeros(2, 5)
    # all scores tie -> ranking 0 1 2 3 4 for both users
    got = ranking_metrics(flat, [{0}, {4}], k=3)
    assert got["hit@3"] == pytest.approx(0.5)
    assert got["ndcg@3"] == pytest.approx(0.5)
    assert top_k_items(flat, k=3).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_no_relevant_users_gives_nan() -> None:
    got = ranking_metrics(SCORES, [set(), set(), set(), set()], k=3)
    assert all(math.isnan(v) for v in got.values())


def _reference(scores: torch.Tensor, relevant: list[set[int]], k: int) -> dict[str, float]:
    """Plain-Python definitions, for cross-checking on random data."""
    sums = {"recall": 0.0, "ndcg": 0.0, "mrr": 0.0, "hit": 0.0}
    users = [u for u, rel in enumerate(relevant) if rel]
    for u in users:
        rel = relevant[u]
        ranked = sorted(range(scores.shape[1]), key=lambda i: -scores[u, i].item())[:k]
        hits = [i in rel for i in ranked]
        dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
        sums["recall"] += sum(hits) / len(rel)
        sums["ndcg"] += dcg / idcg
        sums["mrr"] += next((1 / (r + 1) for r, h in enumerate(hits) if h), 0.0)
        sums["hit"] += float(any(hits))
    return {f"{name}@{k}": total / len(users) for name, total in sums.items()}


def test_matches_reference_and_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(20, 30, generator=gen)
    relevant = [
        set(torch.randperm(30, generator=gen)[: u % 6].tolist()) for u in range(20)
    ]  # 0..5 relevant items, some users with none
    want = _reference(scores, relevant, k=5)
    assert ranking_metrics(scores, relevant, k=5) == pytest.approx(want)
    monkeypatch.setattr(rm, "CHUNK_CELLS", 31)  # one user per chunk
    assert ranking_metrics(scores, relevant, k=5) == pytest.approx(want)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        ranking_metrics(SCORES, RELEVANT[:3], k=3)
    with pytest.raises(ValueError):
        ranking_metrics(SCORES, [{7}, set(), set(), set()], k=3)
    with pytest.raises(ValueError):
        ranking_metrics(torch.full((4, 5), float("nan")), RELEVANT, k=3)


def test_catalog_coverage() -> None:
    top = torch.tensor([[0, 1], [1, 2], [0, 2]])
    assert catalog_coverage(top, n_items=5) == pytest.approx(3 / 5)
    assert catalog_coverage(torch.arange(10).reshape(5, 2), n_items=10) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        catalog_coverage(torch.tensor([[5]]), n_items=5)


def test_rmse_mae() -> None:
    pred, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 5.0])
    assert rmse(pred, target) == pytest.approx(math.sqrt(4 / 3))
    assert mae(pred, target) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):  # (3, 1) vs (3,) would broadcast to (3, 3)
        rmse(pred[:, None], target)
