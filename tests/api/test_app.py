"""The app around the schema: committed SDL, switches for GraphiQL and introspection,
GraphiQL on the real schema in a browser, and `marquee serve` as a real Uvicorn process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.graphiql import DEFAULT_ASSETS_DIR, FETCH_COMMAND, AssetFetchError, fetch_assets
from api.schema import sdl
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores.clients import Stores
from tests.api.conftest import OfflineBrowser, ServeInThread

REPO = Path(__file__).resolve().parents[2]
HTML = {"accept": "text/html"}
INTROSPECT = "{ __schema { queryType { name } } }"


def test_committed_schema_is_current() -> None:
    committed = (REPO / "schema.graphql").read_text(encoding="utf-8")
    assert committed == sdl(), "schema.graphql is stale: run `marquee schema -o schema.graphql`"


def test_schema_command_prints_the_sdl() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.schema"], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout == sdl()
    assert "type Query" in result.stdout and "interface Node" in result.stdout


def test_graphiql_and_introspection_on_by_default(api_client: TestClient) -> None:
    assert api_client.get("/graphql", headers=HTML).status_code in (200, 503)  # 503: assets not fetched yet
    body = api_client.post("/graphql", json={"query": INTROSPECT}).json()
    assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


def test_graphiql_and_introspection_can_be_turned_off(settings: Settings, stores: Stores, loaded: IngestReport) -> None:
    closed = settings.model_copy(update={"graphiql": False, "introspection": False})
    with TestClient(create_app(closed, stores=stores)) as client:
        page = client.get("/graphql", headers=HTML)
        assert page.status_code == 404
        body = client.post("/graphql", json={"query": INTROSPECT}).json()
        assert body["data"] is None and "introspection" in body["errors"][0]["message"].lower()
        assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert client.post("/graphql", json={"query": "{ movie(id: 1) { title } }"}).json() == {
            "data": {"movie": {"title": "Toy Story"}}
        }


def test_health(api_client: TestClient) -> None:
    assert api_client.get("/healthz").json() == {"status": "ok"}


# -- GraphiQL on the real schema, in Chromium ----------------------------------------------


@pytest.fixture(scope="module")
def live_api(
    settings: Settings,
    stores: Stores,
    loaded: IngestReport,
    serve_in_thread: ServeInThread,
) -> Iterator[str]:
    try:
        fetch_assets(DEFAULT_ASSETS_DIR)
    except AssetFetchError as exc:
        pytest.fail(f"cannot fetch the GraphiQL assets (run `{FETCH_COMMAND}`): {exc}")
    with serve_in_thread(create_app(settings, stores=stores)) as url:
        yield url


@pytest.mark.browser
def test_graphiql_runs_a_real_query_offline(live_api: str, offline_browser: OfflineBrowser) -> None:
    from playwright.sync_api import expect

    with offline_browser(20_000) as tab:
        tab.page.goto(f"{live_api}/graphql")
        response = tab.run_query("{ movie(id: 1) { title year genres } }")
        expect(response).to_contain_text("Toy Story")
        expect(response).to_contain_text("Children's")
    assert tab.off_host == []


# -- marquee serve ---------------------------------------------------------------------------


def test_marquee_serve_answers_over_http(settings: Settings, loaded: IngestReport) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MARQUEE_DATA_DIR": str(settings.data_dir)}
    marquee = Path(sys.executable).with_name("marquee")
    process = subprocess.Popen(
        [str(marquee), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"marquee serve did not become ready:\n{process.communicate()[0][-3000:]}")
            time.sleep(0.5)
        answer = httpx.post(f"{base}/graphql", json={"query": "{ user(id: 1) { age occupation } }"}, timeout=30)
        assert answer.json() == {"data": {"user": {"age": 24, "occupation": "technician"}}}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
