"""``marquee bench features --engine postgres --engine spark``: the offline engines side by side, one run.

For each engine, on the data in the stores: the export of the feature tables (postgres: a full
rebuild of the raw and ``feat_*`` tables from MongoDB and the graph; spark: the Parquet
rebuild of ``sources/export/lake.py`` from the landed raw tables), historical retrieval of the
same ``labels`` (Feast's ``get_historical_features`` through the engine's offline store), a full
materialization into the same PostgreSQL online store (the spark engine on Feast's Spark
compute engine), and the peak resident memory of this process and its children (the Spark JVM
and its Python workers) during each step, sampled from /proc every 0.2 s (Linux only).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from model.data.point_in_time import label_events, training_frame
from sources.export.lake import export_lake
from sources.export.run import export
from sources.feature_store.env import open_feature_store
from sources.feature_store.materialize import apply_repo, earliest_event, materialize
from sources.progress import console

if TYPE_CHECKING:
    from sources.stores.clients import Stores

T = TypeVar("T")


def _tree_rss_bytes(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        rss[int(entry.name)] = int(statm[1]) * page
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


def measured(work: Callable[[], T]) -> tuple[T, float, int]:
    """(result, seconds, peak resident bytes of this process tree) of ``work()``."""
    peak = [_tree_rss_bytes(os.getpid())]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _tree_rss_bytes(os.getpid()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    try:
        result = work()
    finally:
        seconds = time.perf_counter() - began
        done.set()
        sampler.join()
    return result, seconds, peak[0]


def bench_engines(stores: Stores, engines: list[str], *, n_labels: int = 100_000, seed: int = 42) -> dict[str, Any]:
    """Export, historical retrieval and materialization figures per engine, in the order given."""
    labels = label_events(stores)
    sample = labels.sample(n=min(n_labels, len(labels)), random_state=seed, ignore_index=True)
    out: dict[str, Any] = {"labels": len(sample), "ratings": len(labels)}
    for engine in engines:
        target = replace(stores.endpoints.offline, engine=engine)  # type: ignore[arg-type]
        if engine == "spark" and not target.location:
            raise ValueError("the spark engine needs MARQUEE_OFFLINE_URI or a data dir")
        endpoints = replace(stores.endpoints, offline=target)
        figures: dict[str, Any] = {}
        if engine == "postgres":
            report, seconds, peak = measured(partial(export, stores, full=True, quiet=True, offline=target))
            rows = sum(s.rows_read for s in report.sources)
        else:
            lake, seconds, peak = measured(partial(export_lake, stores, target, quiet=True))
            rows = lake.raw_rows
        figures["export"] = {"rows": rows, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds),
                             "peak_rss_mb": peak >> 20}  # fmt: skip
        _said(engine, "export", figures)
        store = open_feature_store(endpoints)
        apply_repo(store)
        views = store.list_feature_views()
        start = min(t for t in (earliest_event(store, v) for v in views) if t is not None)
        mat, seconds, peak = measured(partial(materialize, store, start=start, end=datetime.now(UTC)))
        figures["materialize"] = {"rows": mat.rows, "seconds": round(seconds, 1),
                                  "rows_per_s": round(mat.rows / seconds), "peak_rss_mb": peak >> 20}  # fmt: skip
        _said(engine, "materialize", figures)
        frame, seconds, peak = measured(partial(training_frame, store, sample))
        figures["historical"] = {"labels": len(frame), "seconds": round(seconds, 1),
                                 "labels_per_s": round(len(frame) / seconds), "peak_rss_mb": peak >> 20}  # fmt: skip
        _said(engine, "historical", figures)
        out[engine] = figures
    return out


def _said(engine: str, step: str, figures: dict[str, Any]) -> None:
    """One step's figures as soon as they are taken (a long run stopped later keeps them)."""
    console.print(f"{engine} {step}: " + ", ".join(f"{k} {v:,}" for k, v in figures[step].items()))
