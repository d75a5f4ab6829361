"""What a training run is asked for (``TrainOptions``, per-model defaults) and what it returns (``Trained``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sources.settings import Settings

#: fusion comes after the retrievers it weighs (it reads their checkpoints); bpmf predicts ratings only
MODELS = ("pop", "bpr", "ease", "two_tower", "sequential", "vae", "fusion", "engagement", "bpmf")


# Per-model settings that converged well on ML-100K (BPR: RecBole's defaults). Fields the
# user sets explicitly (``explicit``) win over these.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "pop": {"lr": 0.0, "batch_size": 1},
    "bpr": {"lr": 1e-3, "batch_size": 2048, "patience": 10, "epochs": 300},  # RecBole: 300, stop after 10
    "ease": {"lr": 0.0, "batch_size": 1},  # closed form: a grid on valid, no epochs
    "two_tower": {"lr": 3e-3, "batch_size": 1024, "patience": 3},
    "sequential": {"lr": 2e-3, "batch_size": 256, "patience": 4, "epochs": 40},
    "vae": {"lr": 1e-3, "batch_size": 128, "patience": 10, "epochs": 150},
    "fusion": {"lr": 0.0, "batch_size": 1},  # a grid on valid, no epochs
    "engagement": {"lr": 2e-3, "batch_size": 1024, "patience": 3},
    "bpmf": {"lr": 0.0, "batch_size": 1},  # Gibbs sampling: a grid on valid RMSE, no epochs
}


@dataclass
class TrainOptions:
    epochs: int = 40
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 4
    device: str = "auto"
    seed: int = 42
    quiet: bool = False
    max_batches: int | None = None  # per epoch; tests cap it to stay fast
    time_budget_s: float = 0.0  # per model: training stops when the next epoch would pass it; 0 = none
    window_days: int = 0  # train on the last this many days of reviews (before the newest); 0 = all
    ease_max_movies: int = 0  # EASE's item matrix over the this many most-rated movies; 0 = every movie
    engagement_max_labels: int = 0  # refuse an engagement frame of more labels (its memory); 0 = no limit

    @classmethod
    def from_settings(cls, settings: Settings, **fields: Any) -> TrainOptions:
        """Options with the settings' training limits (budget, window, EASE's and the engagement
        frame's caps, seed) and ``fields`` for the rest: every job that trains reads them here."""
        return cls(seed=settings.seed, time_budget_s=settings.train_budget_s, window_days=settings.train_window_days,
                   ease_max_movies=settings.ease_max_movies, engagement_max_labels=settings.engagement_max_labels,
                   **fields)  # fmt: skip

    def for_model(self, kind: str, explicit: set[str] = frozenset()) -> TrainOptions:  # type: ignore[assignment]
        """These options with ``kind``'s defaults for every field not in ``explicit``."""
        changes = {k: v for k, v in MODEL_DEFAULTS.get(kind, {}).items() if k not in explicit}
        return dataclasses.replace(self, **changes)


@dataclass
class Trained:
    """A trained model and what its run measured."""

    kind: str
    model: Any
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    valid: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> list[dict[str, float]]:
        """Training epochs (the history without epoch 0, the untrained model's validation)."""
        return [h for h in self.history if h["epoch"] > 0]

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean([h["seconds"] for h in self.epochs])) if self.epochs else 0.0

    @property
    def samples_per_s(self) -> float:
        total = sum(h["samples"] for h in self.epochs)
        seconds = sum(h["seconds"] for h in self.epochs)
        return total / seconds if seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.epochs),
            "seconds_per_epoch": round(self.seconds_per_epoch, 3),
            "samples_per_s": round(self.samples_per_s, 1),
            "valid": self.valid,
        }
