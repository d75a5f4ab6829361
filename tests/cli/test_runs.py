"""Tracked runs (model/tracking.py, cli/runs.py): a real `marquee train` is recorded in MLflow
with its parameters, features, data snapshot, per-epoch metrics and checkpoint, then listed and
compared by `marquee runs`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from model.tracking import Tracker
from sources.ingest import IngestReport
from sources.stores.clients import Stores

runner = CliRunner()


def test_a_train_run_is_recorded_listed_and_compared(
    tmp_path: Path, stores: Stores, loaded: IngestReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default: SQLite under the data dir
    endpoints = stores.endpoints
    env = {"MARQUEE_DATA_DIR": str(tmp_path), "MARQUEE_PG_DSN": endpoints.pg_dsn, "COLUMNS": "240",
           "MARQUEE_MONGO_URI": endpoints.mongo_uri, "MARQUEE_GRAPH_URI": endpoints.graph_uri}  # fmt: skip
    # in-process (the command's own code path; a subprocess would import torch and MLflow again)
    result = runner.invoke(app, ["train", "--model", "pop,bpr", "--epochs", "1", "--device", "cpu", "--quiet"], env=env)
    assert result.exit_code == 0, result.output
    assert "not recorded" not in result.output
    assert (tmp_path / "mlflow" / "mlflow.db").is_file()

    tracker = Tracker.for_data_dir(tmp_path)
    found = {r.model: r for r in tracker.runs()}
    assert set(found) == {"pop", "bpr"}
    pop, bpr = found["pop"], found["bpr"]
    assert {pop.kind, bpr.kind, pop.status, bpr.status} == {"train", "FINISHED"}
    # parameters: the options (per-model defaults + --epochs), the config, the features, the data
    assert (bpr.params["epochs"], bpr.params["split"], bpr.params["config.n_users"]) == ("1", "time", "943")
    assert {"feature_service", "features", "data.max_event_ts", "data.interactions"} <= set(bpr.params)
    assert pop.data_snapshot == bpr.data_snapshot and len(bpr.data_snapshot) == 12
    # metrics at the end and per epoch (0 = untrained, 1 = the one epoch), and the checkpoint as an artifact
    assert 0 < bpr.metrics["valid.ndcg_at_10"] < 1 and "best_epoch" in bpr.metrics
    history = tracker.client.get_metric_history(bpr.run_id, "epoch.ndcg_at_10")
    assert sorted(m.step for m in history) == [0, 1]
    artifacts = [a.path for a in tracker.client.list_artifacts(bpr.run_id, "checkpoint")]
    assert artifacts == ["checkpoint/bpr.pt"]
    assert str(tmp_path / "mlflow" / "artifacts") in tracker.client.get_run(bpr.run_id).info.artifact_uri

    listed = runner.invoke(app, ["runs"], env=env)
    assert listed.exit_code == 0, listed.output
    assert pop.run_id in listed.output and bpr.run_id in listed.output and "ndcg@10" in listed.output
    compared = runner.invoke(app, ["runs", "--compare", pop.run_id[:8], bpr.run_id], env=env)
    assert compared.exit_code == 0, compared.output
    rows = {line.split("│")[1].strip(): line for line in compared.output.splitlines() if line.count("│") >= 4}
    assert rows["config.dim"].rstrip("│ ").endswith("*")  # bpr has a dimension, pop does not
    assert not rows["split"].rstrip("│ ").endswith("*")
    missing = runner.invoke(app, ["runs", "--compare", "ffffffff", bpr.run_id], env=env)
    assert missing.exit_code == 1 and "no run" in str(missing.exception)
