"""One settings object for Marquee, read once from the environment (prefix ``MARQUEE_``).

Where a store URI is unset, ``marquee`` starts the embedded server for that store under
``data_dir``; a set URI replaces the embedded server and nothing else changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GRAPH_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc", "falkordb")


OfflineEngine = Literal["postgres", "spark"]


@dataclass(frozen=True)
class OfflineTarget:
    """The offline feature engine and, for ``spark``, where its tables live and which Spark runs the jobs."""

    engine: OfflineEngine = "postgres"
    location: str = ""  # folder or URI of the Parquet tables (spark only)
    spark_master: str = "local[2]"
    spark_conf: tuple[tuple[str, str], ...] = ()  # (key, value) pairs: hashable, like Endpoints


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "marquee"


def redact(uri: str) -> str:
    """The URI with any password replaced by ``***`` (safe to print or log)."""
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[1]}"))


class Settings(BaseSettings):
    """Everything configurable about Marquee. Build it once at start and pass it down."""

    model_config = SettingsConfigDict(env_prefix="MARQUEE_", env_file=None, extra="ignore")

    pg_dsn: SecretStr | None = Field(
        default=None, description="PostgreSQL (with pgvector) DSN; unset = embedded PostgreSQL 18"
    )
    mongo_uri: SecretStr | None = Field(
        default=None, description="MongoDB URI; unset = embedded wire-protocol server (nx-27017)"
    )
    graph_uri: SecretStr | None = Field(
        default=None,
        description="bolt://, neo4j:// (Neo4j driver) or falkordb:// URI; unset = embedded FalkorDB",
    )
    data_dir: Path = Field(default_factory=default_data_dir, description="embedded stores, models")
    mongo_db: str = "marquee"
    graph_name: str = Field(
        default="falkordb",
        description="graph (FalkorDB) or database (Neo4j) name; FalkorDB's Bolt port serves "
        "only the graph named 'falkordb', so keep the default with the embedded store",
    )
    connect_timeout_s: float = 5.0
    store_cooldown_s: float = Field(
        default=2.0,
        gt=0,
        description="after a store fails to answer, the API's calls to it fail at once for this long, "
        "then one background ping probes it (circuit breaker, sources/stores/failures.py)",
    )
    graph_timeout_s: float = Field(default=60.0, description="longest one graph call may take (bulk loads)")
    seed: int = 42
    train_budget_s: float = Field(
        default=1800.0,
        ge=0,
        description="longest a model's training may run (marquee up/train/evaluate): it stops, keeping "
        "the best epoch so far, with a message saying so; 0 = no budget",
    )
    train_window_days: int = Field(
        default=0,
        ge=0,
        description="train and evaluate on the last this many days of reviews only (counted from the "
        "newest review); 0 = all of history",
    )
    ease_max_movies: int = Field(
        default=12_000,
        ge=0,
        description="EASE learns its item-item matrix over the this many most-rated movies (the rest rank "
        "below them by popularity): the matrix is movies², 15.6 GB in float32 at ML-25M's 62,423; "
        "0 = every movie",
    )
    engagement_max_labels: int = Field(
        default=2_500_000,
        ge=0,
        description="the engagement net's training frame takes ~1.9 KB a label (rating) at its peak: past "
        "this many, training and evaluating it stop at once and name the MARQUEE_TRAIN_WINDOW_DAYS that "
        "fits; 0 = no limit",
    )
    hnsw_ef_search: int = Field(
        default=48,
        ge=1,
        le=1000,
        description="pgvector hnsw.ef_search for every PostgreSQL session (similar, searchMovies): "
        "higher finds more of the exact nearest titles, slower; `marquee bench search` measures it",
    )
    search_index: Literal["memory", "pgvector"] = Field(
        default="memory",
        description="where similar and searchMovies search the title embeddings: 'memory', an index each "
        "API process loads from PostgreSQL at start and refreshes with added titles (api/title_index.py); "
        "'pgvector', PostgreSQL's HNSW index, one round trip a search",
    )
    api_keys: list[str] = Field(default_factory=list)
    graphiql: bool = Field(default=True, description="serve the GraphiQL IDE at /graphql (GET from a browser)")
    introspection: bool = Field(default=True, description="answer GraphQL introspection queries")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser origins (e.g. https://app.example.com) allowed to call /graphql cross-site; "
        "empty = CORS closed (no Access-Control-Allow-Origin)",
    )
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="longest one GraphQL request may run; store calls past it fail with TIMEOUT (api/bounds.py)",
    )
    max_response_bytes: int = Field(
        default=10_000_000, ge=1_000, description="largest GraphQL response body; larger ones become an error"
    )
    client_cost_per_s: float = Field(
        default=0.0,
        ge=0,
        description="query cost each client's budget refills by per second, up to MARQUEE_QUERY_MAX_COST; "
        "a client in debt gets 429 (api/fairness.py); 0 turns the budgets off",
    )
    query_max_cost: int = Field(
        default=20_000,
        ge=1,
        description="largest cost a GraphQL query may have (api/cost.py: each field's cost, multiplied by "
        "the page sizes above it); costlier queries are refused with QUERY_TOO_COMPLEX before they run",
    )
    recommendation_cache_s: float = Field(
        default=60.0,
        ge=0,
        description="how long a user's ranked list is reused (forgotten at once when the user rates or "
        "plays through the API); 0 ranks every request",
    )
    recommendation_warm_users: int = Field(
        default=0,
        ge=0,
        description="users whose lists each worker looks up in the shared lists, or ranks, in the background "
        "at start (the first this many the retriever knows); 0 = none: lists come from "
        "`marquee recommend --all` and from requests, shared by every worker",
    )
    recommendation_lists_s: float = Field(
        default=86_400.0,
        ge=0,
        description="how long a list in the shared recommendation_lists table (filled by `marquee recommend "
        "--all` and by requests) is served by every worker; a user's lists go when they change, all lists "
        "when the model changes; 0 = no shared lists",
    )
    heavy_lane: bool = Field(
        default=True,
        description="the served app forwards expensive operations (cost >= 1,000) to a second process at a "
        "lower CPU priority, so they cannot stall light queries (api/lane.py); false runs them in-process",
    )
    heavy_lane_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="how much lower the heavy lane's CPU priority is than the front process's (nice)",
    )
    loaded_ratings_cache_s: float = Field(
        default=60.0,
        ge=0,
        description="how long a user's loaded ratings (the graph's RATED edges) are reused for ranking; "
        "ratings made through the API count at once, a new load within this time",
    )
    model_reload_s: float = Field(
        default=5.0,
        ge=0,
        description="how often the API looks for a new checkpoint and swaps it in without a restart "
        "(modelVersion names the one answering); 0 = never",
    )
    new_title_boost: float = Field(
        default=3.0,
        ge=0,
        description="how far the served ranking lifts a title new to the model (fewer than 5 training events, "
        "or added since) for each unit of its recent popularity (model/serve/trend.py); a policy, used when "
        "`marquee evaluate` (time protocol) sets up the trend prior; 0 = new titles only by their scores",
    )
    refresh_min_new_events: int = Field(
        default=1000,
        ge=1,
        description="`marquee refresh` retrains when at least this many events arrived since the "
        "served checkpoint's data snapshot",
    )
    refresh_max_age_h: float = Field(
        default=24.0,
        gt=0,
        description="`marquee refresh` also retrains when the served checkpoint is older than this and "
        "any event arrived since",
    )

    tracking: bool = Field(
        default=True,
        description="record every `marquee train` and `marquee evaluate` run in MLflow (MLFLOW_TRACKING_URI, "
        "else SQLite under <data dir>/mlflow; model/tracking.py); false records nothing",
    )

    write_ack: Literal["durable", "pushed"] = Field(
        default="durable",
        description="when rateMovie/recordPlayback answer: 'durable' once the mutation is logged in Mongo "
        "(its event, raw rows, features and kept lists follow within about a second, pushed in groups by "
        "api/write_pusher.py); 'pushed' after its group was pushed (read-your-writes, fewer writes per second)",
    )
    write_batch: int = Field(
        default=256, ge=1, description="most mutations the background pusher writes and pushes as one group"
    )
    write_linger_ms: int = Field(
        default=400,
        ge=0,
        le=1000,
        description="how long the background pusher lets a group gather after its first mutation before pushing it "
        "(unless write_batch fill it sooner): larger groups cost fewer statements per mutation, so the API "
        "acknowledges more per second; a mutation's features follow by up to this much later",
    )

    offline_engine: OfflineEngine = Field(
        default="postgres",
        description="where the offline features live and are joined: postgres (the feat_* tables, embedded "
        "default) or spark (partitioned Parquet under MARQUEE_OFFLINE_URI, Feast's Spark offline store "
        "and compute engine; needs the `spark` extra and Java 17)",
    )
    offline_uri: str | None = Field(
        default=None,
        description="with the spark engine: the folder or URI (file://, s3a://, hdfs://) the Parquet feature "
        "tables are written under; unset = <data dir>/offline",
    )
    spark_master: str = Field(
        default="local[2]", description="Spark master for the spark engine: local[N], spark://host:7077, yarn, k8s://…"
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description='extra Spark settings as JSON, e.g. {"spark.executor.memory": "8g"} (object storage '
        "credentials, shuffle partitions); applied to export, retrieval and materialization alike",
    )

    @field_validator("graph_uri")
    @classmethod
    def _known_graph_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in GRAPH_SCHEMES:
                raise ValueError(f"MARQUEE_GRAPH_URI scheme {scheme!r} is not one of {', '.join(GRAPH_SCHEMES)}")
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def offline_location(self) -> str:
        """Where the spark engine's Parquet tables live: ``offline_uri``, else ``<data dir>/offline``."""
        return (self.offline_uri or str(self.data_dir / "offline")).rstrip("/")

    @property
    def offline_target(self) -> OfflineTarget:
        return OfflineTarget(
            self.offline_engine, self.offline_location, self.spark_master, tuple(sorted(self.spark_conf.items()))
        )
