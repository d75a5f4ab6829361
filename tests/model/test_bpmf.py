"""Bayesian PMF: config checks, the Gibbs draws, a short real-data run, the grid and refit, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import from_checkpoint, load_checkpoint, save_checkpoint
from model.data import interactions as inter
from model.evaluate.report import Report, bpmf_rows
from model.evaluate.scope import Scope
from model.networks.bpmf import BayesianPMF, BpmfConfig
from model.train.bpmf import rating_errors, sample_posterior, train_bpmf
from model.train.gibbs import sample_precision, sample_wishart
from model.train.options import Trained, TrainOptions
from model.train.pipeline import to_checkpoint


@pytest.fixture(scope="module")
def split(data: inter.Interactions) -> inter.Split:
    return inter.make_split(data, "random")


@pytest.fixture(scope="module")
def run(split: inter.Split) -> Trained:
    return train_bpmf(split, TrainOptions(quiet=True), dim_grid=(2, 6), sweeps=10, burn_in=4, chains=1)


def test_config_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="burn_in"):
        BpmfConfig(3, 4, sweeps=10, burn_in=10)
    with pytest.raises(ValueError, match="dim"):
        BpmfConfig(3, 4, dim=0)
    with pytest.raises(ValueError, match="chains"):
        BpmfConfig(3, 4, chains=0)
    assert BpmfConfig(3, 4, sweeps=10, burn_in=4, thin=3, chains=2).kept == 4  # sweeps 4 and 7 of 0..9, twice


def test_predict_shapes_and_range() -> None:
    model = BayesianPMF(BpmfConfig(n_users=3, n_items=4, dim=2, sweeps=4, burn_in=0, thin=2, chains=1))
    assert model.user_factors.shape == (2, 3, 2) and model.item_factors.shape == (2, 4, 2)
    model.user_factors.fill_(2.0)
    model.item_factors[0].fill_(1.0)  # draw 0: 3 + 4 -> clipped to 5; draw 1: 3 + 0
    ratings = model.predict(torch.tensor([0, 2, 1]), torch.tensor([3, 0, 0]), batch=2)
    assert ratings.shape == (3,) and torch.allclose(ratings, torch.full((3,), 4.0))
    model.item_factors.fill_(-5.0)
    assert torch.all(model.predict(torch.tensor([0]), torch.tensor([1])) == 1.0)
    with pytest.raises(ValueError, match="1-d"):
        model.predict(torch.tensor([0, 1]), torch.tensor([0]))


def test_gibbs_draws_match_their_distributions() -> None:
    rng = np.random.default_rng(0)
    scale = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    mean = torch.stack([sample_wishart(scale, 6.0, rng) for _ in range(4000)]).mean(0)
    assert torch.allclose(mean, 6.0 * scale, rtol=0.06)  # E[W] = dof * scale
    residuals = torch.from_numpy(rng.normal(0.0, 0.5, 20_000))  # noise of variance 0.25: precision 4
    assert sample_precision(residuals, rng) == pytest.approx(4.0, rel=0.05)


def test_short_run_on_ml100k_beats_the_mean_and_the_grid_keeps_the_better_size(
    run: Trained, split: inter.Split
) -> None:
    """Ten sweeps already predict valid ratings far better than the training mean; the grid's
    choice is the size with the lower valid RMSE; the kept model was sampled on train + valid."""
    mean = float(split.train.ratings.mean())
    floor = float(np.sqrt(np.mean((split.valid.ratings - mean) ** 2)))
    (small, large) = run.history
    assert max(small["rmse"], large["rmse"]) < floor - 0.08
    assert run.best_epoch == (1 if small["rmse"] < large["rmse"] else 2)
    assert run.valid["rmse"] == min(small["rmse"], large["rmse"])
    model: BayesianPMF = run.model
    assert model.config.dim == (2, 6)[run.best_epoch - 1] and run.extras["fitted_on"] == "train+valid"
    both = np.concatenate([split.train.ratings, split.valid.ratings])
    assert float(model.mean) == pytest.approx(float(both.mean()), abs=1e-5)
    assert rating_errors(model, split.valid)["rmse"] < run.valid["rmse"]  # it has now seen valid


def test_sampling_is_repeatable(split: inter.Split) -> None:
    config = BpmfConfig(split.train.n_users, split.train.n_movies, dim=3, sweeps=3, burn_in=1, thin=1, chains=2)
    first, again = sample_posterior(split.train, config), sample_posterior(split.train, config)
    assert first.user_factors.shape == (4, split.train.n_users, 3)
    assert torch.equal(first.user_factors, again.user_factors)
    assert not torch.equal(first.user_factors[1], first.user_factors[3])  # the chains' last draws differ


def test_checkpoint_round_trip(run: Trained, split: inter.Split, data: inter.Interactions, tmp_path: Path) -> None:
    ckpt = to_checkpoint(run, data, split)
    assert ckpt.kind == "bpmf" and ckpt.extras["fitted_on"] == "train+valid"
    path = save_checkpoint(ckpt, tmp_path / "random" / "bpmf.pt")
    loaded: BayesianPMF = from_checkpoint(load_checkpoint(path))
    users, items = torch.as_tensor(split.test.users), torch.as_tensor(split.test.items)
    ratings = loaded.predict(users, items)
    assert torch.equal(ratings, run.model.predict(users, items))
    assert ratings.shape == (len(split.test),) and float(ratings.min()) >= 1.0 and float(ratings.max()) <= 5.0


def test_report_rows_are_the_test_parts_errors(run: Trained, split: inter.Split, data: inter.Interactions) -> None:
    """The report's rating row is the test part's RMSE/MAE; the cold-movie slice only its rows."""
    report = Report("random", split.describe())
    bpmf_rows(Scope.of(split), report, run.model, to_checkpoint(run, data, split))
    assert report.rows["bpmf (rating)"]["rmse"] == pytest.approx(rating_errors(run.model, split.test)["rmse"])
    cold = np.isin(split.test.items, np.flatnonzero(split.train.movie_counts() < 5))
    assert report.cold["bpmf / cold movies"]["rows"] == int(cold.sum()) > 0
    assert "bpmf / cold users" not in report.cold  # every ML-100K user has >= 20 ratings: none is cold here
    assert any("sampled on train+valid" in note for note in report.notes)
