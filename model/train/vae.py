"""Training the VAE retriever: each user's later movies predicted from the earlier ones.

Each user gives one sample per holdout ``h`` of ``HOLDOUTS``: the input is the recency-weighted
row (``MultVAE.history_inputs``) of their training movies but the last ``h``, the target the
0/1 row of those ``h`` (``h = 0``: the whole row, Mult-VAE's reconstruction). The per-user
chronological split asks what a user rates next, and the holdout rows train exactly that.
The KL weight rises linearly from 0 to ``beta`` over the first ``anneal_epochs`` epochs.
Early stopping reads valid NDCG@10 with the training part as the history, as the test does.
The test part is never read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from model.data.interactions import Split
from model.device import pick_device
from model.evaluate.ranking import HistoryIndex, VaeScorer, full_ranking
from model.networks.vae import MultVAE, VaeConfig, vae_loss
from model.train.loop import batch_loader, fit, seed_everything
from model.train.options import Trained, TrainOptions

#: rows per user: the whole history reconstructed (0), and all but the last h movies -> those h
HOLDOUTS = (0, 2, 5, 10, 15, 20, 30, 40)


def user_rows(
    model: MultVAE, history: HistoryIndex, n_users: int, holdouts: Sequence[int] = (0,)
) -> tuple[Tensor, Tensor]:
    """Inputs and 0/1 targets, ``(rows, n_items)`` each: for ``h`` in ``holdouts`` one row per user
    with more than ``h`` movies; ``h = 0`` reconstructs the whole history, ``h > 0`` reads all
    but the last ``h`` movies and targets those ``h`` (what comes next, as the split asks)."""
    lists = [history.indices[history.indptr[u] : history.indptr[u + 1]].tolist() for u in range(n_users)]
    inputs, targets = [], []
    for h in holdouts:
        kept = [items for items in lists if len(items) > h]
        x = model.history_inputs([items[: len(items) - h] for items in kept])
        y = model.history_inputs([items[len(items) - h :] if h else items for items in kept])
        inputs.append(x)
        targets.append((y > 0).float())
    return torch.cat(inputs), torch.cat(targets)


def train_vae(
    split: Split, options: TrainOptions, *, anneal_epochs: int = 50, holdouts: Sequence[int] = HOLDOUTS, **sizes: Any
) -> Trained:
    """Fit on ``split.train`` (``sizes`` override ``VaeConfig``'s defaults); keep the best epoch
    on valid NDCG@10."""
    seed_everything(options.seed)
    device = pick_device(options.device)
    train = split.train
    model = MultVAE(VaeConfig(n_items=train.n_movies, **sizes)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    history = HistoryIndex([train])
    inputs, targets = user_rows(model, history, train.n_users, holdouts)
    loader = batch_loader([inputs, targets], options.batch_size, device, options.seed)
    steps_per_epoch = max(1, len(loader) if options.max_batches is None else min(len(loader), options.max_batches))
    done = [0]

    def step(batch: list[Tensor]) -> Tensor:
        x, y = batch
        beta = model.config.beta * min(1.0, done[0] / (anneal_epochs * steps_per_epoch))
        done[0] += 1
        logits, mu, logvar = model(x)
        return vae_loss(logits.float(), y, mu.float(), logvar.float(), beta)

    scorer = VaeScorer(model, history)
    fit_history, best, valid = fit(
        name="vae", model=model, loader=loader, step=step,
        validate=lambda: full_ranking(scorer, split.valid, [split.train]),
        monitor="ndcg@10", higher_is_better=True, options=options, optimizer=optimizer,
    )  # fmt: skip
    return Trained(
        "vae", model.cpu(), fit_history, best, valid, {"anneal_epochs": anneal_epochs, "holdouts": list(holdouts)}
    )
