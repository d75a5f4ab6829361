"""The sequential retriever and the score fusion: shapes, causality, a short real-data run, checkpoints, serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import from_checkpoint, load_checkpoint, save_checkpoint
from model.data import interactions as inter
from model.evaluate.ranking import HistoryIndex, SequentialScorer, retriever_scorer, score_matrix
from model.networks.fusion import FusionConfig, fuse, standardize
from model.networks.sequential import SequentialConfig, SequentialRetriever, horizon_loss
from model.serve.ranker import Ranker, RankRequest, best_retriever, fusion_parts
from model.train.ease import train_ease
from model.train.fusion import simplex, train_fusion
from model.train.options import Trained, TrainOptions
from model.train.pipeline import to_checkpoint
from model.train.sequential import train_sequential, windows
from sources.errors import MarqueeError
from tests.model.ranker_check import served_and_expected

SMALL = {"dim": 16, "layers": 1, "heads": 1, "max_len": 20, "dropout": 0.0}


@pytest.fixture(scope="module")
def split(data: inter.Interactions) -> inter.Split:
    return inter.make_split(data, "recbole")


@pytest.fixture(scope="module")
def run(split: inter.Split) -> Trained:
    options = TrainOptions(epochs=2, lr=1e-2, batch_size=256, max_batches=6, patience=2, quiet=True)
    return train_sequential(split, options, horizon=3, **SMALL)


def test_shapes_padding_and_causality() -> None:
    torch.manual_seed(0)
    model = SequentialRetriever(SequentialConfig(n_items=7, dim=8, heads=2, max_len=4, dropout=0.0)).eval()
    tokens = model.tokens([[0, 1, 2, 3, 4, 5], [6], []])
    assert tokens.tolist() == [[3, 4, 5, 6], [0, 0, 0, 7], [0, 0, 0, 0]]  # last 4 kept, left-padded, movie + 1
    hidden = model(tokens)
    assert hidden.shape == (3, 4, 8) and torch.isfinite(hidden).all()
    assert model.score_last(tokens).shape == (3, 7)
    # a position reads only itself and earlier movies: changing the last movie leaves the others alone
    changed = tokens.clone()
    changed[0, 3] = 1
    assert torch.allclose(model(changed)[0, :3], hidden[0, :3], atol=1e-6)
    assert not torch.allclose(model(changed)[0, 3], hidden[0, 3])
    # padding changes nothing for the real positions
    assert torch.allclose(model(tokens[1:2, 3:])[0, 0], hidden[1, 3], atol=1e-5)
    loss = horizon_loss(model, tokens)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_windows_make_every_event_a_target_once(split: inter.Split) -> None:
    history = HistoryIndex([split.train])
    runs = windows(history, split.train.n_users, 21)
    targets = int(((runs[:, 1:] > 0) & (runs[:, :-1] > 0)).sum())  # positions with a movie before them
    assert targets == len(split.train) - split.train.n_users  # every event but each user's first


def test_training_improves_validation_ndcg(run: Trained) -> None:
    untrained, *trained = (row["ndcg@10"] for row in run.history)
    assert max(trained) > untrained + 0.01
    assert run.epochs[-1]["loss"] < run.epochs[0]["loss"]


def test_checkpoint_round_trip_and_serving(
    run: Trained, split: inter.Split, data: inter.Interactions, tmp_path: Path
) -> None:
    model: SequentialRetriever = run.model
    ckpt = to_checkpoint(run, data, split)
    assert ckpt.feature_service == "marquee:sequential_inputs" and ckpt.features == ["reviews.history_sequence"]
    loaded = load_checkpoint(save_checkpoint(ckpt, tmp_path / "recbole" / "sequential.pt"))
    history = HistoryIndex([split.train])
    users = torch.arange(30)
    again: SequentialRetriever = from_checkpoint(loaded)
    expected = SequentialScorer(model, history).score_all(users)
    assert torch.allclose(SequentialScorer(again, history).score_all(users), expected, atol=1e-5)
    # serving ranks with the same scores, reading the history oldest first
    order = np.lexsort((split.train.items, split.train.ts, split.train.users))
    mine = split.train.items[order][split.train.users[order] == 3].tolist()
    served, ranked, _ = served_and_expected(loaded, data, 3, mine, expected[3])
    assert served == ranked


def test_fusion_weights_checkpoint_and_serving(
    run: Trained, split: inter.Split, data: inter.Interactions, tmp_path: Path
) -> None:
    """Weights are chosen on valid from the simplex; serving sums the same z-scored scores."""
    assert simplex(2, 0.5) == [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)]
    assert len(simplex(3, 0.1)) == 66
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    assert torch.allclose(standardize(scores)[0], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.equal(standardize(scores)[1], torch.zeros(3))
    folder = tmp_path / "recbole"
    ease_run = train_ease(split, TrainOptions(quiet=True), l2_grid=(700.0,), recency_grid=(10.0,))
    ease = load_checkpoint(save_checkpoint(to_checkpoint(ease_run, data, split), folder / "ease.pt"))
    seq = load_checkpoint(save_checkpoint(to_checkpoint(run, data, split), folder / "sequential.pt"))
    history = HistoryIndex([split.train])
    valid_scores = {c.kind: score_matrix(retriever_scorer(c, history), data.n_users) for c in (ease, seq)}
    fitted = train_fusion(split, valid_scores, TrainOptions(quiet=True), step=0.5)
    assert len(fitted.history) == 3 and fitted.valid["ndcg@10"] == max(r["ndcg@10"] for r in fitted.history)
    assert fitted.valid["ndcg@10"] >= ease_run.valid["ndcg@10"]  # a vertex (EASE alone) is in the grid
    with pytest.raises(ValueError, match="two retrievers"):
        train_fusion(split, {"ease": valid_scores["ease"]}, TrainOptions(quiet=True))
    fitted.model = FusionConfig({"ease": 0.5, "sequential": 0.5})  # both used, whatever the small run chose
    fitted.extras["components"] = {"ease": ease, "sequential": seq}
    fusion = load_checkpoint(save_checkpoint(to_checkpoint(fitted, data, split), folder / "fusion.pt"))
    assert fusion.features == ["reviews.history_sequence"]
    assert fusion_parts(fusion, {"ease": ease, "sequential": seq}) == {"ease": ease, "sequential": seq}
    ranker = Ranker(fusion, components={"ease": ease, "sequential": seq})
    mine = [int(data.movie_ids[i]) for i in history.indices[history.indptr[7] : history.indptr[8]].tolist()]
    request = RankRequest(int(data.user_ids[7]), mine, 5, set(mine))
    (scored, _), = ranker.rank_many([request], features=None)  # fmt: skip
    parts = {k: s[7:8] for k, s in valid_scores.items()}
    expected = fuse(parts, {"ease": 0.5, "sequential": 0.5})[0]
    expected[history.indices[history.indptr[7] : history.indptr[8]]] = float("-inf")
    assert [s.movie_id for s in scored] == data.movie_ids[expected.topk(5).indices].tolist()
    # the fusion is served only when it beats the single retrievers on valid and they are its own versions
    fusion.metrics = {"valid": {"ndcg@10": 1.0}}
    assert best_retriever({"ease": ease, "sequential": seq, "fusion": fusion}) == "fusion"
    retrained = load_checkpoint(folder / "ease.pt")
    retrained.created_at = "2099-01-01T00:00:00+00:00"
    with pytest.raises(MarqueeError, match="fusion was fitted on ease"):
        fusion_parts(fusion, {"ease": retrained, "sequential": seq})
