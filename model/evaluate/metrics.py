"""Offline evaluation: full-ranking top-K metrics, catalogue coverage, RMSE/MAE.

Full ranking means every model scores the whole catalogue for every test user
(``score_all``), training items are pushed out of the ranking, and the held-out
items are the relevant ones. Sampled-negative metrics overstate quality and do
not rank models consistently (Krichene & Rendle, KDD 2020), so we do not use them.

The per-user metrics are torchmetrics' retrieval metrics. Users are ranked one
chunk at a time and only each user's top-K and relevant items are handed over,
so a 6000 x 4000 evaluation needs little memory beyond the score matrix. Two
torchmetrics behaviours are handled here, not by callers:

- ``RetrievalRecall`` and ``RetrievalMRR`` ignore items whose score is <= 0, so
  raw dot products would silently lose hits. Scores are therefore replaced by
  their rank (``n_items`` for the best item down to 1), which keeps the order
  and is always positive.
- Ties: scores that tie are ordered by item id (stable sort), the same for all
  four metrics; torchmetrics' NDCG would otherwise average over ties while the
  other metrics break them arbitrarily.

Recall@K follows torchmetrics: hits in the top K / all relevant items of the
user (not / min(K, relevant)), so a user with more than K relevant items cannot
reach 1.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

import torch
from torch import Tensor
from torchmetrics.retrieval import (
    RetrievalHitRate,
    RetrievalMRR,
    RetrievalNormalizedDCG,
    RetrievalRecall,
)
from torchmetrics.retrieval.base import RetrievalMetric

# Score cells handed to torchmetrics per chunk; bounds memory whatever the catalogue size.
CHUNK_CELLS = 1 << 20

Relevance = Tensor | Sequence[Set[int]]


def relevance_mask(relevant: Relevance, n_users: int, n_items: int) -> Tensor:
    """``list[set[int]]`` of item ids per user, or a bool tensor -> ``(n_users, n_items)`` bool."""
    if isinstance(relevant, Tensor):
        if relevant.shape != (n_users, n_items):
            raise ValueError(f"relevant has shape {tuple(relevant.shape)}, want {n_users, n_items}")
        return relevant.bool()
    if len(relevant) != n_users:
        raise ValueError(f"relevant has {len(relevant)} users, scores have {n_users}")
    mask = torch.zeros(n_users, n_items, dtype=torch.bool)
    for user, items in enumerate(relevant):
        ids = torch.tensor(sorted(items), dtype=torch.long)
        if ids.numel() and (ids.min() < 0 or ids.max() >= n_items):
            raise ValueError(f"user {user} has relevant item ids outside [0, {n_items})")
        mask[user, ids] = True
    return mask


def _masked(scores: Tensor, exclude: Tensor | None) -> Tensor:
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if exclude is None:
        return scores.float()
    if exclude.shape != scores.shape:
        raise ValueError(f"exclude has shape {tuple(exclude.shape)}, scores {tuple(scores.shape)}")
    return scores.float().masked_fill(exclude.bool(), float("-inf"))


def _rank_scores(scores: Tensor) -> Tensor:
    """``(users, items)`` -> ranks as scores: ``items`` for a row's best, down to 1.

    Ties go to the lower item id (stable sort).
    """
    n_items = scores.shape[1]
    order = scores.argsort(dim=1, descending=True, stable=True)
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(n_items, device=scores.device).expand_as(order))
    return (n_items - position).float()


def top_k_items(scores: Tensor, k: int = 10, exclude: Tensor | None = None) -> Tensor:
    """``(users, items)`` scores -> ``(users, k)`` item ids, best first, excluded items last."""
    ranked = _rank_scores(_masked(scores, exclude))  # same tie rule as ranking_metrics
    return ranked.topk(min(k, scores.shape[1]), dim=1).indices


def ranking_metrics(
    scores: Tensor,
    relevant: Relevance,
    k: int = 10,
    exclude: Tensor | None = None,
) -> dict[str, float]:
    """Recall, NDCG, MRR and hit rate at ``k`` over the full catalogue.

    ``scores (U, I)``: higher is better. ``relevant``: per-user sets of item ids or
    a ``(U, I)`` bool mask (held-out items). ``exclude (U, I)`` bool: items never
    to recommend (the user's training items); they are ranked last and dropped
    from ``relevant``. Averages over users with at least one relevant item left;
    NaN when there are none. Returns ``{"recall@k", "ndcg@k", "mrr@k", "hit@k"}``.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    n_users, n_items = scores.shape
    rel = relevance_mask(relevant, n_users, n_items).to(scores.device)
    if exclude is not None:
        rel = rel & ~exclude.to(scores.device).bool()
    metrics: dict[str, RetrievalMetric] = {
        f"recall@{k}": RetrievalRecall(top_k=k),
        f"ndcg@{k}": RetrievalNormalizedDCG(top_k=k),
        f"mrr@{k}": RetrievalMRR(top_k=k),
        f"hit@{k}": RetrievalHitRate(top_k=k),
    }
    users = rel.any(dim=1).nonzero().squeeze(1)
    if users.numel() == 0:
        return dict.fromkeys(metrics, float("nan"))

    chunk = max(1, CHUNK_CELLS // n_items)
    for start in range(0, users.numel(), chunk):
        rows = users[start : start + chunk]
        sub_exclude = None if exclude is None else exclude[rows.to(exclude.device)]
        preds = _rank_scores(_masked(scores[rows], sub_exclude))
        target = rel[rows]
        # Every metric @k depends only on the top k and on the relevant items, so only
        # those cells go to torchmetrics: same values, ~10x less per-user sorting.
        keep = target | (preds > n_items - k)
        query = torch.arange(start, start + rows.numel(), device=preds.device)[:, None]
        for metric in metrics.values():
            metric.update(preds[keep], target[keep], indexes=query.expand_as(preds)[keep])
    return {name: metric.compute().item() for name, metric in metrics.items()}


def catalog_coverage(topk_items: Tensor, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top-k: ``(U, k)`` -> [0, 1]."""
    if topk_items.numel() and (topk_items.min() < 0 or topk_items.max() >= n_items):
        raise ValueError(f"item ids outside [0, {n_items})")
    distinct: Tensor = torch.unique(topk_items)
    return distinct.numel() / n_items


def _check_pair(pred: Tensor, target: Tensor) -> None:
    # (B, 1) vs (B,) would broadcast to (B, B) and give a plausible but wrong number
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")


def rmse(pred: Tensor, target: Tensor) -> float:
    """Root mean squared error of same-shape tensors."""
    _check_pair(pred, target)
    return (pred.double() - target.double()).pow(2).mean().sqrt().item()


def mae(pred: Tensor, target: Tensor) -> float:
    """Mean absolute error of same-shape tensors."""
    _check_pair(pred, target)
    return (pred.double() - target.double()).abs().mean().item()
