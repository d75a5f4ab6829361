"""Choosing the served trend prior (model/serve/trend.py) on the validation period.

Only the ``time`` protocol has one "now": its valid and test periods follow one cut in time, so
the last days before each are a window every user shares. (In RecBole's per-user split a user's
test events can precede another user's valid ones: a global recent window would read the future.)

For validation the retriever's scores read the training part, the window ends at the training
part's last event and the valid events are the targets; at test time the window ends at the
valid part's last event, as it would when serving the day after. The grid is small and every
point is one full ranking of the valid users (~0.1 s on ML-100K). The scores are standardized
once and each point is ranked a block of users at a time (``PriorScorer``): the grid holds one
matrix besides the retriever's, not one per point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from model.data.interactions import Interactions, Split
from model.evaluate.ranking import full_ranking
from model.serve.trend import (
    NEW_BELOW,
    TrendPrior,
    add_prior,
    new_mask,
    recent_lift,
    standardize,
    window_counts,
    with_prior,
)

DAYS = (3.0, 7.0, 14.0, 28.0)
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)


def prior_scores(scores: Tensor, history: Sequence[Interactions], prior: TrendPrior, movie_ids: np.ndarray) -> Tensor:
    """``scores`` with the prior, its window ending at the last event of ``history``."""
    items = np.concatenate([h.items for h in history])
    ts = np.concatenate([h.ts for h in history])
    lift = recent_lift(window_counts(items, ts, prior.days, len(movie_ids)))
    return with_prior(scores, lift, new_mask(movie_ids.tolist(), prior.new_movies, len(movie_ids)), prior)


class PriorScorer:
    """Rows of standardized scores ``z`` with a prior's terms added, computed when asked: a
    ``full_ranking`` scorer that allocates one block of rows, never a shaped copy of ``z``."""

    def __init__(self, z: Tensor, lift: Tensor, is_new: Tensor, prior: TrendPrior) -> None:
        self.z, self.lift, self.is_new, self.prior = z, lift, is_new, prior

    def score_all(self, user_ids: Tensor) -> Tensor:
        return add_prior(self.z[user_ids], self.lift, self.is_new, self.prior)


def choose_prior(
    scores: Tensor, split: Split, movie_ids: np.ndarray, new_boost: float, *, view: Split | None = None
) -> tuple[TrendPrior, dict[tuple[float, float], float]]:
    """The window and weight with the best valid NDCG@10 (ties: the smaller weight, then the
    shorter window), and every point tried. The window counts every user's events of ``split``;
    ``scores`` and the ranking are ``view``'s users (a sample, ``model/evaluate/scope.py``), or
    all of ``split``'s."""
    view = view or split
    new = frozenset(int(m) for m in movie_ids[split.train.movie_counts() < NEW_BELOW])
    is_new = new_mask(movie_ids.tolist(), new, len(movie_ids))
    z = standardize(scores.float())
    tried: dict[tuple[float, float], float] = {}
    for days in DAYS:
        lift = recent_lift(window_counts(split.train.items, split.train.ts, days, len(movie_ids)))
        for weight in WEIGHTS:
            scorer = PriorScorer(z, lift, is_new, TrendPrior(days, weight, new_boost, new))
            tried[(days, weight)] = full_ranking(scorer, view.valid, [view.train])["ndcg@10"]
    days, weight = max(tried, key=lambda k: (tried[k], -k[1], -k[0]))
    return TrendPrior(days, weight, new_boost, new), tried
