"""``sample_test_users`` and ``users_view``: `marquee evaluate --sample-users N` ranks a seeded
sample of held-out users on a split cut to them."""

from __future__ import annotations

import numpy as np
import pytest

from model.data.interactions import Interactions, Split, sample_test_users, users_view


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


def test_a_sample_is_n_held_out_users_and_the_view_keeps_all_their_events() -> None:
    chosen, held_out = sample_test_users(SPLIT, 10, seed=42)
    assert held_out == 40 and len(chosen) == 10 and np.all(np.diff(chosen) > 0)
    assert np.isin(chosen, SPLIT.test.users).all()
    view = users_view(SPLIT, chosen)
    for part in ("train", "valid", "test"):
        whole, cut = getattr(SPLIT, part), getattr(view, part)
        assert cut.n_users == 10 and cut.movie_ids is whole.movie_ids
        kept = np.isin(whole.users, chosen)
        # the same events, renumbered: view user i is dense user chosen[i], external ids follow
        assert np.array_equal(chosen[cut.users], whole.users[kept])
        assert np.array_equal(cut.user_ids[cut.users], whole.user_ids[whole.users[kept]])
        assert np.array_equal(cut.items, whole.items[kept]) and np.array_equal(cut.ts, whole.ts[kept])


def test_the_sample_is_seeded() -> None:
    first = sample_test_users(SPLIT, 10, seed=42)[0]
    assert np.array_equal(first, sample_test_users(SPLIT, 10, seed=42)[0])
    assert not np.array_equal(first, sample_test_users(SPLIT, 10, seed=7)[0])


def test_a_sample_as_large_as_the_held_out_users_is_all_of_them() -> None:
    chosen, held_out = sample_test_users(SPLIT, 40, seed=1)
    assert held_out == 40 and np.array_equal(chosen, np.unique(SPLIT.test.users))
    with pytest.raises(ValueError, match="at least one user"):
        sample_test_users(SPLIT, 0, seed=1)
