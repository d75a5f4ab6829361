"""The scale ladder for ``marquee bench scale``: every job at one dataset size, each in its own
process, with wall time, peak RSS and rows/s (printed, never asserted).

Each job runs as ``marquee <job> …`` in a child process, so its peak resident memory is the
child's own (``os.wait4``'s ``ru_maxrss``), not this process's. The growth between two sizes
is the exponent ``log(t2 / t1) / log(n2 / n1)`` (1 = linear). Figures taken on a shared
machine carry its load: compare rows within one run.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: ML-1M's and ML-25M's shapes (users, movies) by ratings; other sizes scale users with ratings.
SHAPES = {1_000_000: (6_040, 3_706), 25_000_095: (162_541, 62_423)}


def shape(ratings: int) -> tuple[int, int]:
    """(users, movies) for ``ratings``: the MovieLens shapes, interpolated in between."""
    if ratings in SHAPES:
        return SHAPES[ratings]
    (r1, (u1, m1)), (r2, (u2, m2)) = sorted(SHAPES.items())
    share = math.log(ratings / r1) / math.log(r2 / r1)
    return round(u1 * (u2 / u1) ** share), round(m1 * (m2 / m1) ** share)


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
    users, movies = shape(ratings)
    out = [
        ("ingest", ["synth", "--users", str(users), "--movies", str(movies), "--ratings", str(ratings), "--quiet"]),
        ("export", ["export", "--quiet"]),
        ("apply", ["apply"]),
        ("materialize", ["materialize"]),
    ]
    out += [(f"train {m}", ["train", "--model", m, "--quiet"]) for m in models]
    out.append(("evaluate", ["evaluate", "--quiet"]))
    return out


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


def exponent(small: JobRun, large: JobRun) -> float | None:
    """Growth of the wall time with the rows between two runs (1 = linear)."""
    if small.seconds <= 0 or large.seconds <= 0 or small.rows == large.rows:
        return None
    return math.log(large.seconds / small.seconds) / math.log(large.rows / small.rows)
