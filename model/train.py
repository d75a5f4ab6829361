"""Training: most-popular, BPR-MF, the two-tower retriever and the multimodal engagement net.

Every trainer reads top to bottom the same way: build tensors once, loop epochs over a
pinned-memory ``DataLoader`` (on CUDA, with bf16 autocast), score the validation part after
each epoch, keep the best state and stop after ``patience`` epochs without improvement.
A rich progress bar shows the loss and the validation metric per epoch.

- ranking models (pop, bpr, two_tower) early-stop on validation NDCG@10 (full ranking);
- the engagement net early-stops on validation RMSE of the rating it predicts
  (engagement = (rating - 1) / 4 as a soft BCE target; rating = 1 + 4 * sigmoid(logit)).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from sqlalchemy import text
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from model.device import autocast_context, loader_kwargs, pick_device
from model.engagement_frame import FrameEncoder, pg_vector, schema_config
from model.evaluate_core import TwoTowerScorer, bag_features, full_ranking, history_bag
from model.interactions import Interactions, Split
from model.networks import (
    BPRMF,
    MostPopular,
    MultimodalEngagementNet,
    TwoTowerConfig,
    TwoTowerRetriever,
    bpr_loss,
    sampled_softmax_loss,
)
from sources.errors import DatasetError
from sources.progress import progress_bar
from sources.stores import Stores

MODELS = ("pop", "bpr", "two_tower", "engagement")


@dataclass
class TrainOptions:
    epochs: int = 40
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 4
    device: str = "auto"
    seed: int = 42
    quiet: bool = False
    max_batches: int | None = None  # per epoch; tests cap it to stay fast


@dataclass
class Trained:
    """A trained model and what its run measured."""

    kind: str
    model: Any
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    valid: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean([h["seconds"] for h in self.history])) if self.history else 0.0

    @property
    def samples_per_s(self) -> float:
        total = sum(h["samples"] for h in self.history)
        seconds = sum(h["seconds"] for h in self.history)
        return total / seconds if seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "seconds_per_epoch": round(self.seconds_per_epoch, 3),
            "samples_per_s": round(self.samples_per_s, 1),
            "valid": self.valid,
        }


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _loader(tensors: list[Tensor], batch_size: int, device: torch.device, seed: int) -> DataLoader[Any]:
    """Shuffled whole-batch indexing of in-memory tensors (no per-row collate)."""
    generator = torch.Generator().manual_seed(seed)
    sampler = BatchSampler(RandomSampler(range(len(tensors[0])), generator=generator), batch_size, drop_last=False)
    return DataLoader(TensorDataset(*tensors), sampler=sampler, batch_size=None, **loader_kwargs(device))


def _fit(
    *,
    name: str,
    model: nn.Module,
    loader: DataLoader[Any],
    step: Callable[[list[Tensor]], Tensor],
    validate: Callable[[], dict[str, float]],
    monitor: str,
    higher_is_better: bool,
    options: TrainOptions,
    optimizer: torch.optim.Optimizer,
) -> tuple[list[dict[str, float]], int, dict[str, float]]:
    """The shared epoch loop: train, validate, keep the best state, early-stop. Restores the best."""
    device = pick_device(options.device)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, Tensor], dict[str, float]] | None = None
    n_batches = len(loader) if options.max_batches is None else min(len(loader), options.max_batches)
    with progress_bar(quiet=options.quiet) as bar:
        task = bar.add_task(f"{name}", total=options.epochs * n_batches)
        for epoch in range(1, options.epochs + 1):
            model.train()
            started, losses, samples = time.perf_counter(), [], 0
            for i, batch in enumerate(loader):
                if i >= n_batches:
                    break
                batch = [t.to(device, non_blocking=True) for t in batch]
                with autocast_context(device):
                    loss = step(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                samples += len(batch[0])
                bar.advance(task)
            seconds = time.perf_counter() - started
            model.eval()
            metrics = validate()
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": seconds, "samples": samples, **metrics}
            history.append(row)
            score = metrics[monitor]
            bar.update(task, description=f"{name} epoch {epoch} loss {row['loss']:.4f} valid {monitor} {score:.4f}")
            better = best is None or (score > best[0] if higher_is_better else score < best[0])
            if better:
                best = (score, epoch, copy.deepcopy(model.state_dict()), metrics)
            elif best is not None and epoch - best[1] >= options.patience:
                break
        bar.update(task, completed=options.epochs * n_batches)
    assert best is not None
    model.load_state_dict(best[2])
    return history, best[1], best[3]


# baselines -----------------------------------------------------------------------------------


def train_pop(split: Split, options: TrainOptions) -> Trained:
    started = time.perf_counter()
    model = MostPopular(split.train.n_movies).fit(split.train.items)
    valid = full_ranking(model, split.valid, [split.train])
    seconds = time.perf_counter() - started
    row = {"epoch": 1, "loss": 0.0, "seconds": seconds, "samples": len(split.train), **valid}
    return Trained("pop", model, [row], 1, valid)


def train_bpr(split: Split, options: TrainOptions, *, dim: int = 64, reg: float = 1e-4) -> Trained:
    """BPR-MF with one uniformly sampled negative per positive, resampled each epoch."""
    _seed(options.seed)
    device = pick_device(options.device)
    train = split.train
    model = BPRMF(train.n_users, train.n_movies, dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    users, items = torch.as_tensor(train.users), torch.as_tensor(train.items)
    loader = _loader([users, items], options.batch_size, device, options.seed)

    def step(batch: list[Tensor]) -> Tensor:
        u, pos = batch
        neg = torch.randint(0, train.n_movies, pos.shape, device=device)
        loss = bpr_loss(model(u, pos), model(u, neg))
        params = model.user_embedding(u), model.item_embedding(pos), model.item_embedding(neg)
        return loss + reg * sum(p.pow(2).sum() for p in params) / len(u)

    history, best, valid = _fit(
        name="bpr", model=model, loader=loader, step=step,
        validate=lambda: full_ranking(_Cpu(model), split.valid, [split.train]),
        monitor="ndcg@10", higher_is_better=True, options=options, optimizer=optimizer,
    )  # fmt: skip
    return Trained("bpr", model.cpu(), history, best, valid, {"dim": dim})


class _Cpu:
    """Scores on the model's device, hands back CPU tensors (metrics run on CPU)."""

    def __init__(self, model: BPRMF) -> None:
        self.model = model

    @torch.no_grad()
    def score_all(self, user_ids: Tensor) -> Tensor:
        device = self.model.item_embedding.weight.device
        return self.model.score_all(user_ids.to(device)).float().cpu()


# two-tower -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """Per-movie content the movie tower reads, in dense movie-id order."""

    content: Tensor  # (n_movies, 384) title embeddings
    genres: Tensor  # (n_movies, n_genres) multi-hot


def two_tower_config(n_users: int, n_movies: int, catalog: Catalog, **sizes: Any) -> TwoTowerConfig:
    """User tower: id + history bag (n_movies wide); movie tower: id + content + genres."""
    return TwoTowerConfig(
        n_users=n_users,
        n_movies=n_movies,
        user_feature_dim=n_movies,
        movie_content_dim=int(catalog.content.shape[1]),
        n_genres=int(catalog.genres.shape[1]),
        **sizes,
    )


def train_two_tower(
    split: Split, catalog: Catalog, options: TrainOptions, *, extra_negatives: int = 1024, **sizes: Any
) -> Trained:
    """In-batch sampled softmax plus shared uniform negatives, both logQ-corrected.

    A training pair (u, i) reads u's history bag without i: the tower must predict a movie
    from the others, not copy it (serving sees only movies the user has not seen).
    """
    _seed(options.seed)
    device = pick_device(options.device)
    train = split.train
    config = two_tower_config(train.n_users, train.n_movies, catalog, **sizes)
    model = TwoTowerRetriever(config).to(device)
    model.set_catalog(catalog.content, catalog.genres)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    bag = history_bag(train).to(device)
    # expected number of times a candidate shows up in one batch's candidate set (log Q)
    popularity = torch.as_tensor(train.movie_counts(), dtype=torch.float32, device=device) / len(train)
    log_q_in_batch = torch.log(popularity * options.batch_size + 1e-9)
    log_q_uniform = math.log(extra_negatives / train.n_movies)
    users, items = torch.as_tensor(train.users), torch.as_tensor(train.items)
    loader = _loader([users, items], options.batch_size, device, options.seed)

    def step(batch: list[Tensor]) -> Tensor:
        u, pos = batch
        rows = bag[u].clone()
        rows[torch.arange(len(u), device=device), pos] = 0.0
        user_vecs = model.user_vectors(u, bag_features(rows))
        neg = torch.randint(0, train.n_movies, (extra_negatives,), device=device)
        return sampled_softmax_loss(
            user_vecs, model.movie_vectors(pos), model.movie_vectors(neg), config.temperature,
            pos_log_q=log_q_in_batch[pos], neg_log_q=torch.full((extra_negatives,), log_q_uniform, device=device),
            pos_ids=pos, neg_ids=neg,
        )  # fmt: skip

    scorer = TwoTowerScorer(model, bag.cpu())
    history, best, valid = _fit(
        name="two_tower", model=model, loader=loader, step=step,
        validate=lambda: full_ranking(scorer, split.valid, [split.train]),
        monitor="ndcg@10", higher_is_better=True, options=options, optimizer=optimizer,
    )  # fmt: skip
    model = model.cpu()
    model.set_catalog(catalog.content, catalog.genres)
    return Trained("two_tower", model, history, best, valid, {"bag": bag.cpu()})


# engagement net ----------------------------------------------------------------------------------


def rating_to_target(rating: Tensor) -> Tensor:
    return (rating - 1.0) / 4.0


def logit_to_rating(logit: Tensor) -> Tensor:
    return 1.0 + 4.0 * torch.sigmoid(logit.float())


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


def _to(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict_ratings(model: MultimodalEngagementNet, batch: Mapping[str, Tensor], chunk: int = 8192) -> Tensor:
    """``(rows,)`` predicted ratings in [1, 5] on the model's device, returned on CPU."""
    device = next(model.parameters()).device
    n = len(batch["embedding"])
    model.eval()
    out = []
    for s in range(0, n, chunk):
        part = _to({k: v[s : s + chunk] for k, v in batch.items()}, device)
        with autocast_context(device):
            out.append(logit_to_rating(model.logits(part)).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def train_engagement(
    frames: Mapping[str, pd.DataFrame],
    options: TrainOptions,
    *,
    user_ids: np.ndarray,
    movie_ids: np.ndarray,
    factor_dim: int = 32,
    factor_weight_decay: float = 0.05,
    **sizes: Any,
) -> Trained:
    """The multimodal net on ``frames['train']``, early-stopped on ``frames['valid']`` RMSE."""
    _seed(options.seed)
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
        [{"params": other_params, "weight_decay": 1e-4}, {"params": factor_params, "weight_decay": factor_weight_decay}],
        lr=options.lr,
    )
    keys = sorted(train_batch)
    target = rating_to_target(torch.tensor(frames["train"]["rating"].to_numpy(np.float32)))
    loader = _loader([*(train_batch[k] for k in keys), target], options.batch_size, device, options.seed)

    def step(batch: list[Tensor]) -> Tensor:
        named = dict(zip(keys, batch[:-1], strict=True))
        return F.binary_cross_entropy_with_logits(model.logits(named).float(), batch[-1])

    def validate() -> dict[str, float]:
        pred = predict_ratings(model, valid_batch)
        err = pred.double() - valid_target.double()
        return {"rmse": err.pow(2).mean().sqrt().item(), "mae": err.abs().mean().item()}

    history, best, valid = _fit(
        name="engagement", model=model, loader=loader, step=step, validate=validate,
        monitor="rmse", higher_is_better=False, options=options, optimizer=optimizer,
    )  # fmt: skip
    return Trained("engagement", model.cpu(), history, best, valid, {"encoder": encoder})


def batches(frame: pd.DataFrame, encoder: FrameEncoder, size: int = 8192) -> Iterator[dict[str, Tensor]]:
    for s in range(0, len(frame), size):
        yield encoder.encode(frame.iloc[s : s + size])


def load_catalog(stores: Stores, data: Interactions) -> Catalog:
    """Title embeddings and genre multi-hot from PostgreSQL, in ``data``'s dense movie order."""
    index = data.movie_index()
    with stores.pg.connect() as conn:
        emb = conn.execute(text("SELECT movie_id, embedding FROM movie_embeddings")).all()
        genre_rows = conn.execute(text("SELECT movie_id, genre_id FROM movie_genres")).all()
        genre_ids = sorted(int(g) for g in conn.execute(text("SELECT id FROM genres")).scalars())
    if not emb:
        raise DatasetError("no movie embeddings in PostgreSQL: run marquee ingest first")
    dim = len(pg_vector(emb[0][1]))
    content = torch.zeros(data.n_movies, dim)
    for movie_id, vector in emb:
        if int(movie_id) in index:
            content[index[int(movie_id)]] = torch.from_numpy(pg_vector(vector))
    column = {g: i for i, g in enumerate(genre_ids)}
    genres = torch.zeros(data.n_movies, len(genre_ids))
    for movie_id, genre_id in genre_rows:
        if int(movie_id) in index:
            genres[index[int(movie_id)], column[int(genre_id)]] = 1.0
    return Catalog(content, genres)
