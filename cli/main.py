"""The ``marquee`` command line: the front door to every job.

Each step is its own idempotent command; ``marquee up`` runs them in order on the
embedded default. Errors Marquee can explain print as one line (no traceback unless
``--debug``) and exit with status 1; passwords are never printed.

The commands live in one module per group (``cli.stores``, ``cli.data``, ``cli.features``,
``cli.models``, ``cli.runs``, ``cli.serve``, ``cli.bench``); each holds a ``typer.Typer`` whose commands are
merged here into the one ``marquee`` app. Heavy imports (torch, feast) stay inside the
command functions so ``marquee --help`` answers at once.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from cli import data, features, models, refresh, runs, serve, stores
from cli.bench import bench_app
from sources.errors import MarqueeError, first_line
from sources.progress import console

app = typer.Typer(
    name="marquee",
    help="Movie recommendations through GraphQL over a unified feature store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: rich help shows a "<bool>" type beside every flag
)
_state = {"debug": False}

for group in (stores, data, features, models, runs, refresh, serve):
    app.add_typer(group.commands)  # no name: the group's commands join `marquee` itself
app.add_typer(bench_app, name="bench")


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug or os.environ.get("MARQUEE_DEBUG") == "1"


def main() -> None:
    """Entry point: run the Typer app, turning expected failures into one-line errors."""
    try:
        app()
    except MarqueeError as exc:
        if _state["debug"]:
            raise
        # ``detail``: a store outage (StoreDown) with the driver's reason, which API clients never see
        console.print(f"[red]error:[/] {getattr(exc, 'detail', exc)}", soft_wrap=True)
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
