"""The two-tower retriever: a user tower over the user's history and id, a movie tower over id,
title embedding and genres, trained with in-batch sampled softmax.

The movie tower's id embedding is dropped out in training (``id_dropout``): a movie's row is
then placed by its content alone, so the same tower places a movie it has never seen (no id,
``content_vectors``) or barely seen in the space the users' vectors were trained against."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.networks.config import DictConfig


@dataclass
class TwoTowerConfig(DictConfig):
    """Sizes of ``TwoTowerRetriever``. A dim of 0 turns that input off."""

    n_users: int
    n_movies: int
    id_dim: int = 32
    user_feature_dim: int = 0
    movie_content_dim: int = 384  # all-MiniLM-L6-v2 title/overview embedding
    n_genres: int = 0  # multi-hot width
    hidden: int = 128
    out_dim: int = 64
    temperature: float = 0.05
    dropout: float = 0.0
    # User history: an EmbeddingBag over the movies the user met (weighted sum), fed to the
    # user tower beside the id; 0 turns it off. Cost grows with history length, not catalogue.
    history_dim: int = 0
    # Fraction of the movie rows whose id embedding is zeroed in each training pass, so the
    # content path alone carries signal (a new movie is placed by ``content_vectors``).
    id_dropout: float = 0.0


class Tower(nn.Module):
    """Id embedding + optional dense features -> MLP -> unit vector.

    ``ids (batch,), features (batch, feature_dim) -> (batch, out_dim)`` with L2 norm 1.
    """

    def __init__(self, n_ids: int, id_dim: int, feature_dim: int, c: TwoTowerConfig) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.id_embedding = nn.Embedding(n_ids, id_dim)
        self.mlp = nn.Sequential(
            nn.Linear(id_dim + feature_dim, c.hidden),
            nn.ReLU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden, c.out_dim),
        )

    def forward(self, ids: Tensor, features: Tensor | None = None, keep_id: Tensor | None = None) -> Tensor:
        """``keep_id (batch,)`` 0/1: rows with 0 read no id embedding (content only)."""
        x = self.id_embedding(ids)
        if keep_id is not None:
            x = x * keep_id.to(x.dtype)[:, None]
        if self.feature_dim:
            if features is None:
                raise ValueError(f"tower expects {self.feature_dim} feature columns")
            x = torch.cat([x, features.to(x.dtype)], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


@dataclass
class UserHistory:
    """A batch of histories in ``nn.EmbeddingBag``'s flat form: ``items (n,)`` movie ids,
    ``offsets (batch,)`` where each user's run starts, ``weights (n,)`` per-item weights."""

    items: Tensor
    offsets: Tensor
    weights: Tensor

    @classmethod
    def of(cls, histories: Sequence[Sequence[int]]) -> UserHistory:
        """From each user's movie ids (dense, duplicates ignored), weighted 1/sqrt(count) as
        ``HistoryIndex.batch`` weights training histories."""
        items: list[int] = []
        offsets: list[int] = []
        weights: list[float] = []
        for history in histories:
            seen = sorted(set(history))
            offsets.append(len(items))
            items += seen
            weights += [1.0 / max(1, len(seen)) ** 0.5] * len(seen)
        return cls(torch.tensor(items, dtype=torch.long), torch.tensor(offsets), torch.tensor(weights))


class TwoTowerRetriever(nn.Module):
    """User and movie towers on a unit sphere; score = cosine / temperature.

    Movie vectors depend only on movie inputs, so they can be precomputed into
    pgvector and searched by inner product. Call ``set_catalog`` once with every
    movie's content (and genres) so ``movie_vectors`` / ``score_all`` can look
    them up by id; the catalogue is not saved in the state dict (it is rebuilt
    from the feature store).
    """

    catalog_content: Tensor
    catalog_genres: Tensor

    def __init__(self, config: TwoTowerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.user_tower = Tower(c.n_users, c.id_dim, c.user_feature_dim + c.history_dim, c)
        self.movie_tower = Tower(c.n_movies, c.id_dim, c.movie_content_dim + c.n_genres, c)
        self.history = nn.EmbeddingBag(c.n_movies, c.history_dim, mode="sum") if c.history_dim else None
        self.register_buffer("catalog_content", torch.empty(0), persistent=False)
        self.register_buffer("catalog_genres", torch.empty(0), persistent=False)

    def set_catalog(self, content: Tensor, genres: Tensor | None = None) -> None:
        """``content (n_movies, movie_content_dim)``, ``genres (n_movies, n_genres)``."""
        c = self.config
        genres = torch.zeros(c.n_movies, 0) if genres is None else genres
        if content.shape != (c.n_movies, c.movie_content_dim) or genres.shape[1] != c.n_genres:
            raise ValueError(f"catalog shapes {tuple(content.shape)}, {tuple(genres.shape)}")
        device = self.user_tower.id_embedding.weight.device
        self.catalog_content = content.float().to(device)
        self.catalog_genres = genres.float().to(device)

    def user_vectors(
        self, user_ids: Tensor, user_features: Tensor | None = None, history: UserHistory | None = None
    ) -> Tensor:
        """``(batch,) [, (batch, user_feature_dim)] [, history] -> (batch, out_dim)`` unit vectors."""
        if self.history is not None:
            if history is None:
                raise ValueError("config has history_dim > 0: pass the users' history")
            bag = self.history(history.items, history.offsets, per_sample_weights=history.weights)
            user_features = bag if user_features is None else torch.cat([user_features, bag], dim=-1)
        vectors: Tensor = self.user_tower(user_ids, user_features)
        return vectors

    def movie_vectors(
        self,
        movie_ids: Tensor,
        content: Tensor | None = None,
        genres: Tensor | None = None,
        *,
        content_only: Tensor | None = None,
    ) -> Tensor:
        """``(batch,) [, (batch, content_dim), (batch, n_genres)] -> (batch, out_dim)``.

        Content/genres left as None are looked up in the catalogue. ``content_only (batch,)``
        bool: those rows ignore their id embedding. In training mode a random ``id_dropout``
        share of the rows does too.
        """
        c = self.config
        if content is None and c.movie_content_dim:
            content = self._catalog(self.catalog_content)[movie_ids]
        if genres is None and c.n_genres:
            genres = self._catalog(self.catalog_genres)[movie_ids]
        parts = [t for t in (content, genres) if t is not None and t.shape[-1] > 0]
        keep = None if content_only is None else ~content_only.to(movie_ids.device)
        if self.training and c.id_dropout > 0:
            dropped = torch.rand(movie_ids.shape, device=movie_ids.device) < c.id_dropout
            keep = ~dropped if keep is None else keep & ~dropped
        vectors: Tensor = self.movie_tower(movie_ids, torch.cat(parts, dim=-1) if parts else None, keep)
        return vectors

    @torch.no_grad()
    def content_vectors(self, content: Tensor, genres: Tensor | None = None) -> Tensor:
        """Movies the checkpoint has no id for, placed by content alone:
        ``(batch, content_dim), (batch, n_genres) -> (batch, out_dim)`` unit vectors."""
        batch = content.shape[0]
        device = self.user_tower.id_embedding.weight.device
        ids = torch.zeros(batch, dtype=torch.long, device=device)
        genres = torch.zeros(batch, self.config.n_genres) if genres is None else genres
        return self.movie_vectors(
            ids, content.float().to(device), genres.float().to(device),
            content_only=torch.ones(batch, dtype=torch.bool, device=device),
        )  # fmt: skip

    def _catalog(self, table: Tensor) -> Tensor:
        if table.shape[0] != self.config.n_movies:
            raise ValueError("pass movie content/genres or call set_catalog first")
        return table

    def score(self, user_vecs: Tensor, movie_vecs: Tensor) -> Tensor:
        """Row-wise ``(batch, d), (batch, d) -> (batch,)`` logits = dot / temperature."""
        return (user_vecs * movie_vecs).sum(-1) / self.config.temperature

    @torch.no_grad()
    def all_movie_vectors(self, content_only: Tensor | None = None) -> Tensor:
        """``(n_movies, out_dim)`` for the whole catalogue (what goes into pgvector);
        ``content_only (n_movies,)`` bool places those movies by content alone."""
        ids = torch.arange(self.config.n_movies, device=self.user_tower.id_embedding.weight.device)
        return self.movie_vectors(ids, content_only=content_only)

    @torch.no_grad()
    def score_all(self, user_ids: Tensor, user_features: Tensor | None = None) -> Tensor:
        """``(batch,) -> (batch, n_movies)`` logits against the whole catalogue."""
        return self.user_vectors(user_ids, user_features) @ self.all_movie_vectors().T / (self.config.temperature)


def sampled_softmax_loss(
    user_vecs: Tensor,
    pos_movie_vecs: Tensor,
    neg_movie_vecs: Tensor | None = None,
    temperature: float = 0.05,
    *,
    pos_log_q: Tensor | None = None,
    neg_log_q: Tensor | None = None,
    pos_ids: Tensor | None = None,
    neg_ids: Tensor | None = None,
    exclude: Tensor | None = None,
) -> Tensor:
    """In-batch sampled softmax, optionally with shared extra negatives and logQ correction.

    Row ``b`` is classified among all positives of the batch (the other rows'
    positives act as negatives) plus ``neg_movie_vecs``. In-batch negatives are
    drawn in proportion to popularity, which over-penalizes popular movies;
    subtracting ``log q`` (log sampling probability of each candidate) from its
    logit corrects that (Yi et al., RecSys 2019). Candidates with the same id as
    a row's positive are masked, so duplicates in a batch are not negatives.

    ``exclude (B, B + M)`` bool masks more candidates per row, e.g. other movies the user is
    known to like (false negatives); each row's own positive is never masked.

    Shapes: ``user_vecs, pos_movie_vecs (B, d)``; ``neg_movie_vecs (M, d)``;
    ``pos_log_q, pos_ids (B,)``; ``neg_log_q, neg_ids (M,)``. Returns a scalar mean.
    """
    candidates = pos_movie_vecs if neg_movie_vecs is None else torch.cat([pos_movie_vecs, neg_movie_vecs])
    logits = user_vecs @ candidates.T / temperature  # (B, B + M)
    if pos_log_q is not None:
        if neg_movie_vecs is not None and neg_log_q is None:
            raise ValueError("logQ correction needs neg_log_q for the extra negatives too")
        logits = logits - (pos_log_q if neg_log_q is None else torch.cat([pos_log_q, neg_log_q]))
    if pos_ids is not None:
        n_neg = candidates.shape[0] - pos_ids.shape[0]
        # -1 never equals a real id: negatives without ids are simply not checked
        other = neg_ids if neg_ids is not None else pos_ids.new_full((n_neg,), -1)
        clash = pos_ids[:, None] == torch.cat([pos_ids, other])[None, :]
        clash.fill_diagonal_(False)  # the diagonal is each row's own positive
        logits = logits.masked_fill(clash, torch.finfo(logits.dtype).min)
    if exclude is not None:
        exclude = exclude.clone()
        exclude.fill_diagonal_(False)
        logits = logits.masked_fill(exclude, torch.finfo(logits.dtype).min)
    labels = torch.arange(user_vecs.shape[0], device=user_vecs.device)
    return F.cross_entropy(logits, labels)
