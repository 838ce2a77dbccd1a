#!/usr/bin/env bash
# Train the bundled demo model, from nothing but the real label files, on CPU:
#   1. render the synthetic paper corpus (six sites, slumps at the real Nitze et al. 2021 labels),
#   2. serve it with the local STAC server and build the 41-image dataset from the labels,
#   3. evaluate as the paper (primary + leave-one-site-out, preset "demo", seed 0),
#   4. export the primary model to ONNX into shared/rtsmonitor/models/demo with its report,
#   5. score the false-positive filters and confidence tiers with that ONNX model (rtstrain.filter_eval)
#      and add the section to the report.
# Usage: bash scripts/train_demo_model.sh [WORK_DIR] [LABELS_DIR]     (about 20 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-rts-output/demo-model}
LABELS=${2:-../shared/data/labels}
PORT=${RTS_DEMO_PORT:-8765}
RTS=.venv/bin/rts
mkdir -p "$WORK"

$RTS offline paper "$WORK/corpus" --labels-dir "$LABELS"
$RTS offline serve "$WORK/corpus" --port "$PORT" > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/" > /dev/null && break; sleep 0.2; done
$RTS dataset build --out "$WORK/dataset" --labels-dir "$WORK/corpus/labels" --stac-url "http://127.0.0.1:$PORT"
kill $SERVER
$RTS evaluate --dataset "$WORK/dataset" --out "$WORK/evaluation" --preset demo --seed 0
rm -rf shared/rtsmonitor/models/demo
$RTS export-onnx --run "$WORK/evaluation/primary" --out shared/rtsmonitor/models/demo \
    --name rts-unet-demo --version demo-1 --report "$WORK/evaluation/report.json"
cp "$WORK/evaluation/report.md" "$WORK/evaluation/report.json" shared/rtsmonitor/models/demo/
.venv/bin/python -m rtstrain.filter_eval --dataset "$WORK/dataset" --corpus "$WORK/corpus" \
    --report shared/rtsmonitor/models/demo/report.md > /dev/null
echo "demo model written to shared/rtsmonitor/models/demo"
