"""``marquee refresh [--every 15m]``: the one job a schedule runs, incremental and idempotent.

Steps, under a PostgreSQL advisory lock (``pg_try_advisory_lock``: a second refresh, from
this machine or another, finds it held and reports ``skipped`` instead of overlapping):

1. finish titles whose ``addMovie`` stopped after PostgreSQL (graph, online store);
2. export the new events to the offline store (``marquee export``: from its watermarks);
3. materialize the online store when the export landed anything (``marquee materialize``);
4. retrain when the policy says so: no served checkpoint, or at least
   ``MARQUEE_REFRESH_MIN_NEW_EVENTS`` events newer than its data snapshot, or a checkpoint
   older than ``MARQUEE_REFRESH_MAX_AGE_H`` with any new event. Training goes through
   ``marquee evaluate``'s path (train, choose the re-rank weight on validation, report), and
   the checkpoints are written atomically: a running API swaps them in by itself
   (api/recommendations/reload.py) and drops its kept lists;
5. report what it did (printed, and kept as ``<data dir>/refresh/last.json``).

A second run with nothing new does nothing: no rows landed, nothing materialized, no training.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy import text

from cli.common import Quiet, load_settings
from sources.errors import MarqueeError
from sources.progress import console
from sources.settings import Settings

if TYPE_CHECKING:
    from sources.stores.clients import Stores

commands = typer.Typer()

#: the advisory lock key every refresh takes ("mqrefresh")
REFRESH_LOCK = 0x6D71_7265_6672_65
SERVED = ("two_tower", "engagement")
_EVERY = re.compile(r"(\d+)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class RefreshReport:
    """What one refresh did; ``skipped`` names why it did nothing at all."""

    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    skipped: str | None = None
    additions_finished: int = 0
    rows_landed: dict[str, int] = field(default_factory=dict)
    rows_materialized: int = 0
    new_events: int = 0
    retrained: str | None = None  # why, when it did
    model_version: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def did_something(self) -> bool:
        return bool(self.additions_finished or sum(self.rows_landed.values()) or self.rows_materialized
                    or self.retrained)  # fmt: skip


@contextmanager
def refresh_lock(stores: Stores) -> Iterator[bool]:
    """Holds the refresh lock for the block; yields False (and holds nothing) when another has it."""
    with stores.pg.connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": REFRESH_LOCK}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": REFRESH_LOCK})
                conn.commit()


def retrain_reason(settings: Settings, stores: Stores, now: datetime) -> tuple[str | None, int]:
    """(why to retrain, or None; events newer than the served checkpoint's data snapshot)."""
    from model.checkpoint import CheckpointError, checkpoint_path, load_checkpoint

    folder = settings.models_dir / "time"
    try:
        checkpoint = load_checkpoint(checkpoint_path(folder, "two_tower"))
        if not checkpoint_path(folder, "engagement").is_file():
            raise CheckpointError("no engagement checkpoint")
    except CheckpointError:
        return "no served checkpoint", 0
    since = int(checkpoint.data_snapshot.get("max_event_ts", 0))
    with stores.pg.connect() as conn:
        new = int(conn.execute(text("SELECT count(*) FROM raw_reviews WHERE ts > to_timestamp(:t)"),
                               {"t": since}).scalar_one())  # fmt: skip
    age_h = (now - datetime.fromisoformat(checkpoint.created_at)).total_seconds() / 3600
    if new >= settings.refresh_min_new_events:
        return f"{new} new events (threshold {settings.refresh_min_new_events})", new
    if new and age_h > settings.refresh_max_age_h:
        return f"checkpoint {age_h:.1f} h old (limit {settings.refresh_max_age_h:g} h) and {new} new events", new
    return None, new


#: a refresh's steps, in order
STEPS = ("additions", "export", "materialize", "retrain")


def refresh(settings: Settings, stores: Stores, *, quiet: bool = True, epochs: int = 40,
            steps: Sequence[str] = STEPS) -> RefreshReport:  # fmt: skip
    """One refresh (the module docstring's steps; ``steps`` runs only those named); safe to run
    at any time, any number of times."""
    from api.queries import catalog
    from sources.export.run import export
    from sources.feature_store.env import open_feature_store
    from sources.feature_store.materialize import materialize

    report = RefreshReport()
    with refresh_lock(stores) as held:
        if not held:
            report.skipped = "another refresh holds the lock"
            return report
        clock = time.perf_counter()

        def lap(step: str) -> None:
            nonlocal clock
            report.seconds[step] = round(time.perf_counter() - clock, 2)
            clock = time.perf_counter()

        store = open_feature_store(stores.endpoints)
        if "additions" in steps:
            report.additions_finished = catalog.finish_pending(stores.pg, stores.graph, store)
            lap("additions")
        if "export" in steps:
            report.rows_landed = export(stores, quiet=quiet).rows_landed
            lap("export")
        if "materialize" in steps:
            if sum(report.rows_landed.values()):
                report.rows_materialized = materialize(store).rows
            lap("materialize")
        if "retrain" in steps:
            report.retrained, report.new_events = retrain_reason(settings, stores, datetime.now(UTC))
            if report.retrained:
                report.model_version = _retrain(settings, stores, quiet=quiet, epochs=epochs)
            lap("retrain")
    (settings.data_dir / "refresh").mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "refresh" / "last.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def _retrain(settings: Settings, stores: Stores, *, quiet: bool, epochs: int) -> str:
    from model.checkpoint import checkpoint_path, load_checkpoint
    from model.evaluate.report import evaluate
    from model.train.options import TrainOptions

    options = TrainOptions.from_settings(settings, epochs=epochs, quiet=quiet)
    evaluate(stores, settings.models_dir, settings.data_dir / "reports", protocol="time", options=options,
             feature_source="feast", retrain=True, models=list(SERVED), explicit={"epochs"},
             new_title_boost=settings.new_title_boost)  # fmt: skip
    return load_checkpoint(checkpoint_path(settings.models_dir / "time", "two_tower")).version


def parse_every(value: str | None) -> float | None:
    """``15m`` → 900.0 seconds (s, m, h, d); None stays None."""
    if value is None:
        return None
    match = _EVERY.fullmatch(value.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{value!r}: use a number and a unit, e.g. 30s, 15m, 1h, 1d")
    return float(int(match.group(1)) * _UNIT_S[match.group(2)])


def _print(report: RefreshReport) -> None:
    if report.skipped:
        console.print(f"refresh skipped: {report.skipped}")
        return
    what: list[str] = []
    if report.additions_finished:
        what.append(f"finished {report.additions_finished} added titles")
    landed = sum(report.rows_landed.values())
    what.append(f"landed {landed:,} rows" + (f", materialized {report.rows_materialized:,}" if landed else ""))
    what.append(f"retrained ({report.retrained}): now {report.model_version}" if report.retrained
                else f"no retraining ({report.new_events} new events)")  # fmt: skip
    total = sum(report.seconds.values())
    console.print(f"refresh: {'; '.join(what)} in {total:.1f}s {report.seconds}")


@commands.command("refresh")
def refresh_command(
    every: Annotated[
        str | None,
        typer.Option(metavar="INTERVAL", help="Run again every INTERVAL (30s, 15m, 1h…) in the foreground."),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epoch cap when the policy retrains.")] = 40,
    quiet: Quiet = False,
) -> None:
    """Export new events, materialize, retrain when the policy says so, report; under a lock, so
    two never overlap. Safe to run from cron or a systemd timer."""
    from sources.stores.clients import Stores

    interval = parse_every(every)
    settings = load_settings()
    with Stores.open(settings) as stores:
        while True:
            began = time.monotonic()
            try:
                _print(refresh(settings, stores, quiet=quiet, epochs=epochs))
            except MarqueeError as exc:
                if interval is None:
                    raise
                console.print(f"[red]refresh failed[/]: {exc}")  # the schedule goes on
            if interval is None:
                return
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
