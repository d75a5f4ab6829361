"""RecBole 1.2.1's general models on the same ML-100K files and protocol as `marquee evaluate --protocol recbole`.

Protocol: per-user chronological 80/10/10 (order TO, split RS, group_by user), full ranking,
validation NDCG@10 for early stopping, test Recall/NDCG/MRR/Hit@10 -- the same as Marquee's.

RecBole's wheel is in Marquee's venv (installed --no-deps: it ships the ML-100K files) but
its logger needs colorlog and texttable, which Marquee does not depend on. A side venv that
sees Marquee's packages and adds those two is enough (no second torch):

    python -m venv /tmp/rb && .venv/bin/python -c "import site; print(site.getsitepackages()[0])" \
        > /tmp/rb/lib/python3.11/site-packages/marquee.pth && /tmp/rb/bin/pip install colorlog texttable
    /tmp/rb/bin/python scripts/recbole_peer.py --json peers.json   # then: marquee evaluate --peers peers.json

``--json`` also records each model's top-10 list per test user (external ids), so Marquee
scores the peers with its own metric code and bootstraps the per-user difference
(model/evaluate/peers.py).

Four shims make RecBole 1.2.1 run on numpy 2 / torch >= 2.6 / scipy >= 1.13 (see STACK.md
"Peers"): numpy's removed aliases are restored before import, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
lets it reload its own best-epoch checkpoint, LightGCN's dok_matrix._update is put back, and
torch.utils.tensorboard (imported at start, used only when logging to TensorBoard) is a no-op.
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

import types  # noqa: E402

import scipy.sparse as _sparse  # noqa: E402

# recbole.utils imports torch.utils.tensorboard, which imports the tensorboard package: a no-op writer
_board = types.ModuleType("torch.utils.tensorboard")


class _NoWriter:
    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return lambda *args, **kwargs: None


_board.SummaryWriter = _NoWriter  # type: ignore[attr-defined]
sys.modules.setdefault("torch.utils.tensorboard", _board)

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


DEFAULT_MODELS = ["Pop", "ItemKNN", "BPR", "EASE", "SLIMElastic", "MultiVAE", "RecVAE", "LightGCN", "NGCF"]


def run(model_name: str, epochs: int, seed: int, stopping_step: int) -> dict[str, object]:
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    work = tempfile.mkdtemp(prefix="recbole-")
    os.chdir(work)  # RecBole writes its log to ./log/: keep it out of the checkout
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
            "stopping_step": stopping_step,
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
    # the top-10 of every test user, in external ids, for Marquee's own metrics and bootstrap
    top10: dict[str, list[str]] = {}
    batch_eval = trainer._full_sort_batch_eval

    def capture(batched_data):  # type: ignore[no-untyped-def]
        interaction, scores, positive_u, positive_i = batch_eval(batched_data)
        users = dataset.id2token(dataset.uid_field, interaction[dataset.uid_field].cpu().numpy())
        items = scores.topk(10, dim=1).indices.cpu().numpy()
        for user, row in zip(users, items, strict=True):
            top10[str(user)] = [str(i) for i in dataset.id2token(dataset.iid_field, row)]
        return interaction, scores, positive_u, positive_i

    trainer._full_sort_batch_eval = capture
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
        "stopping_step": stopping_step,
        "top10": top10,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--stopping-step", type=int, default=10, help="epochs without a better valid NDCG@10")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.json:
        args.json = args.json.resolve()  # run() changes into a scratch folder
    results = {}
    for name in args.models:
        results[name] = run(name, args.epochs, args.seed, args.stopping_step)
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "top10"}), flush=True)
        if args.json:  # after every model: a long run that stops early keeps what it measured
            args.json.write_text(json.dumps(results))
    print("| model | ndcg@10 | recall@10 | mrr@10 | hit@10 | epochs | s/epoch | samples/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| RecBole {name} | {r.get('ndcg@10')} | {r.get('recall@10')} | {r.get('mrr@10')} | {r.get('hit@10')} "
              f"| {r['epochs']} | {r['seconds_per_epoch']} | {r['samples_per_s']} |")  # fmt: skip


if __name__ == "__main__":
    main()
