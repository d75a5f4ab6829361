"""Data-parallel training of the engagement net across processes (torch DistributedDataParallel).

``marquee train --nproc N`` builds the point-in-time frame once (PostgreSQL or Spark, as
configured), writes it with the split and the options to a job file, and starts N workers
with torchrun (``python -m torch.distributed.run --standalone --nproc-per-node N -m
model.train.distributed JOB``). Each worker starts the process group (gloo on CPU, NCCL when
it has a GPU, then ``cuda:LOCAL_RANK``), trains on its ``DistributedSampler`` shard of the
frame with gradients averaged by DDP, and validates on the whole validation part (the ranks'
parameters are equal, so are their early-stopping decisions). Rank 0 alone writes the
checkpoint and the run's result file.

Across machines the same module runs under torchrun's rendezvous, e.g. on each of 2 nodes:
``torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400
-m model.train.distributed /shared/job.pt`` (docs/deploy.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import distributed as dist

from model.checkpoint import Checkpoint, checkpoint_path, save_checkpoint
from model.data.interactions import Interactions, Split
from model.train.engagement import train_engagement
from model.train.options import Trained, TrainOptions
from sources.errors import MarqueeError


class DistributedTrainingError(MarqueeError):
    """A worker of a distributed run failed; no checkpoint was written by it."""


@dataclass
class Job:
    """Everything a worker needs, built once by the launcher."""

    frames: dict[str, pd.DataFrame]  # train / valid / test parts of the point-in-time frame
    options: TrainOptions
    user_ids: np.ndarray
    movie_ids: np.ndarray
    data: Interactions
    split: Split
    feature_service: str
    checkpoint: Path  # where rank 0 writes the checkpoint
    result: Path  # where rank 0 writes the Trained (for the launcher's report)
    #: model.train.pipeline.to_checkpoint, handed over (pickled by name) rather than imported:
    #: the pipeline is this module's caller
    make_checkpoint: Callable[..., Checkpoint]


@dataclass(frozen=True)
class Rank:
    rank: int
    size: int
    local: int


def rank_from_env() -> Rank:
    """This process's place in the run, from torchrun's variables (one process when unset)."""
    return Rank(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def worker_device(options: TrainOptions, me: Rank) -> str:
    """``cuda:LOCAL_RANK`` when the run may use CUDA and has it, else cpu."""
    if options.device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{me.local}"
    return options.device if options.device != "auto" else "cpu"


def run_worker(job_path: Path) -> Trained | None:
    """One rank's share of the job (the whole job when run alone). Rank 0 returns the Trained."""
    job: Job = torch.load(job_path, weights_only=False)  # our own file, written by launch()
    me = rank_from_env()
    options = replace(job.options, device=worker_device(job.options, me), quiet=job.options.quiet or me.rank != 0)
    started = False
    if me.size > 1 and not dist.is_initialized():
        backend = "nccl" if options.device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(torch.device(options.device))
        dist.init_process_group(backend=backend)
        started = True
    try:
        trained = train_engagement(
            job.frames, options, user_ids=job.user_ids, movie_ids=job.movie_ids, shard=(me.rank, me.size)
        )
        if me.rank != 0:
            return None
        checkpoint = job.make_checkpoint(trained, job.data, job.split, feature_service=job.feature_service)
        save_checkpoint(checkpoint, job.checkpoint)
        torch.save(trained, job.result)
        return trained
    finally:
        if started:
            dist.barrier()
            dist.destroy_process_group()


def launch(job: Job, nproc: int, *, workdir: Path) -> Trained:
    """Run ``job`` on ``nproc`` local processes with torchrun; the Trained rank 0 wrote."""
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="ddp-") as tmp:
        job = replace(job, result=Path(tmp) / "trained.pt")
        job_path = Path(tmp) / "job.pt"
        torch.save(job, job_path)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   "-m", "model.train.distributed", str(job_path)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        done = subprocess.run(command, env=env, check=False, capture_output=job.options.quiet, text=True)
        if done.returncode != 0:
            tail = (done.stderr or "").strip().splitlines()[-3:] if job.options.quiet else []
            raise DistributedTrainingError(f"distributed training ({nproc} processes) failed: {' | '.join(tail)}")
        trained: Trained = torch.load(job.result, weights_only=False)
    return trained


def train_distributed(
    frames: dict[str, pd.DataFrame],
    options: TrainOptions,
    *,
    nproc: int,
    data: Interactions,
    split: Split,
    feature_service: str,
    models_dir: Path,
    make_checkpoint: Callable[..., Checkpoint],
) -> tuple[Trained, Checkpoint, Path]:
    """The engagement net trained by ``nproc`` processes; its checkpoint in ``models_dir/<split>/``
    (``make_checkpoint``: ``model.train.pipeline.to_checkpoint``)."""
    from model.checkpoint import load_checkpoint

    path = checkpoint_path(models_dir / str(split.name), "engagement")
    job = Job(frames, options, data.user_ids, data.movie_ids, data, split, feature_service, path, path,
              make_checkpoint)  # fmt: skip
    trained = launch(job, nproc, workdir=models_dir)
    return trained, load_checkpoint(path), path


def main(argv: list[str]) -> Any:
    if len(argv) != 1:
        raise SystemExit("usage: python -m model.train.distributed JOB_FILE (started by torchrun)")
    run_worker(Path(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
