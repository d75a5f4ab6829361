"""EASE's solve without a dense user-item matrix: the Gram matrix from pairs, the in-place inverse."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from model.networks.ease import EaseConfig, RecencyEASE, gram_from_pairs, invert_spd_in_place


def random_pairs(n_users: int, n_items: int, n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_users, n), rng.integers(0, n_items, n)


def test_the_gram_from_pairs_is_xtx_of_the_zero_one_matrix() -> None:
    users, items = random_pairs(50, 12, 400)  # 400 draws over 600 cells: many pairs repeat
    dense = np.zeros((50, 12))
    dense[users, items] = 1.0
    for columns in (1, 5, 12):  # one movie per block, blocks that split the movies unevenly, one block
        gram = gram_from_pairs(users, items, 50, 12, block_bytes=columns * 50 * 8)
        assert gram.flags.c_contiguous and gram.dtype == np.float64
        np.testing.assert_array_equal(gram, dense.T @ dense)


def test_the_gram_never_holds_the_users_by_items_matrix() -> None:
    """100,000 users × 40 movies dense in float64 is 32 MB; with 1 MB blocks the pairs path
    must stay far below it."""
    users, items = random_pairs(100_000, 40, 100_000)
    tracemalloc.start()
    try:
        gram_from_pairs(users, items, 100_000, 40, block_bytes=2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * 2**20, f"{peak / 2**20:.1f} MB at peak"


def test_the_inverse_is_written_over_the_input_and_is_exact() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 45))
    a = x.T @ x + 3.0 * np.eye(45)
    expected = np.linalg.inv(a)
    out = invert_spd_in_place(a, block=16)  # blocks that do not divide 45: the mirroring's edges
    assert out is a
    np.testing.assert_allclose(a, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(a, a.T)


def test_a_matrix_that_is_not_positive_definite_is_refused() -> None:
    with pytest.raises(ValueError, match="not positive definite"):
        invert_spd_in_place(np.diag([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="C-ordered float64"):
        invert_spd_in_place(np.eye(3, dtype=np.float32))


def test_the_fit_matches_the_closed_form_with_a_dense_inverse() -> None:
    """B = -P / diag(P) with a zero diagonal, P = (XᵀX + l2·I)⁻¹ (Steck 2019), as torch computes it."""
    users, items = random_pairs(80, 20, 500, seed=9)
    dense = torch.zeros(80, 20, dtype=torch.float64)
    dense[torch.as_tensor(users), torch.as_tensor(items)] = 1.0
    p = torch.linalg.inv(dense.T @ dense + 50.0 * torch.eye(20, dtype=torch.float64))
    expected = -p / p.diagonal()
    expected.fill_diagonal_(0.0)
    counts = dense.sum(0)
    model = RecencyEASE(EaseConfig(n_items=20, l2=50.0)).fit_gram(gram_from_pairs(users, items, 80, 20), counts)
    torch.testing.assert_close(model.weights, expected.float(), rtol=1e-5, atol=1e-6)
    shared = RecencyEASE(EaseConfig(n_items=20, l2=50.0, recency=10.0), sharing=model)
    assert shared.weights.data_ptr() == model.weights.data_ptr()


def test_a_capped_matrix_is_ease_over_the_most_rated_movies() -> None:
    """``n_kept``: the item matrix of EASE fitted on the kept movies' pairs alone; the other
    movies score under every kept one, by popularity, and stay finite (the fusion adds scores)."""
    users, items = random_pairs(80, 20, 500, seed=11)
    items = np.where(items < 6, items, items % 12)  # movies 12..19 rarely rated: the tail
    counts = torch.as_tensor(np.bincount(items, minlength=20)).float()
    capped = RecencyEASE(EaseConfig(n_items=20, l2=50.0, n_kept=8)).fit_pairs(users, items, 80, counts)
    assert capped.kept is not None and capped.weights.shape == (8, 8)
    most_rated = np.argsort(-counts.numpy(), kind="stable")[:8]
    assert capped.kept.tolist() == sorted(most_rated.tolist())
    on = np.isin(items, capped.kept.numpy())
    position = {int(m): i for i, m in enumerate(capped.kept)}
    alone = RecencyEASE(EaseConfig(n_items=8, l2=50.0)).fit_gram(
        gram_from_pairs(users[on], np.array([position[int(m)] for m in items[on]]), 80, 8), counts[capped.kept]
    )
    torch.testing.assert_close(capped.weights, alone.weights)
    inputs = capped.history_inputs([[int(m) for m in items[users == u]] for u in range(5)] + [[]])
    scores = capped.score(inputs)
    assert scores.shape == (6, 20) and torch.isfinite(scores).all()
    kept = torch.zeros(20, dtype=torch.bool)
    kept[capped.kept] = True
    assert (scores[:, kept].amin(1) > scores[:, ~kept].amax(1)).all()
    head = inputs[:, capped.kept] @ alone.weights
    torch.testing.assert_close(scores[:, kept], head + capped.config.prior * capped.popularity[kept])
    tail = scores[0, ~kept]  # among the tail, the more-rated first
    assert torch.equal(tail.argsort(descending=True, stable=True), counts[~kept].argsort(descending=True, stable=True))


def test_an_uncapped_config_keeps_every_movie() -> None:
    for n_kept in (0, 20, 30):
        model = RecencyEASE(EaseConfig(n_items=20, n_kept=n_kept))
        assert model.kept is None and model.weights.shape == (20, 20) and "kept" not in model.state_dict()
