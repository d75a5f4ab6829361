"""`marquee evaluate --sample-users N` on the real stores: its score matrices have one row per
sampled user, and its figures are the whole split's ranking restricted to those users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import checkpoint_path, from_checkpoint, load_checkpoint
from model.data.interactions import Interactions, from_stores, make_split, sample_test_users
from model.evaluate.ranking import EaseScorer, HistoryIndex, full_ranking, score_matrix
from model.evaluate.report import evaluate
from model.evaluate.scope import COLD, Scope
from model.train.options import TrainOptions
from sources.ingest import IngestReport
from sources.stores.clients import Stores

SAMPLE = 60


def test_a_scope_scores_only_its_users_and_counts_cold_movies_over_everyone(data: Interactions) -> None:
    split = make_split(data, "time")
    chosen, _ = sample_test_users(split, SAMPLE, seed=1)
    scope = Scope.of(split, chosen)
    whole = torch.randn(data.n_users, data.n_movies, generator=torch.Generator().manual_seed(0))

    class Fixed:
        def score_all(self, user_ids: torch.Tensor) -> torch.Tensor:
            return whole[user_ids]

    assert torch.equal(scope.scores(Fixed()), whole[torch.as_tensor(chosen)])  # SAMPLE rows, not n_users
    rows = torch.tensor([3, 0, SAMPLE - 1])  # asked by view row, a scorer gives the same rows, holding none
    assert torch.equal(scope.scorer(Fixed()).score_all(rows), whole[torch.as_tensor(chosen[rows.numpy()])])
    assert np.array_equal(scope.cold_movies, np.flatnonzero(split.train.movie_counts() < COLD))
    assert np.array_equal(chosen[scope.cold_users], chosen[split.train.user_counts()[chosen] < COLD])
    everyone = Scope.of(split)
    assert everyone.view is split and not everyone.sampled and scope.sampled
    assert isinstance(everyone.scorer(Fixed()), Fixed)


def test_a_sampled_scopes_histories_hold_only_its_users(data: Interactions) -> None:
    split = make_split(data, "time")
    chosen, _ = sample_test_users(split, SAMPLE, seed=1)
    whole = HistoryIndex([split.train, split.valid])
    cut = Scope.of(split, chosen).history([split.train, split.valid])
    assert len(cut.indices) == int(whole.indptr[chosen + 1].sum() - whole.indptr[chosen].sum()) < len(whole.indices)
    others = np.setdiff1d(np.arange(split.train.n_users), chosen)
    assert torch.equal(cut.indptr[others + 1] - cut.indptr[others], torch.zeros(len(others), dtype=torch.long))
    for user in chosen[:10]:
        assert torch.equal(cut.indices[cut.indptr[user] : cut.indptr[user + 1]],
                           whole.indices[whole.indptr[user] : whole.indptr[user + 1]])  # fmt: skip
    assert Scope.of(split).history([split.train]).indices.shape == (len(split.train),)


def test_sampled_figures_are_the_whole_ranking_of_the_sampled_users(
    stores: Stores, loaded: IngestReport, tmp_path: Path
) -> None:
    options = TrainOptions(quiet=True, device="cpu")
    report, _ = evaluate(stores, tmp_path / "models", tmp_path / "reports", models=["pop", "ease"], options=options,
                         sample_users=SAMPLE)  # fmt: skip
    split = make_split(from_stores(stores), "time", seed=options.seed)
    chosen, held_out = sample_test_users(split, SAMPLE, options.seed)
    assert held_out > SAMPLE and any(f"sample of {SAMPLE} of the {held_out:,}" in note for note in report.notes)

    pop = from_checkpoint(load_checkpoint(checkpoint_path(tmp_path / "models" / "time", "pop")))
    ease = from_checkpoint(load_checkpoint(checkpoint_path(tmp_path / "models" / "time", "ease")))
    seen = [split.train, split.valid]
    cold = split.test.take(np.isin(split.test.items, np.flatnonzero(split.train.movie_counts() < COLD)))
    for name, scorer in (("pop", pop), ("ease", EaseScorer(ease, HistoryIndex([split.train])))):
        scores = score_matrix(scorer, split.train.n_users)  # the whole matrix, ranked for the sample only
        expected = full_ranking(None, split.test, seen, scores=scores, users=chosen)
        assert 0 < report.rows[name]["users"] <= SAMPLE
        for metric, value in expected.items():
            assert report.rows[name][metric] == pytest.approx(value, abs=1e-6), (name, metric)
        cold_expected = full_ranking(None, cold, seen, scores=scores, users=chosen)
        assert report.cold[f"{name} / cold movies"]["ndcg@10"] == pytest.approx(cold_expected["ndcg@10"], abs=1e-6)
    assert 0 < report.rows["ease + trend"]["users"] <= SAMPLE  # the served retriever, its prior chosen on the sample
