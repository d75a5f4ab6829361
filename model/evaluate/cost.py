"""Cost per request of the served retrieval, printed beside the quality it buys.

A quality gain that doubles the ranking time should be reported as such (issue 16), so the
evaluation times each retriever the way the API calls it: ``Ranker.rank_many`` of **one**
user (top ``candidates``, no features, the user's known movies excluded), one request after
another on this process's threads. The history each request reads is the user's training and
validation events, oldest first: what serving reads at test time. The first request of each
retriever is a warm-up and is not counted. Timings are of this machine and its load, at the
moment of the run: compare the rows of one report, not reports of different days.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from model.checkpoint import Checkpoint
from model.data.interactions import Interactions, Split, combined
from model.serve.ranker import Ranker, RankRequest


def history_requests(history: Interactions, n_users: int, candidates: int) -> list[RankRequest]:
    """One request per user (the first ``n_users`` dense ids with a history), external ids, oldest first."""
    order = np.lexsort((history.items, history.ts, history.users))
    users, movies = history.users[order], history.movie_ids[history.items[order]]
    starts = np.searchsorted(users, np.arange(history.n_users + 1))
    requests: list[RankRequest] = []
    for u in range(history.n_users):
        if len(requests) == n_users:
            break
        seen = [int(m) for m in movies[starts[u] : starts[u + 1]]]
        if seen:
            requests.append(RankRequest(int(history.user_ids[u]), seen, candidates, set(seen)))
    return requests


def first_users_history(parts: list[Interactions], n_users: int) -> Interactions:
    """The events of ``parts`` of the first ``n_users`` dense ids with any, combined: what
    ``history_requests`` reads, without copying and sorting every event (22M at the ML-25M shape)."""
    present = np.zeros(parts[0].n_users, dtype=bool)
    for part in parts:
        present[part.users] = True
    chosen = np.zeros_like(present)
    chosen[np.flatnonzero(present)[:n_users]] = True
    return combined([part.take(chosen[part.users]) for part in parts])


def request_cost(
    kinds: list[str], checkpoints: Mapping[str, Checkpoint], split: Split, *, n_users: int = 200,
    candidates: int = 100,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """``{kind: {"median_ms", "p90_ms", "users"}}`` for each retriever of ``kinds`` (a fusion ranks
    with the ``checkpoints`` it weighs)."""
    requests = history_requests(first_users_history([split.train, split.valid], n_users), n_users, candidates)
    out: dict[str, dict[str, float]] = {}
    for kind in kinds:
        ranker = Ranker(checkpoints[kind], components=checkpoints)
        ranker.rank_many(requests[:1], features=None, n_candidates=candidates)  # warm-up
        times = []
        for request in requests:
            started = time.perf_counter()
            ranker.rank_many([request], features=None, n_candidates=candidates)
            times.append((time.perf_counter() - started) * 1e3)
        out[kind] = {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
                     "users": float(len(times))}  # fmt: skip
    return out
