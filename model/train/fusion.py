"""Choosing the fusion weights: a grid over the simplex, scored by valid NDCG@10.

Each retriever's valid scores are computed once (history = the training part, as at test
time); every weight vector of the grid (steps of ``step``, summing to 1) fuses them and is
ranked on the valid part. The best is kept (ties: the first in grid order, which puts weight
on fewer retrievers first). A fusion that is no better than its best single retriever gets
that retriever's weight 1, so ``best_retriever`` serves the single model (it wins the tie).
The test part is never read here.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping

from torch import Tensor

from model.data.interactions import Split
from model.evaluate.ranking import full_ranking
from model.networks.fusion import FusionConfig, fuse
from model.train.options import Trained, TrainOptions
from sources.progress import console


def simplex(n: int, step: float) -> list[tuple[float, ...]]:
    """Every ``n``-tuple of multiples of ``step`` summing to 1, fewest non-zero weights first."""
    units = round(1 / step)
    points = [c for c in itertools.product(range(units + 1), repeat=n) if sum(c) == units]
    points.sort(key=lambda c: (sum(1 for x in c if x), [-x for x in c]))
    return [tuple(round(x * step, 6) for x in c) for c in points]


def train_fusion(
    split: Split, valid_scores: Mapping[str, Tensor], options: TrainOptions, *, step: float = 0.1
) -> Trained:
    """``valid_scores``: ``{kind: (n_users, n_movies)}`` each retriever's scores with the training part as history."""
    kinds = list(valid_scores)
    if len(kinds) < 2:
        raise ValueError(f"fusion needs two retrievers or more, got {', '.join(kinds) or 'none'}")
    rows: list[dict[str, float]] = []
    best: tuple[float, dict[str, float], dict[str, float]] | None = None
    started = time.perf_counter()
    for point in simplex(len(kinds), step):
        weights = dict(zip(kinds, point, strict=True))
        valid = full_ranking(None, split.valid, [split.train], scores=fuse(valid_scores, weights))
        rows.append({"epoch": len(rows) + 1, "loss": 0.0, "seconds": 0.0, "samples": 0, **weights, **valid})
        if best is None or valid["ndcg@10"] > best[0]:
            best = (valid["ndcg@10"], weights, valid)
    assert best is not None
    _, weights, valid = best
    if not options.quiet:
        shown = ", ".join(f"{k} {w:g}" for k, w in weights.items())
        console.print(f"fusion weights {shown}: valid ndcg@10 {valid['ndcg@10']:.4f} "
                      f"({len(rows)} tried, {time.perf_counter() - started:.1f}s)")  # fmt: skip
    epoch = next(i for i, r in enumerate(rows, 1) if all(r[k] == w for k, w in weights.items()))
    return Trained("fusion", FusionConfig(weights), rows, epoch, valid, {"step": step})
