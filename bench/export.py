"""Export throughput figures for ``marquee bench export`` (printed, never asserted)."""

from __future__ import annotations

import time
from typing import Any

from sources.export.run import export
from sources.stores.clients import Stores


def bench_export(stores: Stores) -> dict[str, Any]:
    """A full rebuild, then an incremental run with nothing new: rows and rows/s per source."""
    t0 = time.perf_counter()
    full = export(stores, full=True, quiet=True)
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = export(stores, quiet=True)
    again_s = time.perf_counter() - t0
    return {
        "full": {
            s.source: {
                "rows_read": s.rows_read,
                "rows_landed": s.rows_landed,
                "feature_rows": sum(s.feature_rows.values()),
                "seconds": round(s.seconds, 2),
                "rows_per_s": round(s.rows_per_s),
            }
            for s in full.sources
        },
        "full_seconds": round(full_s, 2),
        "incremental_no_change": {
            "rows_landed": sum(again.rows_landed.values()),
            "seconds": round(again_s, 2),
        },
    }
