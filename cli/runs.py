"""``marquee runs``: the tracked train and evaluate runs (MLflow, model/tracking.py), listed or compared.

Also the two helpers ``marquee train`` and ``marquee evaluate`` record through: a run that
cannot be recorded (tracking server down) is said on the console and the command still
succeeds, since its checkpoint and report are written either way.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.common import load_settings
from sources.progress import console

if TYPE_CHECKING:
    from model.tracking import RunSummary, Tracker
    from model.train.options import TrainOptions
    from sources.settings import Settings

commands = typer.Typer()


def open_tracker(settings: Settings) -> Tracker | None:
    """The tracker, or None when tracking is off (MARQUEE_TRACKING=false) or MLflow cannot be reached."""
    if not settings.tracking:
        return None
    from model.tracking import Tracker, default_uri

    try:
        return Tracker.for_data_dir(settings.data_dir)
    except Exception as exc:
        console.print(f"[yellow]run not recorded: MLflow at {default_uri(settings.data_dir)} failed "
                      f"({type(exc).__name__}: {exc})[/]")  # fmt: skip
        return None


def record(settings: Settings, what: Callable[[Tracker], Any]) -> None:
    """Run ``what`` with the tracker; a failure is printed, never raised (the job itself succeeded)."""
    tracker = open_tracker(settings)
    if tracker is None:
        return
    try:
        what(tracker)
    except Exception as exc:
        console.print(f"[yellow]run not recorded in MLflow ({type(exc).__name__}: {exc})[/]")


def record_failed(settings: Settings, kind: str, model: str, started: float, params: dict[str, Any],
                  exc: BaseException) -> None:  # fmt: skip
    """A train or evaluate that raised: recorded FAILED with its parameters and the error."""
    error = f"{type(exc).__name__}: {exc}"
    record(settings, lambda t: t.record_failure(kind, model, started=started, params=params, error=error))


def option_params(options: TrainOptions) -> dict[str, Any]:
    """The training options as run parameters (without ``quiet``, which changes nothing learned)."""
    return {k: v for k, v in dataclasses.asdict(options).items() if k != "quiet"}


def command_line() -> str:
    return " ".join(["marquee", *sys.argv[1:]])


def now() -> float:
    return time.time()


@commands.command()
def runs(
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(
            metavar="RUN_A RUN_B",
            help="Compare two runs (ids or unique id prefixes): params and metrics side by side, differences marked.",
        ),
    ] = None,
    last: Annotated[int, typer.Option(min=1, help="How many of the newest runs to list.")] = 20,
    every_metric: Annotated[
        bool, typer.Option("--all-metrics", help="With --compare: also the per-epoch series (last value).")
    ] = False,
) -> None:
    """List the tracked `marquee train` / `evaluate` runs (MLflow), newest first, or compare two."""
    from model.tracking import Tracker

    settings = load_settings()
    tracker = Tracker.for_data_dir(settings.data_dir)
    if compare is None:
        _list(tracker, last)
    else:
        _compare(tracker.run(compare[0]), tracker.run(compare[1]), every_metric)


#: columns the run list is printed in at least (whole run ids, which --compare and `mlflow ui` take)
LIST_WIDTH = 150


def _list(tracker: Tracker, last: int) -> None:
    found = tracker.runs(last)
    if not found:
        console.print(f"no runs recorded at {tracker.uri} yet: `marquee train` or `marquee evaluate` records one")
        return
    table = Table(title=f"runs ({tracker.uri})")
    table.add_column("run id", no_wrap=True, min_width=32)  # whole: `mlflow ui` and --compare take it
    for column in ("kind", "model", "started (UTC)", "status", "data", "key metrics"):
        table.add_column(column, overflow="fold")
    for r in found:
        table.add_row(r.run_id, r.kind, r.model, r.started.strftime("%Y-%m-%d %H:%M:%S"), r.status,
                      r.data_snapshot, r.key_metrics)  # fmt: skip
    # Narrower than this, rich may cut the run ids; a narrow terminal wraps the lines instead.
    # (A console of its own: Console.print(width=…) never renders wider than the console.)
    Console(stderr=True, width=max(console.width, LIST_WIDTH)).print(table)


def _compare(a: RunSummary, b: RunSummary, every_metric: bool) -> None:
    title = f"{a.run_id[:12]} ({a.kind} {a.model}) vs {b.run_id[:12]} ({b.kind} {b.model})"
    for what, left, right in (("param", a.params, b.params), ("metric", a.metrics, b.metrics)):
        keys = sorted(set(left) | set(right))
        if what == "metric" and not every_metric:
            keys = [k for k in keys if not k.startswith("epoch.")]
        table = Table(title=f"{what}s: {title}")
        for column in (what, a.run_id[:12], b.run_id[:12], "differs"):
            table.add_column(column, overflow="fold")
        for key in keys:
            x, y = left.get(key), right.get(key)
            table.add_row(key, _cell(x), _cell(y), "*" if x != y else "")
        console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)
