"""GraphiQL served from Marquee's own copies of its assets (api/graphiql.py).

The assets are fetched once per session into the app's own git-ignored cache
(api/static/vendor/graphiql); `fetch_assets` is a no-op when they are already there,
so only the first run needs the npm registry.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import strawberry
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from api.graphiql import (
    ASSETS_PATH,
    DEFAULT_ASSETS_DIR,
    FETCH_COMMAND,
    GRAPHIQL_ASSETS,
    AssetFetchError,
    OfflineGraphQL,
    fetch_assets,
    graphiql_assets_mount,
)
from tests.api.conftest import OfflineBrowser, ServeInThread

# Only the server knows this string, so seeing it in the browser proves a round trip.
ANSWER = "served-by-marquee-offline"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # in the inline favicon; not a fetch
HTML = {"accept": "text/html"}


@strawberry.type
class Query:
    @strawberry.field
    def greeting(self) -> str:
        return ANSWER


SCHEMA = strawberry.Schema(query=Query)


def make_app(assets_dir: Path) -> Starlette:
    graphql_app: OfflineGraphQL[None, None] = OfflineGraphQL(SCHEMA, assets_dir=assets_dir)
    return Starlette(
        routes=[
            Route("/graphql", graphql_app),
            WebSocketRoute("/graphql", graphql_app),
            graphiql_assets_mount(assets_dir),
        ]
    )


def get(app: Starlette, *paths: str, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.get(path, headers=headers) for path in paths]

    return asyncio.run(run())


def post_query(app: Starlette, query: str) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post("/graphql", json={"query": query})

    return asyncio.run(run())


def asset_urls(page: str) -> list[str]:
    """src/href values of the page, minus inline data: URLs."""
    return [u for u in re.findall(r'(?:src|href)="([^"]+)"', page) if not u.startswith("data:")]


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    try:
        return fetch_assets(DEFAULT_ASSETS_DIR)
    except AssetFetchError as exc:
        pytest.fail(f"cannot fetch the GraphiQL assets (run `{FETCH_COMMAND}`): {exc}")


def test_page_references_only_local_assets(assets_dir: Path) -> None:
    app = make_app(assets_dir)
    (page,) = get(app, "/graphql", headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")

    urls = asset_urls(page.text)
    assert sorted(urls) == sorted(f"{ASSETS_PATH}/{a.name}" for a in GRAPHIQL_ASSETS)
    external = set(re.findall(r"https?://[^\s\"'<>%]+", page.text)) - {SVG_NAMESPACE}
    assert external == set(), f"page still points off-host: {external}"

    for url, response in zip(urls, get(app, *urls), strict=True):
        assert response.status_code == 200, url
        expected = "text/css" if url.endswith(".css") else "text/javascript"
        assert response.headers["content-type"].startswith(expected), url


def test_page_pins_the_hashes_that_fetch_checks(assets_dir: Path) -> None:
    # The template and GRAPHIQL_ASSETS both carry the SRI hashes; keep them in step.
    (page,) = get(make_app(assets_dir), "/graphql", headers=HTML)
    pinned = dict(re.findall(r'(?:src|href)="[^"]*/([^"/]+)"\s+integrity="sha384-([^"]+)"', page.text))
    assert pinned == {a.name: a.sha384 for a in GRAPHIQL_ASSETS}


def test_missing_assets_serve_an_install_message(tmp_path: Path) -> None:
    # 503: the IDE is unavailable, but the page still says why and the API still works.
    app = make_app(tmp_path / "not-fetched")
    (page,) = get(app, "/graphql", headers=HTML)
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "GraphiQL assets are not installed" in page.text
    assert FETCH_COMMAND in page.text
    assert "<script" not in page.text
    assert post_query(app, "{ greeting }").json() == {"data": {"greeting": ANSWER}}


def test_fetch_is_a_no_op_when_assets_match(assets_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With no npm on PATH, only the manifest check can make this succeed.
    before = {p.name: p.stat().st_mtime_ns for p in assets_dir.iterdir()}
    monkeypatch.setenv("PATH", "")
    assert fetch_assets(assets_dir) == assets_dir.resolve()
    assert {p.name: p.stat().st_mtime_ns for p in assets_dir.iterdir()} == before


def test_tampered_assets_are_fetched_again(assets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = Path(shutil.copytree(assets_dir, tmp_path / "graphiql"))
    (copy / "graphiql.min.js").write_text("alert('tampered')", encoding="utf-8")
    monkeypatch.setenv("PATH", "")  # the refetch is then refused with a clear error
    with pytest.raises(AssetFetchError, match="npm not found"):
        fetch_assets(copy)


@pytest.fixture(scope="module")
def live_server(assets_dir: Path, serve_in_thread: ServeInThread) -> Iterator[str]:
    with serve_in_thread(make_app(assets_dir), lifespan="off", start_timeout_s=10) as url:
        yield url


@pytest.mark.browser
def test_graphiql_runs_a_query_offline_in_chromium(live_server: str, offline_browser: OfflineBrowser) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    page_errors: list[str] = []
    failed: list[str] = []
    with offline_browser(15_000) as tab:
        tab.page.on("pageerror", lambda error: page_errors.append(str(error)))
        tab.page.on("requestfailed", lambda request: failed.append(request.url))
        try:
            tab.page.goto(f"{live_server}/graphql")
            expect(tab.run_query("{ greeting }")).to_contain_text(ANSWER)
            assert tab.page.evaluate("typeof GraphiQLPluginExplorer.explorerPlugin") == "function"
        except (PlaywrightError, AssertionError) as exc:
            # The usual cause is an asset that did not load: name it, not just the timeout.
            pytest.fail(
                f"GraphiQL did not run the query: {exc}\n"
                f"off-host requests: {tab.off_host}\nfailed: {failed}\npage errors: {page_errors}"
            )

    assert tab.off_host == [], f"page requested off-host URLs: {tab.off_host}"
    assert failed == [], f"requests failed: {failed}"
    assert page_errors == [], f"page raised: {page_errors}"


def test_graphiql_opens_on_a_marquee_example_query_that_the_schema_accepts() -> None:
    from graphql import parse, validate

    from api.graphiql import graphiql_html
    from api.schema import build_schema

    html = graphiql_html()
    assert "Welcome to GraphiQL" not in html
    example = re.search(r"const EXAMPLE_QUERY = `(.*?)`;", html, re.S)
    assert example is not None and "recommendations(first: 5)" in example.group(1)
    schema = build_schema()._schema
    assert validate(schema, parse(example.group(1))) == []
