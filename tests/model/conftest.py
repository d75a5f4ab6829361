"""ML-100K interactions straight from the recbole wheel's files (no stores), read once for the
model tests that fit on them; modules that need the stores' view define their own ``data``."""

from __future__ import annotations

import pytest

from model.data import interactions as inter
from sources.datasets.movielens import movielens_100k


@pytest.fixture(scope="session")
def data() -> inter.Interactions:
    return inter.from_dataset(movielens_100k())
