"""The new-title boost's trade-off on the time split (docs/performance.md, new titles).

The two-tower checkpoint of ``$MARQUEE_DATA_DIR/models/time`` (after ``marquee evaluate``, which
stores its trend prior) scores the test period with the stored window and weight and each
boost from 0 to 6; prints a markdown table: all test users, and the cold-movie slice.

    MARQUEE_DATA_DIR=... .venv/bin/python scripts/new_title_boost.py
"""

import dataclasses

import numpy as np

from model.checkpoint import checkpoint_path, from_checkpoint, load_checkpoint
from model.data.interactions import from_stores, make_split
from model.evaluate.prior import prior_scores
from model.evaluate.ranking import HistoryIndex, TwoTowerScorer, full_ranking, score_matrix
from model.serve.trend import TrendPrior
from sources.settings import Settings
from sources.stores.clients import Stores

s = Settings()
with Stores.open(s) as stores:
    data = from_stores(stores)
split = make_split(data, "time")
ck = load_checkpoint(checkpoint_path(s.models_dir / "time", "two_tower"))
net = from_checkpoint(ck)
scores = score_matrix(TwoTowerScorer(net, HistoryIndex([split.train]), ck.extras["movie_vectors"]), data.n_users)
prior = TrendPrior.from_dict(ck.metrics["trend_prior"])
seen = [split.train, split.valid]
cold = split.test.take(np.isin(split.test.items, np.flatnonzero(split.train.movie_counts() < 5)))
print(f"window {prior.days:g} d, weight {prior.weight:g}")
COLUMNS = ["boost", "NDCG@10", "recall@10", "coverage", "cold movies NDCG@10", "cold movies recall@10", "cold hit@10"]
print("| " + " | ".join(COLUMNS) + " |")
print("|" + " --- |" * len(COLUMNS))
for b in (0.0, 1.0, 2.0, 3.0, 4.0, 6.0):
    shaped = prior_scores(scores, seen, dataclasses.replace(prior, new_boost=b), data.movie_ids)
    everyone = full_ranking(None, split.test, seen, scores=shaped)
    new = full_ranking(None, cold, seen, scores=shaped)
    cells = [everyone["ndcg@10"], everyone["recall@10"], everyone["coverage"], new["ndcg@10"], new["recall@10"]]
    print(f"| {b:g} | " + " | ".join(f"{v:.4f}" for v in [*cells, new["hit@10"]]) + " |")
