"""``marquee bench train --nproc 1 --nproc 2``: the engagement net on 1 and N processes, same run.

The same point-in-time frame (Feast's, or the local one when the repo is not materialized), the
same seed, options and effective batch for every process count; each count trains the net with
``model/train/distributed.py`` (N > 1) or in this process on the same batches (N = 1). Prints
seconds per epoch, samples/s over all ranks, the speed-up against the first count, and the
validation RMSE each run reached (they should agree within tests/model/train's tolerance).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.data.interactions import from_stores, make_split
from model.train.distributed import train_distributed
from model.train.engagement import split_frame, train_engagement
from model.train.options import TrainOptions
from model.train.pipeline import engagement_frame, to_checkpoint

if TYPE_CHECKING:
    from sources.stores.clients import Stores


def bench_train(stores: Stores, counts: list[int], *, epochs: int = 2, batch_size: int = 1024) -> dict[str, Any]:
    """Seconds/epoch, samples/s and validation RMSE of the engagement net per process count."""
    data = from_stores(stores)
    split = make_split(data, "time", seed=42)
    frame, service = engagement_frame(stores, data, source="auto")
    frames = split_frame(frame, split)
    options = TrainOptions(epochs=epochs, batch_size=batch_size, lr=2e-3, quiet=True, device="cpu", patience=epochs)
    out: dict[str, Any] = {"feature_service": service, "train_rows": len(frames["train"]), "epochs": epochs,
                           "effective_batch": batch_size}  # fmt: skip
    base = None
    for n in counts:
        if n == 1:
            users, movies = data.user_ids, data.movie_ids
            trained = train_engagement(frames, options, user_ids=users, movie_ids=movies, shard=(0, 1))
        else:
            with tempfile.TemporaryDirectory(prefix="marquee-bench-train-") as tmp:
                trained, _, _ = train_distributed(frames, options, nproc=n, data=data, split=split,
                                                  feature_service=service, models_dir=Path(tmp),
                                                  make_checkpoint=to_checkpoint)  # fmt: skip
        rate = trained.samples_per_s
        base = base or rate
        out[f"nproc={n}"] = {
            "seconds_per_epoch": round(trained.seconds_per_epoch, 2),
            "samples_per_s": round(rate),
            "speedup": round(rate / base, 2),
            "valid_rmse": round(trained.valid["rmse"], 4),
        }
    return out
