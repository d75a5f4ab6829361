"""``marquee bench …``: commands that measure and print figures (never timed assertions).

Each compares against a floor or a peer measured in the same run, so the ratio means
something on a noisy machine. Results are printed as JSON on stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from cli.common import load_settings

bench_app = typer.Typer(help="Benchmarks: print figures beside a floor measured in the same run.", no_args_is_help=True)


def _print(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")


@bench_app.command("export")
def export_bench() -> None:
    """Full export rebuild then a no-change run: rows and rows/s per source."""
    from bench.export import bench_export
    from sources.stores.clients import Stores

    with Stores.open(load_settings()) as stores:
        _print(bench_export(stores))


@bench_app.command("features")
def features_bench(
    labels: Annotated[int, typer.Option(min=1, help="Labelled rows for historical retrieval.")] = 100_000,
    stock_labels: Annotated[int, typer.Option(min=0, help="Rows for Feast's stock join (0: skip; it is slow).")] = 5000,
    engine: Annotated[
        list[str] | None,
        typer.Option(
            help="Offline engines side by side (repeat: --engine postgres --engine spark): export rows/s, "
            "historical retrieval of --labels, materialization rows/s, peak RSS per engine."
        ),
    ] = None,
) -> None:
    """Materialization rows/s; historical retrieval through Feast vs a hand-written SQL PIT join
    (or, with --engine, the offline engines side by side)."""
    from sources.stores.clients import Stores

    unknown = [e for e in engine or [] if e not in ("postgres", "spark")]
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)}: use postgres or spark", param_hint="--engine")
    with Stores.open(load_settings()) as stores:
        if engine:
            from bench.engines import bench_engines

            _print(bench_engines(stores, engine, n_labels=labels))
            return
        from bench.features import bench_feature_store

        _print(bench_feature_store(stores, n_labels=labels, stock_labels=stock_labels))


@bench_app.command("train")
def train_bench(
    nproc: Annotated[
        list[int] | None, typer.Option(min=1, help="Process counts (repeat: --nproc 1 --nproc 2).")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per run.")] = 2,
    batch_size: Annotated[int, typer.Option(min=16, help="Effective batch size (split across processes).")] = 1024,
) -> None:
    """The engagement net on 1 and N DistributedDataParallel processes: s/epoch, samples/s, RMSE."""
    from bench.train import bench_train
    from sources.stores.clients import Stores

    with Stores.open(load_settings()) as stores:
        _print(bench_train(stores, nproc or [1, 2], epochs=epochs, batch_size=batch_size))


@bench_app.command("serve")
def serve_bench(
    concurrency: Annotated[list[int] | None, typer.Option(help="Concurrency levels (repeat the option).")] = None,
    seconds: Annotated[float, typer.Option(min=0.5, help="Seconds of load per query and level.")] = 5.0,
    workers: Annotated[int, typer.Option(min=1, help="Uvicorn workers.")] = 1,
    only: Annotated[list[str] | None, typer.Option(help="Only queries whose name contains this.")] = None,
    data_floor_calls: Annotated[
        int, typer.Option(min=0, help="Calls timed for the data floor (no GraphQL, no HTTP); 0 skips it.")
    ] = 200,
) -> None:
    """p50/p99 and req/s of recommendations, similar and neighbours over HTTP beside the GraphQL
    floor, after the data floor (the same recommendation path without GraphQL or HTTP)."""
    from bench.serve import CONCURRENCY, data_floor, run

    if data_floor_calls:
        data_floor(data_floor_calls)
    run(concurrency or CONCURRENCY, seconds, workers, only)


@bench_app.command("abuse")
def abuse_bench(
    seconds: Annotated[float, typer.Option(min=2.0, help="Seconds of light queries beside the flood.")] = 20.0,
) -> None:
    """A light query's p50/p99 alone and beside four clients flooding the heaviest allowed query,
    the refused queries' costs, and a partial answer's latency with Mongo unreachable."""
    from bench.abuse import run

    _print(run(seconds))
