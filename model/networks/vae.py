"""A variational autoencoder over each user's history: Mult-VAE with recency-weighted inputs.

Mult-VAE (Liang et al., WWW 2018): a user's row of movies goes through an encoder to a
Gaussian posterior over a ``latent``-dimensional code; the decoder maps the code to logits
over the whole catalogue, trained with a multinomial (softmax) likelihood of the user's
movies and a KL term towards a standard normal whose weight is annealed from 0 up to
``beta``. At scoring time the posterior mean is decoded (no sampling).

As in recency-weighted EASE (model/networks/ease.py) the input row is not 0/1 but
``exp(-back / recency)``, ``back`` being how many of the user's events came after that movie
(0 = the latest; ``recency = 0``: every movie weighs 1): the per-user chronological split asks
what a user rates *next*. The row is L2-normalised and dropped out (rate ``dropout``) while
training, so the model learns to fill in movies it was not shown.

``score(inputs (B, n_items)) -> (B, n_items)`` logits; ``inputs`` from ``history_inputs``.
``forward(inputs) -> (logits (B, n_items), mu (B, latent), logvar (B, latent))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.networks.config import DictConfig
from model.networks.recency import recency_rows


@dataclass
class VaeConfig(DictConfig):
    n_items: int
    hidden: int = 600
    latent: int = 200
    dropout: float = 0.5  # input dropout while training
    beta: float = 0.2  # the KL weight reached at the end of annealing
    recency: float = 10.0  # decay length of the input weights in events; 0 = plain multi-hot


class MultVAE(nn.Module):
    """Encoder ``n_items -> hidden -> 2 x latent``, decoder ``latent -> hidden -> n_items`` (tanh)."""

    def __init__(self, config: VaeConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.encoder = nn.Sequential(nn.Linear(c.n_items, c.hidden), nn.Tanh(), nn.Linear(c.hidden, 2 * c.latent))
        self.decoder = nn.Sequential(nn.Linear(c.latent, c.hidden), nn.Tanh(), nn.Linear(c.hidden, c.n_items))
        self.drop = nn.Dropout(c.dropout)

    def encode(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, n_items)`` -> posterior ``mu``, ``logvar``, each ``(B, latent)``."""
        x = self.drop(F.normalize(inputs, dim=1))
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(inputs)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decoder(z), mu, logvar

    def history_inputs(self, histories: Sequence[Sequence[int]]) -> Tensor:
        """``(B, n_items)`` recency-weighted input rows from each user's movies, oldest first
        (``model.networks.recency``)."""
        return recency_rows(histories, self.config.n_items, self.config.recency)

    @torch.no_grad()
    def score(self, inputs: Tensor) -> Tensor:
        """``(B, n_items)`` inputs -> ``(B, n_items)`` logits of the posterior mean (no dropout, no sampling)."""
        x = F.normalize(inputs.to(next(self.parameters()).device), dim=1)
        mu, _ = self.encoder(x).chunk(2, dim=1)
        logits: Tensor = self.decoder(mu)
        return logits


def vae_loss(logits: Tensor, targets: Tensor, mu: Tensor, logvar: Tensor, beta: float) -> Tensor:
    """Mean over the batch of the multinomial negative log-likelihood of ``targets (B, n_items)``
    (weights, 0 = not a target) plus ``beta`` x KL(posterior || N(0, I))."""
    nll = -(F.log_softmax(logits, dim=1) * targets).sum(dim=1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
    return (nll + beta * kl).mean()
