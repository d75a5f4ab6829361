"""``marquee ingest | synth | export``: data into the stores, and from them into the offline feature tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.common import Quiet, load_settings
from sources.progress import console

if TYPE_CHECKING:
    from sources.ingest import IngestReport

commands = typer.Typer()

Force = Annotated[bool, typer.Option("--force", help="Reload even when the same data is already loaded.")]
#: ``sources.ingest.STREAM_BATCH``, repeated so that ``--help`` need not import the loader
WRITE_BATCH = 20_000
BatchSize = Annotated[int, typer.Option(min=100, help="Ratings per Mongo and graph write batch.")]


def print_ingest(report: IngestReport) -> None:
    """What a load wrote (or that it was skipped), with its rows/s."""
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


@commands.command()
def ingest(
    movielens_dir: Annotated[
        Path | None,
        typer.Option(
            help="Load ml-25m/ml-32m CSVs (ratings.csv, movies.csv, tags.csv, links.csv) from here "
            "instead of MovieLens-100K.",
            file_okay=False,
        ),
    ] = None,
    force: Force = False,
    batch_size: BatchSize = WRITE_BATCH,
    quiet: Quiet = False,
) -> None:
    """Load MovieLens-100K and its knowledge graph (or --movielens-dir) into all three stores."""
    from sources import migrate as migrations
    from sources.datasets import movielens as datasets
    from sources.ingest import ingest as run_ingest
    from sources.stores.clients import Stores

    settings = load_settings()
    dataset = datasets.movielens_csv(movielens_dir) if movielens_dir else datasets.movielens_100k()
    with Stores.open(settings) as stores:
        stores.require_all()  # one clear line naming a store that does not answer
        migrations.upgrade(stores.pg)  # a fresh data dir has no schema yet; at head this does nothing
        report = run_ingest(stores, dataset, seed=settings.seed, batch_size=batch_size, force=force, quiet=quiet)
    print_ingest(report)


@commands.command()
def synth(
    users: Annotated[
        int | None, typer.Option(min=1, help="Number of users (ML-25M: 162,541). Default: by --ratings, as below.")
    ] = None,
    movies: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Number of movies (ML-25M: 62,423). Default: by --ratings, ML-1M's 6,040 × 3,706 at 1M and "
            "ML-25M's shape at 25M, interpolated geometrically in between.",
        ),
    ] = None,
    ratings: Annotated[int, typer.Option(min=0, help="Number of ratings (ML-25M: 25,000,095).")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Generator seed; same seed, same data.")] = 42,
    force: Force = False,
    batch_size: BatchSize = WRITE_BATCH,
    quiet: Quiet = False,
) -> None:
    """Generate a MovieLens-shaped dataset and load it through the same path as `ingest`."""
    from sources import migrate as migrations
    from sources.datasets.synth import movielens_shape, synthetic
    from sources.ingest import ingest as run_ingest
    from sources.stores.clients import Stores

    settings = load_settings()
    shaped_users, shaped_movies = movielens_shape(ratings)
    dataset = synthetic(users=users or shaped_users, movies=movies or shaped_movies, ratings=ratings, seed=seed)
    with Stores.open(settings) as stores:
        stores.require_all()  # one clear line naming a store that does not answer
        migrations.upgrade(stores.pg)  # a fresh data dir has no schema yet; at head this does nothing
        report = run_ingest(stores, dataset, seed=seed, batch_size=batch_size, force=force, quiet=quiet)
    print_ingest(report)


@commands.command()
def export(
    full: Annotated[bool, typer.Option("--full", help="Rebuild every raw and feature table from scratch.")] = False,
    batch_size: Annotated[int, typer.Option(min=100, help="Rows per read/COPY batch.")] = 5000,
    quiet: Quiet = False,
) -> None:
    """Export new reviews, playback sessions and graph edges into the offline feature tables."""
    from sources.export.run import export as run_export
    from sources.stores.clients import Stores

    with Stores.open(load_settings()) as stores:
        report = run_export(stores, full=full, batch_size=batch_size, quiet=quiet)
    table = Table(title="exported" + (" (full rebuild)" if full else ""))
    for column in ("source", "read", "landed", "feature rows", "seconds", "rows/s"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for s in report.sources:
        name = s.source + (" (rebuilt)" if s.rebuilt and not full else "")
        table.add_row(name, f"{s.rows_read:,}", f"{s.rows_landed:,}", f"{sum(s.feature_rows.values()):,}",
                      f"{s.seconds:.1f}", f"{s.rows_per_s:,.0f}")  # fmt: skip
    console.print(table)
