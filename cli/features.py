"""``marquee apply | materialize | feast | env``: the Feast repository in ``feature_repo/``."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import load_settings
from sources.progress import console

commands = typer.Typer()


@commands.command()
def apply() -> None:
    """Register feature_repo/definitions.py with Feast (entities, views, services). Idempotent."""
    from sources.feature_store.env import open_feature_store
    from sources.feature_store.materialize import apply_repo
    from sources.stores.clients import resolve_endpoints

    counts = apply_repo(open_feature_store(resolve_endpoints(load_settings())))
    console.print(f"feature repo applied ({counts['applied']} objects updated, {counts['deleted']} deleted)")


@commands.command()
def materialize(
    start: Annotated[datetime | None, typer.Option(help="ISO start (UTC if no zone); default: incremental.")] = None,
    end: Annotated[datetime | None, typer.Option(help="ISO end (UTC if no zone); default: now.")] = None,
) -> None:
    """Copy the latest offline features into the online store (first run: from the earliest event).

    With --start/--end each entity gets its latest row within that window, even over newer values.
    Fails when the feature repository has not been applied yet (`marquee apply`).
    """
    from sources.feature_store.env import open_feature_store
    from sources.feature_store.materialize import materialize as run_materialize
    from sources.stores.clients import resolve_endpoints

    report = run_materialize(open_feature_store(resolve_endpoints(load_settings())), start, end)
    table = Table(title="materialized")
    for column in ("view", "from", "to", "rows", "seconds"):
        table.add_column(column, justify="right" if column in ("rows", "seconds") else "left")
    for v in report.views:
        table.add_row(v.view, v.start.isoformat(), v.end.isoformat(), f"{v.rows:,}", f"{v.seconds:.1f}")
    console.print(table)
    console.print(f"{report.rows:,} rows in {report.seconds:.1f}s ({report.rows_per_second():,.0f} rows/s)")


@commands.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def feast(ctx: typer.Context) -> None:
    """Run any Feast CLI command against Marquee's stores, e.g. `marquee feast feature-views list`.

    `marquee feast ui` serves Feast's web UI (port 8888; --port changes it)."""
    import subprocess

    from sources.feature_store.env import FEATURE_REPO, ensure_registry_schema, feast_environment
    from sources.stores.clients import resolve_endpoints

    endpoints = resolve_endpoints(load_settings())
    env = {**os.environ, **feast_environment(endpoints)}
    ensure_registry_schema(endpoints)
    binary = Path(sys.executable).with_name("feast")
    command = [str(binary)] if binary.exists() else [sys.executable, "-m", "feast.cli.cli"]
    result = subprocess.run([*command, *ctx.args], cwd=FEATURE_REPO, env=env, check=False)
    raise typer.Exit(result.returncode)


@commands.command()
def env() -> None:
    """Print `export NAME=value` lines for the variables feature_repo/feature_store.yaml reads.

    `eval "$(marquee env)"` then lets plain Feast work on the repository, e.g.
    `cd feature_repo && feast feature-views list`, or `FeatureStore(repo_path="feature_repo")`.
    The lines hold the database password when the DSN has one.
    """
    import shlex

    from sources.feature_store.env import ensure_registry_schema, feast_environment
    from sources.stores.clients import resolve_endpoints

    endpoints = resolve_endpoints(load_settings())
    ensure_registry_schema(endpoints)  # Feast creates the registry's tables, not its schema
    lines = [f"export {name}={shlex.quote(value)}" for name, value in sorted(feast_environment(endpoints).items())]
    sys.stdout.write("\n".join(lines) + "\n")
