#!/usr/bin/env bash
# The paper-configuration evaluation (Rustemeyer et al. 2022: 100 epochs, batch 32, Adam 1e-4,
# width 16) on the synthetic paper corpus, on CPU: primary model + six leave-one-site-out models.
#   1. render the synthetic paper corpus and build the 41-image dataset (skipped when WORK holds it),
#   2. rts evaluate --preset paper --resume --scores-dir training/reports/paper-cpu/experiments:
#      continues where an interrupted run stopped (every epoch is saved; a resumed run ends with the
#      same weights as an uninterrupted one), and skips the experiments whose scores are kept in the
#      repository (each finished one is written there: commit them, and a fresh machine goes on
#      from there); the six leave-one-site-out models run first, the primary model last,
#   3. export the primary model to ONNX in WORK/bundle (parity-checked against Keras on 1024 x 1024),
#   4. copy report.md, report.json, the primary model's training curve, its model.json and the
#      export's parity line to training/reports/paper-cpu (the 64 MB ONNX file stays in WORK),
#   5. score the false-positive filters and confidence tiers with the exported model's ONNX inference
#      (python -m rtstrain.filter_eval) and add that section to the copied report.
# Usage: bash scripts/train_paper_model.sh [WORK_DIR] [LABELS_DIR]   (about 6.6 h on 2 cores; rerun to resume)
# The ONNX export needs the primary model's weights, which stay in WORK: if its scores are kept but
# WORK lost them (a new machine), delete training/reports/paper-cpu/experiments/primary.json and rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-rts-output/paper-model}
LABELS=${2:-../shared/data/labels}
PORT=${RTS_PAPER_PORT:-8766}
REPORTS=training/reports/paper-cpu
SCORES=$REPORTS/experiments
RTS=.venv/bin/rts
mkdir -p "$WORK"

if [ ! -f "$WORK/dataset/manifest.json" ]; then
    rm -rf "$WORK/corpus" "$WORK/dataset" "$WORK/dataset.partial"
    $RTS offline paper "$WORK/corpus" --labels-dir "$LABELS"
    $RTS offline serve "$WORK/corpus" --port "$PORT" > "$WORK/server.log" 2>&1 &
    SERVER=$!
    trap 'kill $SERVER 2>/dev/null || true' EXIT
    for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/" > /dev/null && break; sleep 0.2; done
    $RTS dataset build --out "$WORK/dataset.partial" --labels-dir "$WORK/corpus/labels" \
        --stac-url "http://127.0.0.1:$PORT"
    kill $SERVER
    mv "$WORK/dataset.partial" "$WORK/dataset"
fi
$RTS evaluate --dataset "$WORK/dataset" --out "$WORK/evaluation" --preset paper --resume --scores-dir "$SCORES"
if [ ! -f "$WORK/evaluation/primary/model.keras" ]; then
    echo "train_paper_model: the primary model's scores are kept in $SCORES/primary.json, but its weights are" \
        "not in $WORK/evaluation/primary (another machine trained it): delete that file and run again" >&2
    exit 1
fi
mkdir -p "$REPORTS"
$RTS export-onnx --run "$WORK/evaluation/primary" --out "$WORK/bundle" --name rts-unet-paper \
    --version paper-cpu-1 --report "$WORK/evaluation/report.json" | tee "$REPORTS/export.txt"
cp "$WORK/evaluation/report.md" "$WORK/evaluation/report.json" "$WORK/bundle/model.json" "$REPORTS/"
cp "$WORK/evaluation/primary/training_curve.png" "$REPORTS/primary_training_curve.png"
.venv/bin/python -m rtstrain.filter_eval --dataset "$WORK/dataset" --bundle "$WORK/bundle" \
    --corpus "$WORK/corpus" --report "$REPORTS/report.md" > /dev/null
echo "paper-configuration report written to $REPORTS"
