"""The time split's parts are slices of the interactions (model/data/interactions.py): views of
its arrays, in order, covering every event once, so a job that keeps both holds the events once."""

from __future__ import annotations

import numpy as np

from model.data import interactions as inter


def test_the_time_split_parts_are_views_in_time_order(data: inter.Interactions) -> None:
    split = inter.make_split(data, "time")
    parts = (split.train, split.valid, split.test)
    for part in parts:
        for field in ("users", "items", "ratings", "ts"):
            assert np.shares_memory(getattr(part, field), getattr(data, field))  # no copy
    for field in ("users", "items", "ratings", "ts"):
        assert np.array_equal(np.concatenate([getattr(p, field) for p in parts]), getattr(data, field))
    assert [len(p) for p in parts] == [80_000, 10_000, 10_000]
    assert split.train.ts.max() <= split.valid.ts.min() and split.valid.ts.max() <= split.test.ts.min()
    copied = data.take(np.arange(5))  # indices still copy
    assert not np.shares_memory(copied.users, data.users)
