#!/usr/bin/env bash
# Install Debian's chromium for the Playwright browser test (tests/api/test_graphiql.py).
# We drive the distro binary instead of `playwright install` because Playwright's own
# browser download host is not reachable here; apt is. Idempotent and quiet.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo"
fi

echo "installing chromium via apt-get (about a minute)..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
