"""Short training runs on real ML-100K data from the stores: losses fall, checkpoints round-trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from api.recommendations.history import RatingHistory
from model.checkpoint import from_checkpoint, load_checkpoint, save_checkpoint
from model.data import interactions as inter
from model.data.catalog import load_catalog
from model.data.engagement_frame import FrameEncoder, SideInfo, load_side_info, local_frame, pair_frame
from model.evaluate.ranking import TwoTowerScorer, score_matrix
from model.networks.engagement import predict_ratings
from model.train.baselines import train_bpr
from model.train.engagement import split_frame, train_engagement
from model.train.options import TrainOptions
from model.train.pipeline import LOCAL_SERVICE, frame_engine, to_checkpoint
from model.train.two_tower import train_two_tower
from sources.feature_store.names import TRAINING_SERVICE
from sources.ingest import IngestReport
from sources.stores.clients import Stores

FAST = TrainOptions(epochs=2, batch_size=1024, lr=2e-3, quiet=True, device="cpu", max_batches=25)


@pytest.fixture(scope="module")
def data(stores: Stores, loaded: IngestReport) -> inter.Interactions:
    return inter.from_stores(stores)


@pytest.fixture(scope="module")
def split(data: inter.Interactions) -> inter.Split:
    return inter.recbole_split(data)


@pytest.fixture(scope="module")
def side_info(stores: Stores) -> SideInfo:
    return load_side_info(stores)


@pytest.fixture(scope="module")
def frame(side_info: SideInfo, data: inter.Interactions) -> pd.DataFrame:
    return local_frame(side_info, data)


def test_interactions_come_from_the_stores(data: inter.Interactions) -> None:
    assert (len(data), data.n_users, data.n_movies) == (100_000, 943, 1682)
    assert np.all(np.diff(data.ts) >= 0)  # chronological
    assert set(np.unique(data.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_local_frame_is_point_in_time(frame: pd.DataFrame, data: inter.Interactions) -> None:
    assert len(frame) == len(data)
    # a user's review count before an event = that user's events strictly earlier in time
    row = frame.iloc[len(frame) // 2]
    uid, ts = int(row.user_id), int(row.event_timestamp.timestamp())
    users = data.user_ids[data.users]
    assert row["user_reviews__review_count"] == np.sum((users == uid) & (data.ts < ts))
    # an event's own playback session (its length follows the rating) is never in its features
    assert all(len(v) <= 5 for v in frame["user_playback__last5_durations"].head(1000))


def test_engagement_training_lowers_validation_rmse(frame: pd.DataFrame, split: inter.Split,
                                                    data: inter.Interactions) -> None:  # fmt: skip
    trained = train_engagement(split_frame(frame, split), FAST, user_ids=data.user_ids, movie_ids=data.movie_ids)
    untrained, best = trained.history[0]["rmse"], trained.valid["rmse"]
    assert best < untrained - 0.05, trained.history
    assert trained.epochs and all(math.isfinite(h["loss"]) for h in trained.epochs)


def test_two_tower_training_improves_validation_ndcg(stores: Stores, split: inter.Split,
                                                     data: inter.Interactions) -> None:  # fmt: skip
    trained = train_two_tower(split, load_catalog(stores, data), FAST)
    assert trained.valid["ndcg@10"] > trained.history[0]["ndcg@10"] + 0.02, trained.history


def test_bpr_training_lowers_its_loss(split: inter.Split) -> None:
    trained = train_bpr(split, TrainOptions(epochs=3, batch_size=2048, quiet=True, device="cpu", patience=5))
    losses = [h["loss"] for h in trained.epochs]
    assert losses[-1] < losses[0], losses


def test_a_frame_is_credited_to_the_engine_that_computed_it(stores: Stores) -> None:
    assert frame_engine(stores, TRAINING_SERVICE) == stores.endpoints.offline.engine == "postgres"
    assert (frame_engine(stores, LOCAL_SERVICE), frame_engine(stores, "")) == ("local", "")


def test_checkpoints_round_trip_to_identical_predictions(
    tmp_path: Path, stores: Stores, frame: pd.DataFrame, split: inter.Split, data: inter.Interactions
) -> None:
    one = TrainOptions(epochs=1, quiet=True, device="cpu", max_batches=3)
    eng = train_engagement(split_frame(frame, split), one, user_ids=data.user_ids, movie_ids=data.movie_ids)
    tt = train_two_tower(split, load_catalog(stores, data), one)
    for trained in (eng, tt):
        ckpt = to_checkpoint(trained, data, split, feature_service="test_service", feature_engine="spark")
        path = save_checkpoint(ckpt, tmp_path / f"{ckpt.kind}.pt")
        back = load_checkpoint(path, ckpt.features)
        assert (back.kind, back.feature_service, back.features) == (ckpt.kind, ckpt.feature_service, ckpt.features)
        assert back.feature_engine == ("spark" if ckpt.kind == "engagement" else "")  # which engine made the frame
        assert back.data_snapshot["max_event_ts"] == data.max_ts and back.split["name"] == "recbole"
        model = from_checkpoint(back)
        if ckpt.kind == "engagement":
            batch = eng.extras["encoder"].encode(frame.iloc[:500])
            assert torch.equal(predict_ratings(model, batch), predict_ratings(eng.model, batch))
        else:
            history = tt.extras["history"]
            served = TwoTowerScorer(model, history, back.extras["movie_vectors"])
            # the in-memory model's vectors, the cold movies placed by content alone as when saved
            fresh = TwoTowerScorer(tt.model, history, tt.model.all_movie_vectors(tt.extras.get("content_only")))
            assert torch.allclose(score_matrix(served, 50), score_matrix(fresh, 50), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engagement.pt", "two_tower.pt"]  # no temp files left


def test_ranker_recommender_answers_with_unseen_movies(
    tmp_path: Path,
    stores: Stores,
    side_info: SideInfo,
    frame: pd.DataFrame,
    split: inter.Split,
    data: inter.Interactions,
) -> None:
    from api.recommendations.contract import RecommendationResult
    from api.recommendations.ranked import RankerRecommender
    from model.serve.ranker import Ranker

    one = TrainOptions(epochs=1, quiet=True, device="cpu", max_batches=5)
    tt = to_checkpoint(train_two_tower(split, load_catalog(stores, data), one), data, split)
    eng_trained = train_engagement(split_frame(frame, split), one, user_ids=data.user_ids, movie_ids=data.movie_ids)
    eng = to_checkpoint(eng_trained, data, split, feature_service="local")

    class FrameFeatures:  # online features stand-in built by the same code as training rows
        def pairs(self, user_id: int, movie_ids: list[int]) -> pd.DataFrame:
            n = len(movie_ids)
            return pair_frame(side_info, data, np.full(n, user_id), np.array(movie_ids),
                              np.full(n, data.max_ts + 1))  # fmt: skip

        def encoded_many(self, pairs: list[tuple[int, list[int]]], encoder: FrameEncoder) -> dict[str, torch.Tensor]:
            return encoder.encode(pd.concat([self.pairs(u, m) for u, m in pairs], ignore_index=True))

    user = int(data.user_ids[0])
    seen = set(data.movie_ids[data.items[data.users == 0]].tolist())
    for ranker, features in ((Ranker(tt), None), (Ranker(tt, eng, beta=1.0), FrameFeatures())):
        result = RankerRecommender(stores, ranker, features, RatingHistory(stores)).recommend(user, 7)
        assert isinstance(result, RecommendationResult) and not result.degraded
        assert [r.rank for r in result.items] == list(range(1, 8))
        assert not seen & {r.movie_id for r in result.items}
        scores = [r.score for r in result.items]
        assert scores == sorted(scores, reverse=True)
    assert "predicted rating" in result.items[0].explanation and "+engagement@" in result.model_version

    # Several users in one pass answer as each would alone; a user the checkpoint does not know
    # gets its own error and fails nobody else.
    from api.recommendations.contract import RecommendationRequest
    from model.checkpoint import CheckpointError

    served = RankerRecommender(stores, Ranker(tt, eng, beta=1.0), FrameFeatures(), RatingHistory(stores))
    others = [int(u) for u in data.user_ids[1:4]]
    asks = [RecommendationRequest(user, 7), RecommendationRequest(10**6, 7)] + [
        RecommendationRequest(u, 5, exclude_seen=False) for u in others
    ]
    together = served.recommend_many(asks)
    assert isinstance(together[1], CheckpointError) and "newer than the retriever" in str(together[1])
    for ask, outcome in zip(asks, together, strict=True):
        if ask.user_id == 10**6:
            continue
        alone = served.recommend(ask.user_id, ask.k, ask.exclude_seen)
        assert isinstance(outcome, RecommendationResult)
        assert [i.movie_id for i in outcome.items] == [i.movie_id for i in alone.items]
        assert [i.score for i in outcome.items] == pytest.approx([i.score for i in alone.items], abs=1e-4)
        assert [i.explanation for i in outcome.items] == [i.explanation for i in alone.items]


def test_a_time_budget_stops_training_with_the_best_epoch_kept(
    split: inter.Split, capsys: pytest.CaptureFixture[str]
) -> None:
    options = TrainOptions(
        epochs=50, batch_size=2048, quiet=True, device="cpu", patience=50, time_budget_s=0.5, max_batches=10
    )
    trained = train_bpr(split, options)
    assert 1 <= len(trained.epochs) < 50
    assert 1 <= trained.best_epoch <= len(trained.epochs)
    assert "training time budget" in capsys.readouterr().err


def test_a_recent_window_reads_only_its_reviews(stores: Stores, data: inter.Interactions) -> None:
    start = inter.window_start(stores, 30)
    assert start is not None and inter.window_start(stores, 0) is None
    recent = inter.from_stores(stores, since=start)
    assert 0 < len(recent) < len(data)
    assert recent.ts.min() >= int(start.timestamp())
    assert len(recent) == int((data.ts >= int(start.timestamp())).sum())


def test_an_engagement_frame_past_its_limit_stops_before_any_training(
    stores: Stores, data: inter.Interactions, tmp_path: Path
) -> None:
    """``train_models`` checks the frame's size first: nothing trained, no checkpoint written,
    the window that fits named; the window it names then passes the same check."""
    from model.data.engagement_frame import check_frame_size
    from model.train.pipeline import train_models
    from sources.errors import MarqueeError

    limit = len(data) // 4
    options = TrainOptions(quiet=True, device="cpu", engagement_max_labels=limit)
    with pytest.raises(MarqueeError, match=r"MARQUEE_TRAIN_WINDOW_DAYS=(\d+)") as refused:
        train_models(stores, tmp_path, kinds=["pop", "engagement"], options=options, data=data)
    assert not list(tmp_path.rglob("*.pt"))
    days = int(str(refused.value).split("MARQUEE_TRAIN_WINDOW_DAYS=")[1].split()[0])
    check_frame_size(inter.from_stores(stores, since=inter.window_start(stores, days)), limit)
