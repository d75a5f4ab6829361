"""Recency-weighted EASE: a closed-form item-to-item model read over the ordered history.

EASE (Steck, WWW 2019) learns an item-item matrix ``B`` with a zero diagonal from the
user-item matrix ``X`` in closed form: ``P = (XᵀX + l2·I)⁻¹``, ``B = -P / diag(P)``. A user's
scores are ``x_u · B``. Here the input row ``x_u`` is not 0/1 but ``exp(-back / recency)``,
``back`` being how many of the user's events came after that movie (0 = the latest): the
per-user chronological split asks what a user rates *next*, and the latest movies say more
about that than the first ones. ``recency = 0`` is plain EASE (every known movie weighs 1).

A small popularity prior (``prior`` × log-count, scaled to [0, 1]) breaks the ties of users
with little or no history, who would otherwise get every score equal.

``score(inputs (B, n_items)) -> (B, n_items)``; ``inputs`` from ``history_inputs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.networks.config import DictConfig
from model.networks.recency import recency_rows


@dataclass
class EaseConfig(DictConfig):
    n_items: int
    l2: float = 700.0  # ridge weight on the item-item regression
    recency: float = 10.0  # decay length in events; 0 = plain EASE
    prior: float = 1e-3  # weight of the popularity prior


class RecencyEASE(nn.Module):
    """The item-item matrix and popularity prior as buffers (saved in ``state_dict``)."""

    weights: Tensor  # (n_items, n_items), zero diagonal
    popularity: Tensor  # (n_items,) log-counts scaled to [0, 1]

    def __init__(self, config: EaseConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("weights", torch.zeros(config.n_items, config.n_items))
        self.register_buffer("popularity", torch.zeros(config.n_items))

    def fit(self, matrix: Tensor, counts: Tensor) -> RecencyEASE:
        """``matrix (users, n_items)`` 0/1 training interactions; ``counts (n_items,)`` per movie."""
        x = matrix.double()
        gram = x.T @ x
        gram.diagonal().add_(self.config.l2)
        inverse = torch.linalg.inv(gram)
        weights = -inverse / inverse.diagonal()
        weights.fill_diagonal_(0.0)
        self.weights.copy_(weights.float())
        log_counts = counts.float().log1p()
        self.popularity.copy_(log_counts / log_counts.max().clamp_min(1.0))
        return self

    def history_inputs(self, histories: Sequence[Sequence[int]]) -> Tensor:
        """``(B, n_items)`` recency-weighted input rows from each user's movies, oldest first
        (``model.networks.recency``)."""
        return recency_rows(histories, self.config.n_items, self.config.recency)

    @torch.no_grad()
    def score(self, inputs: Tensor) -> Tensor:
        """``(B, n_items)`` inputs -> ``(B, n_items)`` scores."""
        out: Tensor = inputs @ self.weights + self.config.prior * self.popularity
        return out
