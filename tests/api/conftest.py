"""The real API app over the session's embedded stores (ML-100K loaded), driven over HTTP.

Starlette's TestClient is httpx underneath and runs the app's lifespan, so every request
goes through routing, Strawberry, the DataLoaders and the real stores.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pandas as pd
import pytest
import uvicorn
from sqlalchemy import text
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from api.app import create_app
from api.queries.feast_features import VIEW_OF_TABLE
from sources.export import features
from sources.ingest import IngestReport
from sources.settings import Settings
from sources.stores import mongo
from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore

Query = Callable[..., dict[str, Any]]


def _post(client: TestClient, query: str, variables: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    """POST a GraphQL query; asserts the transport answered 200 with JSON (never a 500)."""
    response = client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="session")
def api_client(settings: Settings, stores: Stores, loaded: IngestReport) -> Iterator[TestClient]:
    app = create_app(settings, stores=stores)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def gql(api_client: TestClient) -> Query:
    """``gql(query, variables, **headers)`` → the JSON body; fails on any HTTP status but 200."""

    def run(query: str, variables: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
        return _post(api_client, query, variables, **headers)

    return run


ServeInThread = Callable[..., AbstractContextManager[str]]


@pytest.fixture(scope="session")
def serve_in_thread() -> ServeInThread:
    """``with serve_in_thread(app, lifespan="on") as url``: Uvicorn on a free 127.0.0.1 port in
    a thread (it skips signal handlers there), stopped when the block ends."""

    @contextmanager
    def serve(app: ASGIApp, lifespan: str = "auto", start_timeout_s: float = 20.0) -> Iterator[str]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail(f"uvicorn did not start within {start_timeout_s:g} s")
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()

    return serve


# -- headless Chromium with the network cut off ----------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--headless=new",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@dataclass
class OfflinePage:
    """A Playwright page whose requests to anything but localhost are aborted and listed."""

    page: Any
    off_host: list[str] = field(default_factory=list)

    def run_query(self, query: str) -> Any:
        """Replace GraphiQL's example query with ``query``, run it; the response pane's locator.

        GraphiQL 3 edits with CodeMirror 5, and our page holds the query as React state that it
        feeds back into the editor (a debounced ``onEditQuery``). Typed key by key on a loaded
        machine, a stale state reset the editor mid-typing and the server got a mangled query
        (CI, stop 24: "Unexpected Name 'le'"). So the text goes in at once through the editor's
        own ``setValue``, the run waits until the page's state (mirrored in the URL's ``q``)
        holds it, and the editor is read back: a mangled query fails here, by name."""
        editor = self.page.locator(".graphiql-query-editor .CodeMirror")
        editor.wait_for()
        editor.evaluate("(node, text) => node.CodeMirror.setValue(text)", query)
        self.page.wait_for_function("text => new URLSearchParams(location.search).get('q') === text", arg=query)
        in_editor = editor.evaluate("node => node.CodeMirror.getValue()")
        assert in_editor == query, f"GraphiQL's editor holds {in_editor!r}, not {query!r}"
        self.page.locator(".graphiql-execute-button").click()
        return self.page.locator(".graphiql-response")


OfflineBrowser = Callable[[int], AbstractContextManager[OfflinePage]]


@pytest.fixture(scope="session")
def offline_browser() -> OfflineBrowser:
    """``with offline_browser(timeout_ms) as tab``: Debian's Chromium driven by Playwright (its own
    browser download cannot work here), closed when the block ends."""

    @contextmanager
    def open_page(timeout_ms: int) -> Iterator[OfflinePage]:
        if not CHROMIUM.exists():
            pytest.fail(f"{CHROMIUM} is missing: run scripts/install_browser.sh (apt chromium)")
        from playwright.sync_api import Route, sync_playwright

        off_host: list[str] = []

        def local_only(route: Route) -> None:
            if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
                route.continue_()
            else:
                off_host.append(route.request.url)
                route.abort()

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context()
                context.set_default_timeout(timeout_ms)
                context.route("**/*", local_only)
                yield OfflinePage(context.new_page(), off_host)
            finally:
                browser.close()

    return open_page


# -- undoing a rating pushed through the API (tests that rate clean up after themselves) ------


def offline_latest(stores: Stores, table: str, key: int, entity: str = "user_id") -> dict[str, Any]:
    with stores.pg.connect() as conn:
        row = conn.execute(
            text(f"SELECT * FROM {table} WHERE {entity} = :k ORDER BY event_timestamp DESC LIMIT 1"), {"k": key}
        )
        return dict(row.mappings().one())


def undo_rating(stores: Stores, store: FeatureStore, review_id: str, user_id: int, movie_id: int, at: datetime) -> None:
    """Undo the rating everywhere it went: Mongo, the mutation log, raw and feature tables, online."""
    mongo.live(stores.mongo, "reviews").delete_one({"_id": review_id})
    stores.mongo[mongo.MUTATION_LOG].delete_many({"input.user_id": user_id, "input.movie_id": movie_id})
    with stores.pg.begin() as conn:
        conn.execute(text("DELETE FROM raw_reviews WHERE review_id = :r"), {"r": review_id})
        for entity, key in (("user_id", user_id), ("movie_id", movie_id)):
            features.create_affected(conn, entity)
            features.mark_affected(conn, entity, f"SELECT {key}, CAST('{at.isoformat()}' AS timestamptz)")
        for feature in (features.USER_REVIEWS, features.MOVIE_REVIEWS):
            features.recompute(conn, feature)
    for table, entity, key in (("feat_user_reviews", "user_id", user_id), ("feat_movie_reviews", "movie_id", movie_id)):
        row = offline_latest(stores, table, key, entity)
        store.write_to_online_store(VIEW_OF_TABLE[table], pd.DataFrame([row]))
