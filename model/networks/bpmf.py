"""Bayesian probabilistic matrix factorization: a rating predictor averaged over posterior samples.

BPMF (Salakhutdinov & Mnih, ICML 2008) models a rating as ``mean + <u_user, v_movie>`` plus
Gaussian noise of precision ``beta``, with Gaussian-Wishart priors on the user and movie factor
distributions. Gibbs sampling (``model.train.gibbs``) draws factor matrices from the posterior,
in ``chains`` independent chains; the prediction is the average over the kept draws of every
chain, each clipped to [1, 5]: averaging over the posterior rather than fitting one point
estimate is what keeps it from overfitting a small matrix like ML-100K's, and pooling chains
lowers the Monte Carlo noise of that average.

The module holds the kept draws as buffers (saved in ``state_dict``):
``user_factors (samples, n_users, dim)`` (samples = ``config.kept``), ``item_factors (samples, n_items, dim)`` and the
training ratings' ``mean``. ``predict(users (B,), items (B,)) -> (B,)`` ratings in [1, 5].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.networks.config import DictConfig

MIN_RATING, MAX_RATING = 1.0, 5.0


@dataclass
class BpmfConfig(DictConfig):
    n_users: int
    n_items: int
    dim: int = 10  # latent factors per user and movie
    sweeps: int = 150  # Gibbs sweeps (users, then movies, then the noise precision)
    burn_in: int = 30  # sweeps discarded before draws are kept
    thin: int = 3  # keep every ``thin``-th draw after the burn-in
    chains: int = 2  # independent chains whose draws are pooled
    beta: float = 0.0  # noise precision; 0 = sampled from its posterior every sweep
    seed: int = 42

    def __post_init__(self) -> None:
        if min(self.n_users, self.n_items, self.dim, self.thin, self.chains) < 1:
            raise ValueError("n_users, n_items, dim, thin and chains must be >= 1")
        if not 0 <= self.burn_in < self.sweeps:
            raise ValueError(f"burn_in must be in [0, sweeps): got {self.burn_in} of {self.sweeps}")
        if self.beta < 0:
            raise ValueError("beta must be >= 0 (0 = sampled)")

    @property
    def kept(self) -> int:
        """How many draws the sampler keeps, all chains together."""
        return self.chains * self.per_chain

    @property
    def per_chain(self) -> int:
        """How many draws each chain keeps."""
        return len(range(self.burn_in, self.sweeps, self.thin))


class BayesianPMF(nn.Module):
    """The kept posterior draws; ``predict`` averages their clipped ratings."""

    user_factors: Tensor  # (samples, n_users, dim)
    item_factors: Tensor  # (samples, n_items, dim)
    mean: Tensor  # () the training ratings' mean

    def __init__(self, config: BpmfConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("user_factors", torch.zeros(config.kept, config.n_users, config.dim))
        self.register_buffer("item_factors", torch.zeros(config.kept, config.n_items, config.dim))
        self.register_buffer("mean", torch.tensor(3.0))

    @torch.no_grad()
    def predict(self, users: Tensor, items: Tensor, *, batch: int = 65_536) -> Tensor:
        """``users (B,)``, ``items (B,)`` dense ids -> ``(B,)`` ratings in [1, 5]."""
        if users.shape != items.shape or users.dim() != 1:
            raise ValueError(
                f"users and items must be 1-d and of one length: {tuple(users.shape)}, {tuple(items.shape)}"
            )
        out = torch.empty(len(users))
        for start in range(0, len(users), batch):
            u, i = users[start : start + batch], items[start : start + batch]
            dots = (self.user_factors[:, u] * self.item_factors[:, i]).sum(-1)  # (samples, b)
            out[start : start + batch] = (dots + self.mean).clamp(MIN_RATING, MAX_RATING).mean(0)
        return out
