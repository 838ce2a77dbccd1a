"""Benchmark: int8 quantisation of the demo U-Net: speed against pixel F1 on synthetic truth.

The bundled demo model is quantised with onnxruntime's static QDQ quantisation (int8 weights and
activations, MinMax calibration on tiles of one summer) and with dynamic quantisation (int8
weights). Each variant predicts the same Horton 01 summers of an offline corpus (slumps at the real
label polygons, so the truth is ``World.slump_mask``) with the production tiling; the table gives
its median inference time per site and its pixel F1 against the truth next to the float32 model's.
The project's rule: a quantised model is kept only if it is faster and pixel F1 drops by at most 0.01.

    .venv/bin/python bench/quantisation.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, median, print_table

YEARS = (2018, 2019, 2020, 2021)
QUICK_YEARS = (2021,)
CALIBRATION_TILES = 16
"""512 px windows of the first summer used to calibrate the activation ranges."""
MAX_F1_DROP = 0.01
"""Largest pixel-F1 loss a quantised model may cost (the performance issue's rule)."""
LABELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "labels"


def _bundle(source: Path, onnx_path: Path, target: Path, version: str) -> Path:
    """A bundle folder with ``onnx_path`` as its model and ``source``'s metadata (sha256 updated)."""
    from rtsmonitor.modelstore import file_sha256

    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx_path, target / "model.onnx")
    meta = json.loads((source / "model.json").read_text())
    meta["version"] = version
    meta["onnx"]["sha256"] = file_sha256(target / "model.onnx")
    (target / "model.json").write_text(json.dumps(meta))
    return target


def _f1(predicted: np.ndarray, truth: np.ndarray, observed: np.ndarray) -> float:
    tp = int(np.count_nonzero(predicted & truth & observed))
    fp = int(np.count_nonzero(predicted & ~truth & observed))
    fn = int(np.count_nonzero(~predicted & truth & observed))
    return 2 * tp / max(2 * tp + fp + fn, 1)


def run(quick: bool = False) -> list[Row]:
    """Quantise, predict the summers with each variant, compare time and F1."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from rtsmonitor.demo import demo_slumps
    from rtsmonitor.imagery import choose_summer_scene
    from rtsmonitor.inference import Model, predict_stack
    from rtsmonitor.modelstore import DEMO_BUNDLE
    from rtsmonitor.offline.corpus import build_corpus
    from rtsmonitor.offline.stacserver import LocalStacServer
    from rtsmonitor.sites import paper_site
    from rtsmonitor.stac import open_catalog
    from rtsmonitor.stack import build_stack
    from rtsmonitor.terrain import StacDem

    years = QUICK_YEARS if quick else YEARS
    site = paper_site("horton01")
    grid = site.grid()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = build_corpus(
            tmp / "stac",
            [(site.id, grid)],
            list(years),
            2,
            0,
            slumps={site.id: demo_slumps(site, LABELS)},
            progress=False,
        )
        stacks = []
        with LocalStacServer(corpus.root) as server:
            client, dem = open_catalog(server.url), StacDem(server.url)
            for year in years:
                choice = choose_summer_scene(client, grid, site.season_bounds(year), 10.0, 0.5)
                if choice.chosen is not None:
                    stacks.append((year, build_stack(grid, choice, dem)))
        truth = {year: corpus.worlds[site.id].slump_mask(grid, year) for year, _ in stacks}

        fp32 = Model.load(DEMO_BUNDLE)
        windows = [
            fp32.normalisation.apply_stack(stack)[r : r + 512, c : c + 512][None]
            for _, stack in stacks[:1]
            for r in (0, 488)
            for c in (0, 488)
        ]

        class Tiles(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self.items = iter([{fp32.meta["onnx"]["input_name"]: w} for w in windows[:CALIBRATION_TILES]])

            def get_next(self) -> dict[str, Any] | None:
                return next(self.items, None)

        source = DEMO_BUNDLE / "model.onnx"
        quantize_static(
            source, tmp / "static.onnx", Tiles(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        quantize_dynamic(source, tmp / "dynamic.onnx", weight_type=QuantType.QUInt8)
        files = {"float32": source, "int8 static (QDQ)": tmp / "static.onnx", "int8 dynamic": tmp / "dynamic.onnx"}
        variants = {
            name: fp32 if name == "float32" else Model.load(_bundle(DEMO_BUNDLE, path, tmp / f"b{i}", f"q{i}"))
            for i, (name, path) in enumerate(files.items())
        }
        reference: tuple[float, float] | None = None
        for name, model in variants.items():
            seconds, scores = [], []
            for year, stack in stacks:
                predict_stack(model, stack)  # warm-up
                started = time.perf_counter()
                prediction = predict_stack(model, stack)
                seconds.append(time.perf_counter() - started)
                scores.append(_f1(prediction.mask, truth[year], prediction.observed))
            f1, time_s = float(np.mean(scores)), median(seconds)
            reference = reference or (f1, time_s)
            drop, speedup = reference[0] - f1, reference[1] / time_s
            keep = drop <= MAX_F1_DROP and speedup > 1.0
            verdict = "" if name == "float32" else ("; keep" if keep else "; not kept: no faster, or F1 drops too much")
            rows += [
                Row("quantisation", name, "inference_s", round(time_s, 3), "s", f"median of {len(seconds)} summers"),
                Row("quantisation", name, "speedup", round(speedup, 2), "x", f"vs float32{verdict}"),
                Row("quantisation", name, "pixel_f1", round(f1, 4), "", f"vs synthetic truth; drop {drop:+.4f}"),
                Row("quantisation", name, "model_mb", round(files[name].stat().st_size / 1e6, 2), "MB"),
            ]  # fmt: skip
    return rows


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    print_table(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
