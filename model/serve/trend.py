"""What is being watched now, as a prior on the served scores; and a lift for new titles.

A retriever trained up to some day cannot know what became popular since, nor anything about a
title added after it. Both are in the recent events: a movie rated far more often than usual in
the last few days is likely to be rated next, by anyone (the time split rewards this), and a
new title people are starting to rate is the one to show before the model has learned it.

``with_prior`` turns a retriever's scores into::

    z(scores) + weight * trend + new_boost * max(trend, 0) * is_new

- ``z``: each user's scores standardized over the catalogue, so one weight fits any retriever
  (EASE's scores and the two-tower's logits have different scales);
- ``trend``: ``log`` of each movie's *lift* in the window (``recent_lift``): its share of the
  events in the last ``days`` days over its share if every movie had the same, with one
  pseudo-event per movie, so a handful of events moves little and an empty window is 0;
- ``is_new``: fewer than ``NEW_BELOW`` events in the retriever's training data, or added since.

``days`` and ``weight`` are chosen on the validation period by ``marquee evaluate`` (time
protocol) and stored in the served retriever's checkpoint beside the movies that were new to
it; ``new_boost`` is a policy (``MARQUEE_NEW_TITLE_BOOST``): validation cannot choose it, because
the titles new to a model trained on the training period have no events in that period's last
days. The window ends at the newest event the store holds (the data's clock), so the same rule
serves a replayed dataset and a live service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

NEW_BELOW = 5  # a movie with fewer training events than this is new to the retriever (the report's cold slice)


@dataclass(frozen=True)
class TrendPrior:
    """The prior's parameters, as stored in the served retriever's checkpoint (``trend_prior``)."""

    days: float
    weight: float
    new_boost: float
    new_movies: frozenset[int] = field(default_factory=frozenset)  # external ids new to the retriever

    def to_dict(self) -> dict[str, Any]:
        return {"days": self.days, "weight": self.weight, "new_boost": self.new_boost,
                "new_movies": sorted(self.new_movies)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrendPrior:
        return cls(float(d["days"]), float(d["weight"]), float(d["new_boost"]),
                   frozenset(int(m) for m in d.get("new_movies", ())))  # fmt: skip


def window_counts(items: np.ndarray, ts: np.ndarray, days: float, n_movies: int) -> np.ndarray:
    """Events per movie (dense ids) in the ``days`` days up to the newest of ``ts`` (seconds)."""
    if len(ts) == 0:
        return np.zeros(n_movies, dtype=np.float64)
    recent = ts > ts.max() - days * 86_400
    return np.bincount(items[recent], minlength=n_movies).astype(np.float64)


def recent_lift(counts: np.ndarray) -> Tensor:
    """``(n_movies,)`` log lift of each movie in the window (see the module docstring)."""
    n = len(counts)
    if n == 0:
        return torch.zeros(0)
    lift = (counts + 1.0) / (counts.sum() + n) * n
    return torch.from_numpy(np.log(lift)).float()


def standardize(scores: Tensor) -> Tensor:
    """Each row minus its mean over its finite entries, over their standard deviation.

    One new matrix and two boolean masks, whatever the size: an evaluation standardizes
    ``sampled users × every movie`` matrices."""
    finite = torch.isfinite(scores)
    count = finite.sum(dim=1, keepdim=True).clamp(min=1)
    out = torch.where(finite, scores, torch.zeros((), dtype=scores.dtype))
    mean = out.sum(dim=1, keepdim=True) / count
    out.sub_(mean).masked_fill_(~finite, 0.0)
    var = out.square_().sum(dim=1, keepdim=True) / count
    torch.sub(scores, mean, out=out)
    return out.div_(var.sqrt() + 1e-9)


def with_prior(scores: Tensor, lift: Tensor, is_new: Tensor, prior: TrendPrior) -> Tensor:
    """``(users, n_movies)`` served scores from a retriever's ``scores`` (see the module docstring);
    ``lift`` and ``is_new`` (bool) are ``(n_movies,)`` in the same movie order."""
    return add_prior(standardize(scores.float()), lift, is_new, prior)


def add_prior(z: Tensor, lift: Tensor, is_new: Tensor, prior: TrendPrior) -> Tensor:
    """``z`` (standardized scores) plus the prior's terms, in place: ``with_prior`` after its
    ``standardize``, for callers that standardize once and try several priors on row blocks."""
    if prior.weight:
        z.add_(prior.weight * lift[None, :])
    if prior.new_boost:
        z.add_(prior.new_boost * (lift.clamp(min=0) * is_new.float())[None, :])
    return z


def new_mask(movie_ids: Sequence[int], new_movies: frozenset[int], trained: int) -> Tensor:
    """``(len(movie_ids),)`` bool: new to the retriever (listed, or at a position >= ``trained``:
    added after training)."""
    mask = torch.tensor([int(m) in new_movies for m in movie_ids], dtype=torch.bool)
    mask[trained:] = True
    return mask
