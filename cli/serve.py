"""``marquee serve | recommend | schema | assets | up``: the API, its shared lists, the whole job in one command."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.common import Quiet, load_settings
from cli.data import print_ingest
from cli.models import train_options
from sources.errors import MarqueeError
from sources.progress import console

commands = typer.Typer()

Port = Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")]


@commands.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Port = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Uvicorn worker processes (each opens its own clients).")] = 1,
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql, /healthz, /readyz) with Uvicorn."""
    from sources.stores.clients import Stores

    settings = load_settings()
    # Start (or reuse) the embedded stores once here, so workers do not race to start them.
    with Stores.open(settings) as stores:
        stores.require_all()
    run_uvicorn(host, port, workers)


def run_uvicorn(host: str, port: int, workers: int) -> None:
    """Uvicorn on the served app (api.app:app_from_env); the stores must be up. On SIGTERM it
    stops taking requests and gives those under way their deadline (MARQUEE_REQUEST_TIMEOUT_S)
    plus a second to finish."""
    import uvicorn

    grace_s = load_settings().request_timeout_s + 1
    console.print(f"serving GraphQL on http://{host}:{port}/graphql ({workers} worker{'s' * (workers > 1)})")
    # server_header=False: no `server: uvicorn` fingerprint (docs/api.md, Security checklist)
    uvicorn.run("api.app:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="info",
                timeout_graceful_shutdown=int(grace_s + 0.999),
                server_header=False)  # fmt: skip


@commands.command()
def recommend(
    all_users: Annotated[bool, typer.Option("--all", help="Every user the trained ranker knows.")] = False,
    batch: Annotated[int, typer.Option(min=1, max=1024, help="Users ranked together.")] = 64,
    again: Annotated[bool, typer.Option("--again", help="Rank users whose current list is still fresh, too.")] = False,
    quiet: Quiet = False,
) -> None:
    """Fill the recommendation_lists table every API worker serves from (batched, resumable:
    users with a fresh list by the current model are skipped)."""
    from api.batch_lists import recommend_all

    if not all_users:
        raise typer.BadParameter("say --all (ranking every user is the only mode)", param_hint="--all")
    report = recommend_all(load_settings(), batch=batch, again=again, quiet=quiet)
    console.print(
        f"recommendation lists: {report.ranked} users ranked, {report.written} lists written, "
        f"{report.skipped} already current, by {report.model_version}"
    )


@commands.command()
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


@commands.command()
def assets() -> None:
    """Fetch GraphiQL's browser assets from the npm registry so GraphiQL works offline."""
    from api.graphiql import fetch_assets

    console.print(f"GraphiQL assets in {fetch_assets()}")


@commands.command()
def up(
    host: Annotated[str, typer.Option(help="Interface to serve on.")] = "127.0.0.1",
    port: Port = 8000,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="End by serving GraphiQL.")] = True,
    epochs: Annotated[int, typer.Option(min=1, help="Epoch cap when models must be trained.")] = 40,
    quiet: Quiet = False,
) -> None:
    """The whole job on the embedded default: stores, migrate, ingest ML-100K, export, feast apply,
    materialize, train (or reuse a compatible checkpoint), then serve GraphiQL. Every step is
    idempotent, so re-running is cheap."""
    from model.checkpoint import checkpoint_path, load_checkpoint
    from model.device import pick_device
    from model.evaluate.report import evaluate as run_evaluate
    from model.serve.ranker import service_features
    from sources import migrate as migrations
    from sources.datasets import movielens as datasets
    from sources.export.run import export as run_export
    from sources.feature_store.env import open_feature_store
    from sources.feature_store.materialize import apply_repo
    from sources.feature_store.materialize import materialize as run_materialize
    from sources.ingest import ingest as run_ingest
    from sources.stores.clients import Stores

    settings = load_settings()
    started = time.perf_counter()

    def step(n: int, what: str) -> None:
        console.print(f"[bold]{n}/7[/] {what} [dim]({time.perf_counter() - started:.0f}s)[/]")

    with Stores.open(settings) as stores:
        stores.require_all()
        step(1, "stores answer; migrating schema")
        migrations.upgrade(stores.pg)
        step(2, "ingesting MovieLens-100K")
        print_ingest(run_ingest(stores, datasets.movielens_100k(), seed=settings.seed, quiet=quiet))
        step(3, "exporting Mongo and graph features to the offline store")
        exported = run_export(stores, quiet=quiet)
        console.print(f"landed {sum(exported.rows_landed.values()):,} new rows")
        step(4, "feast apply")
        store = open_feature_store(stores.endpoints)
        apply_repo(store)
        step(5, "materializing the online store")
        console.print(f"materialized {run_materialize(store).rows:,} rows")
        step(6, "models")
        folder = settings.models_dir / "time"
        served = ("ease", "two_tower", "engagement")
        try:
            if not all(checkpoint_path(folder, kind).is_file() for kind in served):
                # up is about to train them: "no checkpoint, run marquee train" would only confuse
                raise MarqueeError("no trained models yet")
            load_checkpoint(checkpoint_path(folder, "two_tower"))
            engagement = load_checkpoint(checkpoint_path(folder, "engagement"), service_features(store))
            engine = stores.endpoints.offline.engine
            if engagement.feature_engine not in ("", engine):
                raise MarqueeError(f"the engagement net was trained on {engagement.feature_engine} frames, "
                                   f"the offline engine is now {engine}")  # fmt: skip
            if "rerank_beta" not in engagement.metrics:
                raise MarqueeError("the re-rank weight has not been chosen on validation yet")
            console.print("reusing the trained checkpoints (their features match the feature service)")
        except MarqueeError as reason:
            # evaluate trains what is missing, picks the re-rank weight on validation and
            # writes the report (markdown, JSON, PNG) of the held-out period.
            console.print(f"training and evaluating on {pick_device('auto')}: {reason}")
            options, explicit = train_options(epochs, "auto", quiet, None, None)
            _, paths = run_evaluate(stores, settings.models_dir, settings.data_dir / "reports", protocol="time",
                                    options=options, feature_source="feast", retrain=False,
                                    models=list(served), explicit=explicit,
                                    new_title_boost=settings.new_title_boost)  # fmt: skip
            console.print(f"evaluation report: {paths['markdown']}")
    console.print(f"[green]marquee is up[/] in {time.perf_counter() - started:.1f}s")
    if serve_api:
        step(7, "serving")
        run_uvicorn(host, port, workers=1)  # the stores were opened and checked above
