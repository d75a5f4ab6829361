"""GraphiQL served without a CDN.

Strawberry's GraphiQL page loads React, GraphiQL, the explorer plugin and js-cookie
from unpkg, so on an offline host it renders blank. Here we:

- fetch those exact files from their npm packages (`fetch_assets`, or
  ``python -m api.graphiql fetch``) into a git-ignored directory, checking the npm
  integrity of each tarball and the SRI hash Strawberry itself pins for each file;
- serve them with a StaticFiles mount (`graphiql_assets_mount`);
- render Strawberry's page pointed at that mount (`OfflineGraphQL`), or, when the
  files are missing, a short page that says how to install them instead of a blank one.

Usage::

    graphql_app = OfflineGraphQL(schema, assets_dir=DEFAULT_ASSETS_DIR)
    app = Starlette(routes=[
        Route("/graphql", graphql_app),
        WebSocketRoute("/graphql", graphql_app),
        graphiql_assets_mount(DEFAULT_ASSETS_DIR),
    ])
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from strawberry.asgi import GraphQL
from strawberry.http.typevars import Context, RootValue

DEFAULT_ASSETS_DIR = Path(__file__).parent / "static" / "vendor" / "graphiql"
ASSETS_PATH = "/graphiql-assets"
# The one command every message points at; change it here if a CLI wraps it.
FETCH_COMMAND = "python -m api.graphiql fetch"
MANIFEST_NAME = "manifest.json"
TEMPLATE_PATH = Path(__file__).parent / "static" / "graphiql.html"


class AssetFetchError(RuntimeError):
    """The GraphiQL assets could not be fetched or failed verification."""


@dataclass(frozen=True)
class VendorAsset:
    """One file taken from an npm tarball, pinned by the SRI hash Strawberry uses."""

    package: str
    version: str
    member: str  # path inside the tarball, below its top-level "package/" folder
    name: str  # file name under the assets dir and URL
    sha384: str  # base64, as in the <script integrity="sha384-..."> attribute

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"


# Versions and hashes are those of strawberry-graphql 0.341's static/graphiql.html;
# keep them in step with api/static/graphiql.html (a test checks that they match).
GRAPHIQL_ASSETS: tuple[VendorAsset, ...] = (
    VendorAsset(
        package="react",
        version="18.2.0",
        member="umd/react.production.min.js",
        name="react.production.min.js",
        sha384="tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8",
    ),
    VendorAsset(
        package="react-dom",
        version="18.2.0",
        member="umd/react-dom.production.min.js",
        name="react-dom.production.min.js",
        sha384="bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh",
    ),
    VendorAsset(
        package="js-cookie",
        version="3.0.5",
        member="dist/js.cookie.min.js",
        name="js.cookie.min.js",
        sha384="/vxhYfM1LENRhdpZ8dwEsQn/X4VhpbEZSiU4m/FwR+PVpzar4fkEOw8FP9Y+OfQN",
    ),
    VendorAsset(
        package="graphiql",
        version="3.8.3",
        member="graphiql.min.js",
        name="graphiql.min.js",
        sha384="HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie",
    ),
    VendorAsset(
        package="graphiql",
        version="3.8.3",
        member="graphiql.min.css",
        name="graphiql.min.css",
        sha384="Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM",
    ),
    VendorAsset(
        package="@graphiql/plugin-explorer",
        version="1.0.2",
        member="dist/index.umd.js",
        name="plugin-explorer.umd.js",
        sha384="2oonKe47vfHIZnmB6ZZ10vl7T0Y+qrHQF2cmNTaFDuPshpKqpUMGMc9jgj9MLDZ9",
    ),
    VendorAsset(
        package="@graphiql/plugin-explorer",
        version="1.0.2",
        member="dist/style.css",
        name="plugin-explorer.css",
        sha384="5DFJlDPW2tSATRbM8kzoP1j194jexLswuNmClWoRr2Q0x7R68JIQzPHZ02Faktwi",
    ),
)


# -- fetching --------------------------------------------------------------------------


def fetch_assets(dest: Path = DEFAULT_ASSETS_DIR) -> Path:
    """Install the GraphiQL files into ``dest`` from npm; return ``dest``.

    Idempotent: a ``dest`` whose manifest matches the files on disk is left alone
    (and npm is not needed). Otherwise the files are built in a sibling temp dir
    and swapped in, so a reader never sees a half-written set.
    Raises AssetFetchError when npm is missing, the registry is unreachable or a
    hash does not match.
    """
    dest = dest.resolve()
    if _manifest_matches(dest):
        print(f"graphiql assets: up to date in {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".graphiql-", dir=dest.parent) as tmp:
        tarballs = _npm_pack(Path(tmp) / "tarballs")
        staging = Path(tmp) / "assets"
        staging.mkdir()
        _extract(tarballs, staging)
        _swap_in(staging, dest, trash=Path(tmp) / "old")
    print(f"graphiql assets: installed {len(GRAPHIQL_ASSETS)} files in {dest}")
    return dest


def assets_present(assets_dir: Path) -> bool:
    """Cheap check (stat calls only) made per page view: manifest and files exist."""
    names = [MANIFEST_NAME, *(asset.name for asset in GRAPHIQL_ASSETS)]
    return all((assets_dir / name).is_file() for name in names)


def _manifest_matches(dest: Path) -> bool:
    try:
        manifest = json.loads((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
        files: dict[str, str] = manifest["files"]
        return all(files.get(asset.name) == _sha256(dest / asset.name) for asset in GRAPHIQL_ASSETS)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _npm(*args: str) -> str:
    """Run the npm client (it knows the configured registry, proxy and cache)."""
    npm = shutil.which("npm")
    if npm is None:
        raise AssetFetchError("npm not found on PATH: install Node.js/npm to fetch the GraphiQL assets")
    try:
        done = subprocess.run([npm, *args], check=True, capture_output=True, text=True, timeout=300)
    except subprocess.CalledProcessError as exc:
        raise AssetFetchError(f"`npm {' '.join(args)}` failed (is the npm registry reachable?):\n{exc.stderr}") from exc
    except subprocess.TimeoutExpired as exc:
        raise AssetFetchError(f"`npm {' '.join(args)}` timed out") from exc
    return done.stdout


def _npm_pack(into: Path) -> dict[str, Path]:
    """Download each package tarball with `npm pack`; map spec -> tarball path.

    npm checks the download against the registry's integrity itself; we check again
    against `npm view` so a tarball is never used on npm's word alone, and the files
    taken out of it are checked once more against the pinned SRI hashes.
    """
    into.mkdir()
    specs = sorted({asset.spec for asset in GRAPHIQL_ASSETS})
    print(f"graphiql assets: npm pack {' '.join(specs)}")
    packed = json.loads(_npm("pack", *specs, "--json", "--pack-destination", str(into)))
    tarballs: dict[str, Path] = {}
    for entry in packed:
        spec = f"{entry['name']}@{entry['version']}"
        path = into / entry["filename"]
        expected = _npm("view", spec, "dist.integrity").strip()
        actual = "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()
        if actual != expected:
            raise AssetFetchError(f"{spec}: tarball integrity {actual} != registry {expected}")
        print(f"graphiql assets: {spec} verified ({expected[:20]}...)")
        tarballs[spec] = path
    missing = set(specs) - tarballs.keys()
    if missing:
        raise AssetFetchError(f"npm pack did not return {sorted(missing)}")
    return tarballs


def _extract(tarballs: dict[str, Path], staging: Path) -> None:
    """Copy only the pinned files out of the tarballs (no extractall: no path games)."""
    manifest: dict[str, Any] = {"packages": {}, "files": {}}
    for asset in GRAPHIQL_ASSETS:
        with tarfile.open(tarballs[asset.spec], "r:gz") as tar:
            try:
                member = tar.getmember(f"package/{asset.member}")
            except KeyError as exc:
                raise AssetFetchError(f"{asset.spec} has no {asset.member}") from exc
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None:
                raise AssetFetchError(f"{asset.spec}: {asset.member} is not a regular file")
            data = handle.read()
        sri = base64.b64encode(hashlib.sha384(data).digest()).decode()
        if sri != asset.sha384:
            raise AssetFetchError(f"{asset.spec}/{asset.member}: sha384-{sri} is not the pin")
        (staging / asset.name).write_bytes(data)
        manifest["packages"][asset.package] = asset.version
        manifest["files"][asset.name] = hashlib.sha256(data).hexdigest()
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _swap_in(staging: Path, dest: Path, *, trash: Path) -> None:
    # rename() cannot replace a non-empty directory, so move the old one aside first;
    # both renames stay on one filesystem (staging is a sibling of dest).
    if dest.exists():
        dest.rename(trash)
    staging.rename(dest)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- serving ---------------------------------------------------------------------------


def graphiql_assets_mount(assets_dir: Path, path: str = ASSETS_PATH) -> Mount:
    """StaticFiles mount for the fetched files.

    check_dir=False so the app still starts before the assets are fetched; until
    then the files answer 404 and OfflineGraphQL shows its install message.
    """
    return Mount(path, app=StaticFiles(directory=assets_dir, check_dir=False), name="graphiql-assets")


def graphiql_html(assets_url: str = ASSETS_PATH) -> str:
    """Strawberry's GraphiQL page with its CDN URLs pointed at ``assets_url``."""
    template = TEMPLATE_PATH.read_text(encoding="utf-8")
    return template.replace("{{ ASSETS_URL }}", assets_url.rstrip("/")).replace("{{ FETCH_COMMAND }}", FETCH_COMMAND)


def missing_assets_html(assets_dir: Path) -> str:
    """Self-contained page (no scripts, no external URLs) shown instead of a blank one."""
    where = html.escape(str(assets_dir))
    command = html.escape(FETCH_COMMAND)
    return f"""<!doctype html>
<html lang="en">
  <head><meta charset="utf-8"><title>Marquee GraphiQL: assets not installed</title></head>
  <body style="font-family: sans-serif; max-width: 46em; margin: 3em auto; line-height: 1.5">
    <h1>GraphiQL assets are not installed</h1>
    <p>Run <code>{command}</code> on a host with access to the npm registry
      (it fills <code>{where}</code>), then reload this page.</p>
    <p>The API at this URL still answers GraphQL queries sent with POST.</p>
  </body>
</html>
"""


class OfflineGraphQL(GraphQL[Context, RootValue]):
    """Strawberry's ASGI app whose GraphiQL page uses Marquee-served assets.

    Everything except the IDE page is Strawberry's own behaviour. Only
    ``graphql_ide="graphiql"`` is rewritten; other IDEs (and None) pass through.
    The page answers 503 while the assets are missing, so probes and humans both
    see that the IDE, not the API, is unavailable.
    """

    def __init__(
        self,
        schema: Any,
        *,
        assets_dir: Path = DEFAULT_ASSETS_DIR,
        assets_url: str = ASSETS_PATH,
        **kwargs: Any,
    ) -> None:
        super().__init__(schema, **kwargs)
        self.assets_dir = assets_dir
        self.assets_url = assets_url

    async def render_graphql_ide(self, request: Request) -> Response:
        if self.graphql_ide != "graphiql":
            return await super().render_graphql_ide(request)
        if not assets_present(self.assets_dir):
            return HTMLResponse(missing_assets_html(self.assets_dir), status_code=503)
        return HTMLResponse(graphiql_html(self.assets_url))


# -- command line ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.graphiql")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="fetch the GraphiQL assets from npm")
    fetch.add_argument("--dest", type=Path, default=DEFAULT_ASSETS_DIR)
    args = parser.parse_args(argv)
    try:
        fetch_assets(args.dest)
    except AssetFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
