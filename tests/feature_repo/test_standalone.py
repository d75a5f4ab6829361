"""Plain Feast on ``feature_repo/``: after ``eval "$(marquee env)"`` the stock ``feast`` CLI and
``FeatureStore(repo_path="feature_repo")`` work without Marquee in between, and ``marquee feast ui``
serves Feast's web UI."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from feast import FeatureStore

from sources.feature_store.env import FEATURE_REPO

ROOT = Path(__file__).resolve().parents[2]
FEAST = Path(sys.executable).with_name("feast")


@pytest.fixture(scope="module")
def feast_env(feature_store: FeatureStore) -> dict[str, str]:
    """os.environ without Marquee's Feast variables, plus what `marquee env` prints (the repo is applied)."""
    result = subprocess.run([sys.executable, "-m", "cli.main", "env"], capture_output=True, text=True, timeout=120,
                            check=False, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARQUEE_FEAST_")}
    for line in result.stdout.splitlines():
        _, assignment = shlex.split(line)
        name, value = assignment.split("=", 1)
        env[name] = value
    return env


def test_feast_cli_works_in_feature_repo(feast_env: dict[str, str]) -> None:
    result = subprocess.run([str(FEAST), "feature-views", "list"], cwd=FEATURE_REPO, env=feast_env,
                            capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "user_profile" in result.stdout and "movie_profile" in result.stdout


def test_feature_store_from_repo_path(feast_env: dict[str, str]) -> None:
    code = (
        "from feast import FeatureStore\n"
        "print(sorted(v.name for v in FeatureStore(repo_path='feature_repo').list_feature_views()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=feast_env, capture_output=True, text=True,
                            timeout=180, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "'user_profile'" in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_feast_ui_answers(feature_store: FeatureStore) -> None:
    port = _free_port()
    # its own process group: `marquee feast` runs feast as a child, and both must go
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "feast", "ui", "--host", "127.0.0.1",
                                "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code
                if status == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        if status != 200:
            os.killpg(process.pid, signal.SIGTERM)
            output = process.communicate(timeout=30)[0]
            pytest.fail(f"feast ui did not answer 200 (last status {status}):\n{output[-3000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
