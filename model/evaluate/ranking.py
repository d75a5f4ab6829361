"""Shared evaluation plumbing: masks for full ranking, scorers that wrap trained models.

Used by training (early stopping on validation NDCG@10) and by ``model.evaluate.report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from model.checkpoint import Checkpoint, from_checkpoint
from model.data.interactions import Interactions
from model.evaluate.metrics import catalog_coverage, ranking_metrics, top_k_items
from model.networks.ease import RecencyEASE
from model.networks.sequential import SequentialRetriever
from model.networks.two_tower import TwoTowerRetriever, UserHistory
from model.networks.vae import MultVAE


class Scorer(Protocol):
    """Scores every movie for a batch of dense user ids: ``(B,) -> (B, n_movies)``."""

    def score_all(self, user_ids: Tensor) -> Tensor: ...


class HistoryIndex:
    """Each user's movies in time order (CSR) and ``UserHistory`` batches for the user tower.

    Weights are ``1/sqrt(n)`` over the ``n`` movies kept, so long and short histories give
    user inputs of similar size. ``prefix`` keeps only each row's first ``prefix[i]`` movies:
    training reads the history *before* the target (the tower learns what comes next, which
    is what a chronological test asks); ``drop`` removes one movie per row instead.
    """

    def __init__(self, parts: Sequence[Interactions]) -> None:
        users = np.concatenate([p.users for p in parts])
        items = np.concatenate([p.items for p in parts])
        ts = np.concatenate([p.ts for p in parts])
        order = np.lexsort((items, ts, users))  # by user, then time (ties by movie id)
        self.indices = torch.as_tensor(items[order], dtype=torch.long)
        counts = np.bincount(users, minlength=parts[0].n_users)
        self.indptr = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)]), dtype=torch.long)

    @staticmethod
    def positions(data: Interactions) -> np.ndarray:
        """Each row's position in its user's time-ordered history (0 = the user's first event)."""
        order = np.lexsort((data.items, data.ts, data.users))
        pos = np.empty(len(data), dtype=np.int64)
        starts = np.searchsorted(data.users[order], data.users[order], side="left")
        pos[order] = np.arange(len(data)) - starts
        return pos

    def to(self, device: torch.device) -> HistoryIndex:
        """Moves the index to ``device`` in place and returns it."""
        self.indices, self.indptr = self.indices.to(device), self.indptr.to(device)
        return self

    def batch(self, users: Tensor, *, prefix: Tensor | None = None, drop: Tensor | None = None) -> UserHistory:
        """The histories of ``users (B,)`` (dense ids) as one ``UserHistory``; ``prefix (B,)`` and
        ``drop (B,)`` as in the class docstring."""
        users = users.to(self.indptr.device)
        starts = self.indptr[users]
        lens = self.indptr[users + 1] - starts
        if prefix is not None:
            lens = torch.minimum(lens, prefix.to(lens.device))
        row = torch.repeat_interleave(torch.arange(len(users), device=users.device), lens)
        offsets = torch.cumsum(lens, 0) - lens
        items = self.indices[starts[row] + torch.arange(len(row), device=users.device) - offsets[row]]
        keep = torch.ones(len(items), device=users.device)
        if drop is not None:
            keep = (items != drop.to(users.device)[row]).float()
        kept = torch.zeros(len(users), device=users.device).index_add_(0, row, keep)
        return UserHistory(items, offsets, keep / kept.clamp_min(1).sqrt()[row])


class TwoTowerScorer:
    """A retriever plus the histories its user tower reads (the users' known interactions)."""

    def __init__(self, model: TwoTowerRetriever, history: HistoryIndex, movie_vectors: Tensor | None = None) -> None:
        self.model = model
        self.history = history
        self.movie_vectors = movie_vectors  # precomputed (checkpoint) or None: from the movie tower

    @torch.no_grad()
    def score_all(self, user_ids: Tensor) -> Tensor:
        """``(B,) -> (B, n_movies)`` logits on CPU, each user's tower reading their history."""
        device = self.model.user_tower.id_embedding.weight.device
        user_ids = user_ids.to(device)
        history = self.history.to(device).batch(user_ids) if self.model.config.history_dim else None
        users = self.model.user_vectors(user_ids, None, history)
        movies = self.model.all_movie_vectors() if self.movie_vectors is None else self.movie_vectors.to(device)
        return (users @ movies.T / self.model.config.temperature).float().cpu()


def masks(target: Interactions, seen: Sequence[Interactions]) -> tuple[Tensor, Tensor]:
    """``relevant (U, I)`` from ``target``; ``exclude (U, I)`` from every part in ``seen``."""
    shape = (target.n_users, target.n_movies)
    relevant = torch.zeros(shape, dtype=torch.bool)
    relevant[torch.as_tensor(target.users), torch.as_tensor(target.items)] = True
    exclude = torch.zeros(shape, dtype=torch.bool)
    for part in seen:
        exclude[torch.as_tensor(part.users), torch.as_tensor(part.items)] = True
    return relevant, exclude


def score_matrix(scorer: Scorer, n_users: int, batch: int = 1024) -> Tensor:
    """``(n_users, n_movies)`` float scores on CPU, scored ``batch`` users at a time."""
    rows = [scorer.score_all(torch.arange(s, min(s + batch, n_users))).float().cpu() for s in range(0, n_users, batch)]
    return torch.cat(rows)


def full_ranking(
    scorer: Scorer | None,
    target: Interactions,
    seen: Sequence[Interactions],
    *,
    k: int = 10,
    users: np.ndarray | None = None,
    scores: Tensor | None = None,
) -> dict[str, float]:
    """Recall/NDCG/MRR/Hit@k over the whole catalogue for every user with a held-out item,
    plus catalogue coverage of those users' top-k. ``users`` restricts to a slice; ``scores``
    (users x movies), when given, stands in for ``scorer``."""
    relevant, exclude = masks(target, seen)
    if scores is None:
        if scorer is None:
            raise ValueError("full_ranking needs a scorer or the scores")
        scores = score_matrix(scorer, target.n_users)
    if users is not None:
        keep = torch.zeros(target.n_users, dtype=torch.bool)
        keep[torch.as_tensor(users, dtype=torch.long)] = True
        relevant &= keep[:, None]
    metrics = ranking_metrics(scores, relevant, k=k, exclude=exclude)
    rows = (relevant & ~exclude).any(dim=1).nonzero().squeeze(1)
    top = top_k_items(scores[rows], k, exclude[rows]) if rows.numel() else torch.zeros(0, k, dtype=torch.long)
    metrics["coverage"] = catalog_coverage(top, target.n_movies)
    metrics["users"] = float(rows.numel())
    return metrics


class RowModel(Protocol):
    """A retriever that scores one input row per user built from their history (EASE, the VAE)."""

    def history_inputs(self, histories: Sequence[Sequence[int]]) -> Tensor: ...

    def score(self, inputs: Tensor) -> Tensor: ...


class HistoryRowScorer:
    """A ``RowModel`` plus the histories it reads (each user's movies, oldest first)."""

    def __init__(self, model: RowModel, history: HistoryIndex) -> None:
        self.model = model
        self.history = history

    @torch.no_grad()
    def score_all(self, user_ids: Tensor) -> Tensor:
        """``(B,) -> (B, n_movies)`` scores on CPU."""
        indptr, indices = self.history.indptr.cpu(), self.history.indices.cpu()
        rows = [indices[indptr[u] : indptr[u + 1]].tolist() for u in user_ids.tolist()]
        return self.model.score(self.model.history_inputs(rows)).float().cpu()


class EaseScorer(HistoryRowScorer):
    """Recency-weighted EASE plus the histories it reads."""

    def __init__(self, model: RecencyEASE, history: HistoryIndex) -> None:
        super().__init__(model, history)


class VaeScorer(HistoryRowScorer):
    """The VAE retriever plus the histories it reads."""

    def __init__(self, model: MultVAE, history: HistoryIndex) -> None:
        super().__init__(model, history)


class SequentialScorer:
    """The sequential retriever plus the histories it reads (each user's movies, oldest first)."""

    def __init__(self, model: SequentialRetriever, history: HistoryIndex) -> None:
        self.model = model
        self.history = history

    @torch.no_grad()
    def score_all(self, user_ids: Tensor) -> Tensor:
        """``(B,) -> (B, n_movies)`` scores on CPU: what comes after each user's whole history."""
        indptr, indices = self.history.indptr.cpu(), self.history.indices.cpu()
        rows = [indices[indptr[u] : indptr[u + 1]].tolist() for u in user_ids.tolist()]
        device = self.model.items.weight.device
        return self.model.score_last(self.model.tokens(rows).to(device)).float().cpu()


def retriever_scorer(checkpoint: Checkpoint, history: HistoryIndex) -> Scorer:
    """The scorer of a retriever checkpoint (``ease``, ``two_tower``, ``sequential`` or ``vae``) reading ``history``."""
    net = from_checkpoint(checkpoint)
    if checkpoint.kind == "ease":
        return EaseScorer(net, history)
    if checkpoint.kind == "two_tower":
        return TwoTowerScorer(net, history, checkpoint.extras["movie_vectors"])
    if checkpoint.kind == "sequential":
        return SequentialScorer(net, history)
    if checkpoint.kind == "vae":
        return VaeScorer(net, history)
    raise ValueError(f"{checkpoint.kind} is not a catalogue retriever")
