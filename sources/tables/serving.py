"""Tables the API serves from: ranked lists shared by every worker.

``recommendation_lists`` holds one ranked list per (user, exclude_seen): the items as JSON
(movie id, score, rank, explanation), how many were ranked (``first``), the model version that
ranked them and when (``made_at``). ``marquee recommend --all`` fills it in batches, the API
adds the lists it ranks on a miss, every worker reads it before ranking, and a user's rows are
deleted when they change (api/recommendations/shared_lists.py). It survives restarts: a
worker's start-up ranks nothing by itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Index, Integer, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from sources.tables.base import Base


class RecommendationList(Base):
    __tablename__ = "recommendation_lists"
    __table_args__ = (Index("ix_recommendation_lists_made_at", "made_at"),)

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    exclude_seen: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    first: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(Text)
    items: Mapped[list[Any]] = mapped_column(JSONB)
    made_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
