"""Training the two-tower retriever with in-batch sampled softmax plus shared uniform negatives.

A training pair (u, i) reads u's history *before* i (causal: the tower learns what a user
watches next, which a chronological test asks); the user's other known movies are masked out
of its negatives; both negative sets are logQ-corrected."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from model.data.catalog import Catalog
from model.data.interactions import Split
from model.device import pick_device
from model.evaluate.ranking import HistoryIndex, TwoTowerScorer, full_ranking
from model.networks.two_tower import TwoTowerConfig, TwoTowerRetriever, sampled_softmax_loss
from model.train.loop import SeenPairs, batch_loader, fit, seed_everything
from model.train.options import Trained, TrainOptions

#: a movie with fewer training interactions than this is served by its content-only vector
CONTENT_ONLY_BELOW = 5


def two_tower_config(n_users: int, n_movies: int, catalog: Catalog, **sizes: Any) -> TwoTowerConfig:
    """User tower: id + history bag; movie tower: id + title embedding + genres."""
    return TwoTowerConfig(
        n_users=n_users,
        n_movies=n_movies,
        movie_content_dim=int(catalog.content.shape[1]),
        n_genres=int(catalog.genres.shape[1]),
        **{"history_dim": 64, "temperature": 0.1, "id_dropout": 0.5, **sizes},
    )


def train_two_tower(
    split: Split,
    catalog: Catalog,
    options: TrainOptions,
    *,
    extra_negatives: int = 512,
    causal: bool = True,
    mask_known: bool = True,
    **sizes: Any,
) -> Trained:
    """In-batch sampled softmax plus shared uniform negatives, both logQ-corrected.

    A training pair (u, i) reads u's history before i (``causal``, the default: the tower learns
    what a user watches next, which a chronological test asks) or u's whole history without i;
    either way it must predict a movie from others, never copy it.
    """
    seed_everything(options.seed)
    device = pick_device(options.device)
    train = split.train
    config = two_tower_config(train.n_users, train.n_movies, catalog, **sizes)
    model = TwoTowerRetriever(config).to(device)
    model.set_catalog(catalog.content, catalog.genres)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    history = HistoryIndex([train]).to(device)
    # expected number of times a candidate shows up in one batch's candidate set (log Q)
    popularity = torch.as_tensor(train.movie_counts(), dtype=torch.float32, device=device) / len(train)
    log_q_in_batch = torch.log(popularity * options.batch_size + 1e-9)
    log_q_uniform = math.log(extra_negatives / train.n_movies)
    users, items = torch.as_tensor(train.users), torch.as_tensor(train.items)
    position = torch.as_tensor(HistoryIndex.positions(train))
    loader = batch_loader([users, items, position], options.batch_size, device, options.seed)
    catalog_ids = torch.arange(train.n_movies, device=device)
    known_pairs = SeenPairs(train, device)

    def step(batch: list[Tensor]) -> Tensor:
        u, pos, before = batch
        seen = history.batch(u, prefix=before) if causal else history.batch(u, drop=pos)
        user_vecs = model.user_vectors(u, None, seen)
        neg = torch.randint(0, train.n_movies, (extra_negatives,), device=device)
        # the catalogue is small: one movie-tower pass over it is cheaper than over pos + neg rows
        movie_vecs = model.movie_vectors(catalog_ids)
        # the user's other training movies are not negatives for them (false-negative masking)
        known = known_pairs.block(u, torch.cat([pos, neg])) if mask_known else None
        return sampled_softmax_loss(
            user_vecs, movie_vecs[pos], movie_vecs[neg], config.temperature,
            pos_log_q=log_q_in_batch[pos], neg_log_q=torch.full((extra_negatives,), log_q_uniform, device=device),
            pos_ids=pos, neg_ids=neg, exclude=known,
        )  # fmt: skip

    scorer = TwoTowerScorer(model, history)
    fit_history, best, valid = fit(
        name="two_tower", model=model, loader=loader, step=step,
        validate=lambda: full_ranking(scorer, split.valid, [split.train]),
        monitor="ndcg@10", higher_is_better=True, options=options, optimizer=optimizer,
    )  # fmt: skip
    model = model.cpu()
    model.set_catalog(catalog.content, catalog.genres)
    content_only = torch.as_tensor(train.movie_counts() < CONTENT_ONLY_BELOW)
    extras = {"history": history.to(torch.device("cpu")), "content_only": content_only}
    return Trained("two_tower", model, fit_history, best, valid, extras)
