"""Valid NDCG@10 of VAE retriever variants on the recbole split of ML-100K (no stores needed).

Each argument is a JSON object: ``train_vae`` keywords (``holdouts``, ``recency``, ``hidden``,
``latent``, ...) plus ``epochs``, ``batch``, ``lr`` and ``patience`` for the loop. The test
part is never read.

    PYTHONPATH=. python scripts/vae_variants.py '{"holdouts": [0]}' '{"holdouts": [0, 5, 10, 20]}'
"""

from __future__ import annotations

import json
import sys
import time

from model.data import interactions as inter
from model.train.options import TrainOptions
from model.train.vae import train_vae
from sources.datasets.movielens import movielens_100k


def main() -> None:
    split = inter.make_split(inter.from_dataset(movielens_100k()), "recbole", seed=42)
    for spec in sys.argv[1:]:
        kw = json.loads(spec)
        options = TrainOptions(epochs=kw.pop("epochs", 200), batch_size=kw.pop("batch", 128), lr=kw.pop("lr", 1e-3),
                               patience=kw.pop("patience", 20), quiet=True, device="cpu")  # fmt: skip
        started = time.time()
        trained = train_vae(split, options, **kw)
        print(f"{spec}: best epoch {trained.best_epoch} of {len(trained.epochs)}, valid ndcg@10 "
              f"{trained.valid['ndcg@10']:.4f} ({time.time() - started:.0f}s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
