"""Training the sequential retriever: full softmax over the catalogue at every position of each history.

Each user's training events in time order are cut into windows of ``max_len + 1`` movies
(the latest window first, so every event is a target once); a position learns the movies
that follow it (``horizon``). Early stopping reads valid NDCG@10 with the training part as
the history, as the test does. The test part is never read here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from model.data.interactions import Interactions, Split
from model.device import pick_device
from model.evaluate.ranking import HistoryIndex, SequentialScorer, full_ranking
from model.networks.sequential import SequentialConfig, SequentialRetriever, horizon_loss
from model.train.loop import batch_loader, fit, seed_everything
from model.train.options import Trained, TrainOptions


def windows(history: HistoryIndex, n_users: int, width: int) -> Tensor:
    """``(n_windows, width)`` left-padded tokens (movie + 1): each user's history cut from the
    end into runs of ``width`` that overlap by one movie (its last is the next run's first)."""
    rows: list[Tensor] = []
    for user in range(n_users):
        items = history.indices[history.indptr[user] : history.indptr[user + 1]] + 1
        end = len(items)
        while end > 1:
            start = max(0, end - width)
            row = torch.zeros(width, dtype=torch.long)
            row[width - (end - start) :] = items[start:end]
            rows.append(row)
            end = start + 1
    return torch.stack(rows) if rows else torch.zeros(0, width, dtype=torch.long)


def train_sequential(split: Split, options: TrainOptions, **sizes: Any) -> Trained:
    """Fit on ``split.train`` (``sizes`` override ``SequentialConfig``'s defaults); keep the best
    epoch on valid NDCG@10."""
    seed_everything(options.seed)
    device = pick_device(options.device)
    train: Interactions = split.train
    config = SequentialConfig(n_items=train.n_movies, **sizes)
    model = SequentialRetriever(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    history = HistoryIndex([train])
    runs = windows(history, train.n_users, config.max_len + 1)
    loader = batch_loader([runs], options.batch_size, device, options.seed)

    def step(batch: list[Tensor]) -> Tensor:
        tokens = batch[0]
        used = (tokens > 0).any(dim=0).nonzero()
        start = int(used[0]) if len(used) else tokens.shape[1] - 1
        return horizon_loss(model, tokens[:, start:])  # leading all-padding columns cost time only

    scorer = SequentialScorer(model, history)
    fit_history, best, valid = fit(
        name="sequential", model=model, loader=loader, step=step,
        validate=lambda: full_ranking(scorer, split.valid, [split.train]),
        monitor="ndcg@10", higher_is_better=True, options=options, optimizer=optimizer,
    )  # fmt: skip
    return Trained("sequential", model.cpu(), fit_history, best, valid, {"windows": len(runs)})
