"""Serving: a retriever's candidates re-ranked by the engagement net, behind the API's ``Recommender``.

``Ranker`` loads the checkpoints once (``<models_dir>/<split>/<retriever>.pt`` and
``engagement.pt``). The retriever is the one of ``RETRIEVERS`` (recency-weighted EASE, the
two-tower, the sequential model, the VAE, or a fusion of them) with a checkpoint and the best
validation NDCG@10 recorded in it (``best_retriever``): the served ranking is the model that
wins the evaluation. EASE reads the user's movies oldest first and multiplies one (n_movies,)
row by its item-item matrix (1,682² floats, ~11 MB, in the checkpoint). For the two-tower, candidate generation needs no
feature store: the movie vectors were precomputed at training time and travel in the
two-tower checkpoint (1,682 x 64 floats for ML-100K, ~430 KB), so a batch of users is one
user-tower pass and one (users, 64) x (64, n_movies) product in memory; a catalogue in the
millions would move them into a pgvector HNSW table instead. Both retrievers read each user's
history (movies rated, oldest first), which the caller reads from the graph and the API's
mutation log, so a rating made a moment ago already counts. The sequential retriever reads
the last ``max_len`` of them in order through its self-attention layers; the VAE reads them
as one recency-weighted row, like EASE, and decodes its posterior mean over the catalogue. A fusion
(``fusion.pt``: weights only) loads the checkpoints it weighs, runs each and sums their
z-scored scores (model/networks/fusion.py); it is served only when those are the very
checkpoints its weights were chosen for (their versions are recorded in it).

Re-ranking reads the encoded online features of the (user, candidate) pairs through
``PairFeatures`` (model/serve/pair_features.py: Feast's ``engagement_serving_v1``, movie side
held in memory) and adds ``beta`` x the
engagement logit (beta as chosen by ``marquee evaluate`` on validation, stored in the
engagement checkpoint's metrics with the retriever it was chosen for; 0, or another
retriever, = retriever order). When features cannot be read the
answer is the retriever's order with ``degraded=True``.

Movies added after training (``add_movies``: the API's ``addMovie``) are placed by the
retriever's content-only path (model/networks/two_tower.py) and appended to the in-memory
vectors, so they are candidates at once; the engagement net has no row for them, so their
re-ranked score adds the mean engagement term of the other candidates (``Scored.rating`` None).
``audience`` ranks users for one movie with the same vectors.

The trend prior (model/serve/trend.py), when ``marquee evaluate`` stored one in the retriever's
checkpoint, shapes the retriever's scores before candidates are taken: standardized per user,
plus what is being rated now (``set_recent_counts``, read by the API every minute), plus a lift
for titles new to the retriever. It is also what places an added title when EASE is served.

The API wraps ``Ranker`` as a Recommender in ``api/recommendations/ranked.py`` (``plug_serving``), loading it
with ``expected_features`` from the feature service.

``expected_features`` makes a checkpoint trained on another feature list fail at start-up
(``FeatureMismatch``) instead of scoring with misread columns; a checkpoint trained on the
local frame (``--features local``) is refused there too, by design: train with
``--features feast`` to serve with Feast's online features.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from model.checkpoint import (
    Checkpoint,
    CheckpointError,
    FeatureMismatch,
    checkpoint_path,
    from_checkpoint,
    load_checkpoint,
)
from model.data.engagement_frame import FrameEncoder
from model.networks.ease import RecencyEASE
from model.networks.engagement import MultimodalEngagementNet, predict_ratings, rating_to_logit
from model.networks.fusion import FusionConfig, fuse
from model.networks.sequential import SequentialRetriever
from model.networks.two_tower import TwoTowerRetriever, UserHistory
from model.networks.vae import MultVAE
from model.serve.pair_features import PairFeatures
from model.serve.trend import TrendPrior, new_mask, recent_lift, with_prior
from sources.feature_store.names import TRAINING_SERVICE

log = logging.getLogger(__name__)

#: models that can generate the served candidates, each with a checkpoint of that kind (ties: the first)
RETRIEVERS = ("ease", "two_tower", "sequential", "vae", "fusion")


def best_retriever(checkpoints: Mapping[str, Checkpoint]) -> str:
    """The retriever kind whose checkpoint records the best validation NDCG@10 (ties: ``RETRIEVERS`` order)."""
    found = [k for k in RETRIEVERS if k in checkpoints]
    if not found:
        raise CheckpointError(f"no retriever checkpoint ({', '.join(RETRIEVERS)}): run `marquee train` first")
    return max(found, key=lambda k: (float(checkpoints[k].metrics.get("valid", {}).get("ndcg@10", 0.0)),
                                     -RETRIEVERS.index(k)))  # fmt: skip


def fusion_parts(fusion: Checkpoint, found: Mapping[str, Checkpoint]) -> dict[str, Checkpoint]:
    """The checkpoints ``fusion`` weighs, from ``found``; each must be the version its weights
    were chosen for (a retrained retriever has other scores), else ``CheckpointError``."""
    versions: dict[str, str] = fusion.extras.get("components", {})
    parts = {}
    for kind, version in versions.items():
        ckpt = found.get(kind)
        if ckpt is None or ckpt.version != version:
            now = ckpt.version if ckpt is not None else "none"
            raise CheckpointError(f"fusion was fitted on {kind} {version}, found {now}: "
                                  "run `marquee train --model fusion`")  # fmt: skip
        parts[kind] = ckpt
    if not parts:
        raise CheckpointError("fusion checkpoint names no retrievers")
    return parts


def service_features(store: Any, service: str = TRAINING_SERVICE) -> list[str]:
    """``view__feature`` names a Feast feature service serves now, in its order."""
    names = []
    for projection in store.get_feature_service(service).feature_view_projections:
        prefix = projection.name_to_use()
        names += [f"{prefix}__{f.name}" for f in projection.features]
    return names


def _unknown(user_id: int) -> CheckpointError:
    return CheckpointError(f"user {user_id} is newer than the retriever checkpoint; retrain to include them")


@dataclass(frozen=True)
class RankRequest:
    """One user to rank: ``k`` movies, none of ``exclude``."""

    user_id: int
    history: Sequence[int]  # the movies the user rated, oldest first (the retriever reads them)
    k: int
    exclude: set[int]


@dataclass(frozen=True)
class Scored:
    """One ranked movie: the final ``score`` and the retriever's logit it started from."""

    movie_id: int
    score: float
    retriever: float
    rating: float | None  # the engagement net's predicted rating, when it re-ranked


class Ranker:
    """Checkpoints loaded once; ``rank_many`` answers several users in one pass, ``rank`` one."""

    def __init__(
        self,
        retriever: Checkpoint,
        engagement: Checkpoint | None = None,
        *,
        beta: float | None = None,
        components: Mapping[str, Checkpoint] | None = None,
    ) -> None:
        """``components``: the checkpoints a ``fusion`` retriever weighs (by kind)."""
        if retriever.kind not in RETRIEVERS:
            raise CheckpointError(f"{retriever.kind} cannot retrieve; use one of {', '.join(RETRIEVERS)}")
        self.retriever_kind = retriever.kind
        self.ease: RecencyEASE | None = None
        self.two_tower: TwoTowerRetriever | None = None
        self.sequential: SequentialRetriever | None = None
        self.vae: MultVAE | None = None
        self.fusion: FusionConfig | None = None
        parts = {retriever.kind: retriever}
        if retriever.kind == "fusion":
            self.fusion = from_checkpoint(retriever)
            parts = fusion_parts(retriever, components or {})
        for kind, ckpt in parts.items():
            if kind == "ease":
                self.ease = from_checkpoint(ckpt)
            elif kind == "sequential":
                self.sequential = from_checkpoint(ckpt)
            elif kind == "vae":
                self.vae = from_checkpoint(ckpt)
            else:
                self.two_tower = from_checkpoint(ckpt)
                self.movie_vectors: Tensor = ckpt.extras["movie_vectors"].float()
        self.movie_ids = np.asarray(retriever.extras["movie_ids"])
        self.user_ids = [int(u) for u in np.asarray(retriever.extras["user_ids"]).tolist()]
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.movie_index = {int(m): i for i, m in enumerate(self.movie_ids.tolist())}
        #: movies at index >= this were added after training (content-only vectors)
        self.trained_movies = len(self.movie_ids)
        self._adding = threading.Lock()
        #: the trend prior ``marquee evaluate`` chose for this retriever (model/serve/trend.py), if any
        stored_prior = retriever.metrics.get("trend_prior")
        self.prior = TrendPrior.from_dict(stored_prior) if stored_prior else None
        self._recent: Mapping[int, int] = {}  # events per movie id in the prior's window (set_recent_counts)
        self._terms: tuple[int, Mapping[int, int], Tensor, Tensor] | None = None  # (movies, counts, lift, is_new)
        self.engagement: MultimodalEngagementNet | None = None
        self.encoder: FrameEncoder | None = None
        self.beta = 0.0
        self.version = retriever.version
        if engagement is not None:
            self.engagement = from_checkpoint(engagement)
            self.encoder = FrameEncoder.from_dict(engagement.extras["encoder"])
            # the weight was chosen on validation for one retriever's scores; another's scale differs
            chosen_for = engagement.metrics.get("rerank_retriever", "two_tower")
            same_scale = bool(engagement.metrics.get("rerank_trend", False)) == (self.prior is not None)
            fits = chosen_for == retriever.kind and same_scale
            stored = engagement.metrics.get("rerank_beta", 0.0) if fits else 0.0
            self.beta = float(beta if beta is not None else stored)
            self.version += f"+{engagement.version}"

    @classmethod
    def load(cls, models_dir: Path, *, split: str = "time", expected_features: Sequence[str] | None = None) -> Ranker:
        """The best retriever (``best_retriever``) and the engagement checkpoint of ``split``;
        ``expected_features`` (the training service's current feature list) makes a stale
        engagement checkpoint fail here, not on a request."""
        folder = models_dir / split
        found = {}
        for kind in RETRIEVERS:
            try:
                found[kind] = load_checkpoint(checkpoint_path(folder, kind))
            except CheckpointError as exc:
                log.info("retriever %s not available (%s)", kind, exc)
        if not found:
            found["two_tower"] = load_checkpoint(checkpoint_path(folder, "two_tower"))  # raises the usual error
        if "fusion" in found:
            try:
                fusion_parts(found["fusion"], found)
            except CheckpointError as exc:  # a fused retriever was retrained since: its weights no longer fit
                log.warning("fusion not served (%s)", exc)
                del found["fusion"]
        retriever = found[best_retriever(found)]
        try:
            engagement = load_checkpoint(checkpoint_path(folder, "engagement"), expected_features)
        except CheckpointError as exc:
            if isinstance(exc, FeatureMismatch):
                raise
            log.warning("no engagement re-ranker (%s); serving retriever order", exc)
            engagement = None
        return cls(retriever, engagement, components=found)

    @property
    def content_path(self) -> bool:
        """Whether the served retriever places movies by content and users as vectors (the
        two-tower does; EASE's item-item matrix knows only the movies it was solved on)."""
        return self.two_tower is not None

    @property
    def tower(self) -> TwoTowerRetriever:
        if self.two_tower is None:
            raise CheckpointError(f"the served retriever ({self.retriever_kind}) has no content path")
        return self.two_tower

    def add_movies(self, movie_ids: Sequence[int], content: Tensor, genres: Tensor) -> list[int]:
        """Make movies the checkpoint never saw candidates: ``content (n, 384)``, ``genres (n,
        n_genres)`` in the training catalogue's genre order. Movies already known are skipped;
        returns the ids added. EASE has no content path: with a trend prior a title it never saw
        is still a candidate, placed by its recent events alone; without one it waits for EASE
        to be solved again (none added). Readers see the old catalogue or the new one, never a mix."""
        if not self.content_path and self.prior is None:
            return []
        with self._adding:
            fresh = [i for i, m in enumerate(movie_ids) if int(m) not in self.movie_index]
            if not fresh:
                return []
            added = [int(movie_ids[i]) for i in fresh]
            index = dict(self.movie_index)
            index.update({m: len(self.movie_ids) + j for j, m in enumerate(added)})
            all_ids = np.concatenate([self.movie_ids, np.asarray(added, dtype=self.movie_ids.dtype)])
            if self.content_path:
                vectors = self.tower.content_vectors(content[fresh], genres[fresh]).float()
                self.movie_vectors = torch.cat([self.movie_vectors, vectors])
            # vectors and ids first: a reader holding the old index only sees old positions
            self.movie_ids = all_ids
            self.movie_index = index
            return added

    def set_recent_counts(self, counts: Mapping[int, int]) -> None:
        """Events per movie id in the last ``prior.days`` days (the API reads them periodically);
        the prior's lift follows from the next request on."""
        self._recent = dict(counts)

    @property
    def recent_counts(self) -> Mapping[int, int]:
        """The counts the prior reads now (``set_recent_counts``)."""
        return self._recent

    def _prior_terms(self, n_movies: int) -> tuple[Tensor, Tensor]:
        """``(lift, is_new)`` over the first ``n_movies`` of ``movie_ids``, rebuilt when they change."""
        assert self.prior is not None
        kept, recent = self._terms, self._recent
        if kept is None or kept[0] != n_movies or kept[1] is not recent:
            ids = self.movie_ids[:n_movies].tolist()
            counts = np.asarray([recent.get(int(m), 0) for m in ids], dtype=np.float64)
            kept = (n_movies, recent, recent_lift(counts), new_mask(ids, self.prior.new_movies, self.trained_movies))
            self._terms = kept
        return kept[2], kept[3]

    @torch.no_grad()
    def user_vectors(self, user_ids: Sequence[int], histories: Sequence[Sequence[int]]) -> Tensor:
        """``(len(user_ids), out_dim)`` for known users, each reading their history."""
        index, trained = self.movie_index, self.trained_movies
        history = UserHistory.of([[index[m] for m in h if index.get(m, trained) < trained] for h in histories])
        ids = torch.tensor([self.user_index[u] for u in user_ids], dtype=torch.long)
        with torch.no_grad():
            vectors: Tensor = self.tower.user_vectors(ids, None, history)
        return vectors

    def audience(
        self, movie_id: int, user_vectors: Tensor, user_ids: Sequence[int], first: int
    ) -> list[tuple[int, float]]:
        """The ``first`` users (of ``user_ids``, whose vectors are given) most likely to pick
        ``movie_id``, with that probability: the retriever's softmax over the whole catalogue
        (what it was trained to predict), so a user who likes everything does not top every
        audience. [] for a movie it does not know."""
        position = self.movie_index.get(int(movie_id))
        if position is None:
            return []
        with torch.no_grad():
            logits = user_vectors @ self.movie_vectors.T / self.tower.config.temperature
            chance = (logits[:, position] - torch.logsumexp(logits, dim=1)).exp()
            top = chance.topk(min(first, len(user_ids)))
        return [(int(user_ids[i]), float(v)) for i, v in zip(top.indices.tolist(), top.values.tolist(), strict=True)]

    def candidates(self, user_id: int, history: Sequence[int], n: int, exclude: set[int]) -> tuple[np.ndarray, Tensor]:
        """Top ``n`` movie ids (external) and their retriever logits, excluding ``exclude``."""
        if user_id not in self.user_index:
            raise _unknown(user_id)
        return self._candidates([RankRequest(user_id, history, n, exclude)], n)[0]

    @torch.no_grad()
    def _scores(self, kind: str, requests: Sequence[RankRequest], width: int) -> Tensor:
        """``(len(requests), width)`` scores of one retriever; movies it cannot score get -inf."""
        index, trained = self.movie_index, self.trained_movies
        histories = [[index[m] for m in r.history if index.get(m, trained) < trained] for r in requests]
        if kind == "two_tower":
            users = self.user_vectors([r.user_id for r in requests], [r.history for r in requests])
            out: Tensor = users @ self.movie_vectors[:width].T / self.tower.config.temperature
            return out
        if kind == "ease" and self.ease is not None:
            logits = self.ease.score(self.ease.history_inputs(histories))
        elif kind == "sequential" and self.sequential is not None:
            logits = self.sequential.score_last(self.sequential.tokens(histories))
        elif kind == "vae" and self.vae is not None:
            logits = self.vae.score(self.vae.history_inputs(histories))
        else:
            raise CheckpointError(f"no {kind} retriever loaded")
        return self._widened(logits, width)

    def _widened(self, logits: Tensor, width: int) -> Tensor:
        """``logits`` with a column for each movie added since training: the row's mean under the
        trend prior (which then places them by their recent ratings), else -inf (never candidates)."""
        if width <= logits.shape[1]:
            return logits
        fill = logits.mean(dim=1, keepdim=True) if self.prior else torch.full((len(logits), 1), float("-inf"))
        return torch.cat([logits, fill.expand(-1, width - logits.shape[1])], dim=1)

    @torch.no_grad()
    def _candidates(self, requests: Sequence[RankRequest], n: int) -> list[tuple[np.ndarray, Tensor]]:
        """Each (known) user's top ``n``: one pass of the retriever (or of each fused one) for all of them."""
        movie_ids, index = self.movie_ids, self.movie_index
        if self.fusion is not None:
            trained = self.trained_movies  # a fusion ranks the movies every fused retriever knows
            parts = {k: self._scores(k, requests, trained) for k in self.fusion.used}
            logits = self._widened(fuse(parts, self.fusion.weights), len(movie_ids))
        else:
            logits = self._scores(self.retriever_kind, requests, len(movie_ids))
        if self.prior is not None:
            logits = with_prior(logits, *self._prior_terms(len(movie_ids)), self.prior)
        out = []
        for row, r in zip(logits, requests, strict=True):
            blocked = [index[m] for m in r.exclude if index.get(m, len(movie_ids)) < len(movie_ids)]
            row[blocked] = float("-inf")
            top = row.topk(min(n, int(torch.isfinite(row).sum())))
            out.append((movie_ids[top.indices.numpy()], top.values))
        return out

    def rank(
        self, user_id: int, history: Sequence[int], k: int, *, exclude: set[int], features: PairFeatures | None,
        n_candidates: int = 100,
    ) -> tuple[list[Scored], bool]:  # fmt: skip
        """Top ``k`` and whether the answer is degraded (features wanted but unreadable)."""
        outcome = self.rank_many(
            [RankRequest(user_id, history, k, exclude)], features=features, n_candidates=n_candidates
        )[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def rank_many(
        self, requests: Sequence[RankRequest], *, features: PairFeatures | None, n_candidates: int = 100
    ) -> list[tuple[list[Scored], bool] | Exception]:
        """``rank`` for several users at once, in order: one candidate pass, one feature read and
        one forward pass for all of them. A user the checkpoint does not know gets its own
        ``CheckpointError`` and does not fail the others."""
        known = [r for r in requests if r.user_id in self.user_index]
        n = max([n_candidates] + [r.k for r in known])
        ranked = iter(self._rerank(known, self._candidates(known, n), features) if known else [])
        return [next(ranked) if r.user_id in self.user_index else _unknown(r.user_id) for r in requests]

    def _rerank(
        self, requests: Sequence[RankRequest], found: list[tuple[np.ndarray, Tensor]], features: PairFeatures | None
    ) -> list[tuple[list[Scored], bool]]:
        def retriever_order(movie_ids: np.ndarray, logits: Tensor, k: int) -> list[Scored]:
            top = zip(movie_ids[:k].tolist(), logits[:k].tolist(), strict=True)
            return [Scored(int(m), s, s, None) for m, s in top]

        if self.engagement is None or self.encoder is None or not self.beta or features is None:
            degraded = self.beta > 0 and features is None
            return [(retriever_order(m, s, r.k), degraded) for r, (m, s) in zip(requests, found, strict=True)]
        # the engagement net knows only the checkpoint's movies; added ones are scored apart
        added = self.trained_movies < len(self.movie_ids)
        trained = set(self.movie_ids[: self.trained_movies].tolist()) if added else None
        known = [m if trained is None else np.asarray([x for x in m.tolist() if x in trained], dtype=m.dtype)
                 for m, _ in found]  # fmt: skip
        try:
            batch = features.encoded_many([(r.user_id, k.tolist()) for r, k in zip(requests, known, strict=True)],
                                          self.encoder)  # fmt: skip
            all_ratings = torch.split(predict_ratings(self.engagement, batch), [len(k) for k in known])
        except Exception as exc:  # a feature store hiccup must not fail the requests
            log.warning("engagement re-rank skipped (%s)", exc)
            return [(retriever_order(m, s, r.k), True) for r, (m, s) in zip(requests, found, strict=True)]
        out = []
        for r, (movie_ids, logits), k, ratings in zip(requests, found, known, all_ratings, strict=True):
            engaged = rating_to_logit(ratings)
            if len(k) < len(movie_ids):
                by_id = dict(zip(k.tolist(), engaged.tolist(), strict=True))
                mean = float(engaged.mean()) if len(k) else 0.0
                engaged = torch.tensor([by_id.get(m, mean) for m in movie_ids.tolist()], dtype=logits.dtype)
                rated = dict(zip(k.tolist(), ratings.tolist(), strict=True))
                p: list[float | None] = [rated.get(m) for m in movie_ids.tolist()]
            else:
                p = list(ratings.tolist())
            combined = logits + self.beta * engaged
            order = combined.argsort(descending=True, stable=True)[: r.k].tolist()
            # plain lists first: indexing a tensor element by element costs microseconds each
            c, s, ids = combined.tolist(), logits.tolist(), movie_ids.tolist()
            scored = [Scored(int(ids[i]), c[i], s[i], p[i]) for i in order]
            out.append((scored, False))
        return out
