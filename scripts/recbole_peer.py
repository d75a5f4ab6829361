"""RecBole 1.2.1 (BPR, LightGCN, Pop) on the same ML-100K files and protocol as `marquee evaluate --protocol recbole`.

Protocol: per-user chronological 80/10/10 (order TO, split RS, group_by user), full ranking,
validation NDCG@10 for early stopping, test Recall/NDCG/MRR/Hit@10 -- the same as Marquee's.

RecBole is not a Marquee dependency (it pins old colorlog/colorama and pulls ray and
tensorboard), so run this with a SEPARATE venv, never Marquee's:

    python3 -m venv /tmp/rb && /tmp/rb/bin/pip install torch==2.13.0 recbole==1.2.1 "setuptools<81"
    (ray 2.6.3, which recbole imports, still needs pkg_resources: setuptools < 81)
    /tmp/rb/bin/python scripts/recbole_peer.py [--models BPR LightGCN Pop] [--json out.json]

Three shims make RecBole 1.2.1 run on numpy 2 / torch >= 2.6 / scipy >= 1.13 (see STACK.md
"Peers"): numpy's removed aliases are restored before import, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
lets it reload its own best-epoch checkpoint, and LightGCN's dok_matrix._update is put back.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np

for _alias, _target in {"float_": np.float64, "bool8": np.bool_, "int_": np.int64, "complex_": np.complex128,
                        "unicode_": np.str_, "string_": np.bytes_, "object_": np.object_}.items():  # fmt: skip
    if not hasattr(np, _alias):
        setattr(np, _alias, _target)

import scipy.sparse as _sparse  # noqa: E402

# LightGCN builds its adjacency with dok_matrix._update, which scipy >= 1.13 no longer has
if not hasattr(_sparse.dok_matrix, "_update"):
    _sparse.dok_matrix._update = lambda self, data: self._dict.update(data)  # type: ignore[attr-defined]

# ml-100k.inter as shipped in the recbole 1.2.1 wheel (sources/datasets/movielens.py checks the same hash)
INTER_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"


def dataset_dir() -> Path:
    import recbole

    folder = Path(recbole.__file__).parent / "dataset_example"
    digest = hashlib.sha256((folder / "ml-100k" / "ml-100k.inter").read_bytes()).hexdigest()
    if digest != INTER_SHA256:
        sys.exit(f"ml-100k.inter in {folder} does not match the file Marquee uses (sha256 {digest})")
    return folder


def run(model_name: str, epochs: int, seed: int) -> dict[str, float]:
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    work = tempfile.mkdtemp(prefix="recbole-")
    config = Config(
        model=model_name,
        dataset="ml-100k",
        config_dict={
            "data_path": str(dataset_dir()),
            "checkpoint_dir": work,
            "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
            "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"},
            "metrics": ["Recall", "NDCG", "MRR", "Hit"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "epochs": epochs,
            "stopping_step": 10,
            "train_batch_size": 2048,
            "eval_batch_size": 4096,
            "seed": seed,
            "reproducibility": True,
            "use_gpu": torch.cuda.is_available(),
            "show_progress": False,
            "state": "WARNING",
            "log_wandb": False,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    train_seconds: list[float] = []
    original = trainer._train_epoch

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        out = original(*args, **kwargs)
        train_seconds.append(time.perf_counter() - started)
        return out

    trainer._train_epoch = timed
    started = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_seconds = time.perf_counter() - started
    result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    n_train = len(train_data._dataset)
    per_epoch = float(np.mean(train_seconds)) if train_seconds else 0.0
    return {
        **{k: round(float(v), 4) for k, v in result.items()},
        "epochs": len(train_seconds),
        "seconds_per_epoch": round(per_epoch, 3),
        "samples_per_s": round(n_train / per_epoch, 1) if per_epoch else 0.0,
        "fit_seconds": round(fit_seconds, 1),
        "train_interactions": n_train,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["Pop", "BPR", "LightGCN"])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = {}
    for name in args.models:
        results[name] = run(name, args.epochs, args.seed)
        print(name, json.dumps(results[name]), flush=True)
    print("| model | ndcg@10 | recall@10 | mrr@10 | hit@10 | epochs | s/epoch | samples/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| RecBole {name} | {r.get('ndcg@10')} | {r.get('recall@10')} | {r.get('mrr@10')} | {r.get('hit@10')} "
              f"| {r['epochs']} | {r['seconds_per_epoch']} | {r['samples_per_s']} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
