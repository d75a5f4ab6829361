"""The pipeline behind ``marquee train``: data → split → each model's trainer → a checkpoint.

A checkpoint records the model config, the feature service and its feature list, the data
snapshot, the split and the metrics, so serving can refuse one that no longer fits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from model.checkpoint import Checkpoint, CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from model.data.catalog import load_catalog
from model.data.engagement_frame import FrameEncoder, base_column, check_frame_size, load_side_info, local_frame
from model.data.interactions import Interactions, Split, from_stores, make_split, window_start
from model.evaluate.ranking import HistoryIndex, retriever_scorer, score_matrix
from model.networks.baselines import BPRMF, MostPopular
from model.networks.bpmf import BayesianPMF
from model.networks.ease import RecencyEASE
from model.networks.engagement import MultimodalEngagementNet
from model.networks.fusion import FusionConfig
from model.networks.sequential import SequentialRetriever
from model.networks.two_tower import TwoTowerRetriever
from model.networks.vae import MultVAE
from model.train.baselines import train_bpr, train_pop
from model.train.bpmf import train_bpmf
from model.train.ease import train_ease
from model.train.engagement import split_frame, train_engagement
from model.train.fusion import train_fusion
from model.train.options import MODELS, Trained, TrainOptions
from model.train.sequential import train_sequential
from model.train.two_tower import train_two_tower
from model.train.vae import train_vae
from sources.errors import MarqueeError
from sources.feature_store.names import TRAINING_SERVICE
from sources.progress import console
from sources.stores.clients import Stores

#: what EASE reads: each user's rated movies in time order (the recency weights need the order)
EASE_FEATURES = ["reviews.history_sequence"]
TWO_TOWER_FEATURES = ["reviews.history_bag", "movie_embeddings.embedding", "movie_genres.genre_id"]
#: the sequential retriever reads the same ordered history as EASE
SEQUENTIAL_FEATURES = ["reviews.history_sequence"]
#: the VAE reads it too (the recency weights of its input row need the order)
VAE_FEATURES = ["reviews.history_sequence"]
#: the retrievers a fusion may weigh (each its own checkpoint)
FUSED = ("ease", "two_tower", "sequential", "vae")


LOCAL_SERVICE = "local:engagement_frame_v1"


def snapshot(data: Interactions) -> dict[str, Any]:
    """Which data a model saw: enough to tell a stale checkpoint from a current one."""
    return {
        "max_event_ts": int(data.max_ts),
        "interactions": len(data),
        "users": data.n_users,
        "movies": data.n_movies,
    }


def frame_engine(stores: Stores, service: str) -> str:
    """Which engine computed a frame of ``service`` (``engagement_frame``'s answer) with ``stores``:
    the offline engine Feast joined it on, or ``local``."""
    if service == TRAINING_SERVICE:
        return stores.endpoints.offline.engine
    return "local" if service == LOCAL_SERVICE else ""


def to_checkpoint(
    trained: Trained, data: Interactions, split: Split, *, feature_service: str = "", feature_engine: str = ""
) -> Checkpoint:
    ids = {"user_ids": torch.as_tensor(data.user_ids), "movie_ids": torch.as_tensor(data.movie_ids)}
    common: dict[str, Any] = {
        "data_snapshot": snapshot(data),
        "split": split.describe(),
        "metrics": {"valid": trained.valid, "training": trained.summary(), "history": trained.history},
    }
    model = trained.model
    if isinstance(model, MostPopular):
        return Checkpoint("pop", {"n_items": model.n_items}, {"counts": model.counts}, "", [], extras=ids, **common)
    if isinstance(model, BPRMF):
        config = {"n_users": data.n_users, "n_items": data.n_movies, "dim": trained.extras["dim"]}
        return Checkpoint("bpr", config, model.state_dict(), "", [], extras=ids, **common)
    if isinstance(model, BayesianPMF):  # ratings only: the factors are the whole input
        extras = {**ids, "fitted_on": trained.extras.get("fitted_on", "train")}
        return Checkpoint("bpmf", model.config.to_dict(), model.state_dict(), "", [], extras=extras, **common)
    if isinstance(model, RecencyEASE):
        return Checkpoint("ease", model.config.to_dict(), model.state_dict(), "marquee:ease_inputs",
                          list(EASE_FEATURES), extras=ids, **common)  # fmt: skip
    if isinstance(model, TwoTowerRetriever):
        vectors = model.all_movie_vectors(trained.extras.get("content_only")).float()
        extras = {**ids, "movie_vectors": vectors}
        return Checkpoint("two_tower", model.config.to_dict(), model.state_dict(), "marquee:two_tower_inputs",
                          list(TWO_TOWER_FEATURES), extras=extras, **common)  # fmt: skip
    if isinstance(model, SequentialRetriever):
        return Checkpoint("sequential", model.config.to_dict(), model.state_dict(), "marquee:sequential_inputs",
                          list(SEQUENTIAL_FEATURES), extras=ids, **common)  # fmt: skip
    if isinstance(model, MultVAE):
        return Checkpoint("vae", model.config.to_dict(), model.state_dict(), "marquee:vae_inputs",
                          list(VAE_FEATURES), extras=ids, **common)  # fmt: skip
    if isinstance(model, FusionConfig):
        components: dict[str, Checkpoint] = trained.extras["components"]
        features = list(dict.fromkeys(f for k in model.used for f in components[k].features))
        versions = {k: components[k].version for k in model.used}
        return Checkpoint("fusion", model.to_dict(), {}, "marquee:fusion_inputs", features,
                          extras={**ids, "components": versions}, **common)  # fmt: skip
    if isinstance(model, MultimodalEngagementNet):
        encoder: FrameEncoder = trained.extras["encoder"]
        columns = list(dict.fromkeys(base_column(f) for f in encoder.features))  # "genres[3]" -> "genres"
        return Checkpoint("engagement", model.config.to_dict(), model.state_dict(), feature_service,
                          columns, extras={**ids, "encoder": encoder.to_dict()}, feature_engine=feature_engine,
                          **common)  # fmt: skip
    raise TypeError(f"cannot checkpoint {type(model).__name__}")


def engagement_frame(
    stores: Stores, data: Interactions, *, source: str = "auto", since: datetime | None = None
) -> tuple[pd.DataFrame, str]:
    """Training rows for the engagement net and the feature service they came from.

    ``feast``: labels from MongoDB (the reviews at or after ``since``, the training window
    ``data`` was read with) joined point-in-time through ``engagement_training_v1``
    (model.data.point_in_time); ``local``: the same kind of columns computed from the stores
    directly for ``data``; ``auto``: Feast when its repo is applied and exported, else local
    (said on the console).
    """
    if source not in ("auto", "feast", "local"):
        raise ValueError(f"unknown feature source {source!r}; use auto, feast or local")
    if source in ("auto", "feast"):
        try:
            from model.data.point_in_time import label_events, training_frame
            from sources.feature_store.env import open_feature_store

            store = open_feature_store(stores.endpoints)
            store.get_feature_service(TRAINING_SERVICE)
            return training_frame(store, label_events(stores, since=since), TRAINING_SERVICE), TRAINING_SERVICE
        except Exception as exc:
            if source == "feast":
                raise MarqueeError(f"Feast features unavailable ({type(exc).__name__}: {exc}); "
                                   "run marquee export, apply and materialize first") from exc  # fmt: skip
            console.print(f"[yellow]Feast service {TRAINING_SERVICE} unavailable ({type(exc).__name__}); "
                          "computing the same features from the stores directly[/]")  # fmt: skip
    return local_frame(load_side_info(stores), data), LOCAL_SERVICE


def train_models(
    stores: Stores,
    models_dir: Path,
    *,
    kinds: Sequence[str],
    split_name: str = "time",
    options: TrainOptions,
    feature_source: str = "auto",
    data: Interactions | None = None,
    explicit: set[str] = frozenset(),  # type: ignore[assignment]
    engagement_input: tuple[pd.DataFrame, str] | None = None,
    nproc: int = 1,
) -> dict[str, tuple[Trained, Checkpoint, Path]]:
    """Train ``kinds`` on ``split_name`` and write ``<models_dir>/<split>/<kind>.pt`` for each.

    ``options`` fields named in ``explicit`` (set by the user) override ``MODEL_DEFAULTS``;
    ``engagement_input`` is ``engagement_frame``'s answer when the caller already built it
    (the point-in-time join is the slow part of training the engagement net). ``nproc`` > 1
    trains the engagement net with that many DistributedDataParallel processes
    (``model/train/distributed.py``; the other models train in this process)."""
    unknown = [k for k in kinds if k not in MODELS]
    if unknown:
        raise MarqueeError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)} or all")
    since = window_start(stores, options.window_days)
    data = data if data is not None else from_stores(stores, since=since)
    if "engagement" in kinds and engagement_input is None:
        check_frame_size(data, options.engagement_max_labels)
    split = make_split(data, split_name, seed=options.seed)
    out: dict[str, tuple[Trained, Checkpoint, Path]] = {}
    for kind in kinds:
        service, engine = "", ""
        opts = options.for_model(kind, explicit)
        if kind == "pop":
            trained = train_pop(split, opts)
        elif kind == "bpr":
            trained = train_bpr(split, opts)
        elif kind == "ease":
            trained = train_ease(split, opts)
        elif kind == "two_tower":
            trained = train_two_tower(split, load_catalog(stores, data), opts)
        elif kind == "sequential":
            trained = train_sequential(split, opts)
        elif kind == "bpmf":
            trained = train_bpmf(split, opts)
        elif kind == "vae":
            trained = train_vae(split, opts)
        elif kind == "fusion":
            trained = fit_fusion(models_dir, data, split, opts, {k: v[1] for k, v in out.items()})
        else:
            frame, service = engagement_input or engagement_frame(stores, data, source=feature_source, since=since)
            engine = frame_engine(stores, service)
            if nproc > 1:  # rank 0 of the torchrun workers writes the checkpoint
                from model.train.distributed import train_distributed

                make = partial(to_checkpoint, feature_engine=engine)
                out[kind] = train_distributed(split_frame(frame, split), opts, nproc=nproc, data=data, split=split,
                                              feature_service=service, models_dir=models_dir,
                                              make_checkpoint=make)  # fmt: skip
                continue
            trained = train_engagement(split_frame(frame, split), opts, user_ids=data.user_ids,
                                       movie_ids=data.movie_ids)  # fmt: skip
        checkpoint = to_checkpoint(trained, data, split, feature_service=service, feature_engine=engine)
        path = save_checkpoint(checkpoint, checkpoint_path(models_dir / split_name, kind))
        out[kind] = (trained, checkpoint, path)
    return out


def fit_fusion(
    models_dir: Path, data: Interactions, split: Split, options: TrainOptions, fresh: dict[str, Checkpoint]
) -> Trained:
    """Fusion weights over the current retriever checkpoints (``fresh``: trained in this run,
    else read from ``models_dir``); at least two must fit this data and split."""
    components: dict[str, Checkpoint] = {}
    for kind in FUSED:
        try:
            ckpt = fresh.get(kind) or load_checkpoint(checkpoint_path(models_dir / split.name, kind))
        except CheckpointError:
            continue
        if ckpt.data_snapshot == snapshot(data) and ckpt.split == split.describe():
            components[kind] = ckpt
    if len(components) < 2:
        raise MarqueeError(f"fusion needs two current retrievers of {', '.join(FUSED)} on the {split.name} "
                           f"split (found {', '.join(components) or 'none'}); train them first")  # fmt: skip
    history = HistoryIndex([split.train])
    scores = {k: score_matrix(retriever_scorer(c, history), data.n_users) for k, c in components.items()}
    trained = train_fusion(split, scores, options)
    trained.extras["components"] = components
    return trained
