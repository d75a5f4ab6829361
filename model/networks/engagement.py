"""The multimodal engagement network: tabular, playback-sequence, title-embedding and graph
branches fused into one engagement score in [0, 1] per (user, movie) row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from model.device import autocast_context
from model.networks.config import DictConfig


@dataclass
class EngagementNetConfig(DictConfig):
    """Feature schema and sizes of ``MultimodalEngagementNet``.

    The defaults: 3 numerics, 5 sessions, a 384-d
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
    # keys "user"/"movie"): logit += <p_u, q_i> + b_u + b_i. 0 turns it off.
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
        hidden: Tensor = self.mlp(torch.cat(parts, dim=-1))
        return hidden


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
        user: Tensor = f["user"](u)
        movie: Tensor = f["movie"](m)
        user_bias: Tensor = f["user_bias"](u)
        movie_bias: Tensor = f["movie_bias"](m)
        return (user * movie).sum(-1) + user_bias.squeeze(-1) + movie_bias.squeeze(-1)

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
        head: Tensor = self.head(self.fusion_input(batch))
        return head.squeeze(-1) + self.collaborative(batch)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return torch.sigmoid(self.logits(batch))


# the rating scale: engagement = (rating - 1) / 4; rating = 1 + 4 * sigmoid(logit)


def rating_to_target(rating: Tensor) -> Tensor:
    """Stars 1..5 -> engagement target in [0, 1], any shape."""
    return (rating - 1.0) / 4.0


def logit_to_rating(logit: Tensor) -> Tensor:
    """Engagement logits -> predicted stars in [1, 5], same shape, float32."""
    return 1.0 + 4.0 * torch.sigmoid(logit.float())


def rating_to_logit(rating: Tensor) -> Tensor:
    """``logit_to_rating``'s inverse, clamped so ratings of exactly 1 or 5 stay finite."""
    p = rating_to_target(rating).clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


def to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Every tensor of a batch on ``device`` (non-blocking: pinned CPU tensors copy asynchronously)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class Rows(Protocol):
    """Rows that hand out batch dicts by a slice or row indices
    (``model.data.engagement_frame.EncodedRows``)."""

    def __len__(self) -> int: ...

    def take(self, rows: slice | Tensor) -> dict[str, Tensor]: ...


@torch.no_grad()
def predict_ratings(model: MultimodalEngagementNet, batch: Mapping[str, Tensor] | Rows, chunk: int = 8192) -> Tensor:
    """``(rows,)`` predicted ratings in [1, 5] on the model's device, returned on CPU.

    ``batch``: a batch dict, or ``Rows`` gathered ``chunk`` rows at a time (a large validation
    or candidate set never exists as one dict of full tensors)."""
    device = next(model.parameters()).device
    n = len(batch["embedding"]) if isinstance(batch, Mapping) else len(batch)
    model.eval()
    out = []
    for s in range(0, n, chunk):
        rows = slice(s, s + chunk)
        part = {k: v[rows] for k, v in batch.items()} if isinstance(batch, Mapping) else batch.take(rows)
        with autocast_context(device):
            out.append(logit_to_rating(model.logits(to_device(part, device))).cpu())
    return torch.cat(out) if out else torch.zeros(0)
