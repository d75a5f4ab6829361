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

Memory: training never holds ``X`` dense (``users × n_items``: 1.9 GB at the 5M shape). The
Gram matrix comes from the interaction pairs a block of movies at a time (``gram_from_pairs``),
and it is inverted in place by LAPACK's Cholesky routines (``fit_gram``), so a solve holds one
``n_items²`` float64 matrix and the float32 weights, where ``torch.linalg.inv`` on a dense
``X`` held several such matrices and ``X`` twice. The item-item matrix itself is ``n_items²``,
so the catalogue's size bounds EASE (figures in docs/scale.md, "EASE at 5M").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.linalg import lapack
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

    def __init__(self, config: EaseConfig, *, sharing: RecencyEASE | None = None) -> None:
        """Zero buffers, or ``sharing``'s own (not copies: the item matrix is ``n_items²``)."""
        super().__init__()
        self.config = config
        if sharing is None:
            self.register_buffer("weights", torch.zeros(config.n_items, config.n_items))
            self.register_buffer("popularity", torch.zeros(config.n_items))
        else:
            self.register_buffer("weights", sharing.weights)
            self.register_buffer("popularity", sharing.popularity)

    def fit(self, matrix: Tensor, counts: Tensor) -> RecencyEASE:
        """``matrix (users, n_items)`` 0/1 training interactions; ``counts (n_items,)`` per movie.
        For small dense inputs (tests); training goes through ``fit_gram``."""
        x = matrix.double()
        return self.fit_gram((x.T @ x).numpy(), counts)

    def fit_gram(self, gram: np.ndarray, counts: Tensor) -> RecencyEASE:
        """Fit from ``gram = XᵀX`` (``(n_items, n_items)`` float64, C-ordered), which is
        **overwritten**: the ridge goes on its diagonal and it is inverted in place."""
        gram[np.diag_indices_from(gram)] += self.config.l2
        inverse = invert_spd_in_place(gram)
        inverse /= -np.diag(inverse).copy()  # B = -P / diag(P), column j divided by P_jj
        np.fill_diagonal(inverse, 0.0)
        self.weights.copy_(torch.from_numpy(inverse))
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


def gram_from_pairs(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, *, block_bytes: int = 256 * 2**20
) -> np.ndarray:
    """``XᵀX`` as a C-ordered ``(n_items, n_items)`` float64 array, where ``X`` is the 0/1
    matrix with a one at each ``(users[i], items[i])`` (a pair seen twice counts once).

    ``X`` stays sparse; the result is filled a block of movie columns at a time as sparse
    ``Xᵀ`` times the block of ``X`` made dense (``block_bytes`` at most, at least one column),
    which torch multiplies on every core. The extra memory is one block beside the result, where
    sparse products per block of users held their heaviest users' co-occurring pairs
    (docs/scale.md, "EASE at 5M"). Counts are whole numbers, so the sum is exact."""
    x = sparse.csr_matrix(
        (np.ones(len(users), dtype=np.float64), (np.asarray(users), np.asarray(items))), shape=(n_users, n_items)
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    by_item = x.T.tocsr()
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta": matmul is what we use
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        left = torch.sparse_csr_tensor(
            torch.from_numpy(by_item.indptr.astype(np.int64)),
            torch.from_numpy(by_item.indices.astype(np.int64)),
            torch.from_numpy(by_item.data),
            size=(n_items, n_users),
            check_invariants=True,
        )
    columns = x.tocsc()
    width = max(1, block_bytes // (8 * max(1, n_users)))
    gram = np.zeros((n_items, n_items), dtype=np.float64)
    for start in range(0, n_items, width):
        right = torch.from_numpy(columns[:, start : start + width].toarray())
        gram[:, start : start + width] = (left @ right).numpy()
    return gram


def invert_spd_in_place(a: np.ndarray, *, block: int = 1024) -> np.ndarray:
    """The inverse of the symmetric positive-definite C-ordered float64 ``a``, written over
    ``a`` (returned): Cholesky then its inverse (LAPACK ``dpotrf``/``dpotri``) on the same
    memory, then the triangle LAPACK leaves unset mirrored ``block`` rows at a time.

    A C-ordered symmetric matrix is, read as Fortran order, its own transpose, so LAPACK
    works on ``a.T`` (the same buffer) with no copy. Raises ``ValueError`` when ``a`` is not
    positive definite."""
    if a.dtype != np.float64 or not a.flags.c_contiguous or a.shape[0] != a.shape[1]:
        raise ValueError("invert_spd_in_place needs a square C-ordered float64 array")
    fortran = a.T
    factor, info = lapack.dpotrf(fortran, lower=1, clean=0, overwrite_a=1)
    if info != 0 or not np.shares_memory(factor, a):
        raise ValueError(f"the Gram matrix is not positive definite or not factored in place (dpotrf info {info})")
    inverse, info = lapack.dpotri(factor, lower=1, overwrite_c=1)
    if info != 0 or not np.shares_memory(inverse, a):
        raise ValueError(f"the Gram matrix could not be inverted in place (dpotri info {info})")
    # Fortran's lower triangle is a's upper one: copy it onto a's lower triangle.
    n = a.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        a[stop:, start:stop] = a[start:stop, stop:].T
        square, below = a[start:stop, start:stop], np.tril_indices(stop - start, -1)
        square[below] = square.T[below]
    return a
