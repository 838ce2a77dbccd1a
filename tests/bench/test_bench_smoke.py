"""Smoke runs of the inference-engine and training-throughput benchmarks in quick mode.

The rows must be well formed (names, units, finite positive numbers, the goal verdicts); no
timing or speed is asserted: the benchmarks print what the machine did, they do not judge it.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the benchmarks live in ROOT/bench, outside the installed packages
    sys.path.insert(0, str(ROOT))

from bench.common import Row  # noqa: E402

from bench import common, inference_engines, training_throughput  # noqa: E402

NON_NEGATIVE = {"max_abs_diff"}
"""Metrics that may be 0; every other value must be positive."""


def assert_well_formed(rows: list[Row], bench: str) -> dict[tuple[str, str], Row]:
    assert rows, f"{bench} returned no rows"
    by_key: dict[tuple[str, str], Row] = {}
    for row in rows:
        assert isinstance(row, Row)
        assert set(row.to_dict()) == {"bench", "case", "metric", "value", "unit", "note"}
        assert row.bench == bench
        assert all(isinstance(v, str) and v for v in (row.case, row.metric, row.unit)), row
        assert isinstance(row.note, str)
        assert isinstance(row.value, float) and math.isfinite(row.value), row
        assert row.value >= 0 if row.metric in NON_NEGATIVE else row.value > 0, row
        assert (row.case, row.metric) not in by_key, f"duplicate row {row}"
        by_key[row.case, row.metric] = row
    return by_key


@pytest.fixture(scope="module")
def inference_rows() -> list[Row]:
    return inference_engines.run(quick=True)


@pytest.fixture(scope="module")
def training_rows() -> list[Row]:
    return training_throughput.run(quick=True)


def production_tiling_px(length: int) -> int:
    """Pixels the production windows feed the model along one axis of ``length`` (after padding)."""
    from rtsmonitor.inference import DEFAULT_OVERLAP_PX, DEFAULT_WINDOW_PX, window_spans

    spans = window_spans(length, DEFAULT_WINDOW_PX, DEFAULT_OVERLAP_PX, 32)
    return sum(math.ceil(size / 32) * 32 for _, size in spans)


def test_inference_engines_quick_rows(inference_rows: list[Row], capsys: pytest.CaptureFixture[str]) -> None:
    rows = assert_well_formed(inference_rows, "inference_engines")
    for engine in ("onnxruntime", "keras"):
        for metric in ("params", "startup_s", "first_run_s", "inference_s", "peak_rss_mib", "gflops", "gemm_pct"):
            assert ("demo " + engine, metric) in rows, (engine, metric)
        assert rows["demo " + engine, "processed_mpx"].value == pytest.approx(production_tiling_px(1000) ** 2 / 1e6)
    assert rows["demo", "params"].value == rows["demo onnxruntime", "params"].value
    assert rows["demo", "max_abs_diff"].value < 1e-3  # the two engines computed the same site
    for metric in ("speedup", "memory_ratio", "ort_gemm_pct"):
        assert rows["demo goals", metric].note.endswith(("PASS", "MISS"))
    assert ("numpy", "gemm_reference_gflops") in rows
    inference_engines.report(inference_rows)
    out = capsys.readouterr().out
    assert "demo onnxruntime" in out and "% GEMM" in out and "speedup" in out


def test_training_throughput_quick_rows(training_rows: list[Row], capsys: pytest.CaptureFixture[str]) -> None:
    rows = assert_well_formed(training_rows, "training_throughput")
    case = "quick width 4 batch 8"
    for metric in ("tiles_per_s", "s_per_step", "val_tiles_per_s", "epoch_s", "run_h", "peak_rss_mib", "gemm_pct"):
        assert (case, metric) in rows, metric
    assert rows["paper dataset", "tiles_train"].value == 1568  # the demo bundle's recorded paper-tiling count
    common.print_table(training_rows)
    assert "tiles_per_s" in capsys.readouterr().out


def test_peak_rss_child_command_and_callable() -> None:
    allocate = "b = b'\\x01' * (160 << 20)"  # touched bytes: resident, unlike a calloc'd bytearray
    run = common.peak_rss_child([sys.executable, "-c", allocate + "; print('BENCH_RESULT {\"ok\": 1}')"])
    assert run.returncode == 0 and run.result == {"ok": 1}
    assert run.peak_rss_mib >= 160
    called = common.peak_rss_child(functools.partial(exec, allocate))
    assert called.returncode == 0 and called.result is None
    assert called.peak_rss_mib >= 160
    failed = common.peak_rss_child([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exit 3"):
        failed.check("the failing child")


def test_median_and_table() -> None:
    assert common.median([3.0, 1.0, 2.0]) == 2.0
    with pytest.raises(ValueError):
        common.median([])
    with pytest.raises(ValueError, match="non-finite"):
        common.check_rows([Row("b", "c", "m", math.nan, "s")])
