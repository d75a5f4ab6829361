"""Cost per request of each served retriever: ``Ranker.rank_many`` of one user, top 100, no features.

Loads the retriever checkpoints of ``<models_dir>/<split>/`` (a fusion with the checkpoints it
weighs), and ranks ``--users`` ML-100K users one request at a time, each reading their whole
history oldest first (what serving reads), with their known movies excluded. Prints the
median and 90th percentile in milliseconds per retriever (the first request of each is a
warm-up and not counted).

    PYTHONPATH=. python scripts/retrieval_cost.py --models-dir "$MARQUEE_DATA_DIR/models" --split recbole
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from model.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from model.data.interactions import from_dataset
from model.serve.ranker import RETRIEVERS, Ranker, RankRequest
from sources.datasets.movielens import movielens_100k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--split", default="recbole")
    parser.add_argument("--users", type=int, default=250)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()
    found = {}
    for kind in RETRIEVERS:
        try:
            found[kind] = load_checkpoint(checkpoint_path(args.models_dir / args.split, kind))
        except CheckpointError:
            continue
    data = from_dataset(movielens_100k())
    order = np.lexsort((data.items, data.ts, data.users))
    users, items = data.users[order], data.movie_ids[data.items[order]]
    starts = np.searchsorted(users, np.arange(data.n_users + 1))
    requests = []
    for u in range(min(args.users, data.n_users)):
        history = [int(m) for m in items[starts[u] : starts[u + 1]]]
        requests.append(RankRequest(int(data.user_ids[u]), history, args.candidates, set(history)))
    print("| retriever | median ms | p90 ms | users |\n| --- | --- | --- | --- |")
    for kind, ckpt in found.items():
        ranker = Ranker(ckpt, components=found)
        ranker.rank_many(requests[:1], features=None, n_candidates=args.candidates)  # warm-up
        times = []
        for request in requests:
            started = time.perf_counter()
            ranker.rank_many([request], features=None, n_candidates=args.candidates)
            times.append((time.perf_counter() - started) * 1e3)
        print(f"| {kind} | {np.median(times):.2f} | {np.percentile(times, 90):.2f} | {len(times)} |", flush=True)


if __name__ == "__main__":
    main()
