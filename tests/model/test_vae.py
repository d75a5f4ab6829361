"""The VAE retriever: shapes, a short real-data run, checkpoint round trip, serving, fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import from_checkpoint, load_checkpoint, save_checkpoint
from model.data import interactions as inter
from model.evaluate.ranking import HistoryIndex, VaeScorer, retriever_scorer, score_matrix
from model.networks.vae import MultVAE, VaeConfig, vae_loss
from model.serve.ranker import best_retriever
from model.train.ease import train_ease
from model.train.fusion import train_fusion
from model.train.options import Trained, TrainOptions
from model.train.pipeline import FUSED, to_checkpoint
from model.train.vae import train_vae, user_rows
from tests.model.ranker_check import served_and_expected

SMALL = {"hidden": 64, "latent": 16}


@pytest.fixture(scope="module")
def split(data: inter.Interactions) -> inter.Split:
    return inter.make_split(data, "recbole")


@pytest.fixture(scope="module")
def run(split: inter.Split) -> Trained:
    options = TrainOptions(epochs=3, lr=3e-3, batch_size=128, patience=3, quiet=True, device="cpu")
    return train_vae(split, options, anneal_epochs=2, holdouts=(0, 5), **SMALL)


def test_shapes_recency_inputs_and_loss() -> None:
    torch.manual_seed(0)
    model = MultVAE(VaeConfig(n_items=6, hidden=8, latent=3, recency=1.0)).eval()
    inputs = model.history_inputs([[0, 1, 2, 1], [5], []])
    # the latest event weighs 1, one step back e^-1, ...; a movie met twice counts at its latest
    assert torch.allclose(inputs[0, :3], torch.tensor([np.exp(-3.0), 1.0, np.exp(-1.0)], dtype=torch.float32))
    assert inputs[1].tolist() == [0, 0, 0, 0, 0, 1] and inputs[2].sum() == 0
    logits, mu, logvar = model(inputs)
    assert logits.shape == (3, 6) and mu.shape == logvar.shape == (3, 3)
    assert torch.allclose(model.score(inputs), logits)  # eval: the posterior mean, no sampling
    loss = vae_loss(logits, (inputs > 0).float(), mu, logvar, beta=0.2)
    assert loss.ndim == 0 and torch.isfinite(loss)
    plain = MultVAE(VaeConfig(n_items=6, hidden=8, latent=3, recency=0.0))
    assert plain.history_inputs([[0, 1, 2]])[0].tolist() == [1, 1, 1, 0, 0, 0]


def test_holdout_rows_target_what_comes_next(split: inter.Split) -> None:
    model = MultVAE(VaeConfig(n_items=split.train.n_movies, **SMALL))
    history = HistoryIndex([split.train])
    inputs, targets = user_rows(model, history, split.train.n_users, holdouts=(0, 5))
    n = split.train.n_users
    assert inputs.shape == targets.shape == (2 * n, split.train.n_movies)  # every user has > 5 training events
    assert int(targets[:n].sum()) == int((inputs[:n] > 0).sum())  # h = 0: the row reconstructs itself
    assert (targets[n:].sum(dim=1) == 5).all()  # h = 5: the last five movies are the targets
    last = history.indices[history.indptr[0] : history.indptr[1]].tolist()
    assert set(targets[n].nonzero().squeeze(1).tolist()) == set(last[-5:])
    assert set(inputs[n].nonzero().squeeze(1).tolist()) == set(last[:-5])


def test_training_improves_validation_ndcg(run: Trained) -> None:
    untrained, *trained = (row["ndcg@10"] for row in run.history)
    assert max(trained) > untrained + 0.02
    assert run.epochs[-1]["loss"] < run.epochs[0]["loss"]


def test_checkpoint_round_trip_serving_and_fusion(
    run: Trained, split: inter.Split, data: inter.Interactions, tmp_path: Path
) -> None:
    assert "vae" in FUSED
    ckpt = to_checkpoint(run, data, split)
    assert ckpt.kind == "vae" and ckpt.feature_service == "marquee:vae_inputs"
    assert ckpt.features == ["reviews.history_sequence"]
    folder = tmp_path / "recbole"
    loaded = load_checkpoint(save_checkpoint(ckpt, folder / "vae.pt"))
    history = HistoryIndex([split.train])
    users = torch.arange(30)
    expected = VaeScorer(run.model, history).score_all(users)
    assert torch.allclose(VaeScorer(from_checkpoint(loaded), history).score_all(users), expected, atol=1e-5)
    # serving: the user's history oldest first, seen movies excluded, the same order as the scorer
    mine = history.indices[history.indptr[3] : history.indptr[4]].tolist()
    served, ranked, _ = served_and_expected(loaded, data, 3, mine, expected[3])
    assert served == ranked
    # the fusion weighs it beside EASE, and the served retriever is the better on valid
    ease_run = train_ease(split, TrainOptions(quiet=True), l2_grid=(700.0,), recency_grid=(10.0,))
    ease = load_checkpoint(save_checkpoint(to_checkpoint(ease_run, data, split), folder / "ease.pt"))
    valid_scores = {c.kind: score_matrix(retriever_scorer(c, history), data.n_users) for c in (ease, loaded)}
    fitted = train_fusion(split, valid_scores, TrainOptions(quiet=True), step=0.25)
    assert len(fitted.history) == 5 and set(fitted.model.weights) == {"ease", "vae"}
    assert fitted.valid["ndcg@10"] >= max(ease_run.valid["ndcg@10"], run.valid["ndcg@10"]) - 1e-9
    assert best_retriever({"ease": ease, "vae": loaded}) == ("vae" if run.valid["ndcg@10"] > ease_run.valid["ndcg@10"]
                                                              else "ease")  # fmt: skip
