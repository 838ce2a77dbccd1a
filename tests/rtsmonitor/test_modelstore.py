"""The bundled demo model: a complete, checked bundle that onnxruntime runs without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

from rtsmonitor.modelstore import DEMO_BUNDLE, read_bundle_meta
from rtsmonitor.stack import INPUT_LAYERS


def test_demo_bundle_is_complete_and_checked() -> None:
    meta = read_bundle_meta(DEMO_BUNDLE)  # raises when model.onnx does not match its sha256
    assert meta["input_layers"] == list(INPUT_LAYERS)
    assert meta["normalisation"]["layers"] == list(INPUT_LAYERS)
    assert 0.0 < meta["threshold"] < 1.0
    assert meta["parity"]["max_abs_diff"] <= 1e-4
    assert meta["training_manifest_sha256"]
    assert (DEMO_BUNDLE / "report.md").read_text().count("paper (Rustemeyer et al. 2022)") == 1
    assert (DEMO_BUNDLE / "model.onnx").stat().st_size < 8_000_000


def test_demo_model_runs_with_onnxruntime_alone() -> None:
    code = f"""
import json, sys
import numpy as np
import onnxruntime as ort
meta = json.load(open({str(DEMO_BUNDLE / "model.json")!r}))
session = ort.InferenceSession({str(DEMO_BUNDLE / "model.onnx")!r}, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).random((1, 64, 96, 5), dtype=np.float32)
(p,) = session.run(None, {{meta["onnx"]["input_name"]: x}})
assert "tensorflow" not in sys.modules
print(json.dumps({{"shape": list(p.shape), "min": float(p.min()), "max": float(p.max())}}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert out["shape"] == [1, 64, 96, 1]
    assert 0.0 <= out["min"] <= out["max"] <= 1.0
