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
from model.train.loop import batch_loader, data_parallel, fit, seed_everything
from model.train.options import Trained, TrainOptions


def split_frame(frame: pd.DataFrame, split: Split) -> dict[str, pd.DataFrame]:
    """The frame's rows routed to train/valid/test by (user, movie, event time) key."""
    part: dict[tuple[int, int, int], str] = {}
    for name in ("train", "valid", "test"):
        data: Interactions = getattr(split, name)
        keys = zip(data.user_ids[data.users].tolist(), data.movie_ids[data.items].tolist(), data.ts.tolist(),
                   strict=True)  # fmt: skip
        part.update(dict.fromkeys(keys, name))
    ts = frame["event_timestamp"].astype("int64") // 10**9
    labels = [part.get(k, "") for k in zip(frame.user_id.tolist(), frame.movie_id.tolist(), ts.tolist(), strict=True)]
    tagged = pd.Series(labels, index=frame.index)
    return {name: frame[tagged == name] for name in ("train", "valid", "test")}


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
    train_batch = encoder.encode(frames["train"])
    model.fit_normalization(train_batch)
    model = model.to(device)
    valid_batch = encoder.encode(frames["valid"])
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
    keys = sorted(train_batch)
    target = rating_to_target(torch.tensor(frames["train"]["rating"].to_numpy(np.float32)))
    loader = batch_loader([*(train_batch[k] for k in keys), target], options.batch_size, device, options.seed, shard)
    logits = data_parallel(model, device) if shard is not None and shard[1] > 1 else model.logits

    def step(batch: list[Tensor]) -> Tensor:
        named = dict(zip(keys, batch[:-1], strict=True))
        return F.binary_cross_entropy_with_logits(logits(named).float(), batch[-1])

    def validate() -> dict[str, float]:
        pred = predict_ratings(model, valid_batch)
        err = pred.double() - valid_target.double()
        return {"rmse": err.pow(2).mean().sqrt().item(), "mae": err.abs().mean().item()}

    history, best, valid = fit(
        name="engagement", model=model, loader=loader, step=step, validate=validate,
        monitor="rmse", higher_is_better=False, options=options, optimizer=optimizer,
    )  # fmt: skip
    return Trained("engagement", model.cpu(), history, best, valid, {"encoder": encoder})
