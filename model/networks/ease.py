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
so the catalogue's size bounds EASE (figures in docs/scale.md, "EASE at 5M"). Past
``n_kept`` movies the matrix covers only the ``kept`` most-rated ones (EASE over the head of
the catalogue, the usual remedy); the others score below every kept movie, by popularity.
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
    n_kept: int = 0  # movies the item matrix covers (``kept``); 0 = all ``n_items``


class RecencyEASE(nn.Module):
    """The item-item matrix and popularity prior as buffers (saved in ``state_dict``)."""

    weights: Tensor  # (n_kept, n_kept), zero diagonal; n_kept = n_items unless the config caps it
    popularity: Tensor  # (n_items,) log-counts scaled to [0, 1]
    kept: Tensor | None  # (n_kept,) the movies ``weights`` covers, when fewer than all

    def __init__(self, config: EaseConfig, *, sharing: RecencyEASE | None = None) -> None:
        """Zero buffers, or ``sharing``'s own (not copies: the item matrix is ``n_kept²``)."""
        super().__init__()
        self.config = config
        capped = 0 < config.n_kept < config.n_items
        n = config.n_kept if capped else config.n_items
        if sharing is None:
            self.register_buffer("weights", torch.zeros(n, n))
            self.register_buffer("popularity", torch.zeros(config.n_items))
            self.register_buffer("kept", torch.zeros(n, dtype=torch.int64) if capped else None)
        else:
            self.register_buffer("weights", sharing.weights)
            self.register_buffer("popularity", sharing.popularity)
            self.register_buffer("kept", sharing.kept)

    def fit(self, matrix: Tensor, counts: Tensor) -> RecencyEASE:
        """``matrix (users, n_items)`` 0/1 training interactions; ``counts (n_items,)`` per movie.
        For small dense inputs (tests); training goes through ``fit_gram``."""
        x = matrix.double()
        return self.fit_gram((x.T @ x).numpy(), counts)

    def fit_pairs(self, users: np.ndarray, items: np.ndarray, n_users: int, counts: Tensor) -> RecencyEASE:
        """Fit from the training pairs (``counts (n_items,)`` per movie): the Gram matrix of the
        kept movies (every movie, or the ``n_kept`` most-rated) from the pairs, then ``fit_gram``."""
        if self.kept is not None:
            # the most-rated first, ties to the lower index (a stable sort), kept in index order
            order = np.argsort(-counts.numpy(), kind="stable")[: self.config.n_kept]
            self.kept.copy_(torch.from_numpy(np.sort(order)))
            position = np.full(self.config.n_items, -1, dtype=np.int64)
            position[self.kept.numpy()] = np.arange(self.config.n_kept)
            on = position[np.asarray(items)] >= 0
            users, items = np.asarray(users)[on], position[np.asarray(items)[on]]
        gram = gram_from_pairs(users, items, n_users, len(self.weights))
        return self.fit_gram(gram, counts)

    def fit_gram(self, gram: np.ndarray, counts: Tensor) -> RecencyEASE:
        """Fit from ``gram = XᵀX`` (``(n_kept, n_kept)`` float64, C-ordered, over ``kept`` in
        order when capped), which is **overwritten**: the ridge goes on its diagonal and it is
        inverted in place."""
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
        """``(B, n_items)`` inputs -> ``(B, n_items)`` scores. With ``kept``, the other movies
        score one below the row's lowest kept score, plus the prior: under every kept movie,
        ordered by popularity among themselves, finite (the fusion weighs scores)."""
        prior = self.config.prior * self.popularity
        if self.kept is None:
            out: Tensor = inputs @ self.weights + prior
            return out
        head = inputs[:, self.kept] @ self.weights
        floor = head.amin(dim=1, keepdim=True) - 1.0 if head.shape[1] else inputs.new_zeros(len(inputs), 1)
        out = (floor + prior).index_copy(1, self.kept, head + prior[self.kept])
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
