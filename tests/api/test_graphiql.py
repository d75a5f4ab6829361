"""GraphiQL served from Marquee's own copies of its assets (api/graphiql.py).

The assets are fetched once per session into the app's own git-ignored cache
(api/static/vendor/graphiql); `fetch_assets` is a no-op when they are already there,
so only the first run needs the npm registry.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

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

# Only the server knows this string, so seeing it in the browser proves a round trip.
ANSWER = "served-by-marquee-offline"
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
def live_server(assets_dir: Path, serve_in_thread: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with serve_in_thread(make_app(assets_dir), lifespan="off", start_timeout_s=10) as url:
        yield url


@pytest.mark.browser
def test_graphiql_runs_a_query_offline_in_chromium(live_server: str) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install_browser.sh (apt chromium)")
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Route as PlaywrightRoute
    from playwright.sync_api import expect, sync_playwright

    off_host: list[str] = []
    page_errors: list[str] = []
    failed: list[str] = []

    def local_only(route: PlaywrightRoute) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            off_host.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.set_default_timeout(15_000)
            context.route("**/*", local_only)
            page = context.new_page()
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.goto(f"{live_server}/graphql")

            # GraphiQL 3 edits with CodeMirror 5: focus it, replace the example, run.
            page.locator(".graphiql-query-editor .CodeMirror").click()
            page.keyboard.press("Control+A")
            page.keyboard.press("Delete")
            page.keyboard.type("{ greeting }")
            page.locator(".graphiql-execute-button").click()
            expect(page.locator(".graphiql-response")).to_contain_text(ANSWER)
            assert page.evaluate("typeof GraphiQLPluginExplorer.explorerPlugin") == "function"
        except (PlaywrightError, AssertionError) as exc:
            # The usual cause is an asset that did not load: name it, not just the timeout.
            pytest.fail(
                f"GraphiQL did not run the query: {exc}\n"
                f"off-host requests: {off_host}\nfailed: {failed}\npage errors: {page_errors}"
            )
        finally:
            browser.close()

    assert off_host == [], f"page requested off-host URLs: {off_host}"
    assert failed == [], f"requests failed: {failed}"
    assert page_errors == [], f"page raised: {page_errors}"
