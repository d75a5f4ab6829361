"""Recency-weighted input rows: how EASE and the VAE read a user's history.

``recency_rows(histories, n_items, recency) -> (B, n_items)``: each user's movies (oldest
first) as one row, a movie ``k`` events back from the newest weighted ``exp(-k / recency)``
(``recency`` 0: every movie 1). A movie met twice counts at its latest event. Weighting the
recent past up is what lifts both models on a chronological split, where what comes next
follows the latest events more than the oldest (docs/models.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def recency_rows(histories: Sequence[Sequence[int]], n_items: int, recency: float) -> Tensor:
    """``(B, n_items)`` float rows, one per history (empty history: a zero row)."""
    rows = torch.zeros(len(histories), n_items)
    for row, items in enumerate(histories):
        back: dict[int, int] = {}
        for steps, movie in enumerate(reversed(list(items))):
            back.setdefault(int(movie), steps)
        if not back:
            continue
        steps_back = torch.tensor(list(back.values()), dtype=torch.float32)
        weight = torch.exp(-steps_back / recency) if recency > 0 else torch.ones(len(steps_back))
        rows[row, torch.tensor(list(back), dtype=torch.long)] = weight
    return rows
