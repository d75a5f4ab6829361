"""``SeenPairs``: the two-tower's false-negative mask, answered per batch from sorted keys."""

from __future__ import annotations

import numpy as np
import torch

from model.data.interactions import Interactions
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
