"""A sequential retriever: causal self-attention over each user's ordered history (SASRec-style).

Kang & McAuley (ICDM 2018): item embeddings plus learned positions go through a causal
Transformer encoder; the hidden state at position ``t`` scores every movie by a dot product
with the (tied) item embeddings, as what the user meets after the first ``t + 1`` movies.
The per-user chronological split asks what a user rates *next* and later, so the order of the
history carries signal that a bag of movies (EASE, the two-tower) ignores.

``horizon`` sets what a position is trained to predict: 1 is the next movie (SASRec), ``h > 1``
spreads the target evenly over the next ``h`` movies, closer to a test that starts one
validation block after the history ends. Trained with full softmax over the catalogue.

Ids: movie ``i`` is token ``i + 1``; token 0 pads sequences on the left.
``forward(tokens (B, L)) -> (B, L, dim)``; ``score_last(tokens) -> (B, n_items)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.networks.config import DictConfig


@dataclass
class SequentialConfig(DictConfig):
    n_items: int
    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50  # the last this many movies are read
    dropout: float = 0.2
    horizon: int = 8  # a position predicts one of the next ``horizon`` movies (1 = next item)


class SequentialRetriever(nn.Module):
    """Item and position embeddings, a causal pre-norm Transformer encoder, tied output."""

    def __init__(self, config: SequentialConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.items = nn.Embedding(c.n_items + 1, c.dim, padding_idx=0)
        self.positions = nn.Embedding(c.max_len, c.dim)
        layer = nn.TransformerEncoderLayer(
            c.dim, c.heads, dim_feedforward=c.dim * 2, dropout=c.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        self.drop = nn.Dropout(c.dropout)
        nn.init.normal_(self.items.weight, std=c.dim**-0.5)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, L)`` left-padded tokens -> ``(B, L, dim)`` hidden states (position ``t`` reads ``<= t``)."""
        length = tokens.shape[1]
        # positions count back from the last slot, so the latest movie always has position max_len - 1
        pos = torch.arange(self.config.max_len - length, self.config.max_len, device=tokens.device)
        x = self.drop(self.items(tokens) * self.config.dim**0.5 + self.positions(pos)[None])
        ones = torch.ones(length, length, dtype=torch.bool, device=tokens.device)
        # no position reads a later one or padding; each reads itself, so no row is empty (no NaN)
        blocked = (torch.triu(ones, diagonal=1)[None] | (tokens == 0)[:, None, :]) & ~torch.eye(
            length, dtype=torch.bool, device=tokens.device
        )
        h = self.encoder(x, mask=blocked.repeat_interleave(self.config.heads, dim=0))
        out: Tensor = self.norm(h)
        return out

    def logits(self, hidden: Tensor) -> Tensor:
        """``(..., dim) -> (..., n_items)``: dot products with every movie's embedding."""
        out: Tensor = hidden @ self.items.weight[1:].T
        return out

    @torch.no_grad()
    def score_last(self, tokens: Tensor) -> Tensor:
        """``(B, L)`` -> ``(B, n_items)`` scores of what comes after each whole sequence."""
        return self.logits(self(tokens)[:, -1])

    def tokens(self, histories: Sequence[Sequence[int]]) -> Tensor:
        """``(B, L)`` left-padded tokens from each user's movies (dense ids, oldest first), the last
        ``max_len`` kept; ``L`` is the longest kept history (at least 1)."""
        kept = [list(h)[-self.config.max_len :] for h in histories]
        length = max([1] + [len(h) for h in kept])
        out = torch.zeros(len(kept), length, dtype=torch.long)
        for row, h in enumerate(kept):
            if h:
                out[row, length - len(h) :] = torch.as_tensor(h, dtype=torch.long) + 1
        return out


def horizon_loss(model: SequentialRetriever, tokens: Tensor) -> Tensor:
    """Full-softmax cross-entropy of every position against the next ``horizon`` movies.

    ``tokens (B, L)`` left-padded; position ``t``'s target is the movies at ``t+1 .. t+h``
    (soft, equal weights over the real ones among them). Positions with no real target, and
    padding, do not count. Returns the mean over counted positions."""
    h = model.config.horizon
    inputs, length = tokens[:, :-1], tokens.shape[1] - 1
    hidden = model(inputs)
    logits = model.logits(hidden)  # (B, L-1, n_items)
    log_p = F.log_softmax(logits.float(), dim=-1)
    total = torch.zeros(inputs.shape, device=tokens.device)
    weight = torch.zeros(inputs.shape, device=tokens.device)
    for step in range(1, h + 1):
        target = tokens[:, step : step + length]  # (B, L-step) the movie `step` ahead
        n = target.shape[1]
        real = (target > 0) & (inputs[:, :n] > 0)
        picked = log_p[:, :n].gather(2, (target - 1).clamp_min(0)[..., None]).squeeze(-1)
        total[:, :n] += picked * real
        weight[:, :n] += real.float()
    counted = weight > 0
    loss = -(total[counted] / weight[counted]).mean()
    return loss
