"""The served trend prior (model/serve/trend.py, model/evaluate/prior.py): its arithmetic, its
choice on the validation period of real ML-100K, and a title EASE never saw placed by its recent events."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from model.data import interactions as inter
from model.evaluate.prior import choose_prior, prior_scores
from model.evaluate.ranking import EaseScorer, HistoryIndex, full_ranking, score_matrix
from model.serve.ranker import Ranker, RankRequest
from model.serve.trend import TrendPrior, new_mask, recent_lift, standardize, window_counts, with_prior
from model.train.ease import train_ease
from model.train.options import Trained, TrainOptions
from model.train.pipeline import to_checkpoint

DAY = 86_400


@pytest.fixture(scope="module")
def split(data: inter.Interactions) -> inter.Split:
    return inter.make_split(data, "time")


@pytest.fixture(scope="module")
def ease(split: inter.Split) -> Trained:
    return train_ease(split, TrainOptions(quiet=True), l2_grid=(700.0,), recency_grid=(10.0,))


def test_lift_window_and_prior_arithmetic() -> None:
    items, ts = np.array([0, 1, 1, 1, 2]), np.array([0, 9 * DAY, 9 * DAY, 10 * DAY, 10 * DAY])
    counts = window_counts(items, ts, 2.0, 4)  # the window ends at the newest event: days 8-10
    assert counts.tolist() == [0.0, 3.0, 1.0, 0.0]
    lift = recent_lift(counts)
    assert lift[1] > 0 == lift[2] > lift[0] == lift[3]  # above the average share lifts, at it nothing, below lowers
    assert torch.equal(recent_lift(np.zeros(4)), torch.zeros(4))  # an empty window changes nothing
    z = standardize(torch.tensor([[1.0, 2.0, 3.0, float("-inf")]]))
    assert torch.allclose(z[0, :3], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4) and z[0, 3] == float("-inf")
    is_new = new_mask([10, 11, 12, 13], frozenset({11}), trained=3)
    assert is_new.tolist() == [False, True, False, True]  # listed, or added after training (position >= 3)
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    plain = with_prior(scores, lift, is_new, TrendPrior(2.0, 0.0, 0.0))
    assert plain.argsort(descending=True).tolist() == [[0, 1, 2, 3]]
    boosted = with_prior(scores, lift, is_new, TrendPrior(2.0, 1.0, 4.0))
    assert boosted[0, 1] > boosted[0, 0]  # the new title with recent events overtakes
    assert boosted[0, 3] == plain[0, 3] + lift[3]  # a new title with no events is not lifted
    assert TrendPrior.from_dict(TrendPrior(3.0, 1.0, 4.0, frozenset({5})).to_dict()).new_movies == {5}


def test_standardize_in_place_steps_equals_the_formula() -> None:
    scores = torch.randn(7, 50, generator=torch.Generator().manual_seed(3)) * 4 + 2
    scores[2, :10] = float("-inf")  # excluded movies
    scores[5] = float("-inf")  # a row with nothing finite
    finite = torch.isfinite(scores)
    filled = torch.where(finite, scores, torch.zeros_like(scores))
    count = finite.sum(dim=1, keepdim=True).clamp(min=1)
    mean = filled.sum(dim=1, keepdim=True) / count
    var = (torch.where(finite, scores - mean, torch.zeros_like(scores)) ** 2).sum(dim=1, keepdim=True) / count
    expected = (scores - mean) / (var.sqrt() + 1e-9)
    before = scores.clone()
    assert torch.equal(standardize(scores), expected) and torch.equal(scores, before)  # the input is untouched


def test_the_prior_grid_ranks_what_the_shaped_matrices_rank(ease: Trained, split: inter.Split) -> None:
    """choose_prior ranks row blocks of one standardized matrix: the figures of every point are
    those of the whole shaped matrix (``prior_scores``) it no longer builds."""
    scores = score_matrix(EaseScorer(ease.model, HistoryIndex([split.train])), split.train.n_users)
    movie_ids = split.train.movie_ids
    _, tried = choose_prior(scores, split, movie_ids, new_boost=4.0)
    new = frozenset(int(m) for m in movie_ids[split.train.movie_counts() < 5])
    for days, weight in [(3.0, 0.0), (7.0, 1.0), (28.0, 4.0)]:
        shaped = prior_scores(scores, [split.train], TrendPrior(days, weight, 4.0, new), movie_ids)
        assert full_ranking(None, split.valid, [split.train], scores=shaped)["ndcg@10"] == tried[(days, weight)]


def test_the_prior_chosen_on_valid_ranks_the_test_period_and_its_new_titles_better(
    ease: Trained, split: inter.Split, data: inter.Interactions
) -> None:
    scores = score_matrix(EaseScorer(ease.model, HistoryIndex([split.train])), data.n_users)
    prior, tried = choose_prior(scores, split, data.movie_ids, new_boost=4.0)
    assert prior.weight > 0 and len(tried) == 24 and max(tried.values()) == tried[(prior.days, prior.weight)]
    assert prior.new_movies == {int(m) for m in data.movie_ids[split.train.movie_counts() < 5]}
    seen = [split.train, split.valid]
    shaped = prior_scores(scores, seen, prior, data.movie_ids)
    before, after = (full_ranking(None, split.test, seen, scores=s) for s in (scores, shaped))
    assert after["ndcg@10"] > before["ndcg@10"] and after["recall@10"] > before["recall@10"]
    cold = split.test.take(np.isin(split.test.items, np.flatnonzero(split.train.movie_counts() < 5)))
    cold_before, cold_after = (full_ranking(None, cold, seen, scores=s)["recall@10"] for s in (scores, shaped))
    assert cold_before < 0.01 and cold_after > 0.02


def test_an_added_title_is_ranked_by_its_recent_events_when_ease_is_served(
    ease: Trained, split: inter.Split, data: inter.Interactions
) -> None:
    ckpt = to_checkpoint(Trained("ease", ease.model, valid={"ndcg@10": 0.2}), data, split)
    new_id, user = 99_999, int(data.user_ids[0])
    content, genres = torch.zeros(1, 384), torch.zeros(1, 19)
    assert Ranker(ckpt).add_movies([new_id], content, genres) == []  # no prior: EASE waits for a new solve
    with_trend = replace(ckpt, metrics={**ckpt.metrics, "trend_prior": TrendPrior(7.0, 1.0, 4.0).to_dict()})
    ranker = Ranker(with_trend)
    assert ranker.add_movies([new_id], content, genres) == [new_id]
    ask = [RankRequest(user, [int(m) for m in data.movie_ids[:5]], 10, set())]

    def top() -> list[int]:
        (scored, _), = ranker.rank_many(ask, features=None)  # fmt: skip
        return [s.movie_id for s in scored]

    assert new_id not in top()  # nobody has rated it yet
    ranker.set_recent_counts({new_id: 60, int(data.movie_ids[10]): 5})
    assert new_id in top()
