"""``sample_test_users``: `marquee evaluate --sample-users N` ranks a seeded sample of held-out users."""

from __future__ import annotations

import numpy as np
import pytest

from model.data.interactions import Interactions, Split, sample_test_users


def _part(users: list[int], n_users: int = 50, n_movies: int = 30) -> Interactions:
    n = len(users)
    return Interactions(
        np.array(users, dtype=np.int64),
        np.arange(n, dtype=np.int64) % n_movies,
        np.full(n, 4.0, dtype=np.float32),
        np.arange(n, dtype=np.int64),
        np.arange(1, n_users + 1),
        np.arange(1, n_movies + 1),
    )


SPLIT = Split("time", _part(list(range(50))), _part([1, 2]), _part([u for u in range(40) for _ in range(u % 3 + 1)]))


def test_a_sample_keeps_every_test_event_of_exactly_n_held_out_users() -> None:
    sampled, held_out = sample_test_users(SPLIT, 10, seed=42)
    assert held_out == 40
    chosen = np.unique(sampled.test.users)
    assert len(chosen) == 10
    for user in chosen.tolist():
        assert (sampled.test.users == user).sum() == (SPLIT.test.users == user).sum()
    assert sampled.train is SPLIT.train and sampled.valid is SPLIT.valid


def test_the_sample_is_seeded() -> None:
    first = np.unique(sample_test_users(SPLIT, 10, seed=42)[0].test.users)
    assert np.array_equal(first, np.unique(sample_test_users(SPLIT, 10, seed=42)[0].test.users))
    assert not np.array_equal(first, np.unique(sample_test_users(SPLIT, 10, seed=7)[0].test.users))


def test_a_sample_as_large_as_the_held_out_users_is_all_of_them() -> None:
    assert sample_test_users(SPLIT, 40, seed=1) == (SPLIT, 40)
    with pytest.raises(ValueError, match="at least one user"):
        sample_test_users(SPLIT, 0, seed=1)
