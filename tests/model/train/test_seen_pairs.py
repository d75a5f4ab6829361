"""``SeenPairs``: the two-tower's false-negative mask, answered per batch from sorted keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data.interactions import Interactions
from model.train.baselines import sample_unseen
from model.train.loop import SeenPairs, seen_mask

CPU = torch.device("cpu")


def interactions(n: int, n_users: int, n_movies: int, seed: int) -> Interactions:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n).astype(np.int64)
    items = rng.integers(0, n_movies, n).astype(np.int64)  # repeats included
    return Interactions(users, items, np.full(n, 4.0, np.float32), np.arange(n, dtype=np.int64),
                        np.arange(n_users), np.arange(n_movies))  # fmt: skip


def test_a_block_equals_the_dense_mask_it_replaces() -> None:
    data = interactions(3_000, 97, 211, seed=3)
    dense, pairs = seen_mask(data, CPU), SeenPairs(data, CPU, dense=False)
    rng = torch.Generator().manual_seed(5)
    for _ in range(20):
        users = torch.randint(0, 97, (64,), generator=rng)
        movies = torch.randint(0, 211, (300,), generator=rng)  # duplicates too, as pos + negatives have
        block = pairs.block(users, movies)
        assert torch.equal(block, dense[users][:, movies])
    assert int(block.sum()) > 0  # the draw did meet seen pairs: the test can fail either way


def test_the_catalogue_edges_and_no_history() -> None:
    data = interactions(500, 10, 50, seed=1)
    edges = torch.tensor([0, 49])
    for form in (False, True):
        block = SeenPairs(data, CPU, dense=form).block(torch.arange(10), edges)
        assert torch.equal(block, seen_mask(data, CPU)[:, edges])
    empty = interactions(0, 10, 50, seed=1)
    assert not SeenPairs(empty, CPU, dense=False).block(torch.arange(10), edges).any()


def test_small_catalogues_keep_the_dense_mask() -> None:
    assert SeenPairs(interactions(100, 10, 50, seed=2), CPU).mask is not None


@pytest.mark.parametrize("dense", [True, False])
def test_pair_lookups_equal_the_dense_mask(dense: bool) -> None:
    data = interactions(3_000, 97, 211, seed=4)
    pairs, mask = SeenPairs(data, CPU, dense=dense), seen_mask(data, CPU)
    users, movies = torch.randint(0, 97, (5_000,)), torch.randint(0, 211, (5_000,))
    held = pairs.contains(users, movies)
    assert torch.equal(held, mask[users, movies])
    assert 0 < int(held.sum()) < len(held)


@pytest.mark.parametrize("dense", [True, False])
def test_bpr_negatives_avoid_the_users_known_movies(dense: bool) -> None:
    torch.manual_seed(0)
    users = np.array([0, 0, 0, 0, 1], dtype=np.int64)  # user 0 has met all but movie 4
    items = np.array([0, 1, 2, 3, 0], dtype=np.int64)
    data = Interactions(users, items, np.full(5, 4.0, np.float32), np.arange(5, dtype=np.int64),
                        np.arange(2), np.arange(5))  # fmt: skip
    neg = sample_unseen(SeenPairs(data, CPU, dense=dense), torch.tensor([0] * 200 + [1] * 200))
    assert set(neg[:200].tolist()) == {4}
    assert set(neg[200:].tolist()) == {1, 2, 3, 4}
