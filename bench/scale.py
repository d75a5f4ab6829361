"""The scale ladder for ``marquee bench scale``: every job at one dataset size, each in its own
process, with wall time, peak RSS and rows/s (printed, never asserted).

Each job runs as ``marquee <job> …`` in a child process, so its peak resident memory is the
child's own (``os.wait4``'s ``ru_maxrss``), not this process's. The serving jobs come last:
``marquee serve`` started in a child (``serve start-up``: until ``/readyz`` answers 200;
``warm-up``: until its background ranking has nothing queued; the peak RSS is the serving
process's, read when it is stopped), then ``marquee recommend --all`` (the shared lists for
every user) and ``marquee bench serve`` (its own server; the wall time includes its start). The growth between two sizes
is the exponent ``log(t2 / t1) / log(n2 / n1)`` (1 = linear). Figures taken on a shared
machine carry its load: compare rows within one run.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.serve import free_port
from sources.datasets.synth import movielens_shape


@dataclass
class JobRun:
    job: str
    seconds: float
    peak_rss_mb: float
    rows: int
    exit_code: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def jobs(ratings: int, models: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """The ladder's jobs in order, as ``marquee`` argument lists."""
    users, movies = movielens_shape(ratings)
    out = [
        ("ingest", ["synth", "--users", str(users), "--movies", str(movies), "--ratings", str(ratings), "--quiet"]),
        ("export", ["export", "--quiet"]),
        ("apply", ["apply"]),
        ("materialize", ["materialize"]),
    ]
    out += [(f"train {m}", ["train", "--model", m, "--quiet"]) for m in models]
    out.append(("evaluate", ["evaluate", "--models", ",".join(models), "--quiet"]))
    return out


#: After ``serve start-up`` and ``warm-up`` (run_serve): the shared lists, then the HTTP bench.
AFTER_SERVE = [
    ("recommend --all", ["recommend", "--all", "--quiet"]),
    ("bench serve", ["bench", "serve", "--seconds", "3", "--concurrency", "8", "--data-floor-calls", "50"]),
]


def run_job(name: str, args: list[str], ratings: int, log: Path) -> JobRun:
    """``marquee ARGS`` in a child process (the same interpreter and environment)."""
    started = time.perf_counter()
    with log.open("ab") as out:
        out.write(f"\n== {name}: marquee {' '.join(args)}\n".encode())
        out.flush()
        child = subprocess.Popen([sys.executable, "-m", "cli.main", *args], stdout=out, stderr=out)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return JobRun(name, time.perf_counter() - started, usage.ru_maxrss / 1024, ratings, child.returncode)


def run_serve(ratings: int, log: Path, *, timeout_s: float = 3600.0) -> list[JobRun]:
    """``marquee serve`` in a child: ``serve start-up`` (seconds until ``/readyz`` is 200) and
    ``warm-up`` (seconds more until the background ranking has nothing queued). Both carry the
    serving process's peak RSS, read from ``os.wait4`` once it is stopped (SIGTERM, graceful).
    A server that exits or misses ``timeout_s`` gives a failed row (exit code 1 if it was alive)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with log.open("ab") as out:
        out.write(f"\n== serve start-up: marquee serve --port {port}\n".encode())
        out.flush()
        command = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
        child = subprocess.Popen(command, stdout=out, stderr=out)
    marks: list[float] = []
    while child.poll() is None and time.perf_counter() - started < timeout_s and len(marks) < 2:
        try:
            response = httpx.get(f"{base}/readyz", timeout=5)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            if not marks:
                marks.append(time.perf_counter())
            background = response.json().get("serving", {}).get("recommendation_cache", {}).get("background")
            if background is None or background.get("queued") == 0:
                marks.append(time.perf_counter())
        time.sleep(0.5)
    alive = child.poll() is None
    if alive:
        child.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(child.pid, 0)
    failed = 0 if alive else os.waitstatus_to_exitcode(status) or 1  # it must not stop on its own
    rss = usage.ru_maxrss / 1024
    now = time.perf_counter()
    ready = JobRun("serve start-up", (marks[0] if marks else now) - started, rss, ratings, 0 if marks else failed or 1)
    warm = JobRun("warm-up", marks[1] - marks[0] if len(marks) == 2 else 0.0, rss, ratings,
                  0 if len(marks) == 2 else failed or 1)  # fmt: skip
    return [ready, warm]


def exponent(small: JobRun, large: JobRun) -> float | None:
    """Growth of the wall time with the rows between two runs (1 = linear)."""
    if small.seconds <= 0 or large.seconds <= 0 or small.rows == large.rows:
        return None
    return math.log(large.seconds / small.seconds) / math.log(large.rows / small.rows)
