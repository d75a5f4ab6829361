"""The users an evaluation's figures cover: every user, or a seeded sample of the held-out ones.

Full ranking needs a ``users × movies`` score matrix per retriever, and the evaluation keeps
several (each retriever, the trend prior's, the re-ranked one) with their masks. At the ML-25M
shape that is 162,541 × 62,423 cells, 40 GB of float32 each: it does not fit. With a sample of
``n`` held-out users (``marquee evaluate --sample-users n``) every matrix has ``n`` rows: the
split is cut to those users and renumbered (``users_view``), and row ``i`` of every matrix is
dense user ``users[i]`` of the whole split. What is counted over the catalogue (the cold
movies, the trend prior's popularity window, the histories the scorers read, a model's own
user ids) still comes from the whole split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.data.interactions import Interactions, Split, users_view
from model.evaluate.ranking import HistoryIndex, Scorer, score_matrix

COLD = 5  # fewer training interactions than this = cold start


@dataclass(frozen=True)
class ViewScorer:
    """A scorer of dense users asked by view row: row ``i`` is dense user ``users[i]``."""

    inner: Scorer
    users: np.ndarray

    def score_all(self, user_ids: Tensor) -> Tensor:
        return self.inner.score_all(torch.as_tensor(self.users[user_ids.numpy()], dtype=torch.long))


@dataclass(frozen=True)
class Scope:
    """``whole``: the split models trained on; ``view``: the split the figures are computed on
    (``whole`` itself without a sample); ``users``: view row ``i`` is dense user ``users[i]``."""

    whole: Split
    view: Split
    users: np.ndarray
    cold_users: np.ndarray  # view rows of users with < COLD training interactions
    cold_movies: np.ndarray  # dense ids of movies with < COLD training interactions (whole split)

    @classmethod
    def of(cls, split: Split, users: np.ndarray | None = None) -> Scope:
        """Every user of ``split`` (no copy), or only ``users`` (sorted dense ids)."""
        view = split if users is None else users_view(split, users)
        rows = np.arange(split.train.n_users) if users is None else users
        cold_users = np.flatnonzero(view.train.user_counts() < COLD)
        return cls(split, view, rows, cold_users, np.flatnonzero(split.train.movie_counts() < COLD))

    @property
    def sampled(self) -> bool:
        return self.view is not self.whole

    def scores(self, scorer: Scorer) -> Tensor:
        """``(len(users), n_movies)``: the view's rows of the scorer's matrix."""
        return score_matrix(scorer, self.whole.train.n_users, users=self.users)

    def scorer(self, scorer: Scorer) -> Scorer:
        """``scorer`` asked by view row, holding nothing: for a model ranked once, which
        ``full_ranking`` then scores a block of users at a time instead of a whole matrix."""
        return scorer if not self.sampled else ViewScorer(scorer, self.users)

    def history(self, parts: Sequence[Interactions]) -> HistoryIndex:
        """The whole split's ``parts`` as the histories a scorer reads (indexed by dense user),
        holding only the scope's users' events when sampled: every other row is empty, and no
        scorer is asked for it (at the ML-25M shape the whole index is 22M events and a sort)."""
        if not self.sampled:
            return HistoryIndex(parts)
        member = np.zeros(self.whole.train.n_users, dtype=bool)
        member[self.users] = True
        return HistoryIndex([p.take(member[p.users]) for p in parts])

    def dense_users(self, view_users: np.ndarray) -> np.ndarray:
        """The whole split's dense ids of view rows (what a model's user embedding is indexed by)."""
        dense: np.ndarray = self.users[view_users]
        return dense
