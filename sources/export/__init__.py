"""Offline feature export: MongoDB and the graph → raw tables → feature time series in PostgreSQL.

See ``sources/export/run.py`` for the guarantees and ``sources/tables/features.py`` for the tables.
"""
