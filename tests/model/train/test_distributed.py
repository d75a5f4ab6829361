"""Two processes with DistributedDataParallel (gloo, CPU) train the engagement net as one process does.

Same seed, same effective batch (1024: 512 per rank against 1024 in one process), and the
same rows in each batch (``batch_loader``'s shards): only dropout masks and the order of
float sums differ, so validation RMSE must agree within ``RMSE_TOLERANCE``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model.checkpoint import from_checkpoint
from model.data import interactions as inter
from model.data.engagement_frame import load_side_info, local_frame
from model.networks.engagement import predict_ratings
from model.train.distributed import train_distributed
from model.train.engagement import split_frame, train_engagement
from model.train.options import TrainOptions
from model.train.pipeline import to_checkpoint
from sources.ingest import IngestReport
from sources.stores.clients import Stores

RMSE_TOLERANCE = 0.02  # stars; the runs' RMSE is ~1.0 and one epoch moves it by ~0.1
OPTIONS = TrainOptions(epochs=2, batch_size=1024, lr=2e-3, quiet=True, device="cpu", max_batches=30, patience=3)


@pytest.fixture(scope="module")
def data(stores: Stores, loaded: IngestReport) -> inter.Interactions:
    return inter.from_stores(stores)


@pytest.fixture(scope="module")
def split(data: inter.Interactions) -> inter.Split:
    return inter.make_split(data, "time", seed=OPTIONS.seed)


@pytest.fixture(scope="module")
def frames(stores: Stores, data: inter.Interactions, split: inter.Split) -> dict[str, pd.DataFrame]:
    return split_frame(local_frame(load_side_info(stores), data), split)


def test_two_processes_train_like_one(
    tmp_path: Path, frames: dict[str, pd.DataFrame], data: inter.Interactions, split: inter.Split
) -> None:
    alone = train_engagement(frames, OPTIONS, user_ids=data.user_ids, movie_ids=data.movie_ids, shard=(0, 1))
    trained, checkpoint, path = train_distributed(
        frames,
        OPTIONS,
        nproc=2,
        data=data,
        split=split,
        feature_service="local",
        models_dir=tmp_path,
        make_checkpoint=to_checkpoint,
    )
    assert path == tmp_path / "time" / "engagement.pt" and path.is_file()
    assert [h["samples"] for h in trained.epochs] == [h["samples"] for h in alone.epochs]  # all ranks' rows
    assert all(math.isfinite(h["loss"]) for h in trained.epochs)
    assert trained.valid["rmse"] < trained.history[0]["rmse"] - 0.05, trained.history  # it learned
    assert abs(trained.valid["rmse"] - alone.valid["rmse"]) <= RMSE_TOLERANCE, (trained.valid, alone.valid)

    # the checkpoint rank 0 wrote loads and scores as the trained model does
    served = from_checkpoint(checkpoint)
    batch = trained.extras["encoder"].encode(frames["test"].iloc[:500])
    predicted = predict_ratings(served, batch)
    assert torch.equal(predicted, predict_ratings(trained.model, batch))
    assert np.isfinite(predicted.numpy()).all() and 1.0 <= float(predicted.min()) <= float(predicted.max()) <= 5.0
