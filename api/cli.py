"""The ``marquee`` command line: the front door to every job.

Each step is its own idempotent command; ``marquee up`` runs them in order on the
embedded default. Errors Marquee can explain print as one line (no traceback unless
``--debug``) and exit with status 1; passwords are never printed.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from api.cli_bench import bench_app
from sources.errors import MarqueeError, first_line
from sources.progress import console
from sources.settings import Settings, redact

if TYPE_CHECKING:
    from model.train import TrainOptions

app = typer.Typer(
    name="marquee",
    help="Movie recommendations through GraphQL over a unified feature store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}


app.add_typer(bench_app, name="bench")


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug or os.environ.get("MARQUEE_DEBUG") == "1"


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:  # name the bad variable, not pydantic's internals
        problems = "; ".join(
            f"MARQUEE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise MarqueeError(f"invalid configuration: {problems}") from exc


# stores ------------------------------------------------------------------------------------


@app.command()
def status() -> None:
    """Show each store, its URI (no password) and whether it answers. Starts nothing."""
    from sources.embedded import EmbeddedStores
    from sources.stores import Endpoints, Stores

    settings = _settings()
    embedded = EmbeddedStores(settings.data_dir)
    uris = embedded.uris()
    configured = {"postgres": settings.pg_dsn, "mongo": settings.mongo_uri, "graph": settings.graph_uri}
    resolved = {k: (v.get_secret_value() if v is not None else uris[k]) for k, v in configured.items()}
    endpoints = Endpoints(resolved["postgres"], resolved["mongo"], resolved["graph"], None,
                          frozenset(k for k, v in configured.items() if v is None))  # fmt: skip
    settings = settings.model_copy(update={"connect_timeout_s": 2.0})
    table = Table(title=f"Marquee stores (data dir {settings.data_dir})")
    for column in ("store", "mode", "uri", "answers"):
        table.add_column(column, overflow="fold")
    with Stores(settings, endpoints) as stores:
        health = stores.check()
    for name in ("postgres", "mongo", "graph"):
        mode = "embedded" if name in endpoints.embedded else "external"
        problem = health[name]
        answer = "[green]yes[/]" if problem is None else f"[red]no[/] ({problem.split(': ', 1)[-1]})"
        table.add_row(name, mode, redact(resolved[name]), answer)
    console.print(table)


@app.command()
def down() -> None:
    """Stop the embedded servers cleanly (external stores are left alone)."""
    from sources.embedded import EmbeddedStores

    stopped = EmbeddedStores(_settings().data_dir).stop_all()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "no embedded server was running")


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Bring the PostgreSQL schema to REVISION (default: head) with Alembic."""
    from sources import migrate as migrations
    from sources.stores import Stores

    with Stores.open(_settings()) as stores:
        stores.ping_pg()
        migrations.upgrade(stores.pg, revision)
    console.print(f"schema at {revision}")


# data ------------------------------------------------------------------------------------


def _print_ingest(report: object) -> None:
    from sources.ingest import IngestReport

    assert isinstance(report, IngestReport)
    if report.skipped:
        console.print(f"[green]{report.dataset} is already loaded[/] (counts match the last load; --force reloads)")
        return
    table = Table(title=f"loaded {report.dataset}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in report.counts.items():
        table.add_row(key, f"{value:,}")
    console.print(table)
    rates = ", ".join(f"{k} {v:,.0f} rows/s" for k, v in report.rows_per_second().items())
    console.print(f"ingest took {report.seconds.get('total', 0):.1f}s ({rates})")


@app.command()
def ingest(
    movielens_dir: Annotated[
        Path | None,
        typer.Option(
            help="Load ml-25m/ml-32m CSVs (ratings.csv, movies.csv, tags.csv, links.csv) from here "
            "instead of MovieLens-100K.",
            file_okay=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Reload even when the same data is already loaded.")] = False,
    batch_size: Annotated[int, typer.Option(min=100, help="Rows per write batch.")] = 5000,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Load MovieLens-100K and its knowledge graph (or --movielens-dir) into all three stores."""
    from sources import datasets
    from sources.ingest import ingest as run_ingest
    from sources.stores import Stores

    settings = _settings()
    dataset = datasets.movielens_csv(movielens_dir) if movielens_dir else datasets.movielens_100k()
    with Stores.open(settings) as stores:
        report = run_ingest(stores, dataset, seed=settings.seed, batch_size=batch_size, force=force, quiet=quiet)
    _print_ingest(report)


@app.command()
def synth(
    users: Annotated[int, typer.Option(min=1, help="Number of users (ML-25M: 162,541).")] = 6040,
    movies: Annotated[int, typer.Option(min=1, help="Number of movies (ML-25M: 62,423).")] = 3706,
    ratings: Annotated[int, typer.Option(min=0, help="Number of ratings (ML-25M: 25,000,095).")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Generator seed; same seed, same data.")] = 42,
    force: Annotated[bool, typer.Option(help="Reload even when the same data is already loaded.")] = False,
    batch_size: Annotated[int, typer.Option(min=100, help="Rows per write batch.")] = 5000,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Generate a MovieLens-shaped dataset and load it through the same path as `ingest`."""
    from sources.ingest import ingest as run_ingest
    from sources.stores import Stores
    from sources.synth import synthetic

    settings = _settings()
    dataset = synthetic(users=users, movies=movies, ratings=ratings, seed=seed)
    with Stores.open(settings) as stores:
        report = run_ingest(stores, dataset, seed=seed, batch_size=batch_size, force=force, quiet=quiet)
    _print_ingest(report)


@app.command()
def assets() -> None:
    """Fetch GraphiQL's browser assets from the npm registry so GraphiQL works offline."""
    from api.graphiql import fetch_assets

    console.print(f"GraphiQL assets in {fetch_assets()}")


# feature store ---------------------------------------------------------------------------


@app.command()
def export(
    full: Annotated[bool, typer.Option(help="Rebuild every raw and feature table from scratch.")] = False,
    batch_size: Annotated[int, typer.Option(min=100, help="Rows per read/COPY batch.")] = 5000,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Export new reviews, playback sessions and graph edges into the offline feature tables."""
    from sources.export import export as run_export
    from sources.stores import Stores

    with Stores.open(_settings()) as stores:
        report = run_export(stores, full=full, batch_size=batch_size, quiet=quiet)
    table = Table(title="exported" + (" (full rebuild)" if full else ""))
    for column in ("source", "read", "landed", "feature rows", "seconds", "rows/s"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for s in report.sources:
        name = s.source + (" (rebuilt)" if s.rebuilt and not full else "")
        table.add_row(name, f"{s.rows_read:,}", f"{s.rows_landed:,}", f"{sum(s.feature_rows.values()):,}",
                      f"{s.seconds:.1f}", f"{s.rows_per_s:,.0f}")  # fmt: skip
    console.print(table)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def feast(ctx: typer.Context) -> None:
    """Run any Feast CLI command (e.g. `marquee feast feature-views list`) against Marquee's stores."""
    import subprocess

    from sources.feast_env import FEATURE_REPO, ensure_registry_schema, feast_environment
    from sources.stores import resolve_endpoints

    endpoints = resolve_endpoints(_settings())
    env = {**os.environ, **feast_environment(endpoints)}
    ensure_registry_schema(endpoints)
    binary = Path(sys.executable).with_name("feast")
    command = [str(binary)] if binary.exists() else [sys.executable, "-m", "feast.cli.cli"]
    result = subprocess.run([*command, *ctx.args], cwd=FEATURE_REPO, env=env, check=False)
    raise typer.Exit(result.returncode)


@app.command()
def apply() -> None:
    """Register feature_repo/definitions.py with Feast (entities, views, services). Idempotent."""
    from sources.feast_env import open_feature_store
    from sources.materialize import apply_repo
    from sources.stores import resolve_endpoints

    counts = apply_repo(open_feature_store(resolve_endpoints(_settings())))
    console.print(f"feature repo applied ({counts['applied']} objects updated, {counts['deleted']} deleted)")


@app.command()
def materialize(
    start: Annotated[datetime | None, typer.Option(help="ISO start (UTC if no zone); default: incremental.")] = None,
    end: Annotated[datetime | None, typer.Option(help="ISO end (UTC if no zone); default: now.")] = None,
) -> None:
    """Copy the latest offline features into the online store (first run: from the earliest event).

    With --start/--end each entity gets its latest row within that window, even over newer values.
    """
    from sources.feast_env import open_feature_store
    from sources.materialize import materialize as run_materialize
    from sources.stores import resolve_endpoints

    report = run_materialize(open_feature_store(resolve_endpoints(_settings())), start, end)
    table = Table(title="materialized")
    for column in ("view", "from", "to", "rows", "seconds"):
        table.add_column(column, justify="right" if column in ("rows", "seconds") else "left")
    for v in report.views:
        table.add_row(v.view, v.start.isoformat(), v.end.isoformat(), f"{v.rows:,}", f"{v.seconds:.1f}")
    console.print(table)
    console.print(f"{report.rows:,} rows in {report.seconds:.1f}s ({report.rows_per_second():,.0f} rows/s)")


# models ----------------------------------------------------------------------------------


def _train_options(
    epochs: int | None, device: str, seed: int, quiet: bool, batch_size: int | None, lr: float | None
) -> tuple[TrainOptions, set[str]]:
    """TrainOptions plus the fields the user set (the rest take each model's defaults)."""
    from model.train import TrainOptions

    options = TrainOptions(device=device, seed=seed, quiet=quiet)
    if epochs is not None:
        options.epochs = epochs
    if batch_size is not None:
        options.batch_size = batch_size
    if lr is not None:
        options.lr = lr
    return options, {k for k, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)) if v is not None}


@app.command()
def train(
    model: Annotated[str, typer.Option(help="engagement, two_tower, bpr, pop or all.")] = "all",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epoch cap (default per model; early stopping may end sooner).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda or cuda:N.")] = "auto",
    split: Annotated[str, typer.Option(help="time (served), recbole or random.")] = "time",
    features: Annotated[str, typer.Option(help="Engagement features: auto, feast or local.")] = "auto",
    batch_size: Annotated[int | None, typer.Option(min=16, help="Batch size (default: per model).")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Learning rate (default: per model).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train models on ML-100K interactions and features; write checkpoints to <data dir>/models/<split>/."""
    from model.device import pick_device
    from model.train import MODELS, train_models
    from sources.stores import Stores

    settings = _settings()
    kinds = list(MODELS) if model == "all" else [m.strip() for m in model.split(",")]
    options, explicit = _train_options(epochs, device, settings.seed, quiet, batch_size, lr)
    console.print(f"training {', '.join(kinds)} on {pick_device(device)}, {split} split")
    with Stores.open(settings) as stores:
        results = train_models(
            stores,
            settings.models_dir,
            kinds=kinds,
            split_name=split,
            options=options,
            feature_source=features,
            explicit=explicit,
        )
    table = Table(title=f"trained ({split} split)")
    for column in ("model", "best epoch", "valid", "s/epoch", "samples/s", "checkpoint"):
        table.add_column(column, overflow="fold")
    for kind, (trained, _, path) in results.items():
        valid = ", ".join(f"{k} {v:.4f}" for k, v in trained.valid.items() if k in ("ndcg@10", "recall@10", "rmse"))
        table.add_row(kind, str(trained.best_epoch), valid, f"{trained.seconds_per_epoch:.2f}",
                      f"{trained.samples_per_s:,.0f}", str(path))  # fmt: skip
    console.print(table)


@app.command()
def evaluate(
    protocol: Annotated[
        str, typer.Option(help="time (held-out last 10%), recbole (per-user 80/10/10) or random.")
    ] = "time",
    epochs: Annotated[int | None, typer.Option(min=1, help="Epoch cap for models trained on the way.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    features: Annotated[str, typer.Option(help="Engagement features: auto, feast or local.")] = "auto",
    retrain: Annotated[bool, typer.Option(help="Train every model again, even with a current checkpoint.")] = False,
    models: Annotated[str, typer.Option(help="Comma-separated subset of engagement,two_tower,bpr,pop.")] = "all",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Evaluate every model on the protocol's test part: one table (markdown + JSON) and a PNG chart."""
    from model.evaluate import evaluate as run_evaluate
    from sources.stores import Stores

    settings = _settings()
    options, explicit = _train_options(epochs, device, settings.seed, quiet, None, None)  # per-model defaults
    kinds = None if models == "all" else [m.strip() for m in models.split(",")]
    with Stores.open(settings) as stores:
        report, paths = run_evaluate(stores, settings.models_dir, settings.data_dir / "reports", protocol=protocol,
                                     options=options, feature_source=features, retrain=retrain,
                                     models=kinds, explicit=explicit)  # fmt: skip
    console.print(report.markdown(), markup=False)
    console.print(f"reports: {', '.join(str(p) for p in paths.values())}")


# the API ---------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Uvicorn worker processes (each opens its own clients).")] = 1,
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql, /healthz, /readyz) with Uvicorn."""
    from sources.stores import Stores

    settings = _settings()
    # Start (or reuse) the embedded stores once here, so workers do not race to start them.
    with Stores.open(settings) as stores:
        stores.require_all()
    _run_uvicorn(host, port, workers)


def _run_uvicorn(host: str, port: int, workers: int) -> None:
    """Uvicorn on the served app (api.app:app_from_env); the stores must be up."""
    import uvicorn

    console.print(f"serving GraphQL on http://{host}:{port}/graphql ({workers} worker{'s' * (workers > 1)})")
    uvicorn.run("api.app:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="info")


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Print the GraphQL schema (SDL); the repository keeps it as schema.graphql."""
    from api.schema import sdl

    text = sdl()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"schema written to {output}")


# the whole job ---------------------------------------------------------------------------


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Interface to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="End by serving GraphiQL.")] = True,
    epochs: Annotated[int, typer.Option(min=1, help="Epoch cap when models must be trained.")] = 40,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """The whole job on the embedded default: stores, migrate, ingest ML-100K, export, feast apply,
    materialize, train (or reuse a compatible checkpoint), then serve GraphiQL. Every step is
    idempotent, so re-running is cheap."""
    from model.checkpoint import checkpoint_path, load_checkpoint
    from model.device import pick_device
    from model.evaluate import evaluate as run_evaluate
    from model.score import service_features
    from sources import datasets
    from sources import migrate as migrations
    from sources.export import export as run_export
    from sources.feast_env import open_feature_store
    from sources.ingest import ingest as run_ingest
    from sources.materialize import apply_repo
    from sources.materialize import materialize as run_materialize
    from sources.stores import Stores

    settings = _settings()
    started = time.perf_counter()

    def step(n: int, what: str) -> None:
        console.print(f"[bold]{n}/7[/] {what} [dim]({time.perf_counter() - started:.0f}s)[/]")

    with Stores.open(settings) as stores:
        stores.require_all()
        step(1, "stores answer; migrating schema")
        migrations.upgrade(stores.pg)
        step(2, "ingesting MovieLens-100K")
        _print_ingest(run_ingest(stores, datasets.movielens_100k(), seed=settings.seed, quiet=quiet))
        step(3, "exporting Mongo and graph features to the offline store")
        exported = run_export(stores, quiet=quiet)
        console.print(f"landed {sum(exported.rows_landed.values()):,} new rows")
        step(4, "feast apply")
        store = open_feature_store(stores.endpoints)
        apply_repo(store)
        step(5, "materializing the online store")
        console.print(f"materialized {run_materialize(store).rows:,} rows")
        step(6, "models")
        try:
            folder = settings.models_dir / "time"
            load_checkpoint(checkpoint_path(folder, "two_tower"))
            engagement = load_checkpoint(checkpoint_path(folder, "engagement"), service_features(store))
            if "rerank_beta" not in engagement.metrics:
                raise MarqueeError("the re-rank weight has not been chosen on validation yet")
            console.print("reusing the trained checkpoints (their features match the feature service)")
        except MarqueeError as reason:
            # evaluate trains what is missing, picks the re-rank weight on validation and
            # writes the report (markdown, JSON, PNG) of the held-out period.
            console.print(f"training and evaluating on {pick_device('auto')}: {reason}")
            options, explicit = _train_options(epochs, "auto", settings.seed, quiet, None, None)
            _, paths = run_evaluate(stores, settings.models_dir, settings.data_dir / "reports", protocol="time",
                                    options=options, feature_source="feast", retrain=False,
                                    models=["two_tower", "engagement"], explicit=explicit)  # fmt: skip
            console.print(f"evaluation report: {paths['markdown']}")
    console.print(f"[green]marquee is up[/] in {time.perf_counter() - started:.1f}s")
    if serve_api:
        step(7, "serving")
        _run_uvicorn(host, port, workers=1)  # the stores were opened and checked above


def main() -> None:
    """Entry point: run the Typer app, turning expected failures into one-line errors."""
    try:
        app()
    except MarqueeError as exc:
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as exc:
        if _state["debug"]:
            raise
        first = first_line(exc)
        console.print(
            f"[red]error:[/] {type(exc).__name__}: {first} (run with --debug for the traceback)", soft_wrap=True
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
