"""Training the baselines: most-popular (counts) and BPR-MF.

BPR follows RecBole's recipe (the peer it is compared with): Xavier-normal factors, no L2,
one negative per positive drawn among the user's unseen movies, resampled every batch."""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from model.data.interactions import Split
from model.device import pick_device
from model.evaluate.ranking import full_ranking
from model.networks.baselines import BPRMF, MostPopular, bpr_loss
from model.train.loop import OnCpu, SeenPairs, batch_loader, fit, seed_everything
from model.train.options import Trained, TrainOptions


def train_pop(split: Split, options: TrainOptions) -> Trained:
    """Most-popular: counts over ``split.train``, one 'epoch', validated like the others."""
    started = time.perf_counter()
    model = MostPopular(split.train.n_movies).fit(torch.as_tensor(split.train.items))
    valid = full_ranking(model, split.valid, [split.train])
    seconds = time.perf_counter() - started
    row = {"epoch": 1, "loss": 0.0, "seconds": seconds, "samples": len(split.train), **valid}
    return Trained("pop", model, [row], 1, valid)


def train_bpr(split: Split, options: TrainOptions, *, dim: int = 64, reg: float = 0.0) -> Trained:
    """BPR-MF with one uniformly sampled negative per positive, resampled each epoch.

    RecBole's recipe (its BPR is the peer we compare with): Xavier-normal factors, no L2.
    """
    seed_everything(options.seed)
    device = pick_device(options.device)
    train = split.train
    model = BPRMF(train.n_users, train.n_movies, dim)
    nn.init.xavier_normal_(model.user_embedding.weight)
    nn.init.xavier_normal_(model.item_embedding.weight)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    users, items = torch.as_tensor(train.users), torch.as_tensor(train.items)
    loader = batch_loader([users, items], options.batch_size, device, options.seed)

    seen = SeenPairs(train, device)

    def step(batch: list[Tensor]) -> Tensor:
        u, pos = batch
        neg = sample_unseen(seen, u)
        loss = bpr_loss(model(u, pos), model(u, neg))
        params: tuple[Tensor, ...] = (model.user_embedding(u), model.item_embedding(pos), model.item_embedding(neg))
        return loss + reg * sum(p.pow(2).sum() for p in params) / len(u)

    history, best, valid = fit(
        name="bpr", model=model, loader=loader, step=step,
        validate=lambda: full_ranking(OnCpu(model), split.valid, [split.train]),
        monitor="ndcg@10", higher_is_better=True, options=options, optimizer=optimizer,
    )  # fmt: skip
    return Trained("bpr", model.cpu(), history, best, valid, {"dim": dim})


def sample_unseen(seen: SeenPairs, users: Tensor, tries: int = 20) -> Tensor:
    """One uniformly drawn movie per user that the user has not met (RecBole's sampler does the
    same): a heavy ML-100K user has met 44% of the catalogue, and those "negatives" are positives.
    ``seen`` answers pair lookups, dense or from sorted keys (no users × movies mask at scale)."""
    n_movies = seen.n_movies
    neg = torch.randint(0, n_movies, users.shape, device=users.device)
    for _ in range(tries):  # rejection sampling; a handful of rounds clears nearly every clash
        clash = seen.contains(users, neg)
        if not clash.any():
            return neg
        neg = torch.where(clash, torch.randint(0, n_movies, users.shape, device=users.device), neg)
    clash = seen.contains(users, neg)
    if clash.any():  # users who met nearly everything: draw straight from their unseen movies
        movies = torch.arange(n_movies, device=users.device)
        unseen = (~seen.block(users[clash], movies)).float()
        has_any = unseen.sum(1) > 0
        draws = torch.multinomial(unseen[has_any], 1).squeeze(1)
        rows = clash.nonzero().squeeze(1)[has_any]
        neg[rows] = draws
    return neg
