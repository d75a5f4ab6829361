"""The shared epoch loop and the helpers every trainer uses.

``fit`` trains over a pinned-memory ``DataLoader`` (bf16 autocast on CUDA), validates after
each epoch, keeps the best state, stops after ``patience`` epochs without improvement and
restores the best; a progress bar shows loss and the monitored metric."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch import distributed as dist
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler, TensorDataset

from model.data.interactions import Interactions
from model.device import autocast_context, loader_kwargs, pick_device
from model.networks.config import FullRanker
from model.networks.engagement import Rows
from model.train.options import TrainOptions
from sources.progress import console, progress_bar


def seed_everything(seed: int) -> None:
    """Seeds torch and numpy, so a run with the same seed and data trains the same."""
    torch.manual_seed(seed)
    np.random.seed(seed)


class GatheredRows(Dataset[list[Tensor]]):
    """A batch of ``rows`` by indices: its ``keys`` in order, then each of ``extra`` (e.g. targets).

    For data kept compact (a table and an index) and gathered only per batch, where a
    ``TensorDataset`` would need every row expanded in memory."""

    def __init__(self, rows: Rows, keys: list[str], extra: list[Tensor]) -> None:
        self.rows, self.keys, self.extra = rows, keys, extra

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: list[int]) -> list[Tensor]:
        rows = torch.as_tensor(index, dtype=torch.int64)
        batch = self.rows.take(rows)
        return [*(batch[k] for k in self.keys), *(t[rows] for t in self.extra)]


def batch_loader(
    data: list[Tensor] | GatheredRows,
    batch_size: int,
    device: torch.device,
    seed: int,
    shard: tuple[int, int] | None = None,
) -> DataLoader[Any]:
    """Shuffled whole-batch indexing of in-memory rows (no per-row collate): ``data`` is a
    list of equally long tensors, or ``GatheredRows``.

    ``shard=(rank, world_size)``: a ``DistributedSampler`` deals the rows out (one permutation
    per epoch from ``seed``, rank r takes every world_size-th row from r) and ``batch_size`` is
    the effective batch, split evenly across ranks. Batch k of all ranks together then holds
    exactly the rows batch k holds with ``shard=(0, 1)``: one process and N processes see the
    same batches (``fit`` moves the sampler to each epoch)."""
    dataset = TensorDataset(*data) if isinstance(data, list) else data
    if shard is not None:
        rank, size = shard
        dealt: DistributedSampler[Any] = DistributedSampler(
            dataset, num_replicas=size, rank=rank, shuffle=True, seed=seed
        )
        sampler = BatchSampler(dealt, max(1, batch_size // size), drop_last=False)
    else:
        generator = torch.Generator().manual_seed(seed)
        sampler = BatchSampler(RandomSampler(range(len(dataset)), generator=generator), batch_size, drop_last=False)
    return DataLoader(dataset, sampler=sampler, batch_size=None, **loader_kwargs(device))


class _Logits(nn.Module):
    """``net.logits`` as a module's forward: DistributedDataParallel syncs gradients of forward calls only."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        logits: Callable[[dict[str, Tensor]], Tensor] = getattr(self.net, "logits")  # noqa: B009
        return logits(batch)


def data_parallel(net: nn.Module, device: torch.device) -> Callable[[dict[str, Tensor]], Tensor]:
    """``net.logits`` through DistributedDataParallel (the process group must be started):
    gradients are averaged across ranks in backward; ``net`` itself stays the model to validate
    and save (its parameters are the DDP module's)."""
    from torch.nn.parallel import DistributedDataParallel

    wrapped = DistributedDataParallel(_Logits(net), device_ids=[device.index] if device.type == "cuda" else None)
    return lambda batch: wrapped(batch)


def fit(
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
    """The shared epoch loop: train, validate, keep the best state, early-stop. Restores the best.

    Under torch.distributed every rank runs it on its shard; ``samples`` counts all ranks'."""
    device = pick_device(options.device)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    dealt = getattr(loader.sampler, "sampler", None)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, Tensor], dict[str, float]] | None = None
    n_batches = len(loader) if options.max_batches is None else min(len(loader), options.max_batches)
    fit_started = time.perf_counter()
    model.eval()
    # epoch 0: the untrained model, so every run shows what training bought
    history.append({"epoch": 0, "loss": float("nan"), "seconds": 0.0, "samples": 0, **validate()})
    with progress_bar(quiet=options.quiet) as bar:
        task = bar.add_task(f"{name}", total=options.epochs * n_batches)
        for epoch in range(1, options.epochs + 1):
            model.train()
            if isinstance(dealt, DistributedSampler):
                dealt.set_epoch(epoch)
            started, losses, samples = time.perf_counter(), [], 0
            for i, batch in enumerate(loader):
                if i >= n_batches or (
                    options.time_budget_s > 0
                    and i
                    and i % 64 == 0
                    and time.perf_counter() - fit_started > options.time_budget_s
                ):
                    break  # the budget also cuts an epoch that alone is longer than it
                batch = [t.to(device, non_blocking=True) for t in batch]
                with autocast_context(device):
                    loss = step(batch)
                optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)  # typed, unlike Tensor.backward
                optimizer.step()
                losses.append(loss.item())
                samples += len(batch[0]) * world
                bar.advance(task)
            seconds = time.perf_counter() - started
            model.eval()
            metrics = validate()
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": seconds, "samples": samples, **metrics}
            history.append(row)
            score = metrics[monitor]
            line = f"{name} epoch {epoch} loss {row['loss']:.4f} valid {monitor} {score:.4f} ({seconds:.1f}s)"
            bar.update(task, description=line)
            if not options.quiet:
                bar.console.print(line)
            better = best is None or (score > best[0] if higher_is_better else score < best[0])
            if better:
                best = (score, epoch, copy.deepcopy(model.state_dict()), metrics)
            elif best is not None and epoch - best[1] >= options.patience:
                break
            if epoch < options.epochs and out_of_time(fit_started, history, options.time_budget_s):
                assert best is not None
                console.print(budget_message(name, options.time_budget_s, epoch, best[1]))
                break
        bar.update(task, completed=options.epochs * n_batches)
    assert best is not None
    model.load_state_dict(best[2])
    return history, best[1], best[3]


def out_of_time(started: float, history: list[dict[str, float]], budget_s: float) -> bool:
    """True when one more epoch (as long as the mean so far) would end past ``budget_s``
    seconds after ``started``; a budget of 0 never runs out."""
    if budget_s <= 0:
        return False
    epochs = [h["seconds"] for h in history if h["epoch"] > 0]
    next_epoch = float(np.mean(epochs)) if epochs else 0.0
    return time.perf_counter() - started + next_epoch > budget_s


def budget_message(name: str, budget_s: float, epochs_run: int, best_epoch: int) -> str:
    return (
        f"[yellow]{name}: the training time budget ({budget_s:.0f}s, MARQUEE_TRAIN_BUDGET_S) ends here, "
        f"after {epochs_run} epoch(s); keeping the best one (epoch {best_epoch}). For a full run raise "
        "the budget (0 = none), or train on a recent window (MARQUEE_TRAIN_WINDOW_DAYS).[/]"
    )


def seen_mask(data: Interactions, device: torch.device) -> Tensor:
    """``(n_users, n_movies)`` bool: which movies each user met in ``data``."""
    mask = torch.zeros(data.n_users, data.n_movies, dtype=torch.bool)
    mask[torch.as_tensor(data.users), torch.as_tensor(data.items)] = True
    return mask.to(device)


#: Up to this many users × movies cells a dense bool mask (256 MB) is kept: faster per batch.
DENSE_SEEN_CELLS = 1 << 28


class SeenPairs:
    """Which (user, movie) pairs ``data`` holds: ``block(users, movies)`` answers the
    ``(len(users), len(movies))`` bool block ``seen_mask(data)[users][:, movies]`` would.

    Up to ``DENSE_SEEN_CELLS`` it is that dense mask (ML-100K: 1.6M cells, the fastest
    lookup); past it, sorted ``user * n_movies + movie`` keys and a binary search, so memory
    grows with the interactions instead of users × movies (the dense mask at the ML-25M shape
    is 10 GB; both measured: docs/scale.md). ``dense`` forces either form."""

    def __init__(self, data: Interactions, device: torch.device, *, dense: bool | None = None) -> None:
        if dense is None:
            dense = data.n_users * data.n_movies <= DENSE_SEEN_CELLS
        self.mask = seen_mask(data, device) if dense else None
        self.n_movies = data.n_movies
        self.keys = torch.empty(0, dtype=torch.int64, device=device)  # sorted
        if not dense:
            users = torch.as_tensor(data.users, dtype=torch.int64)
            self.keys = torch.unique(users * data.n_movies + torch.as_tensor(data.items, dtype=torch.int64)).to(device)

    def block(self, users: Tensor, movies: Tensor) -> Tensor:
        if self.mask is not None:
            return self.mask[users][:, movies]
        return self.contains(users[:, None], movies[None, :])

    def contains(self, users: Tensor, movies: Tensor) -> Tensor:
        """Whether each ``(users[i], movies[i])`` pair is held (the two broadcast together)."""
        if self.mask is not None:
            held: Tensor = self.mask[users, movies]
            return held
        wanted = users.long() * self.n_movies + movies.long()
        if self.keys.numel() == 0:
            return torch.zeros_like(wanted, dtype=torch.bool)
        at = torch.searchsorted(self.keys, wanted).clamp(max=self.keys.numel() - 1)
        found: Tensor = self.keys[at] == wanted
        return found


class OnCpu:
    """Scores on the model's device, hands back CPU tensors (metrics run on CPU)."""

    def __init__(self, model: FullRanker) -> None:
        self.model = model

    @torch.no_grad()
    def score_all(self, user_ids: Tensor) -> Tensor:
        device = next(self.model.parameters()).device  # type: ignore[attr-defined]
        return self.model.score_all(user_ids.to(device)).float().cpu()
