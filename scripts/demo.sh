#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on the embedded default: no accounts, no network.
# Output goes to ./rts-output (or the folder given as the first argument).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/rts demo --out "${1:-rts-output}"
