"""Gibbs sampling for Bayesian PMF: the conditional draws of one sweep, as pure functions.

Each function draws one block of BPMF's posterior given the others (Salakhutdinov & Mnih
2008, section 3.3), vectorised over users or movies (one batched Cholesky per block):

- ``sample_hyper(factors (n, D))`` -> the factor distribution's mean ``(D,)`` and precision
  ``(D, D)`` from their Gaussian-Wishart posterior;
- ``sample_factors(...)`` -> one side's factors ``(n, D)`` given the other side's, the ratings
  and that side's hyper-parameters;
- ``sample_precision(residuals (N,))`` -> the rating noise precision from its Gamma posterior.

All tensors are float64; ``rng`` (a seeded numpy generator) makes a run repeatable.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: the hyper-prior: Gaussian-Wishart with mean 0, scale 2, D degrees of freedom, identity scale
#: matrix (the paper's choice); Gamma(1, 1) on the noise precision
PRIOR_SCALE = 2.0
NOISE_SHAPE, NOISE_RATE = 1.0, 1.0


def sample_wishart(scale: Tensor, dof: float, rng: np.random.Generator) -> Tensor:
    """One draw ``(D, D)`` of Wishart(``scale (D, D)``, ``dof``) by Bartlett's decomposition."""
    d = scale.shape[0]
    chol = torch.linalg.cholesky(scale)
    bartlett = torch.zeros(d, d, dtype=scale.dtype)
    chi2 = rng.chisquare(dof - np.arange(d))  # the diagonal: chi-square with dof - k degrees
    bartlett.diagonal().copy_(torch.from_numpy(np.sqrt(chi2)))
    rows, cols = torch.tril_indices(d, d, -1)
    bartlett[rows, cols] = normal(rng, len(rows))
    lower = chol @ bartlett
    draw: Tensor = lower @ lower.T
    return draw


def sample_hyper(factors: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """``factors (n, D)`` -> a draw of their distribution's mean ``(D,)`` and precision ``(D, D)``."""
    n, d = factors.shape
    mean = factors.mean(0)
    scatter = torch.cov(factors.T, correction=0) * n
    beta = PRIOR_SCALE + n
    dof = float(d + n)
    inverse_scale = torch.eye(d, dtype=factors.dtype) + scatter + (PRIOR_SCALE * n / beta) * torch.outer(mean, mean)
    scale = torch.linalg.inv(inverse_scale)
    precision = sample_wishart((scale + scale.T) / 2, dof, rng)
    center = n * mean / beta
    noise = torch.linalg.solve_triangular(
        torch.linalg.cholesky(beta * precision).T,
        normal(rng, d, 1),
        upper=True,
    )
    return center + noise.squeeze(1), precision


def sample_factors(
    rows: Tensor,
    cols: Tensor,
    residuals: Tensor,
    other: Tensor,
    n: int,
    mean: Tensor,
    precision: Tensor,
    noise_precision: float,
    rng: np.random.Generator | None,
    *,
    chunk: int = 16_384,
) -> Tensor:
    """One side's factors ``(n, D)`` given the other side's ``other (m, D)``.

    ``rows (N,)`` index this side, ``cols (N,)`` the other, ``residuals (N,)`` the centred
    ratings; each row's posterior is Gaussian with precision
    ``precision + noise_precision * sum(o oᵀ)`` over the rows it rated. ``rng`` None gives the
    posterior mean instead of a draw (a ridge regression: one step of alternating least squares).
    The outer products are summed ``chunk`` ratings at a time (memory ``chunk * D²``)."""
    d = other.shape[1]
    gram = torch.zeros(n, d * d, dtype=other.dtype)
    weighted = torch.zeros(n, d, dtype=other.dtype)
    for start in range(0, len(rows), chunk):
        r, seen = rows[start : start + chunk], other[cols[start : start + chunk]]  # (c,), (c, D)
        gram.index_add_(0, r, (seen.unsqueeze(2) * seen.unsqueeze(1)).reshape(len(r), d * d))
        weighted.index_add_(0, r, seen * residuals[start : start + chunk].unsqueeze(1))
    posterior = precision + noise_precision * gram.reshape(n, d, d)  # (n, D, D)
    rhs = precision @ mean + noise_precision * weighted
    chol = torch.linalg.cholesky(posterior)
    center = torch.cholesky_solve(rhs.unsqueeze(2), chol)
    if rng is None:
        mean_only: Tensor = center.squeeze(2)
        return mean_only
    spread = torch.linalg.solve_triangular(chol.transpose(1, 2), normal(rng, n, d, 1), upper=True)  # cov = posterior⁻¹
    drawn: Tensor = (center + spread).squeeze(2)
    return drawn


def sample_precision(residuals: Tensor, rng: np.random.Generator) -> float:
    """The rating noise precision given the fit's ``residuals (N,)``: Gamma(1 + N/2, 1 + SSE/2)."""
    sse = float(residuals.pow(2).sum())
    return float(rng.gamma(NOISE_SHAPE + len(residuals) / 2.0, 1.0 / (NOISE_RATE + sse / 2.0)))


def normal(rng: np.random.Generator, *shape: int) -> Tensor:
    """Standard normal draws of ``shape``, float64."""
    return torch.from_numpy(rng.standard_normal(shape))
