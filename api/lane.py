"""The heavy lane: expensive operations answered by a second, lower-priority process.

One Python process shares one interpreter lock: while it completes and encodes the ten thousand
objects of an expensive operation, every light request waits in its event loop, however the
threads are arranged (docs/robustness.md). So the served app (``api.app:app_from_env``) starts
a second copy of itself, the *lane*, on a Unix socket, at a lower CPU priority
(``MARQUEE_HEAVY_LANE_NICE``), and forwards to it every admitted operation costing
``EXPENSIVE_COST`` or more (api/cost.py). The front process keeps parsing, costing, charging
budgets and answering light queries; the operating system's scheduler, not the interpreter
lock, shares the CPU between the two, in the light queries' favour.

Contract:

- ``HeavyLane.start(settings)`` spawns the lane (``python -m uvicorn --factory
  api.app:app_from_env --uds …``) with the lane turned off in it (no lane of its own), the
  budgets off (the front charged the client already) and no warm-up ranking. The lane dies with
  its parent (``PR_SET_PDEATHSIG``), also when the parent is killed with SIGKILL.
- ``execute(...)`` posts the operation with the client's API key and request id and returns the
  lane's answer as a graphql-core ``ExecutionResult``; ``None`` when the lane cannot answer (not
  started yet, dead, or refusing), in which case the caller runs the operation itself, as it
  did before the lane existed. A lane answer past the request's deadline is a ``TIMEOUT``.
- ``close()`` stops the lane (SIGTERM, then SIGKILL after ``STOP_WAIT_S``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from graphql import ExecutionResult, GraphQLError

from sources.settings import Settings

log = logging.getLogger(__name__)

STOP_WAIT_S = 10.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent(nice: int) -> None:  # pragma: no cover - runs in the child before exec
    os.nice(nice)
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the lane outlives a killed parent
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class HeavyLane:
    """A running lane process and an HTTP client to it (see the module docstring)."""

    def __init__(self, process: subprocess.Popen[bytes], socket_path: Path, workdir: tempfile.TemporaryDirectory[str]):
        self.process, self.socket_path, self._workdir = process, socket_path, workdir
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket_path)), base_url="http://lane", timeout=None
        )
        self.forwarded = 0
        self.timed_out = 0
        self.fell_back = 0

    @classmethod
    def start(cls, settings: Settings) -> HeavyLane:
        workdir = tempfile.TemporaryDirectory(prefix="marquee-lane-")
        socket_path = Path(workdir.name) / "lane.sock"
        env = dict(os.environ) | {
            "MARQUEE_HEAVY_LANE": "false",
            "MARQUEE_CLIENT_COST_PER_S": "0",
            "MARQUEE_RECOMMENDATION_WARM_USERS": "0",
        }
        command = [sys.executable, "-m", "uvicorn", "--factory", "api.app:app_from_env", "--uds", str(socket_path),
                   "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "5"]  # fmt: skip
        nice = settings.heavy_lane_nice
        process = subprocess.Popen(command, env=env, preexec_fn=lambda: _die_with_parent(nice))
        log.info("heavy lane starting (pid %d, nice +%d) on %s", process.pid, nice, socket_path)
        return cls(process, socket_path, workdir)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def ready(self) -> bool:
        """Uvicorn binds its socket only once the lane's app has started (stores, model)."""
        return self.alive and self.socket_path.exists()

    async def execute(self, query: str, variables: dict[str, Any] | None, operation_name: str | None, *,
                      api_key: str | None, request_id: str, timeout_s: float) -> ExecutionResult | None:  # fmt: skip
        """The lane's answer to one operation, or None when the caller should run it itself."""
        if not self.ready:
            self.fell_back += 1
            return None
        headers = {"x-request-id": request_id}
        if api_key is not None:
            headers["x-api-key"] = api_key
        body = {"query": query, "variables": variables, "operationName": operation_name}
        try:
            response = await self._client.post("/graphql", json=body, headers=headers, timeout=timeout_s)
        except httpx.TimeoutException:
            self.timed_out += 1
            error = GraphQLError(f"the request did not finish within {timeout_s:g} s", extensions={"code": "TIMEOUT"})
            return ExecutionResult(data=None, errors=[error])
        except httpx.HTTPError as exc:
            log.warning("heavy lane unreachable (%s); answering in the front process", type(exc).__name__)
            self.fell_back += 1
            return None
        if response.status_code != 200:
            log.warning("heavy lane answered HTTP %d; answering in the front process", response.status_code)
            self.fell_back += 1
            return None
        self.forwarded += 1
        answer = response.json()
        errors = [_error(e) for e in answer.get("errors") or ()]
        return ExecutionResult(data=answer.get("data"), errors=errors or None)

    def report(self) -> dict[str, Any]:
        """For ``/readyz``: informational, serving goes on without the lane."""
        return {"ok": self.alive, "ready": self.ready, "pid": self.process.pid, "forwarded": self.forwarded,
                "timed_out": self.timed_out, "fell_back": self.fell_back}  # fmt: skip

    async def aclose(self) -> None:
        await self._client.aclose()

    def close(self) -> None:
        """Stop the lane process and remove its socket folder."""
        if self.alive:
            self.process.terminate()
            deadline = time.monotonic() + STOP_WAIT_S
            while self.alive and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive:
                self.process.kill()
        self.process.wait()
        self._workdir.cleanup()


def _error(raw: dict[str, Any]) -> GraphQLError:
    """A lane error as the front's own: same message, path and extensions (its code, requestId)."""
    return GraphQLError(raw.get("message", "error"), path=raw.get("path"), extensions=raw.get("extensions"))
