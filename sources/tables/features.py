"""Offline feature tables (Feast's PostgreSQL offline store) and the raw tables they are computed from.

``marquee export`` (``sources/export/``) lands raw events from MongoDB and the graph in the
``raw_*`` tables, then recomputes the ``feat_*`` time series in SQL. Every ``feat_*`` row holds
an entity key, ``event_timestamp`` (the event that changed the features) and
``created_timestamp`` (when the export wrote the row); its values are as of that event
time, every event at that time included. Events of one entity that share a timestamp
make one row, so (entity, event_timestamp) is the primary key: the index Feast's
point-in-time joins use, and no two rows for one instant to choose between.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Double, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from sources.tables.base import Base

# --- raw events landed from the systems of record (idempotent: ON CONFLICT DO NOTHING) ---


class RawReview(Base):
    """One Mongo ``reviews`` document."""

    __tablename__ = "raw_reviews"
    __table_args__ = (
        Index("ix_raw_reviews_user_ts", "user_id", "ts"),
        Index("ix_raw_reviews_movie_ts", "movie_id", "ts"),
        Index("ix_raw_reviews_ts", "ts"),  # the trend prior: newest review, last days (api/queries/reads.py)
    )

    review_id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    movie_id: Mapped[int] = mapped_column(Integer)
    rating: Mapped[float] = mapped_column(Double)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RawPlaybackSession(Base):
    """One session from a Mongo ``playback_logs`` document's ``sessions`` array."""

    __tablename__ = "raw_playback_sessions"
    __table_args__ = (Index("ix_raw_playback_sessions_user_ts", "user_id", "ts"),)

    session_id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    movie_id: Mapped[int] = mapped_column(Integer)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float] = mapped_column(Double)
    device: Mapped[str] = mapped_column(String(16))
    buffer_rate: Mapped[float] = mapped_column(Double)
    errors: Mapped[int] = mapped_column(Integer)


class RawGraphEdge(Base):
    """One timestamped user→movie edge of the graph (``RATED`` or ``WATCHED``)."""

    __tablename__ = "raw_graph_edges"
    __table_args__ = (
        Index("ix_raw_graph_edges_user_kind_ts", "user_id", "kind", "ts"),
        Index("ix_raw_graph_edges_movie_kind_ts", "movie_id", "kind", "ts"),
    )

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    movie_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    value: Mapped[float | None] = mapped_column(Double)  # RATED score or WATCHED duration


class ExportWatermark(Base):
    """How far each source has been exported (event time), moved in the same transaction as its rows."""

    __tablename__ = "export_watermarks"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    watermark: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rows: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # The ingest run whose data was exported: a new load of the stores forces a full rebuild.
    ingest_run_id: Mapped[int | None] = mapped_column(Integer)
    # For sources without event time (the static graph): a digest of what was exported.
    digest: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- feature time series (Feast offline store) ---


class FeatUserPlayback(Base):
    """Per user, at each instant with a playback session: running stats over all sessions so far."""

    __tablename__ = "feat_user_playback"
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    created_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    session_count: Mapped[int] = mapped_column(Integer)
    mean_duration_s: Mapped[float] = mapped_column(Double)
    total_duration_s: Mapped[float] = mapped_column(Double)
    mean_buffer_rate: Mapped[float] = mapped_column(Double)
    share_tv: Mapped[float] = mapped_column(Double)
    share_mobile: Mapped[float] = mapped_column(Double)
    share_desktop: Mapped[float] = mapped_column(Double)
    share_tablet: Mapped[float] = mapped_column(Double)
    # The user's last 5 session durations, oldest first, left-padded with 0 (the LSTM input).
    last5_durations: Mapped[list[float]] = mapped_column(ARRAY(Double))


class FeatUserReviews(Base):
    """Per user, at each instant with a review. ``days_since_previous``: days since the user's
    latest earlier review instant (0 for the first)."""

    __tablename__ = "feat_user_reviews"
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    created_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    review_count: Mapped[int] = mapped_column(Integer)
    mean_rating: Mapped[float] = mapped_column(Double)
    days_since_previous: Mapped[float] = mapped_column(Double)


class FeatMovieReviews(Base):
    """Per movie, at each instant with a review (as ``feat_user_reviews``)."""

    __tablename__ = "feat_movie_reviews"
    movie_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    created_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    review_count: Mapped[int] = mapped_column(Integer)
    mean_rating: Mapped[float] = mapped_column(Double)
    days_since_previous: Mapped[float] = mapped_column(Double)


class FeatUserGraph(Base):
    """Per user, at each instant with a WATCHED edge; followers/following are static (FOLLOWS)."""

    __tablename__ = "feat_user_graph"
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    created_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    followers: Mapped[int] = mapped_column(Integer)
    following: Mapped[int] = mapped_column(Integer)
    watched_count: Mapped[int] = mapped_column(Integer)


class FeatMovieGraph(Base):
    """Per movie, at each instant with a RATED or WATCHED edge on it, plus one a second before
    ``movies.added_at``. Degrees count edges up to then; the rest is static (credits, genres,
    pagerank over Person–Movie and Movie–Genre edges, summing to 1 over that graph)."""

    __tablename__ = "feat_movie_graph"
    movie_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    created_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rated_degree: Mapped[int] = mapped_column(Integer)
    watched_degree: Mapped[int] = mapped_column(Integer)
    genre_count: Mapped[int] = mapped_column(Integer)
    people_count: Mapped[int] = mapped_column(Integer)
    actor_count: Mapped[int] = mapped_column(Integer)
    director_count: Mapped[int] = mapped_column(Integer)
    pagerank: Mapped[float] = mapped_column(Double)


class FeatMovieNeighbours(Base):
    """Per movie, one row at ``movies.added_at``: the top 20 movies sharing people (1 each) or
    genres (0.1 each), best first, ties to the lower id."""

    __tablename__ = "feat_movie_neighbours"
    movie_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    created_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    neighbour_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    neighbour_scores: Mapped[list[float]] = mapped_column(ARRAY(Double))


# Static graph facts (no timestamp) the movie/user graph features read at every event.
class GraphMovieStatic(Base):
    """Per-movie counts over the static part of the graph (credits, genres) and its pagerank."""

    __tablename__ = "raw_graph_movie_static"

    movie_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    genre_count: Mapped[int] = mapped_column(Integer)
    people_count: Mapped[int] = mapped_column(Integer)
    actor_count: Mapped[int] = mapped_column(Integer)
    director_count: Mapped[int] = mapped_column(Integer)
    pagerank: Mapped[float] = mapped_column(Double)


class GraphUserStatic(Base):
    """Per-user FOLLOWS degrees (the FOLLOWS edges carry no time)."""

    __tablename__ = "raw_graph_user_static"

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    followers: Mapped[int] = mapped_column(Integer)
    following: Mapped[int] = mapped_column(Integer)
