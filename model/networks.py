"""Marquee's networks: engagement ranker, two-tower retriever and baselines.

Configs are dataclasses with ``to_dict``/``from_dict`` so checkpoints carry them.
Catalogue rankers (``TwoTowerRetriever``, ``MostPopular``, ``BPRMF``) share
``score_all(user_ids) -> (batch, n_items)`` so ``model.ranking_metrics`` treats them alike.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FullRanker(Protocol):
    """Anything that scores every catalogue item for a batch of users."""

    def score_all(self, user_ids: Tensor) -> Tensor: ...


class _DictConfig:
    """``to_dict``/``from_dict`` for checkpointing dataclass configs."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:  # a typo or a newer checkpoint: fail loudly, never drop silently
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**copy.deepcopy(dict(data)))


# --------------------------------------------------------------------------- engagement net


@dataclass
class EngagementNetConfig(_DictConfig):
    """Feature schema and sizes of ``MultimodalEngagementNet``.

    The defaults reproduce the prototype: 3 numerics, 5 sessions, a 384-d
    all-MiniLM-L6-v2 title embedding and 1 graph feature -> fusion width 144.
    Feature order in the lists is the column order of the batch tensors.
    """

    numeric_features: list[str] = field(default_factory=lambda: ["age", "city_index", "subscription_price"])
    categorical_features: dict[str, int] = field(default_factory=dict)  # name -> cardinality
    categorical_embedding_dim: int = 8
    sequence_feature: str = "recent_watch_seconds"
    sequence_length: int = 5
    embedding_feature: str = "title_embedding"
    embedding_dim: int = 384
    graph_features: list[str] = field(default_factory=lambda: ["graph_degree"])
    tabular_hidden: int = 32
    lstm_hidden: int = 32
    embedding_out: int = 64
    graph_out: int = 16
    fusion_hidden: int = 64
    dropout: float = 0.1
    # Optional collaborative term (biased matrix factorization on dense user/movie ids, batch
    # keys "user"/"movie"): logit += <p_u, q_i> + b_u + b_i. 0 turns it off (the prototype).
    n_users: int = 0
    n_movies: int = 0
    factor_dim: int = 0

    def __post_init__(self) -> None:
        names = [*self.numeric_features, *self.categorical_features, *self.graph_features]
        names += [self.sequence_feature, self.embedding_feature]
        if len(set(names)) != len(names):
            raise ValueError(f"a feature is listed twice: {names}")
        if not (self.numeric_features or self.categorical_features) or not self.graph_features:
            raise ValueError("tabular and graph branches each need at least one feature")
        if min([self.sequence_length, self.embedding_dim, *self.categorical_features.values()]) < 1:
            raise ValueError("sequence_length, embedding_dim and cardinalities must be >= 1")
        if self.factor_dim and min(self.n_users, self.n_movies) < 1:
            raise ValueError("factor_dim > 0 needs n_users and n_movies")

    @classmethod
    def from_feature_names(
        cls,
        names: Iterable[str],
        *,
        sequence_feature: str,
        embedding_feature: str,
        graph_features: Sequence[str],
        categorical_features: Mapping[str, int] | None = None,
        **sizes: Any,
    ) -> EngagementNetConfig:
        """Route a feature service's names to branches; every unclaimed name is numeric.

        Order of ``names`` is kept, so it matches the order features arrive in.
        """
        categorical = dict(categorical_features or {})
        claimed = {sequence_feature, embedding_feature, *graph_features, *categorical}
        numeric = [n for n in names if n not in claimed]
        return cls(
            numeric_features=numeric,
            categorical_features=categorical,
            sequence_feature=sequence_feature,
            embedding_feature=embedding_feature,
            graph_features=list(graph_features),
            **sizes,
        )

    @property
    def fusion_in(self) -> int:
        return self.tabular_hidden + self.lstm_hidden + self.embedding_out + self.graph_out


class Standardize(nn.Module):
    """``(x - mean) / std`` with stats kept as buffers, so checkpoints carry them.

    Identity until ``fit`` is called. ``(batch, n) -> (batch, n)``.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Set the stats from training rows ``(rows, n)``; constant columns get std 1."""
        self.mean.copy_(x.float().mean(0))
        std = x.float().std(0, unbiased=False)
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class TabularBranch(nn.Module):
    """Numerics (standardized) + categorical embeddings -> MLP.

    ``numeric (batch, n_numeric), categorical (batch, n_cat) -> (batch, tabular_hidden)``.
    """

    def __init__(self, config: EngagementNetConfig) -> None:
        super().__init__()
        self.norm = Standardize(len(config.numeric_features))
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, config.categorical_embedding_dim) for card in config.categorical_features.values()
        )
        n_in = len(config.numeric_features) + len(self.embeddings) * config.categorical_embedding_dim
        h = config.tabular_hidden
        self.mlp = nn.Sequential(nn.Linear(n_in, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())

    def forward(self, numeric: Tensor, categorical: Tensor | None = None) -> Tensor:
        parts = [self.norm(numeric)]
        if self.embeddings:
            if categorical is None:
                raise ValueError("config has categorical features but the batch has none")
            parts += [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=-1))


class SequenceBranch(nn.Module):
    """LSTM over recent playback durations in raw seconds (log1p-scaled here).

    ``(batch, sequence_length) -> (batch, lstm_hidden)``: the last hidden state.
    """

    def __init__(self, config: EngagementNetConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=1, hidden_size=config.lstm_hidden, batch_first=True)

    def forward(self, seconds: Tensor) -> Tensor:
        if not self.training and len(seconds) > 1:
            # Serving repeats each user's sequence on all their candidates' rows, one after the
            # other: run the LSTM once per run of equal rows (100x fewer) and spread the results
            # back. (torch.unique(dim=0) sorts, and costs as much as the LSTM it would save.)
            starts = torch.ones(len(seconds), dtype=torch.bool)
            starts[1:] = (seconds[1:] != seconds[:-1]).any(dim=1)
            if not bool(starts.all()):
                return self._last_hidden(seconds[starts])[starts.cumsum(0) - 1]
        return self._last_hidden(seconds)

    def _last_hidden(self, seconds: Tensor) -> Tensor:
        # durations span 0..1e4 s; log1p keeps the LSTM gates out of saturation
        x = torch.log1p(seconds.clamp_min(0)).unsqueeze(-1)
        _, (h_n, _) = self.lstm(x)
        last: Tensor = h_n[-1]
        return last


class MultimodalEngagementNet(nn.Module):
    """Predicts P(user engages with movie) from four feature families.

    ``forward(batch) -> (batch,)`` probabilities in (0, 1); ``logits`` gives the
    pre-sigmoid scores (use them with ``BCEWithLogitsLoss``: plain BCE on
    probabilities is refused under autocast). Batch keys: ``numeric`` (B, n_num),
    ``categorical`` (B, n_cat) long (may be omitted when n_cat == 0), ``sequence``
    (B, N) seconds, ``embedding`` (B, embedding_dim), ``graph`` (B, n_graph).
    Per-pair extras such as an on-demand genre affinity are numeric features.
    """

    def __init__(self, config: EngagementNetConfig) -> None:
        super().__init__()
        self.config = config
        self.tabular_branch = TabularBranch(config)
        self.sequence_branch = SequenceBranch(config)
        self.embedding_branch = nn.Sequential(nn.Linear(config.embedding_dim, config.embedding_out), nn.ReLU())
        self.graph_norm = Standardize(len(config.graph_features))
        self.graph_branch = nn.Sequential(nn.Linear(len(config.graph_features), config.graph_out), nn.ReLU())
        self.head = nn.Sequential(
            nn.Linear(config.fusion_in, config.fusion_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.fusion_hidden, 1),
        )
        self.factors: nn.ModuleDict | None = None
        if config.factor_dim:
            self.factors = nn.ModuleDict(
                {
                    "user": nn.Embedding(config.n_users, config.factor_dim),
                    "movie": nn.Embedding(config.n_movies, config.factor_dim),
                    "user_bias": nn.Embedding(config.n_users, 1),
                    "movie_bias": nn.Embedding(config.n_movies, 1),
                }
            )
            for name, table in self.factors.items():  # small start: MF with large factors overfits fast
                assert isinstance(table, nn.Embedding)
                if "bias" in name:
                    nn.init.zeros_(table.weight)
                else:
                    nn.init.normal_(table.weight, std=0.01)

    def collaborative(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``(batch,)`` biased-MF logit term from ``user``/``movie`` dense ids; zeros when off."""
        if self.factors is None:
            return torch.zeros(batch["embedding"].shape[0], device=batch["embedding"].device)
        u, m = batch["user"], batch["movie"]
        f = self.factors
        dot = (f["user"](u) * f["movie"](m)).sum(-1)
        return dot + f["user_bias"](u).squeeze(-1) + f["movie_bias"](m).squeeze(-1)

    @torch.no_grad()
    def fit_normalization(self, batch: Mapping[str, Tensor]) -> None:
        """Fit numeric and graph standardization on training rows (call once, before training)."""
        self.tabular_branch.norm.fit(batch["numeric"])
        self.graph_norm.fit(batch["graph"])

    def branch_outputs(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-branch outputs; with the defaults (B, 32), (B, 32), (B, 64), (B, 16)."""
        return {
            "tabular": self.tabular_branch(batch["numeric"], batch.get("categorical")),
            "sequence": self.sequence_branch(batch["sequence"]),
            "embedding": self.embedding_branch(batch["embedding"]),
            "graph": self.graph_branch(self.graph_norm(batch["graph"])),
        }

    def fusion_input(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``(batch, fusion_in)``: branch outputs concatenated (144 with the defaults)."""
        return torch.cat(list(self.branch_outputs(batch).values()), dim=-1)

    def logits(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``(batch,)`` pre-sigmoid engagement scores."""
        return self.head(self.fusion_input(batch)).squeeze(-1) + self.collaborative(batch)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return torch.sigmoid(self.logits(batch))


# --------------------------------------------------------------------------- two-tower


@dataclass
class TwoTowerConfig(_DictConfig):
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

    def forward(self, ids: Tensor, features: Tensor | None = None) -> Tensor:
        x = self.id_embedding(ids)
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
        return self.user_tower(user_ids, user_features)

    def movie_vectors(self, movie_ids: Tensor, content: Tensor | None = None, genres: Tensor | None = None) -> Tensor:
        """``(batch,) [, (batch, content_dim), (batch, n_genres)] -> (batch, out_dim)``.

        Content/genres left as None are looked up in the catalogue.
        """
        c = self.config
        if content is None and c.movie_content_dim:
            content = self._catalog(self.catalog_content)[movie_ids]
        if genres is None and c.n_genres:
            genres = self._catalog(self.catalog_genres)[movie_ids]
        parts = [t for t in (content, genres) if t is not None and t.shape[-1] > 0]
        return self.movie_tower(movie_ids, torch.cat(parts, dim=-1) if parts else None)

    def _catalog(self, table: Tensor) -> Tensor:
        if table.shape[0] != self.config.n_movies:
            raise ValueError("pass movie content/genres or call set_catalog first")
        return table

    def score(self, user_vecs: Tensor, movie_vecs: Tensor) -> Tensor:
        """Row-wise ``(batch, d), (batch, d) -> (batch,)`` logits = dot / temperature."""
        return (user_vecs * movie_vecs).sum(-1) / self.config.temperature

    @torch.no_grad()
    def all_movie_vectors(self) -> Tensor:
        """``(n_movies, out_dim)`` for the whole catalogue (what goes into pgvector)."""
        ids = torch.arange(self.config.n_movies, device=self.user_tower.id_embedding.weight.device)
        return self.movie_vectors(ids)

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


# --------------------------------------------------------------------------- baselines


class MostPopular:
    """Scores every item by its interaction count in training; same list for everyone."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.counts = torch.zeros(n_items)

    def fit(self, item_ids: Tensor | Sequence[int]) -> MostPopular:
        """``item_ids (n_interactions,)``: one entry per training interaction."""
        ids = torch.as_tensor(item_ids, dtype=torch.long)
        self.counts = torch.bincount(ids, minlength=self.n_items).float()
        return self

    def score_all(self, user_ids: Tensor) -> Tensor:
        """``(batch,) -> (batch, n_items)`` counts (a view, don't modify in place)."""
        return self.counts.to(user_ids.device).expand(user_ids.shape[0], -1)


class BPRMF(nn.Module):
    """Matrix factorization trained with BPR (Rendle et al., 2009).

    ``forward(user_ids (B,), item_ids (B,)) -> (B,)`` = <p_u, q_i> + b_i.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 64) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        # small init: BPR on large random factors starts far from the ranking optimum
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, user_ids: Tensor, item_ids: Tensor) -> Tensor:
        p, q = self.user_embedding(user_ids), self.item_embedding(item_ids)
        return (p * q).sum(-1) + self.item_bias(item_ids).squeeze(-1)

    @torch.no_grad()
    def score_all(self, user_ids: Tensor) -> Tensor:
        """``(batch,) -> (batch, n_items)``."""
        return self.user_embedding(user_ids) @ self.item_embedding.weight.T + self.item_bias.weight.T


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """``-mean(log sigmoid(pos - neg))`` over ``(B,)`` pairs; softplus form is stable."""
    return F.softplus(neg_scores - pos_scores).mean()
