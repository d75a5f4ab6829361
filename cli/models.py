"""``marquee train | evaluate``: the models, their checkpoints and the evaluation report.

Choices (models, split, device, features) are checked when the command line is parsed, so a
typo is a usage error at once rather than a failure after the data has loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from cli import runs
from cli.common import Quiet, load_settings
from model.train.options import MODELS
from sources.progress import console

if TYPE_CHECKING:
    from model.tracking import Tracker
    from model.train.options import TrainOptions

commands = typer.Typer()

#: the split names of model.data.interactions.SPLITS (tests/cli checks they agree)
SplitName = Literal["time", "recbole", "random"]
FeatureSource = Literal["auto", "feast", "local"]
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _model_names(value: str) -> str:
    """Parse-time check of a comma-separated list of model names (or ``all``)."""
    names = [m.strip() for m in value.split(",")]
    unknown = [m for m in names if m not in (*MODELS, "all")]
    if unknown or ("all" in names and len(names) > 1):
        raise typer.BadParameter(f"{value!r}: use {', '.join(MODELS)} (comma-separated) or all")
    return value


def _device(value: str) -> str:
    if not _DEVICE.fullmatch(value.strip().lower()):
        raise typer.BadParameter(f"{value!r}: use auto, cpu, cuda or cuda:N")
    return value


def model_list(value: str) -> list[str] | None:
    """``all`` -> None (every model), else the names in order."""
    return None if value == "all" else [m.strip() for m in value.split(",")]


ModelNames = Annotated[
    str,
    typer.Option(
        "--model",
        callback=_model_names,
        metavar="NAME[,NAME]",
        help=f"{', '.join(MODELS)} (comma-separated) or all.",
    ),
]
Device = Annotated[
    str, typer.Option(callback=_device, metavar="DEVICE", help="auto (CUDA when available), cpu, cuda or cuda:N.")
]
Features = Annotated[FeatureSource, typer.Option(help="Engagement features: auto, feast or local.")]


def train_options(
    epochs: int | None, device: str, quiet: bool, batch_size: int | None, lr: float | None
) -> tuple[TrainOptions, set[str]]:
    """TrainOptions (the settings' limits and seed) plus the fields the user set (the rest take
    each model's defaults)."""
    from model.train.options import TrainOptions

    options = TrainOptions.from_settings(load_settings(), device=device, quiet=quiet)
    if epochs is not None:
        options.epochs = epochs
    if batch_size is not None:
        options.batch_size = batch_size
    if lr is not None:
        options.lr = lr
    return options, {k for k, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)) if v is not None}


@commands.command()
def train(
    model: ModelNames = "all",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epoch cap (default per model; early stopping may end sooner).")
    ] = None,
    device: Device = "auto",
    split: Annotated[SplitName, typer.Option(help="time (served), recbole or random.")] = "time",
    features: Features = "auto",
    batch_size: Annotated[int | None, typer.Option(min=16, help="Batch size (default: per model).")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Learning rate (default: per model).")] = None,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes training the engagement net with DistributedDataParallel (torchrun; gloo on CPU, "
            "NCCL on GPUs); --batch-size stays the effective batch.",
        ),
    ] = 1,
    quiet: Quiet = False,
) -> None:
    """Train models on ML-100K interactions and features; write checkpoints to <data dir>/models/<split>/."""
    from model.device import pick_device
    from model.train.pipeline import train_models
    from sources.stores.clients import Stores

    settings = load_settings()
    kinds = model_list(model) or list(MODELS)
    options, explicit = train_options(epochs, device, quiet, batch_size, lr)
    console.print(f"training {', '.join(kinds)} on {pick_device(device)}, {split} split")
    started, common = runs.now(), {"split": split, "feature_source": features, "nproc": nproc}
    try:
        with Stores.open(settings) as stores:
            results = train_models(
                stores,
                settings.models_dir,
                kinds=kinds,
                split_name=split,
                options=options,
                feature_source=features,
                explicit=explicit,
                nproc=nproc,
            )
    except Exception as exc:
        runs.record_failed(settings, "train", ",".join(kinds), started, {**common, **runs.option_params(options)}, exc)
        raise

    def record(tracker: Tracker) -> None:
        for kind, (_, checkpoint, path) in results.items():
            params = {**common, **runs.option_params(options.for_model(kind, explicit))}
            tracker.record_training(checkpoint, path, started=started, params=params, command=runs.command_line())

    runs.record(settings, record)
    table = Table(title=f"trained ({split} split)" + (f", engagement on {nproc} processes" if nproc > 1 else ""))
    for column in ("model", "best epoch", "valid", "s/epoch", "samples/s", "checkpoint"):
        table.add_column(column, overflow="fold")
    for kind, (trained, _, path) in results.items():
        valid = ", ".join(f"{k} {v:.4f}" for k, v in trained.valid.items() if k in ("ndcg@10", "recall@10", "rmse"))
        table.add_row(kind, str(trained.best_epoch), valid, f"{trained.seconds_per_epoch:.2f}",
                      f"{trained.samples_per_s:,.0f}", str(path))  # fmt: skip
    console.print(table)


@commands.command()
def evaluate(
    protocol: Annotated[
        SplitName, typer.Option(help="time (held-out last 10%), recbole (per-user 80/10/10) or random.")
    ] = "time",
    epochs: Annotated[int | None, typer.Option(min=1, help="Epoch cap for models trained on the way.")] = None,
    device: Device = "auto",
    features: Features = "auto",
    retrain: Annotated[
        bool, typer.Option("--retrain", help="Train every model again, even with a current checkpoint.")
    ] = False,
    models: Annotated[
        str,
        typer.Option(
            callback=_model_names, metavar="NAME[,NAME]", help=f"Comma-separated subset of {','.join(MODELS)}, or all."
        ),
    ] = "all",
    peers: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            metavar="PEERS.json",
            help="RecBole's runs (scripts/recbole_peer.py --json) to rank beside Marquee's models, recbole protocol "
            "only; adds a paired bootstrap of the served ranking against the best of them.",
        ),
    ] = None,
    sample_users: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Compute the ranking metrics on a seeded sample of N held-out users (MARQUEE_SEED), said so in "
            "the report; for catalogues where ranking every held-out user costs too much.",
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Evaluate every model on the protocol's test part: one table (markdown + JSON) and a PNG chart."""
    if peers is not None and protocol != "recbole":
        raise typer.BadParameter("peers ran RecBole's protocol: use --protocol recbole", param_hint="--peers")
    if peers is not None and sample_users is not None:
        raise typer.BadParameter("peers ranked every held-out user: drop --sample-users", param_hint="--peers")
    from model.evaluate.report import evaluate as run_evaluate
    from sources.stores.clients import Stores

    settings = load_settings()
    options, explicit = train_options(epochs, device, quiet, None, None)  # per-model defaults
    started = runs.now()
    params = {"protocol": protocol, "feature_source": features, "retrain": retrain, "models": models,
              "peers": str(peers or ""), "new_title_boost": settings.new_title_boost,
              "sample_users": sample_users or 0, **runs.option_params(options)}  # fmt: skip
    try:
        with Stores.open(settings) as stores:
            report, paths = run_evaluate(stores, settings.models_dir, settings.data_dir / "reports",
                                         protocol=protocol, options=options, feature_source=features,
                                         retrain=retrain, models=model_list(models), explicit=explicit,
                                         peers=peers, new_title_boost=settings.new_title_boost,
                                         sample_users=sample_users)  # fmt: skip
    except Exception as exc:
        runs.record_failed(settings, "evaluate", models, started, params, exc)
        raise

    def record(tracker: Tracker) -> None:
        from model.checkpoint import checkpoint_path, load_checkpoint

        used = {}
        for kind in model_list(models) or MODELS:
            path = checkpoint_path(settings.models_dir / protocol, kind)
            if path.is_file():
                used[kind] = (load_checkpoint(path), path)
        tracker.record_evaluation(report.to_dict(), paths.values(), used, started=started, params=params,
                                  command=runs.command_line())  # fmt: skip

    runs.record(settings, record)
    console.print(report.markdown(), markup=False)
    console.print(f"reports: {', '.join(str(p) for p in paths.values())}")
