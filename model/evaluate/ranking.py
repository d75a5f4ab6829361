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


def score_matrix(scorer: Scorer, n_users: int, batch: int = 1024, *, users: np.ndarray | None = None) -> Tensor:
    """``(n_users, n_movies)`` float scores on CPU, scored ``batch`` users at a time; with
    ``users`` (dense ids), only their rows, in that order: ``(len(users), n_movies)``."""
    ids = torch.arange(n_users) if users is None else torch.as_tensor(users, dtype=torch.long)
    return torch.cat([scorer.score_all(ids[s : s + batch]).float().cpu() for s in range(0, len(ids), batch)])


class UserItems:
    """The movies of each user in some parts (CSR by dense user id), turned into a block's mask."""

    def __init__(self, parts: Sequence[Interactions], n_users: int) -> None:
        users = np.concatenate([p.users for p in parts]) if parts else np.zeros(0, np.int64)
        items = np.concatenate([p.items for p in parts]) if parts else np.zeros(0, np.int64)
        order = np.argsort(users, kind="stable")
        self.items = items[order]
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])

    def mask(self, users: np.ndarray, n_movies: int) -> Tensor:
        """``(len(users), n_movies)`` bool: True where the user has the movie."""
        starts, lens = self.indptr[users], self.indptr[users + 1] - self.indptr[users]
        row = np.repeat(np.arange(len(users)), lens)
        flat = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(starts, lens)
        out = torch.zeros(len(users), n_movies, dtype=torch.bool)
        out[torch.as_tensor(row), torch.as_tensor(self.items[flat])] = True
        return out


class MatrixScorer:
    """Scores computed already: row ``u`` of ``scores`` is user ``u``'s."""

    def __init__(self, scores: Tensor) -> None:
        self.scores = scores

    def score_all(self, user_ids: Tensor) -> Tensor:
        return self.scores[user_ids]


RANKED_CELLS = 1 << 24  # scores ranked at once by full_ranking (64 MB of float32)


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
    (users x movies), when given, stands in for ``scorer``.

    Only the users with a held-out item are ranked, a block of them at a time (``RANKED_CELLS``
    scores): with a scorer, memory stays one block's whatever the number of users, so
    validation at 162K users x 62K movies never holds the 40 GB matrix. The means over users
    are the blocks' means weighted by their users: the same figures as one pass."""
    if scores is not None:
        scorer = MatrixScorer(scores)
    elif scorer is None:
        raise ValueError("full_ranking needs a scorer or the scores")
    ranked = np.unique(target.users)
    if users is not None:
        ranked = np.intersect1d(ranked, np.asarray(users, dtype=np.int64))
    relevant, exclude = UserItems([target], target.n_users), UserItems(seen, target.n_users)
    step = max(1, RANKED_CELLS // max(1, target.n_movies))
    sums: dict[str, float] = {}
    counted = 0
    covered = torch.zeros(target.n_movies, dtype=torch.bool)
    for start in range(0, len(ranked), step):
        block = ranked[start : start + step]
        ids = torch.as_tensor(block, dtype=torch.long)
        block_scores = scorer.score_all(ids).float().cpu()
        rel, excl = relevant.mask(block, target.n_movies), exclude.mask(block, target.n_movies)
        left = (rel & ~excl).any(dim=1)
        n = int(left.sum())
        if not n:
            continue
        for name, value in ranking_metrics(block_scores, rel, k=k, exclude=excl).items():
            sums[name] = sums.get(name, 0.0) + value * n
        counted += n
        covered[top_k_items(block_scores[left], k, excl[left]).reshape(-1)] = True
    names = (f"recall@{k}", f"ndcg@{k}", f"mrr@{k}", f"hit@{k}")
    metrics = {name: sums[name] / counted if counted else float("nan") for name in names}
    metrics["coverage"] = catalog_coverage(covered.nonzero().squeeze(1), target.n_movies)
    metrics["users"] = float(counted)
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
