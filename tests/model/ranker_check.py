"""What the Ranker serves a user beside what the offline scorer ranks for them (shared by the
retriever tests: EASE, the sequential model, the VAE)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from model.checkpoint import Checkpoint
from model.data import interactions as inter
from model.serve.ranker import Ranker, RankRequest


def served_and_expected(
    checkpoint: Checkpoint, data: inter.Interactions, user: int, mine: Sequence[int], scores: Tensor, k: int = 5
) -> tuple[list[int], list[int], bool]:
    """(the movie ids the Ranker serves dense ``user`` whose history is ``mine``, dense movie ids
    oldest first; the top ``k`` of the scorer's ``scores`` row with ``mine`` pushed out; whether
    the served list was degraded)."""
    seen = {int(data.movie_ids[i]) for i in mine}
    request = RankRequest(int(data.user_ids[user]), [int(data.movie_ids[i]) for i in mine], k, seen)
    (scored, degraded), = Ranker(checkpoint).rank_many([request], features=None)  # fmt: skip
    row = scores.clone()
    row[list(mine)] = float("-inf")
    return [s.movie_id for s in scored], data.movie_ids[row.topk(k).indices].tolist(), degraded
