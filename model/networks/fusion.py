"""Score fusion: a weighted sum of several retrievers' standardized scores.

Each retriever scores the whole catalogue for a user on its own scale (EASE's regression
outputs, the two-tower's cosine / temperature, the sequential model's logits). Each row is
z-scored (mean 0, standard deviation 1 over the movies scored) before the weighted sum, so a
weight says how much a retriever counts, whatever its scale. The weights are chosen on
validation (``model.train.fusion``); a weight of 0 leaves a retriever out.

``fuse({kind: (B, n_items)}, weights) -> (B, n_items)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from model.networks.config import DictConfig


@dataclass
class FusionConfig(DictConfig):
    weights: dict[str, float] = field(default_factory=dict)  # retriever kind -> weight (sum 1)

    @property
    def used(self) -> list[str]:
        """The retrievers with a non-zero weight, in the order given."""
        return [k for k, w in self.weights.items() if w]


def standardize(scores: Tensor) -> Tensor:
    """``(B, n)`` -> each row minus its mean, over its standard deviation (1 when constant)."""
    scores = scores.float()
    std = scores.std(dim=1, keepdim=True)
    return (scores - scores.mean(dim=1, keepdim=True)) / torch.where(std > 0, std, torch.ones_like(std))


def fuse(parts: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """Weighted sum of the standardized ``parts``; every non-zero weight needs its part."""
    used = [k for k, w in weights.items() if w]
    missing = [k for k in used if k not in parts]
    if missing or not used:
        raise ValueError(f"fusion needs scores of {', '.join(missing) or 'at least one retriever'}")
    out = weights[used[0]] * standardize(parts[used[0]])
    for kind in used[1:]:
        out = out + weights[kind] * standardize(parts[kind])
    return out
