"""Marquee's feature definitions: entities → sources → feature views → on-demand view → services.

Sources are PostgreSQL tables and queries, or with the spark engine the same tables as
Parquet files (``SparkSource``); the views and services are the same for both. The
``feat_*`` tables are time series written by ``marquee export`` (sources/tables/features.py):
one row per event that changed an entity's features, valued as of that event, that event
included. The profile, embedding and catalogue sources are queries over the
systems-of-record tables themselves (sources/feature_store/profiles.py).

TTLs: every view uses ``ttl=timedelta(0)`` (unlimited lookback). The values are cumulative
"as of the latest event" facts (counts, means, profiles) that stay true until the next
event; MovieLens-100K's events end in April 1998, so any finite TTL shorter than the data's
age would make today's serving reads and late training labels come back empty, and a TTL
that long would be no TTL at all.

Feature names repeat across views (``review_count`` for users and movies), so read them with
``full_feature_names=True``: columns come back as ``<view>__<feature>``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, ValueType
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float32, Float64, Int32, Int64, String

from sources.feature_store import profiles

UNLIMITED = timedelta(0)

# The offline engine (MARQUEE_OFFLINE_ENGINE): open_feature_store sets these two variables
# (sources/feature_store/env.py) before Feast or `marquee apply` reads this file.
ENGINE = os.environ.get("MARQUEE_FEAST_OFFLINE_ENGINE", "postgres")
LOCATION = os.environ.get("MARQUEE_FEAST_OFFLINE_LOCATION", "")

# --- entities ---------------------------------------------------------------------------

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A MovieLens user")
movie = Entity(name="movie", join_keys=["movie_id"], value_type=ValueType.INT64, description="A catalogue movie")

# --- sources ------------------------------------------------------------------------------
# postgres: the feat_* tables and queries over the systems-of-record tables, in PostgreSQL.
# spark: the same tables as partitioned Parquet under LOCATION, written by `marquee export`
# from the same definitions (sources/export/lake.py); the query sources' rows are written
# there under the view's name.


def _source(name: str, *, table: str | None = None, query: str | None = None) -> DataSource:
    if ENGINE == "spark":
        return SparkSource(
            name=name,
            path=f"{LOCATION}/{table or name.removesuffix('_source')}",
            file_format="parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        )
    return PostgreSQLSource(
        name=name,
        table=table,
        query=query,
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
    )


# Feature time series from `marquee export`.
feat_user_playback = _source("feat_user_playback", table="feat_user_playback")
feat_user_reviews = _source("feat_user_reviews", table="feat_user_reviews")
feat_movie_reviews = _source("feat_movie_reviews", table="feat_movie_reviews")
feat_user_graph = _source("feat_user_graph", table="feat_user_graph")
feat_movie_graph = _source("feat_movie_graph", table="feat_movie_graph")
feat_movie_neighbours = _source("feat_movie_neighbours", table="feat_movie_neighbours")

# Queries over the systems of record (sources/feature_store/profiles.py says what each holds).
user_profile_source = _source("user_profile_source", query=profiles.USER_PROFILE)
movie_profile_source = _source("movie_profile_source", query=profiles.MOVIE_PROFILE)
movie_embedding_source = _source("movie_embedding_source", query=profiles.MOVIE_EMBEDDING)

# --- feature views ----------------------------------------------------------------------

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=UNLIMITED,
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="age", dtype=Int32),
        Field(name="gender", dtype=String),
        Field(name="occupation", dtype=String),
        Field(name="city", dtype=String),
        Field(name="tier", dtype=String),
        Field(name="monthly_price", dtype=Float64),
    ],
    source=user_profile_source,
    description="Demographics and subscription plan (PostgreSQL users ⨝ subscriptions ⨝ tiers).",
)

user_playback = FeatureView(
    name="user_playback",
    entities=[user],
    ttl=UNLIMITED,
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="session_count", dtype=Int32),
        Field(name="mean_duration_s", dtype=Float64),
        Field(name="total_duration_s", dtype=Float64),
        Field(name="mean_buffer_rate", dtype=Float64),
        Field(name="share_tv", dtype=Float64),
        Field(name="share_mobile", dtype=Float64),
        Field(name="share_desktop", dtype=Float64),
        Field(name="share_tablet", dtype=Float64),
        Field(name="last5_durations", dtype=Array(Float64)),
    ],
    source=feat_user_playback,
    description="Playback sessions so far (MongoDB playback_logs): volume, devices, last 5 durations.",
)

user_reviews = FeatureView(
    name="user_reviews",
    entities=[user],
    ttl=UNLIMITED,
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="review_count", dtype=Int32),
        Field(name="mean_rating", dtype=Float64),
        Field(name="days_since_previous", dtype=Float64),
    ],
    source=feat_user_reviews,
    description="The user's reviews so far (MongoDB reviews).",
)

user_graph = FeatureView(
    name="user_graph",
    entities=[user],
    ttl=UNLIMITED,
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="followers", dtype=Int32),
        Field(name="following", dtype=Int32),
        Field(name="watched_count", dtype=Int32),
    ],
    source=feat_user_graph,
    description="The user's place in the graph (FOLLOWS degrees, WATCHED edges so far).",
)

movie_profile = FeatureView(
    name="movie_profile",
    entities=[movie],
    ttl=UNLIMITED,
    schema=[
        Field(name="movie_id", dtype=Int64),
        Field(name="year", dtype=Int32),
        Field(name="genres", dtype=String),
        Field(name="genre_multi_hot", dtype=Array(Int32)),
    ],
    source=movie_profile_source,
    description="Release year and genres (PostgreSQL movies, movie_genres).",
)

movie_embedding = FeatureView(
    name="movie_embedding",
    entities=[movie],
    ttl=UNLIMITED,
    schema=[
        Field(name="movie_id", dtype=Int64),
        Field(name="title_embedding", dtype=Array(Float32)),
    ],
    source=movie_embedding_source,
    description="all-MiniLM-L6-v2 embedding of the title and metadata text (384 floats).",
)

movie_reviews = FeatureView(
    name="movie_reviews",
    entities=[movie],
    ttl=UNLIMITED,
    schema=[
        Field(name="movie_id", dtype=Int64),
        Field(name="review_count", dtype=Int32),
        Field(name="mean_rating", dtype=Float64),
        Field(name="days_since_previous", dtype=Float64),
    ],
    source=feat_movie_reviews,
    description="The movie's reviews so far (MongoDB reviews).",
)

movie_graph = FeatureView(
    name="movie_graph",
    entities=[movie],
    ttl=UNLIMITED,
    schema=[
        Field(name="movie_id", dtype=Int64),
        Field(name="rated_degree", dtype=Int32),
        Field(name="watched_degree", dtype=Int32),
        Field(name="genre_count", dtype=Int32),
        Field(name="people_count", dtype=Int32),
        Field(name="actor_count", dtype=Int32),
        Field(name="director_count", dtype=Int32),
        Field(name="pagerank", dtype=Float64),
    ],
    source=feat_movie_graph,
    description="The movie's place in the graph (degrees so far, credits, genres, pagerank).",
)

movie_neighbours = FeatureView(
    name="movie_neighbours",
    entities=[movie],
    ttl=UNLIMITED,
    schema=[
        Field(name="movie_id", dtype=Int64),
        Field(name="neighbour_ids", dtype=Array(Int32)),
        Field(name="neighbour_scores", dtype=Array(Float64)),
    ],
    source=feat_movie_neighbours,
    description="Most similar movies (serving: 'more like this' candidates).",
)

# --- on-demand feature view ---------------------------------------------------------------

# Baseline predictor b_ui = mu + b_u + b_i (Koren 2008) from the two review views, computed at
# request time for the (user, movie) pair: mu = 3.53 (MovieLens' long-run mean rating), each
# bias shrunk toward 0 by a pseudo-count of 10 reviews (few reviews, little trust); a user or
# movie with no reviews yet contributes 0. The numbers are literals inside the function
# because Feast serializes the function alone into the registry.


@on_demand_feature_view(
    sources=[user_reviews, movie_reviews],
    schema=[
        Field(name="user_bias", dtype=Float64),
        Field(name="movie_bias", dtype=Float64),
        Field(name="baseline_rating", dtype=Float64),
        Field(name="baseline_engagement", dtype=Float64),
    ],
    mode="pandas",
    description="The user's and the movie's shrunk rating biases and the rating they predict "
    "for this pair (engagement = (rating - 1) / 4).",
)
def user_movie_affinity(inputs: pd.DataFrame) -> pd.DataFrame:
    # numpy on whole columns, not pandas operations: this runs on every recommendation request,
    # where each pandas call costs ~0.1 ms and numpy's a few microseconds.
    import numpy as np

    def bias(count: pd.Series, mean: pd.Series) -> np.ndarray:
        n = np.nan_to_num(count.to_numpy(dtype="float64", na_value=np.nan))
        shrunk: np.ndarray = np.nan_to_num(n * (mean.to_numpy(dtype="float64", na_value=np.nan) - 3.53) / (n + 10.0))
        return shrunk

    user_bias = bias(inputs["user_reviews__review_count"], inputs["user_reviews__mean_rating"])
    movie_bias = bias(inputs["movie_reviews__review_count"], inputs["movie_reviews__mean_rating"])
    rating = np.clip(3.53 + user_bias + movie_bias, 1.0, 5.0)
    columns = {"user_bias": user_bias, "movie_bias": movie_bias, "baseline_rating": rating}
    return pd.DataFrame({**columns, "baseline_engagement": (rating - 1.0) / 4.0}, index=inputs.index)


# --- feature services ---------------------------------------------------------------------

# What the engagement model is trained on; every feature is read as of the label's time.
engagement_training_v1 = FeatureService(
    name="engagement_training_v1",
    features=[
        user_profile,
        user_playback,
        user_reviews,
        user_graph,
        movie_profile,
        movie_embedding,
        movie_reviews,
        movie_graph,
        user_movie_affinity,
    ],
    description="Point-in-time training features of the multimodal engagement model.",
)

# What the API reads online to score a (user, movie) pair: the same features as training,
# plus the movie's neighbours for "more like this" candidates.
engagement_serving_v1 = FeatureService(
    name="engagement_serving_v1",
    features=[
        user_profile,
        user_playback,
        user_reviews,
        user_graph,
        movie_profile,
        movie_embedding,
        movie_reviews,
        movie_graph,
        user_movie_affinity,
        movie_neighbours,
    ],
    description="Online features of the engagement model, plus movie neighbours for candidates.",
)
