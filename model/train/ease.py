"""Training recency-weighted EASE: one closed-form solve per ridge weight, the grid chosen on validation.

Each (l2, recency) pair of ``GRID`` is one "epoch" in the history: the model is fitted on the
training part and scored on the valid part (history = training part), and the pair with the
best valid NDCG@10 is kept. The test part is never read here. Past ``ease_max_movies`` movies
the item matrix covers the most-rated ones only (``RecencyEASE``'s ``kept``).

One solve per ridge weight serves every recency length (they share its item matrix). The
training time budget (``MARQUEE_TRAIN_BUDGET_S``) is checked before each solve: when the next
ridge weight's solve and rankings (as long as the mean grid point so far, times the recency
lengths) would end past it, the grid stops there and the best point so far is kept.
"""

from __future__ import annotations

import time

import torch

from model.data.interactions import Split
from model.evaluate.ranking import EaseScorer, HistoryIndex, full_ranking
from model.networks.ease import EaseConfig, RecencyEASE
from model.train.loop import budget_message
from model.train.options import Trained, TrainOptions
from sources.progress import console

#: ridge weights and recency lengths tried (recency 0 = plain EASE, the ablation)
L2_GRID = (300.0, 700.0, 1200.0)
RECENCY_GRID = (0.0, 10.0, 20.0)


def train_ease(
    split: Split,
    options: TrainOptions,
    *,
    l2_grid: tuple[float, ...] = L2_GRID,
    recency_grid: tuple[float, ...] = RECENCY_GRID,
) -> Trained:
    """Fit on ``split.train`` for every grid point; keep the best on valid NDCG@10."""
    train = split.train
    counts = torch.as_tensor(train.movie_counts())
    history = HistoryIndex([train])
    rows: list[dict[str, float]] = []
    best: tuple[float, RecencyEASE, dict[str, float], int] | None = None
    n_kept = options.ease_max_movies if 0 < options.ease_max_movies < train.n_movies else 0
    if n_kept and not options.quiet:
        console.print(f"ease: the item matrix covers the {n_kept:,} most-rated of {train.n_movies:,} movies "
                      "(MARQUEE_EASE_MAX_MOVIES); the others rank below them, by popularity")  # fmt: skip
    started_all = time.perf_counter()
    for l2 in l2_grid:
        spent, solved = time.perf_counter() - started_all, len(rows) // len(recency_grid)
        if best is not None and 0 < options.time_budget_s < spent + spent / solved:
            console.print(budget_message("ease", options.time_budget_s, len(rows), best[3]))
            break
        started = time.perf_counter()
        # the Gram matrix is rebuilt per ridge weight on purpose: ``fit_gram`` inverts it in
        # place, and a kept copy would add another ``n_kept²`` float64 matrix to the solve's peak
        fitted = RecencyEASE(EaseConfig(train.n_movies, l2=l2, n_kept=n_kept))
        fitted.fit_pairs(train.users, train.items, train.n_users, counts)
        solve = time.perf_counter() - started
        for recency in recency_grid:
            model = RecencyEASE(EaseConfig(train.n_movies, l2=l2, recency=recency, n_kept=n_kept), sharing=fitted)
            valid = full_ranking(EaseScorer(model, history), split.valid, [train])
            rows.append({"epoch": len(rows) + 1, "loss": 0.0, "seconds": solve, "samples": len(train),
                         "l2": l2, "recency": recency, **valid})  # fmt: skip
            if not options.quiet:
                console.print(f"ease l2={l2:g} recency={recency:g}: valid ndcg@10 {valid['ndcg@10']:.4f}")
            if best is None or valid["ndcg@10"] > best[0]:
                best = (valid["ndcg@10"], model, valid, len(rows))
            solve = 0.0  # one solve serves every recency length
    if best is None:
        raise ValueError("empty EASE grid")
    _, model, valid, epoch = best
    return Trained("ease", model, rows, epoch, valid, {"grid": {"l2": list(l2_grid), "recency": list(recency_grid)}})
