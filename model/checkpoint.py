"""Checkpoints: a model's weights with everything needed to serve or resume it exactly.

One file per model kind (``<models_dir>/<kind>.pt``), written atomically (temp file, then
``os.replace``), holding only tensors and plain containers so it loads with
``torch.load(weights_only=True)`` (no pickled code runs on load):

    kind, format, created_at
    config            the network's config dict (``*Config.to_dict``)
    state             state_dict (or, for most-popular, the counts)
    feature_service   e.g. "engagement_training_v1" and ``features``, its feature list
    feature_engine    which engine computed the training frame: postgres or spark (Feast's
                      offline store of that engine), local (computed from the stores directly),
                      "" for models that read no feature frame (and checkpoints older than it)
    data_snapshot     max event time and row count of the data it was trained on
    split, metrics    the split it used and what it measured on valid/test
    extras            id maps, the two-tower's precomputed movie vectors, encoder vocabularies,
                      the versions of the retrievers a fusion checkpoint weighs, the parts a
                      BPMF was sampled on (``fitted_on``: train or train+valid)

``load_checkpoint(path, expected_features)`` refuses a checkpoint whose feature list no longer
matches the feature service (``FeatureMismatch``): serving would otherwise feed columns in the
wrong order, or miss one, and answer plausibly but wrongly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model.networks.baselines import BPRMF, MostPopular
from model.networks.bpmf import BayesianPMF, BpmfConfig
from model.networks.ease import EaseConfig, RecencyEASE
from model.networks.engagement import EngagementNetConfig, MultimodalEngagementNet
from model.networks.fusion import FusionConfig
from model.networks.sequential import SequentialConfig, SequentialRetriever
from model.networks.two_tower import TwoTowerConfig, TwoTowerRetriever
from model.networks.vae import MultVAE, VaeConfig
from sources.errors import MarqueeError

FORMAT = 1


class CheckpointError(MarqueeError):
    """A checkpoint is missing, unreadable or of an unknown format."""


class FeatureMismatch(CheckpointError):
    """A checkpoint was trained on features that differ from the ones serving would feed it."""


@dataclass
class Checkpoint:
    """One saved model: the fields listed in the module docstring."""

    kind: str
    config: dict[str, Any]
    state: dict[str, Tensor]
    feature_service: str
    features: list[str]
    data_snapshot: dict[str, Any]
    split: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format: int = FORMAT
    feature_engine: str = ""

    @property
    def version(self) -> str:
        """A short model version for API answers: kind and when it was trained."""
        return f"{self.kind}@{self.created_at}"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def checkpoint_path(models_dir: Path, kind: str) -> Path:
    """Where the checkpoint of model ``kind`` lives: ``<models_dir>/<kind>.pt``."""
    return models_dir / f"{kind}.pt"


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> Path:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(checkpoint.to_dict(), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: Path, expected_features: Sequence[str] | None = None) -> Checkpoint:
    """Read a checkpoint; with ``expected_features``, refuse one trained on other features."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: run `marquee train` first")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"checkpoint {path} has format {got!r}, this Marquee reads format {FORMAT}")
    try:
        checkpoint = Checkpoint(**raw)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint {path} is missing fields: {exc}") from exc
    if expected_features is not None:
        check_features(checkpoint, expected_features, path)
    return checkpoint


def check_features(checkpoint: Checkpoint, expected: Sequence[str], path: Path | str = "checkpoint") -> None:
    """Raise ``FeatureMismatch`` naming what was added or removed.

    Order does not matter: the model's encoder reads columns by name.
    """
    trained, now = list(checkpoint.features), list(expected)
    added, removed = sorted(set(now) - set(trained)), sorted(set(trained) - set(now))
    if not added and not removed:
        return
    detail = []
    if added:
        detail.append(f"new: {', '.join(added)}")
    if removed:
        detail.append(f"gone: {', '.join(removed)}")
    raise FeatureMismatch(
        f"{checkpoint.kind} checkpoint {path} was trained on {len(trained)} features of "
        f"{checkpoint.feature_service!r} that no longer match ({'; '.join(detail)}); retrain with `marquee train`"
    )


#: The checkpoint kinds that are one network built from its config dataclass, by kind.
NETWORKS: dict[str, tuple[Any, Any]] = {
    "bpmf": (BayesianPMF, BpmfConfig),
    "ease": (RecencyEASE, EaseConfig),
    "two_tower": (TwoTowerRetriever, TwoTowerConfig),
    "sequential": (SequentialRetriever, SequentialConfig),
    "vae": (MultVAE, VaeConfig),
    "engagement": (MultimodalEngagementNet, EngagementNetConfig),
}


def from_checkpoint(checkpoint: Checkpoint) -> Any:
    """The model a checkpoint holds, in eval mode on the CPU.

    The model's tensors are the checkpoint's own (``assign=True``), not copies: a process
    that keeps both (an evaluation, a serving worker) holds EASE's ``n_kept²`` item matrix once. The
    model is for inference; training writes into its own modules, never into a loaded one."""
    kind = checkpoint.kind
    if kind == "pop":
        pop = MostPopular(int(checkpoint.config["n_items"]))
        pop.counts = checkpoint.state["counts"]
        return pop
    if kind == "bpr":
        c = checkpoint.config
        bpr = BPRMF(int(c["n_users"]), int(c["n_items"]), int(c["dim"]))
        bpr.load_state_dict(checkpoint.state, assign=True)
        return bpr.eval()
    if kind == "fusion":  # weights only: the fused retrievers are their own checkpoints
        return FusionConfig.from_dict(checkpoint.config)
    if kind in NETWORKS:
        network, config = NETWORKS[kind]
        net = network(config.from_dict(checkpoint.config))
        net.load_state_dict(checkpoint.state, assign=True)
        return net.eval()
    raise CheckpointError(f"unknown checkpoint kind {kind!r}")
