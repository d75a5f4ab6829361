"""Shared evaluation plumbing: masks for full ranking, scorers that wrap trained models.

Used by training (early stopping on validation NDCG@10) and by ``model.evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.interactions import Interactions
from model.networks import TwoTowerRetriever
from model.ranking_metrics import catalog_coverage, ranking_metrics, top_k_items


class Scorer(Protocol):
    """Scores every movie for a batch of dense user ids: ``(B,) -> (B, n_movies)``."""

    def score_all(self, user_ids: Tensor) -> Tensor: ...


def history_bag(data: Interactions) -> Tensor:
    """``(n_users, n_movies)`` 0/1: which movies each user interacted with in ``data``."""
    bag = torch.zeros(data.n_users, data.n_movies)
    bag[torch.as_tensor(data.users), torch.as_tensor(data.items)] = 1.0
    return bag


def bag_features(bag_rows: Tensor) -> Tensor:
    """A user's history bag as the user tower's dense input: rows scaled to unit L2 norm."""
    return F.normalize(bag_rows, dim=-1)


class TwoTowerScorer:
    """A retriever plus the history its user tower reads (the user's training interactions)."""

    def __init__(self, model: TwoTowerRetriever, bag: Tensor) -> None:
        self.model = model
        self.bag = bag

    @torch.no_grad()
    def score_all(self, user_ids: Tensor) -> Tensor:
        device = self.model.user_tower.id_embedding.weight.device
        feats = bag_features(self.bag[user_ids.cpu()].to(device)) if self.model.config.user_feature_dim else None
        return self.model.score_all(user_ids.to(device), feats).float().cpu()


def masks(target: Interactions, seen: Sequence[Interactions]) -> tuple[Tensor, Tensor]:
    """``relevant (U, I)`` from ``target``; ``exclude (U, I)`` from every part in ``seen``."""
    shape = (target.n_users, target.n_movies)
    relevant = torch.zeros(shape, dtype=torch.bool)
    relevant[torch.as_tensor(target.users), torch.as_tensor(target.items)] = True
    exclude = torch.zeros(shape, dtype=torch.bool)
    for part in seen:
        exclude[torch.as_tensor(part.users), torch.as_tensor(part.items)] = True
    return relevant, exclude


def score_matrix(scorer: Scorer, n_users: int, batch: int = 1024) -> Tensor:
    rows = [scorer.score_all(torch.arange(s, min(s + batch, n_users))).float().cpu() for s in range(0, n_users, batch)]
    return torch.cat(rows)


def full_ranking(
    scorer: Scorer,
    target: Interactions,
    seen: Sequence[Interactions],
    *,
    k: int = 10,
    users: np.ndarray | None = None,
    scores: Tensor | None = None,
) -> dict[str, float]:
    """Recall/NDCG/MRR/Hit@k over the whole catalogue for every user with a held-out item,
    plus catalogue coverage of those users' top-k. ``users`` restricts to a slice."""
    relevant, exclude = masks(target, seen)
    if scores is None:
        scores = score_matrix(scorer, target.n_users)
    if users is not None:
        keep = torch.zeros(target.n_users, dtype=torch.bool)
        keep[torch.as_tensor(users, dtype=torch.long)] = True
        relevant &= keep[:, None]
    metrics = ranking_metrics(scores, relevant, k=k, exclude=exclude)
    rows = (relevant & ~exclude).any(dim=1).nonzero().squeeze(1)
    top = top_k_items(scores[rows], k, exclude[rows]) if rows.numel() else torch.zeros(0, k, dtype=torch.long)
    metrics["coverage"] = catalog_coverage(top, target.n_movies)
    metrics["users"] = float(rows.numel())
    return metrics
