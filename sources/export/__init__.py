"""Offline feature export: MongoDB and the graph → raw tables → feature time series in PostgreSQL.

See ``sources/export/run.py`` for the guarantees and ``sources/feature_tables.py`` for the tables.
"""

from __future__ import annotations

from sources.export.bench import bench_export
from sources.export.run import SOURCES, ExportError, ExportReport, SourceReport, export

__all__ = ["SOURCES", "ExportError", "ExportReport", "SourceReport", "bench_export", "export"]
