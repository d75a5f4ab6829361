"""Training the multimodal engagement net on point-in-time rows, early-stopped on validation RMSE.

The target is engagement = (rating - 1) / 4 as a soft BCE label; the net's logit maps back to
a rating with ``logit_to_rating`` (``model/networks/engagement.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from model.data.engagement_frame import schema_config
from model.data.interactions import Interactions, Split
from model.device import pick_device
from model.networks.engagement import MultimodalEngagementNet, predict_ratings, rating_to_target
from model.train.loop import GatheredRows, batch_loader, data_parallel, fit, seed_everything
from model.train.options import Trained, TrainOptions

PARTS = ("train", "valid", "test")
KEYS = ["user_id", "movie_id", "ts"]


def split_frame(frame: pd.DataFrame, split: Split) -> dict[str, pd.DataFrame]:
    """The frame's rows routed to train/valid/test by (user, movie, event second) key; a row
    in no part (outside the training window) is dropped. One vectorized join, no key objects."""
    keys = []
    for code, name in enumerate(PARTS):
        data: Interactions = getattr(split, name)
        keys.append(pd.DataFrame({"user_id": data.user_ids[data.users].astype(np.int64),
                                  "movie_id": data.movie_ids[data.items].astype(np.int64),
                                  "ts": data.ts.astype(np.int64), "part": np.int8(code)}))  # fmt: skip
    parts = pd.concat(keys, ignore_index=True).drop_duplicates(KEYS, keep="last")  # a later part wins
    rows = pd.DataFrame({"user_id": frame["user_id"].to_numpy(np.int64),
                         "movie_id": frame["movie_id"].to_numpy(np.int64),
                         "ts": frame["event_timestamp"].astype("int64").to_numpy() // 10**9})  # fmt: skip
    tagged = rows.merge(parts, on=KEYS, how="left")["part"].to_numpy()  # a left merge keeps the frame's order
    return {name: frame[tagged == code] for code, name in enumerate(PARTS)}


def train_engagement(
    frames: Mapping[str, pd.DataFrame],
    options: TrainOptions,
    *,
    user_ids: np.ndarray,
    movie_ids: np.ndarray,
    factor_dim: int = 32,
    factor_weight_decay: float = 0.5,
    shard: tuple[int, int] | None = None,
    **sizes: Any,
) -> Trained:
    """The multimodal net on ``frames['train']``, early-stopped on ``frames['valid']`` RMSE.

    ``shard=(rank, world_size)``: data-parallel training, this process being one rank of a
    started process group (``model/train/distributed.py``) when world_size > 1;
    ``options.batch_size`` stays the effective batch (see ``batch_loader``)."""
    seed_everything(options.seed)
    device = pick_device(options.device)
    encoder = schema_config(frames["train"], user_ids=user_ids, movie_ids=movie_ids, factor_dim=factor_dim, **sizes)
    model = MultimodalEngagementNet(encoder.config)
    train_rows = encoder.encode_rows(frames["train"])  # each title's embedding once, gathered per batch
    model.fit_normalization(train_rows.columns)
    model = model.to(device)
    valid_rows = encoder.encode_rows(frames["valid"])
    valid_target = torch.tensor(frames["valid"]["rating"].to_numpy(np.float32))
    factor_params = [p for n, p in model.named_parameters() if n.startswith("factors.")]
    other_params = [p for n, p in model.named_parameters() if not n.startswith("factors.")]
    # L2 on the id factors only: they overfit first; the feature branches generalize on their own
    optimizer = torch.optim.AdamW(
        [
            {"params": other_params, "weight_decay": 1e-4},
            {"params": factor_params, "weight_decay": factor_weight_decay},
        ],
        lr=options.lr,
    )
    keys = sorted([*train_rows.columns, "embedding"])
    target = rating_to_target(torch.tensor(frames["train"]["rating"].to_numpy(np.float32)))
    loader = batch_loader(GatheredRows(train_rows, keys, [target]), options.batch_size, device, options.seed, shard)
    logits = data_parallel(model, device) if shard is not None and shard[1] > 1 else model.logits

    def step(batch: list[Tensor]) -> Tensor:
        named = dict(zip(keys, batch[:-1], strict=True))
        return F.binary_cross_entropy_with_logits(logits(named).float(), batch[-1])

    def validate() -> dict[str, float]:
        pred = predict_ratings(model, valid_rows)
        err = pred.double() - valid_target.double()
        return {"rmse": err.pow(2).mean().sqrt().item(), "mae": err.abs().mean().item()}

    history, best, valid = fit(
        name="engagement", model=model, loader=loader, step=step, validate=validate,
        monitor="rmse", higher_is_better=False, options=options, optimizer=optimizer,
    )  # fmt: skip
    return Trained("engagement", model.cpu(), history, best, valid, {"encoder": encoder})
