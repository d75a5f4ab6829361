"""Peers in the same table: RecBole's top-10 lists scored by Marquee's metric code, and a paired bootstrap.

``scripts/recbole_peer.py --json peers.json`` runs RecBole's models on the same ML-100K files
and protocol and records, per model, its own test metrics and every test user's top-10 (external
ids). ``peer_scores`` turns a top-10 into a score matrix so the peer goes through the same
``full_ranking`` as Marquee's models; ``check_protocol`` refuses lists that contain a movie the
user met in train or valid (a sign the two splits differ). ``paired_bootstrap`` resamples the
users with replacement and gives the 95% interval of the mean per-user NDCG@10 difference.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from model.data.interactions import Interactions
from model.evaluate.ranking import masks
from sources.errors import MarqueeError

#: score of a movie outside a peer's top-10: below every listed one
UNLISTED = -1e9


class PeerError(MarqueeError):
    """A peers file that cannot be read or was not made on the same split."""


def load_peers(path: Path) -> dict[str, dict[str, Any]]:
    """``{model: {metrics..., "top10": {user_id: [movie_id, ...]}}}`` as the script wrote it."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PeerError(f"cannot read peers file {path}: {exc}") from exc
    if not isinstance(raw, dict) or not all(isinstance(v, dict) and "top10" in v for v in raw.values()):
        raise PeerError(f"{path} is not a scripts/recbole_peer.py --json file (no top10 lists)")
    return raw


def peer_scores(top10: dict[str, list[str]], data: Interactions) -> Tensor:
    """``(n_users, n_movies)``: 10 for each user's first movie down to 1 for the tenth, else ``UNLISTED``."""
    users, movies = data.user_index(), data.movie_index()
    scores = torch.full((data.n_users, data.n_movies), UNLISTED)
    for user, listed in top10.items():
        if int(user) not in users:
            raise PeerError(f"peer user {user} is not in the data")
        row = users[int(user)]
        for rank, movie in enumerate(listed):
            scores[row, movies[int(movie)]] = float(len(listed) - rank)
    return scores


def check_protocol(scores: Tensor, seen: list[Interactions], name: str, *, tolerance: float = 0.03) -> int:
    """How many listed movies the user met in ``seen`` (train + valid); raise above ``tolerance``
    of the listed slots: another split.

    A few are expected: events with the same timestamp at a user's 80/10/10 boundary are
    ordered by movie id here and by RecBole's unstable sort there, so either side of the
    boundary can differ (0.4-1% of the slots on ML-100K). Such a movie is masked out like any
    seen one, which costs the peer that slot."""
    _, exclude = masks(seen[0], seen)
    listed = scores > UNLISTED
    clashes = int((listed & exclude).sum())
    if clashes > tolerance * max(int(listed.sum()), 1):
        raise PeerError(f"{name} lists {clashes} movies its users met in train/valid: not the same split")
    return clashes


def per_user_ndcg(scores: Tensor, target: Interactions, seen: list[Interactions], k: int = 10) -> Tensor:
    """``(users with a held-out movie,)`` NDCG@k, binary relevance, ties by movie id (as ``full_ranking``)."""
    relevant, exclude = masks(target, seen)
    relevant &= ~exclude
    rows = relevant.any(dim=1).nonzero().squeeze(1)
    ranked = scores[rows].masked_fill(exclude[rows], float("-inf")).argsort(dim=1, descending=True, stable=True)[:, :k]
    gains = relevant[rows].gather(1, ranked).float()
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32))
    dcg = (gains * discount).sum(1)
    ideal = torch.cumsum(discount, 0)[relevant[rows].sum(1).clamp(max=k) - 1]
    return dcg / ideal


def paired_bootstrap(a: Tensor, b: Tensor, *, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` (paired per user) and its 95% percentile interval over user resamples."""
    diff = (a - b).double().numpy()
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"diff": float(diff.mean()), "low": float(low), "high": float(high), "users": float(len(diff)),
            "resamples": float(resamples)}  # fmt: skip


def self_reported(peer: dict[str, Any], key: str = "ndcg@10") -> float:
    """The peer's own test figure (RecBole's evaluator), NaN when absent."""
    value = peer.get(key)
    return float(value) if isinstance(value, int | float) else math.nan
