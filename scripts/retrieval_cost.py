"""Cost per request of each served retriever from a models folder (``model/evaluate/cost.py``,
which `marquee evaluate` also prints): ``Ranker.rank_many`` of one user, top 100, no features.

Loads the retriever checkpoints of ``<models_dir>/<split>/`` (a fusion with the checkpoints it
weighs) and ranks ``--users`` ML-100K users one request at a time, each reading their training
and validation events oldest first, their known movies excluded. Prints the median and 90th
percentile in milliseconds per retriever (the first request of each is a warm-up).

    PYTHONPATH=. python scripts/retrieval_cost.py --models-dir "$MARQUEE_DATA_DIR/models" --split recbole
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from model.data.interactions import from_dataset, make_split
from model.evaluate.cost import request_cost
from model.serve.ranker import RETRIEVERS
from sources.datasets.movielens import movielens_100k


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
    split = make_split(from_dataset(movielens_100k()), args.split)
    costs = request_cost(list(found), found, split, n_users=args.users, candidates=args.candidates)
    print("| retriever | median ms | p90 ms | users |\n| --- | --- | --- | --- |")
    for kind, c in costs.items():
        print(f"| {kind} | {c['median_ms']:.2f} | {c['p90_ms']:.2f} | {c['users']:.0f} |")


if __name__ == "__main__":
    main()
