"""``marquee status | down | migrate``: the three stores themselves."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.common import load_settings
from sources.errors import MarqueeError
from sources.progress import console
from sources.settings import redact

commands = typer.Typer()


@commands.command()
def status() -> None:
    """Show each store, its URI (no password) and whether it answers. Starts nothing.

    Exits with status 1, naming the store, when one does not answer.
    """
    from sources.stores.clients import Endpoints, Stores
    from sources.stores.embedded import EmbeddedStores

    settings = load_settings()
    embedded = EmbeddedStores(settings.data_dir)
    uris = embedded.uris()
    configured = {"postgres": settings.pg_dsn, "mongo": settings.mongo_uri, "graph": settings.graph_uri}
    resolved = {k: (v.get_secret_value() if v is not None else uris[k]) for k, v in configured.items()}
    endpoints = Endpoints(resolved["postgres"], resolved["mongo"], resolved["graph"], None,
                          frozenset(k for k, v in configured.items() if v is None))  # fmt: skip
    settings = settings.model_copy(update={"connect_timeout_s": min(settings.connect_timeout_s, 2.0)})
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
    silent = [problem for problem in health.values() if problem is not None]
    if silent:
        raise MarqueeError("; ".join(silent))


@commands.command()
def down() -> None:
    """Stop the embedded servers cleanly (external stores are left alone)."""
    from sources.stores.embedded import EmbeddedStores

    stopped = EmbeddedStores(load_settings().data_dir).stop_all()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "no embedded server was running")


@commands.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Bring the PostgreSQL schema to REVISION (default: head) with Alembic."""
    from sources import migrate as migrations
    from sources.stores.clients import Stores

    with Stores.open(load_settings()) as stores:
        stores.ping_pg()
        migrations.upgrade(stores.pg, revision)
    console.print(f"schema at {revision}")
