"""``full_ranking`` ranks a block of users at a time: the same figures as one whole-matrix pass,
and a scorer is never asked for more than a block, nor for users without a held-out movie."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from model.data.interactions import Interactions
from model.evaluate import ranking
from model.evaluate.metrics import catalog_coverage, ranking_metrics, top_k_items
from model.evaluate.ranking import full_ranking, masks

N_USERS, N_MOVIES = 300, 50


def events(rng: np.random.Generator, n: int, users: np.ndarray) -> Interactions:
    return Interactions(rng.choice(users, n), rng.integers(0, N_MOVIES, n), np.full(n, 4.0, np.float32),
                        np.arange(n, dtype=np.int64), np.arange(N_USERS) + 1, np.arange(N_MOVIES) + 1)  # fmt: skip


class Recording:
    """Random fixed scores; remembers each block it was asked for."""

    def __init__(self, scores: Tensor) -> None:
        self.scores, self.blocks = scores, []  # type: tuple[Tensor, list[list[int]]]

    def score_all(self, user_ids: Tensor) -> Tensor:
        self.blocks.append(user_ids.tolist())
        return self.scores[user_ids]


@pytest.fixture
def case() -> tuple[Tensor, Interactions, Interactions]:
    rng = np.random.default_rng(3)
    train = events(rng, 3_000, np.arange(N_USERS))
    test = events(rng, 400, np.arange(0, N_USERS, 3))  # a third of the users have held-out movies
    return torch.randn(N_USERS, N_MOVIES, generator=torch.Generator().manual_seed(3)), train, test


def whole_matrix(scores: Tensor, train: Interactions, test: Interactions) -> dict[str, float]:
    """The figures from one pass over the whole matrix (what full_ranking did before blocks)."""
    relevant, exclude = masks(test, [train])
    out = ranking_metrics(scores, relevant, k=10, exclude=exclude)
    rows = (relevant & ~exclude).any(dim=1).nonzero().squeeze(1)
    out["coverage"] = catalog_coverage(top_k_items(scores[rows], 10, exclude[rows]), N_MOVIES)
    out["users"] = float(rows.numel())
    return out


def test_blocks_give_the_whole_matrix_figures(
    case: tuple[Tensor, Interactions, Interactions], monkeypatch: pytest.MonkeyPatch
) -> None:
    scores, train, test = case
    expected = whole_matrix(scores, train, test)
    monkeypatch.setattr(ranking, "RANKED_CELLS", 7 * N_MOVIES)  # blocks of 7 users: 15 blocks
    for got in (full_ranking(Recording(scores), test, [train]), full_ranking(None, test, [train], scores=scores)):
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-6), name
    assert expected["users"] > 50


def test_a_scorer_is_asked_only_for_held_out_users_a_block_at_a_time(
    case: tuple[Tensor, Interactions, Interactions], monkeypatch: pytest.MonkeyPatch
) -> None:
    scores, train, test = case
    monkeypatch.setattr(ranking, "RANKED_CELLS", 7 * N_MOVIES)
    scorer = Recording(scores)
    full_ranking(scorer, test, [train])
    asked = [u for block in scorer.blocks for u in block]
    assert max(len(block) for block in scorer.blocks) == 7
    assert sorted(asked) == np.unique(test.users).tolist()  # each once, none without a held-out movie
