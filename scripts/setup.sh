#!/usr/bin/env bash
# Set up everything the project needs, from nothing: a Python venv with the package and its dev
# tools (pinned in pyproject.toml), Azurite and Leaflet from npm (pinned in package-lock.json),
# Debian's Chromium and ChromeDriver for the report's browser test, and the infrastructure check
# tools in their own venvs (scripts/setup_tools.sh).
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'; then
    echo "setup: needs Python 3.11 or 3.12 (found $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
echo "setup: installing the rtsmonitor package, training (TensorFlow CPU), Functions and dev extras into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,train,functions]"

if ! command -v npm >/dev/null 2>&1; then
    echo "setup: npm not found; installing Node.js and npm from Debian packages" >&2
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "setup: install Node.js (>= 18) and npm, then run again" >&2
        exit 1
    fi
fi
if [ ! -x node_modules/.bin/azurite ] || [ ! -f node_modules/leaflet/package.json ]; then
    echo "setup: installing Azurite and Leaflet (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "setup: Chromium or ChromeDriver not found; installing Debian packages chromium and chromium-driver" \
        "(the HTML report's headless-browser test)"
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "setup: no apt-get: install Chromium and ChromeDriver yourself; tests/browser is skipped without" \
            "them (and fails where RTS_REQUIRE_BROWSER is set)" >&2
    fi
fi
echo "setup: infrastructure check tools (terraform fmt, checkov, python-hcl2, check-jsonschema) in .tools/"
bash scripts/setup_tools.sh
echo "setup: ready (.venv, node_modules/.bin/azurite, .tools/)"
