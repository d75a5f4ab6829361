"""The engagement frame's size limit: refused before any work, with the window that fits."""

from __future__ import annotations

import re

import numpy as np
import pytest

from model.data.engagement_frame import check_frame_size
from model.data.interactions import Interactions
from model.train.options import TrainOptions
from sources.errors import MarqueeError
from sources.settings import Settings

DAY = 86_400


def spread(n: int, days: int) -> Interactions:
    """``n`` ratings evenly over ``days`` days, shuffled (the check may not rely on order)."""
    ts = np.random.default_rng(0).permutation(np.linspace(0, days * DAY, n).astype(np.int64))
    ids = np.arange(n, dtype=np.int64)
    return Interactions(ids % 50, ids % 70, np.full(n, 4.0, np.float32), ts, np.arange(50), np.arange(70))


def test_a_frame_past_the_limit_is_refused_with_the_window_that_fits() -> None:
    data = spread(10_000, days=1_000)
    with pytest.raises(MarqueeError, match="MARQUEE_ENGAGEMENT_MAX_LABELS") as refused:
        check_frame_size(data, 2_500)
    days = int(re.search(r"MARQUEE_TRAIN_WINDOW_DAYS=(\d+)", str(refused.value)).group(1))  # type: ignore[union-attr]
    held = int((data.ts >= data.ts.max() - days * DAY).sum())  # what window_start would keep
    assert 2_400 <= held <= 2_500 and 240 <= days <= 250


def test_frames_within_the_limit_or_without_one_pass() -> None:
    data = spread(1_000, days=10)
    check_frame_size(data, 1_000)
    check_frame_size(data, 0)


def test_training_options_take_the_settings_limits() -> None:
    settings = Settings(train_window_days=30, train_budget_s=12.0, ease_max_movies=500, engagement_max_labels=9, seed=7)
    options = TrainOptions.from_settings(settings, epochs=3)
    assert (options.window_days, options.time_budget_s, options.ease_max_movies) == (30, 12.0, 500)
    assert (options.engagement_max_labels, options.seed, options.epochs) == (9, 7, 3)
