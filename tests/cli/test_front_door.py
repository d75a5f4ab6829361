"""The front door: choices fail at parse time, help shows plain flags, failures exit non-zero,
and no step tells the user to run a command that is already running for them."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import get_args
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from cli.main import app
from cli.models import SplitName
from model.checkpoint import CheckpointError, load_checkpoint
from model.data.interactions import SPLITS
from model.tracking import Tracker
from sources.feature_store.env import feast_environment
from sources.ingest import IngestReport
from sources.stores.clients import Endpoints, Stores
from sources.stores.embedded import EmbeddedStores

runner = CliRunner()


def marquee(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess (the session's data dir comes from os.environ)."""
    full_env = {**os.environ, "MARQUEE_CONNECT_TIMEOUT_S": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, check=False)  # fmt: skip


# parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["train"],
        ["evaluate"],
        ["ingest"],
        ["export"],
        ["up"],
        ["bench", "serve"],
        ["bench", "writes"],
        ["recommend"],
    ],
)
def test_help_shows_plain_flags(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--no-quiet" not in result.output


def test_help_lists_the_choices() -> None:
    help_text = runner.invoke(app, ["train", "--help"]).output
    for choice in ("pop", "bpr", "two_tower", "engagement", "time|recbole|random", "auto|feast|local"):
        assert choice in help_text


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["train", "--model", "nosuch"], "--model"),
        (["train", "--model", "pop,nosuch"], "--model"),
        (["train", "--split", "later"], "--split"),
        (["train", "--device", "gpu"], "--device"),
        (["train", "--features", "remote"], "--features"),
        (["evaluate", "--protocol", "nosuch"], "--protocol"),
        (["evaluate", "--models", "two_tower,nosuch"], "--models"),
    ],
)
def test_a_bad_choice_is_a_usage_error_at_once(args: list[str], option: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert "training" not in result.output  # nothing started


def test_a_bad_model_fails_in_the_real_cli_before_anything_loads() -> None:
    result = marquee(["train", "--model", "nosuch"], timeout=60)
    assert result.returncode == 2
    assert "Invalid value for '--model'" in result.stderr
    assert "training nosuch" not in result.stdout + result.stderr


def test_the_split_choices_are_the_models_splits() -> None:
    assert set(get_args(SplitName)) == set(SPLITS)


# status ------------------------------------------------------------------------------------


def test_status_exits_zero_when_every_store_answers(stores: Stores) -> None:
    result = marquee(["status"])
    assert result.returncode == 0, result.stderr


def test_status_exits_non_zero_naming_the_silent_store(stores: Stores) -> None:
    env = {"MARQUEE_MONGO_URI": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500", "MARQUEE_CONNECT_TIMEOUT_S": "1"}
    result = marquee(["status"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "MongoDB" in error[0] and "does not answer" in error[0], result.stderr
    assert "PostgreSQL" not in error[0]  # only the silent one is named
    assert "Traceback" not in result.stderr


# materialize before apply ------------------------------------------------------------------


def _other_database(stores: Stores, name: str) -> str:
    """A DSN for a fresh database on the session's PostgreSQL: a registry nothing was applied to."""
    with psycopg.connect(stores.endpoints.pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    host = conninfo_to_dict(stores.endpoints.pg_dsn)["host"]
    return f"postgresql://postgres:@/{name}?host={host}"


def test_materialize_before_apply_says_to_apply(stores: Stores) -> None:
    result = marquee(["materialize"], {"MARQUEE_PG_DSN": _other_database(stores, "marquee_unapplied")})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not applied" in result.stderr and "marquee apply" in result.stderr
    assert "0 rows" not in result.stderr + result.stdout


# up trains without telling the user to train ------------------------------------------------


def test_training_on_the_way_does_not_say_run_train_first(tmp_path: Path, stores: Stores, loaded: IngestReport) -> None:
    """`up` and `evaluate` train what has no checkpoint: they must not say "run `marquee train` first"."""
    endpoints = stores.endpoints
    env = {"MARQUEE_DATA_DIR": str(tmp_path), "MARQUEE_PG_DSN": endpoints.pg_dsn,
           "MARQUEE_MONGO_URI": endpoints.mongo_uri, "MARQUEE_GRAPH_URI": endpoints.graph_uri}  # fmt: skip
    result = marquee(["evaluate", "--models", "pop", "--quiet"], env)
    assert result.returncode == 0, result.stderr
    assert "run `marquee train` first" not in result.stdout + result.stderr
    assert "training pop" in result.stderr
    assert (tmp_path / "reports" / "evaluation_time_pop.md").is_file()
    # the evaluation is a tracked run (tests/cli/test_runs.py follows a training run further)
    [run] = Tracker.for_data_dir(tmp_path).runs()
    assert (run.kind, run.model, run.status) == ("evaluate", "pop", "FINISHED")
    assert run.metrics["pop.ndcg_at_10"] > 0 and run.key_metrics.startswith("pop: ndcg@10")
    # the message stays for a reader that cannot train (`marquee serve` without checkpoints)
    with pytest.raises(CheckpointError, match=r"run `marquee train` first"):
        load_checkpoint(tmp_path / "models" / "time" / "two_tower.pt")


# marquee env -------------------------------------------------------------------------------


def _exports(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        keyword, assignment = shlex.split(line)
        assert keyword == "export"
        name, value = assignment.split("=", 1)
        out[name] = value
    return out


def test_env_prints_every_variable_feast_reads(stores: Stores) -> None:
    result = marquee(["env"])
    assert result.returncode == 0, result.stderr
    exports = _exports(result.stdout)
    assert exports == feast_environment(stores.endpoints)
    repo = Path(__file__).parents[2] / "feature_repo"
    yaml_text = (repo / "feature_store.yaml").read_text()
    definitions = (repo / "definitions.py").read_text()
    for name in exports:  # expanded by Feast in the YAML, or read by the definitions (the engine)
        assert "${" + name + "}" in yaml_text or f'"{name}"' in definitions, name


def test_env_is_shell_quoted(stores: Stores) -> None:
    """A password with a space and a dollar sign survives `eval "$(marquee env)"`."""
    host = conninfo_to_dict(stores.endpoints.pg_dsn)["host"]
    password = "s3cret pw$HOME;x"
    dsn = f"postgresql://postgres:{quote(password, safe='')}@/postgres?host={host}"
    result = marquee(["env"], {"MARQUEE_PG_DSN": dsn})
    assert result.returncode == 0, result.stderr
    shell = subprocess.run(["bash", "-c", 'eval "$(cat)"; printf %s "$MARQUEE_FEAST_PG_PASSWORD"'],
                           input=result.stdout, capture_output=True, text=True, check=True)  # fmt: skip
    assert shell.stdout == password
    expected = feast_environment(Endpoints(dsn, "", "", None, frozenset()))["MARQUEE_FEAST_PG_PASSWORD"]
    assert expected == password


# a fresh data dir --------------------------------------------------------------------------


def test_synth_into_a_fresh_data_dir_migrates_first_and_a_rerun_loads_nothing(tmp_path: Path) -> None:
    """`marquee synth` (and `ingest`) are first steps on their own data dir (docs/scale.md):
    they bring the schema to head before loading, where they failed on a missing table."""
    env = {"MARQUEE_DATA_DIR": str(tmp_path)}
    small = ["synth", "--users", "20", "--movies", "30", "--ratings", "200", "--quiet"]
    try:
        first = marquee(small, env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "loaded synthetic" in first.stdout + first.stderr
        again = marquee(small, env)
        assert again.returncode == 0 and "already loaded" in again.stdout + again.stderr, again.stderr
    finally:
        EmbeddedStores(tmp_path).stop_all()


def test_the_cli_write_batch_is_the_loaders() -> None:
    """``ingest`` and ``synth`` default to the loader's own batch (kept apart for a fast --help)."""
    from cli.data import WRITE_BATCH
    from sources.ingest import STREAM_BATCH

    assert WRITE_BATCH == STREAM_BATCH
