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
    history: Annotated[
        list[int] | None,
        typer.Option(
            help="Instead: the ranked row and the change feed's poll after this many API mutations "
            "in the log (repeat: --history 0 --history 10000 --history 100000); undone at the end."
        ),
    ] = None,
) -> None:
    """p50/p99 and req/s of recommendations, similar and neighbours over HTTP beside the GraphQL
    floor, after the data floor (the same recommendation path without GraphQL or HTTP). With
    ``--history``: how the ranked row and the forget-poll move with the size of the mutation log."""
    from bench.serve import CONCURRENCY, data_floor, run

    if history:
        from bench.history import run as run_history

        run_history(history, seconds)
        return
    if data_floor_calls:
        data_floor(data_floor_calls)
    run(concurrency or CONCURRENCY, seconds, workers, only)


@bench_app.command("writes")
def writes_bench(
    seconds: Annotated[float, typer.Option(min=1.0, help="Seconds of load for the floor and the mutations.")] = 10.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 8,
) -> None:
    """Acknowledged rateMovie/recordPlayback per second beside the GraphQL no-op floor (same
    concurrency, same run), the push delay p50/p99 and the loss (must be 0); undoes its writes."""
    from bench.writes import run

    _print(run(seconds, concurrency))


@bench_app.command("abuse")
def abuse_bench(
    seconds: Annotated[float, typer.Option(min=2.0, help="Seconds of light queries beside the flood.")] = 20.0,
) -> None:
    """A light query's p50/p99 alone and beside four clients flooding the heaviest allowed query,
    the refused queries' costs, and a partial answer's latency with Mongo unreachable."""
    from bench.abuse import run

    _print(run(seconds))


@bench_app.command("search")
def search_bench(
    vectors: Annotated[
        str, typer.Option(help="titles: real title embeddings of synth-named movies (cached); synthetic: clusters.")
    ] = "titles",
    n: Annotated[
        int, typer.Option("--n", min=100, help="Vectors in the scratch index (ML-25M: 62,423 movies).")
    ] = 62_423,
    queries: Annotated[int, typer.Option(min=10, help="Queries timed per shape, build and ef_search.")] = 200,
    m: Annotated[list[int] | None, typer.Option("--m", help="HNSW m values (repeat the option).")] = None,
    ef_construction: Annotated[
        list[int] | None, typer.Option(help="HNSW ef_construction values (repeat the option).")
    ] = None,
    ef_search: Annotated[list[int] | None, typer.Option(help="ef_search values (repeat the option).")] = None,
    candidates: Annotated[
        list[int] | None,
        typer.Option(help="Title index: titles its first stage keeps (repeat the option). Default: the served 1024."),
    ] = None,
    pgvector: Annotated[bool, typer.Option(help="Also build and measure pgvector's HNSW (slower).")] = True,
) -> None:
    """p50/p99 and recall@10 of `similar` and `searchMovies`' queries, in-process, against exact
    search: through the in-memory title index the API serves from (per --candidates), then
    through pgvector per HNSW build (m × ef_construction, build time printed) and ef_search, on
    a scratch copy of movie_embeddings (dropped after)."""
    from api.title_index import CANDIDATES
    from bench.search import bench_search
    from sources.stores.clients import Stores

    if vectors not in ("titles", "synthetic"):
        raise typer.BadParameter("--vectors must be titles or synthetic")
    with Stores.open(load_settings()) as stores:
        _print(
            bench_search(
                stores,
                vectors="titles" if vectors == "titles" else "synthetic",
                n=n,
                queries=queries,
                m_values=tuple(m or (16, 32)) if pgvector else (),
                ef_construction_values=tuple(ef_construction or (64, 128)),
                ef_values=tuple(ef_search or (40, 64, 100, 200)),
                index_candidates=tuple(candidates or (CANDIDATES,)),
            )
        )


@bench_app.command("scale")
def scale_bench(
    ratings: Annotated[
        list[int], typer.Option(min=1, help="Dataset sizes in ratings, smallest first (repeat the option).")
    ],
    models: Annotated[list[str] | None, typer.Option("--model", help="Models to train (repeat the option).")] = None,
    log: Annotated[str, typer.Option(help="Where the jobs' own output goes.")] = "bench-scale.log",
) -> None:
    """Every job (ingest via synth, export, apply, materialize, train each model, evaluate, serve
    start-up, warm-up, recommend --all, bench serve) at each size, each as its own process: wall
    time, peak RSS, rows/s and the growth exponent against the first size. Use a data dir of its
    own (MARQUEE_DATA_DIR): it is overwritten."""
    from pathlib import Path

    from bench.scale import AFTER_SERVE, JobRun, exponent, jobs, run_job, run_serve

    def done(n: int, run: JobRun) -> bool:
        runs[n].append(run)
        sys.stderr.write(f"{n:,} ratings, {run.job}: {run.seconds:.1f}s, peak RSS {run.peak_rss_mb:,.0f} MB\n")
        if run.exit_code:
            sys.stderr.write(f"{run.job} failed (exit {run.exit_code}); see {log}\n")
        return not run.exit_code

    runs: dict[int, list[JobRun]] = {}
    for n in ratings:
        runs[n] = []
        ok = all(done(n, run_job(name, args, n, Path(log))) for name, args in
                 jobs(n, tuple(models or ("pop", "bpr", "two_tower", "engagement"))))  # fmt: skip
        ok = ok and all(done(n, run) for run in run_serve(n, Path(log)))
        ok = ok and all(done(n, run_job(name, args, n, Path(log))) for name, args in AFTER_SERVE)
    first = runs[ratings[0]]
    table = [
        {
            "ratings": n,
            "job": run.job,
            "seconds": round(run.seconds, 1),
            "peak_rss_mb": round(run.peak_rss_mb),
            "rows_per_s": round(run.rows_per_s),
            "exit": run.exit_code,
            "exponent_vs_first": None
            if n == ratings[0]
            else next((round(e, 2) for b in first if b.job == run.job and (e := exponent(b, run)) is not None), None),
        }
        for n, done in runs.items()
        for run in done
    ]
    _print({"jobs": table})
