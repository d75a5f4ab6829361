"""Experiment tracking: every ``marquee train`` and ``marquee evaluate`` run recorded in MLflow.

Where runs live: ``MLFLOW_TRACKING_URI`` when set (an MLflow server, or any URI MLflow takes),
else a SQLite database under the data dir, ``<data dir>/mlflow/mlflow.db``, with the artifacts
beside it in ``<data dir>/mlflow/artifacts`` (MLflow 3 deprecates its plain file store). All
runs go to one experiment, ``marquee``.

One run per trained model (``marquee train --model a,b`` makes two) and one per evaluation.
A run holds: the options and the model config as parameters; the feature service, its feature
list and the data snapshot (the checkpoint's row counts and newest event time, and a short hash
of them, ``data_snapshot``, equal for runs that saw the same data); the validation metrics per
epoch (``epoch.*``, step = epoch, epoch 0 being the untrained model) and at the end (``valid.*``);
an evaluation's table as ``<row>.<metric>``; and the checkpoint and report files as artifacts.
Tags ``marquee.kind``/``marquee.model``/``marquee.key_metrics`` feed ``marquee runs``.

Only the command line's train and evaluate call this module: serving never imports MLflow, and
``marquee up`` and ``marquee refresh`` (which train through the same pipeline) record nothing.
MLflow's usage telemetry is turned off unless ``MLFLOW_DISABLE_TELEMETRY`` says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.checkpoint import Checkpoint
from sources.errors import MarqueeError

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

EXPERIMENT = "marquee"
#: the metrics ``marquee runs`` shows for a run, in this order (validation, or the evaluation's served row)
KEY_METRICS = ("ndcg@10", "recall@10", "rmse")
_BATCH = 500  # metrics per log_batch call (MLflow takes at most 1,000; params and tags at most 100)


class RunNotFound(MarqueeError):
    """No run, or more than one, has the id (or id prefix) asked for."""


def default_uri(data_dir: Path) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else SQLite under ``<data_dir>/mlflow``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"


def metric_key(name: str) -> str:
    """A report label or metric name as an MLflow key (letters, digits, ``_ - . /`` only): ``ndcg@10`` ->
    ``ndcg_at_10``, ``served (two_tower → engagement)`` -> ``served_two_tower_engagement``."""
    return re.sub(r"[^\w.\-/]+", "_", name.replace("@", "_at_")).strip("_")


def snapshot_id(snapshot: Mapping[str, Any]) -> str:
    """A short hash of a data snapshot: two runs with the same id trained on the same data."""
    return hashlib.sha256(json.dumps(dict(snapshot), sort_keys=True, default=str).encode()).hexdigest()[:12]


def flat(prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
    """Nested parameters as ``prefix.key`` strings (MLflow parameters are strings)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flat(name, value))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[metric_key(name)] = text[:6000]
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _key_metrics(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {values[k]:.4f}" for k in KEY_METRICS if _finite(values.get(k)))


@dataclass
class RunSummary:
    """One row of ``marquee runs``, or one side of ``--compare``."""

    run_id: str
    kind: str
    model: str
    started: datetime
    status: str
    key_metrics: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    data_snapshot: str = ""


class Tracker:
    """The ``marquee`` experiment of one tracking URI; opening it creates both when missing."""

    def __init__(self, uri: str, artifacts: Path | None = None) -> None:
        """``artifacts``: where a new experiment keeps its files (the default URI's folder);
        None lets the tracking server choose."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..." and such
            logging.getLogger(name).setLevel(logging.WARNING)
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.uri = uri
        self.client: MlflowClient = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is None:
            location = None
            if artifacts is not None:
                artifacts.mkdir(parents=True, exist_ok=True)
                location = artifacts.as_uri()
            try:
                self.experiment_id = self.client.create_experiment(EXPERIMENT, artifact_location=location)
            except MlflowException:  # another process created it meanwhile
                again = self.client.get_experiment_by_name(EXPERIMENT)
                if again is None:
                    raise
                self.experiment_id = again.experiment_id
        else:
            self.experiment_id = found.experiment_id

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> Tracker:
        """The default place: ``MLFLOW_TRACKING_URI``, else SQLite and artifacts under ``<data_dir>/mlflow``."""
        uri = default_uri(data_dir)
        local = not os.environ.get("MLFLOW_TRACKING_URI")
        return cls(uri, data_dir / "mlflow" / "artifacts" if local else None)

    # recording ---------------------------------------------------------------------------------

    def _record(
        self,
        *,
        kind: str,
        model: str,
        started: float,
        params: Mapping[str, str],
        metrics: Sequence[tuple[str, float, int]],
        tags: Mapping[str, str],
        artifacts: Iterable[tuple[Path, str]],
        status: str = "FINISHED",
    ) -> str:
        """One run, terminated with ``status``; returns its id. A failure on the way marks it FAILED."""
        from mlflow.entities import Metric, Param, RunTag

        start_ms = int(started * 1000)
        all_tags = {"marquee.kind": kind, "marquee.model": model, **tags}
        run = self.client.create_run(self.experiment_id, start_time=start_ms, tags=all_tags,
                                     run_name=f"{kind} {model}")  # fmt: skip
        run_id: str = run.info.run_id
        try:
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[i : i + 100])
            now = int(time.time() * 1000)
            points = [Metric(k, float(v), now, step) for k, v, step in metrics if _finite(v)]
            for i in range(0, len(points), _BATCH):
                self.client.log_batch(run_id, metrics=points[i : i + _BATCH])
            for path, folder in artifacts:
                if path.is_file():
                    self.client.log_artifact(run_id, str(path), folder)
            self.client.log_batch(run_id, tags=[RunTag("marquee.finished_at", datetime.now(UTC).isoformat())])
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, status)
        return run_id

    def record_training(
        self, checkpoint: Checkpoint, path: Path, *, started: float, params: Mapping[str, Any], command: str = ""
    ) -> str:
        """A trained model's run, read from its checkpoint (history, validation, snapshot, features)."""
        metrics: list[tuple[str, float, int]] = []
        for row in checkpoint.metrics.get("history", []):
            step = int(row.get("epoch", 0))
            metrics += [(f"epoch.{metric_key(k)}", v, step) for k, v in row.items() if k != "epoch"]
        training = checkpoint.metrics.get("training", {})
        valid = checkpoint.metrics.get("valid", {})
        metrics += [(f"valid.{metric_key(k)}", v, 0) for k, v in valid.items()]
        metrics += [(metric_key(k), v, 0) for k, v in training.items() if k != "valid"]
        return self._record(
            kind="train",
            model=checkpoint.kind,
            started=started,
            params={**flat("", params), **self._checkpoint_params("", checkpoint)},
            metrics=metrics,
            tags={
                "marquee.key_metrics": _key_metrics(valid),
                "marquee.data_snapshot": snapshot_id(checkpoint.data_snapshot),
                "marquee.command": command[:5000],
            },
            artifacts=[(path, "checkpoint")],
        )

    def record_evaluation(
        self,
        report: Mapping[str, Any],
        report_files: Iterable[Path],
        checkpoints: Mapping[str, tuple[Checkpoint, Path]],
        *,
        started: float,
        params: Mapping[str, Any],
        command: str = "",
    ) -> str:
        """An evaluation's run: ``report`` is ``Report.to_dict()``; every row and slice is a metric."""
        metrics: list[tuple[str, float, int]] = []
        for table, prefix in (("models", ""), ("cold_start", "cold.")):
            for row, values in report.get(table, {}).items():
                metrics += [(f"{prefix}{metric_key(row)}.{metric_key(k)}", v, 0) for k, v in values.items()]
        rows: dict[str, dict[str, Any]] = report.get("models", {})
        served = next((r for r in rows if r.startswith("served (")), None)
        best = served or max((r for r in rows if _finite(rows[r].get("ndcg@10"))),
                             key=lambda r: rows[r]["ndcg@10"], default=None)  # fmt: skip
        key = f"{best}: {_key_metrics(rows[best])}" if best else ""
        snapshots = {snapshot_id(c.data_snapshot) for c, _ in checkpoints.values()}
        all_params = {**flat("", params), **flat("split", report.get("split", {}))}
        for kind, (ckpt, _) in checkpoints.items():
            all_params.update(self._checkpoint_params(f"{kind}.", ckpt))
        return self._record(
            kind="evaluate",
            model=",".join(checkpoints) or str(params.get("models", "")),
            started=started,
            params=all_params,
            metrics=metrics,
            tags={
                "marquee.key_metrics": key,
                "marquee.data_snapshot": ",".join(sorted(snapshots)),
                "marquee.command": command[:5000],
            },
            artifacts=[*((p, "report") for p in report_files), *((p, "checkpoints") for _, p in checkpoints.values())],
        )

    def record_failure(self, kind: str, model: str, *, started: float, params: Mapping[str, Any], error: str) -> str:
        """A run that stopped with an error: its parameters and the error, status FAILED."""
        return self._record(kind=kind, model=model, started=started, params=flat("", params), metrics=[],
                            tags={"marquee.error": error[:5000]}, artifacts=[], status="FAILED")  # fmt: skip

    @staticmethod
    def _checkpoint_params(prefix: str, checkpoint: Checkpoint) -> dict[str, str]:
        return {
            **flat(f"{prefix}config", checkpoint.config),
            **flat(f"{prefix}data", checkpoint.data_snapshot),
            f"{prefix}feature_service": checkpoint.feature_service or "-",
            f"{prefix}features": ",".join(checkpoint.features) or "-",
            f"{prefix}checkpoint_version": checkpoint.version,
        }

    # reading -----------------------------------------------------------------------------------

    def runs(self, limit: int = 20) -> list[RunSummary]:
        """The newest ``limit`` runs, newest first."""
        found = self.client.search_runs([self.experiment_id], order_by=["attributes.start_time DESC"],
                                        max_results=limit)  # fmt: skip
        return [_summary(r) for r in found]

    def run(self, id_or_prefix: str) -> RunSummary:
        """The run with this id, or the only one whose id starts with it."""
        wanted = id_or_prefix.strip().lower()
        if len(wanted) < 4:
            raise RunNotFound(f"run id {id_or_prefix!r}: give at least 4 characters")
        matches = [r for r in self.client.search_runs([self.experiment_id], max_results=10_000)
                   if r.info.run_id.startswith(wanted)]  # fmt: skip
        if len(matches) != 1:
            how = "no run" if not matches else f"{len(matches)} runs"
            raise RunNotFound(f"{how} in experiment {EXPERIMENT!r} at {self.uri} with an id starting {wanted!r}")
        return _summary(matches[0])


def _summary(run: Run) -> RunSummary:
    tags = run.data.tags
    return RunSummary(
        run_id=run.info.run_id,
        kind=tags.get("marquee.kind", "?"),
        model=tags.get("marquee.model", "?"),
        started=datetime.fromtimestamp(run.info.start_time / 1000, UTC),
        status=run.info.status,
        key_metrics=tags.get("marquee.key_metrics", ""),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        data_snapshot=tags.get("marquee.data_snapshot", ""),
    )
