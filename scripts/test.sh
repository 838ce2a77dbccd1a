#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every check: ruff, mypy --strict, and the pytest suite
# (which starts Azurite and the local STAC server itself). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: ruff"
.venv/bin/ruff check shared training functions tests bench
.venv/bin/ruff format --check shared training functions tests bench
echo "test: hadolint"
.venv/bin/hadolint docker/*.Dockerfile
echo "test: mypy"
.venv/bin/mypy
echo "test: pytest"
.venv/bin/pytest "$@"
