"""Feast's configuration from Marquee's: environment variables for ``feature_repo/feature_store.yaml``.

``feature_store.yaml`` holds ``${MARQUEE_FEAST_*}`` placeholders that Feast expands with
``os.path.expandvars`` when it loads the repo. ``feast_environment`` derives them from the
resolved PostgreSQL endpoint (the embedded server's Unix socket or an external DSN), so the
``feast`` CLI, ``marquee apply/materialize`` and the API all reach the same database.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import make_url

from sources.errors import MarqueeError
from sources.stores.clients import Endpoints

if TYPE_CHECKING:
    from feast import FeatureStore

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"
#: Feast's SQL registry lives in its own schema of Marquee's database (see feature_store.yaml).
REGISTRY_SCHEMA = "feast_registry"
#: the Feast project of the spark engine (the YAML's ``marquee`` is the postgres engine's)
SPARK_PROJECT = "marquee_spark"


class FeastConfigError(MarqueeError):
    """The PostgreSQL endpoint cannot be expressed as Feast configuration."""


def feast_environment(endpoints: Endpoints) -> dict[str, str]:
    """The ``MARQUEE_FEAST_*`` variables ``feature_store.yaml`` expands, from ``endpoints.pg_dsn``.

    A libpq URI whose ``host`` query parameter names a socket directory (the embedded
    server: ``postgresql://postgres:@/postgres?host=/data/pg``) gives ``host`` = that
    directory; libpq connects through ``<dir>/.s.PGSQL.<port>``. Missing parts take libpq's
    defaults (port 5432, database = user). ``sslmode`` defaults to ``prefer`` (libpq's
    default; Feast's own default, ``require``, would refuse a plain TCP server).
    """
    try:
        params = conninfo_to_dict(endpoints.pg_dsn)
    except psycopg.ProgrammingError as exc:
        raise FeastConfigError(f"the PostgreSQL DSN cannot be parsed for Feast: {exc}") from exc
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    if "," in host:
        raise FeastConfigError("Feast's PostgreSQL stores take one host; the DSN names several")
    user = str(params.get("user") or os.environ.get("PGUSER") or "postgres")
    env = {
        "MARQUEE_FEAST_PG_HOST": host,
        "MARQUEE_FEAST_PG_PORT": str(params.get("port") or 5432),
        "MARQUEE_FEAST_PG_DB": str(params.get("dbname") or user),
        "MARQUEE_FEAST_PG_USER": user,
        "MARQUEE_FEAST_PG_PASSWORD": str(params.get("password") or ""),
        "MARQUEE_FEAST_PG_SSLMODE": str(params.get("sslmode") or "prefer"),
        "MARQUEE_FEAST_REGISTRY_URL": registry_url(endpoints),
        # read by feature_repo/definitions.py: which sources to declare, and where the Parquet lives
        "MARQUEE_FEAST_OFFLINE_ENGINE": endpoints.offline.engine,
        "MARQUEE_FEAST_OFFLINE_LOCATION": endpoints.offline.location,
    }
    for name, value in env.items():
        # The YAML single-quotes each value: a quote or a line break would break the file.
        if "'" in value or "\n" in value:
            raise FeastConfigError(f"{name} cannot contain a single quote or a line break for Feast's YAML")
    return env


def registry_url(endpoints: Endpoints) -> str:
    """SQLAlchemy URL of the SQL registry: Marquee's database, search_path = feast_registry."""
    url = make_url(endpoints.sqlalchemy_url)
    options = f"{url.query['options']} " if "options" in url.query else ""
    url = url.update_query_dict({"options": f"{options}-csearch_path={REGISTRY_SCHEMA}"})
    return url.render_as_string(hide_password=False)


def ensure_registry_schema(endpoints: Endpoints) -> None:
    """Create the registry's schema (Feast creates its tables in it, but not the schema)."""
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {REGISTRY_SCHEMA}")


def open_feature_store(endpoints: Endpoints, *, offline_store_type: str | None = None) -> FeatureStore:
    """A FeatureStore over ``feature_repo/`` talking to Marquee's PostgreSQL.

    Sets the ``MARQUEE_FEAST_*`` variables in this process's environment (Feast reads the
    YAML, and re-reads it in places, through ``os.environ``). ``offline_store_type`` replaces
    the YAML's offline store type (``"postgres"``: Feast's stock join, for comparisons).

    With ``endpoints.offline.engine == "spark"`` the offline store is Feast's Spark store and
    materialization runs on Feast's Spark compute engine (``spark.engine``), both with
    ``sources.feature_store.spark.spark_conf``; the registry and the online store stay in
    PostgreSQL, under the project ``marquee_spark`` (``SPARK_PROJECT``), so the two engines'
    registrations and online tables never overwrite each other in one database.
    """
    import yaml
    from feast import FeatureStore, RepoConfig

    # Our one on-demand view is a row-wise arithmetic; Feast warns about every on-demand view.
    warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
    warnings.filterwarnings("ignore", message="The spark .* is an experimental feature")
    os.environ.update(feast_environment(endpoints))
    ensure_registry_schema(endpoints)
    spark = endpoints.offline.engine == "spark"
    if offline_store_type is None and not spark:
        return FeatureStore(repo_path=str(FEATURE_REPO))
    raw = yaml.safe_load(os.path.expandvars((FEATURE_REPO / "feature_store.yaml").read_text()))
    if spark:
        from sources.feature_store.spark import spark_conf, spark_session

        spark_session(endpoints.offline)  # started here with Marquee's settings; Feast reuses it
        conf = spark_conf(endpoints.offline)
        raw["project"] = SPARK_PROJECT
        raw["offline_store"] = {"type": "spark", "spark_conf": conf}
        raw["batch_engine"] = {"type": "spark.engine", "spark_conf": conf}
    if offline_store_type is not None:
        raw["offline_store"]["type"] = offline_store_type
    config = RepoConfig(**raw)
    config.repo_path = FEATURE_REPO
    return FeatureStore(config=config)
