"""Baselines: most-popular and BPR matrix factorisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MostPopular:
    """Scores every item by its interaction count in training; same list for everyone."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.counts = torch.zeros(n_items)

    def fit(self, item_ids: Tensor | Sequence[int]) -> MostPopular:
        """``item_ids (n_interactions,)``: one entry per training interaction."""
        ids = torch.as_tensor(item_ids, dtype=torch.long)
        self.counts = torch.bincount(ids, minlength=self.n_items).float()
        return self

    def score_all(self, user_ids: Tensor) -> Tensor:
        """``(batch,) -> (batch, n_items)`` counts (a view, don't modify in place)."""
        return self.counts.to(user_ids.device).expand(user_ids.shape[0], -1)


class BPRMF(nn.Module):
    """Matrix factorization trained with BPR (Rendle et al., 2009).

    ``forward(user_ids (B,), item_ids (B,)) -> (B,)`` = <p_u, q_i> + b_i.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 64) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        # small init: BPR on large random factors starts far from the ranking optimum
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, user_ids: Tensor, item_ids: Tensor) -> Tensor:
        p: Tensor = self.user_embedding(user_ids)
        q: Tensor = self.item_embedding(item_ids)
        bias: Tensor = self.item_bias(item_ids)
        return (p * q).sum(-1) + bias.squeeze(-1)

    @torch.no_grad()
    def score_all(self, user_ids: Tensor) -> Tensor:
        """``(batch,) -> (batch, n_items)``."""
        users: Tensor = self.user_embedding(user_ids)
        return users @ self.item_embedding.weight.T + self.item_bias.weight.T


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """``-mean(log sigmoid(pos - neg))`` over ``(B,)`` pairs; softplus form is stable."""
    return F.softplus(neg_scores - pos_scores).mean()
