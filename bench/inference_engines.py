"""Benchmark (issue 7, item 1): onnxruntime vs Keras on one 100 km^2 site with the production tiling.

One paper site (``horton01``: 1000 x 1000 px at 10 m, 5 input layers) as a seeded synthetic
:class:`~rtsmonitor.stack.Stack` runs through the production :func:`rtsmonitor.inference.predict_stack`
(512 px windows, 64 px overlap, reflect padding to multiples of 32, ramp blending) for two
U-Nets of :func:`rtstrain.unet.build_unet`: the paper-size one (width of the ``PAPER`` preset) and
the demo model's architecture (as recorded in the demo bundle's ``model.json``). **Weights are
random** (seed 0): speed and memory do not depend on them.

* **onnxruntime**: each model is exported with the project's own :func:`rtstrain.export.export_onnx`
  and bundled with :func:`rtstrain.export.write_model_json` (the demo bundle's normalisation), then
  loaded with :meth:`rtsmonitor.inference.Model.load` exactly as production does.
* **Keras**: the same ``model.keras`` behind a stand-in for ``Model`` whose ``predict_normalised``
  calls Keras, passed to the same ``predict_stack``: the same windows, padding, normalisation and
  blending, so both engines process the same pixels. ``keras`` uses ``predict_on_batch`` (a
  compiled ``tf.function``, Keras' own fastest single-batch path); ``keras eager`` calls
  ``model(x, training=False)`` as the export's parity check does (full mode only).

Each engine and model runs in its own child process (TensorFlow and onnxruntime keep their memory
and thread pools for the life of a process): **start-up** is measured inside the child from before
``import rtsmonitor.inference`` (and TensorFlow) to a loaded model, after the interpreter and numpy
have started; **inference** is the median of the timed site predictions, each child timing its
share after one warm-up run (reported as ``first_run_s``); **peak RSS** is the child's
``ru_maxrss`` (kernel rusage of that child, via ``wait4``). In full mode the onnxruntime and Keras
children alternate :data:`ROUNDS` times and their timings are pooled, so that both engines meet
the bursts of other work of a shared machine alike.

**FLOPs** are counted from the Keras layers (:func:`bench.common.conv_flops_per_pixel`: every
convolution, 2 FLOPs per multiply-add) per padded input pixel, times the pixels the tiling really
feeds the model: for 1000 px the windows along each axis are 0..512, 448..960 and 480..1000 (the
last padded to 544), so 1568^2 = 2.46 M px per site, 2.46x the site's pixels. GFLOP/s = those
FLOPs / the median end-to-end ``predict_stack`` time (normalisation and blending included), next
to numpy's float32 GEMM measured in the same run, before and after the engines, with OpenBLAS'
own kernels and with its AVX-512 kernels (:func:`bench.common.gemm_rows`: the best product of
each, the higher of the two is the reference; on a busy machine % GEMM is a lower bound).

Full mode also measures variants. Keras eager, and onnxruntime without its memory-pattern
planning (``enable_mem_pattern`` off), with 544 px windows (two per 1000 px axis: 1.25 M px
processed) or with one 1024 px window, run in their own children for start-up and peak RSS. The
onnxruntime *timing* variants run in one more child, run by run in turn with production's
configuration as the control (so that all of them share the machine's noise): graph
optimisation ``ORT_ENABLE_BASIC`` instead of ``ORT_ENABLE_ALL``, 1 intra-op thread instead of
:data:`rtsmonitor.inference.DEFAULT_THREADS`, no spinning thread-pool waits
(``session.intra_op.allow_spinning`` 0), no memory pattern, and the two window sizes; each gets a
``speedup`` row against the control. Nothing in production changes: these rows only measure.

Goals of the issue: onnxruntime >= 2x faster than Keras, <= 1/2 of its peak RSS, >= 40 % of GEMM
(rows ``<model> goals``, with PASS or MISS in the note). The machine is shared: read medians, and
compare rows of one run only.

Usage::

    .venv/bin/python bench/inference_engines.py --runs 6     # about 4 minutes on 2 cores
    .venv/bin/python bench/inference_engines.py --quick      # demo model only, 1 run, no variants
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

if __package__ in (None, ""):  # run as a script (python bench/inference_engines.py): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ChildRun,
    Row,
    check_rows,
    conv_flops_per_pixel,
    emit_result,
    gemm_rows,
    measure_gemm,
    median,
    print_pivot,
    print_table,
    run_child,
    time_calls,
    vm_hwm_mib,
)

BENCH = "inference_engines"
SITE_ID = "horton01"
"""The paper site whose grid the synthetic stack uses (1000 x 1000 px, 100 km^2 at 10 m)."""
SEED = 0
MODELS = ("paper", "demo")
"""``paper``: the ``PAPER`` preset's width; ``demo``: the demo bundle's recorded architecture."""
CHILD_TIMEOUT_S = 600.0
ROUNDS = 2
"""Full mode runs the onnxruntime and Keras children alternately this many times and pools their
timings, so that both engines meet the same bursts of other work on a shared machine."""
VARIANT_RUNS = 3
"""Timed rounds of the onnxruntime variants and of Keras eager (at most ``--runs``)."""
GEMM_N = 2048
GEMM_REPEATS = 7

GOAL_SPEEDUP = 2.0
"""onnxruntime must be at least this many times faster than Keras (issue 7, item 1)."""
GOAL_MEMORY_RATIO = 0.5
"""onnxruntime's peak RSS must be at most this fraction of Keras'."""
GOAL_GEMM_PCT = 40.0
"""onnxruntime must reach at least this percentage of numpy's float32 GEMM GFLOP/s (the reference of
:func:`bench.common.gemm_rows`)."""


@dataclass(frozen=True)
class EngineCase:
    """One kind of child run: an engine (with options) on one model."""

    label: str
    engine: str  # "onnxruntime" or "keras"
    window_px: int = 0  # 0 = production DEFAULT_WINDOW_PX
    mem_pattern: bool = True  # onnxruntime: SessionOptions.enable_mem_pattern (its default: on)
    eager: bool = False  # keras: model(x) instead of predict_on_batch

    def child_args(self) -> list[str]:
        """Arguments of the child process after ``--child ENGINE FOLDER``."""
        if self.engine == "keras":
            return ["--eager"] if self.eager else []
        return ["--window", str(self.window_px)] + ([] if self.mem_pattern else ["--no-mem-pattern"])


MAIN_CASES = (EngineCase("onnxruntime", "onnxruntime"), EngineCase("keras", "keras"))
"""The two engines the goals compare, as production and Keras would run them."""
EXTRA_CASES = (
    EngineCase("keras eager", "keras", eager=True),
    EngineCase("ort no mem pattern", "onnxruntime", mem_pattern=False),
    EngineCase("ort 544 window", "onnxruntime", window_px=544),
    EngineCase("ort 1024 window", "onnxruntime", window_px=1024),
)
"""Full mode: Keras eager, and the onnxruntime variants that change memory, in their own children
for their peak RSS (their times come from the interleaved variants child)."""


@dataclass(frozen=True)
class OrtVariant:
    """One onnxruntime configuration of the interleaved variants child."""

    label: str
    level: str = "ALL"  # graph optimisation level, ORT_ENABLE_<level>
    threads: int = 0  # intra-op threads; 0 = production DEFAULT_THREADS
    spinning: bool = True  # session.intra_op.allow_spinning (onnxruntime's default: on)
    mem_pattern: bool = True  # SessionOptions.enable_mem_pattern (onnxruntime's default: on)
    window_px: int = 0  # 0 = production DEFAULT_WINDOW_PX

    @property
    def session_key(self) -> tuple[str, int, bool, bool]:
        """Variants with equal keys share one session."""
        return (self.level, self.threads, self.spinning, self.mem_pattern)


ORT_VARIANTS = (
    OrtVariant("production"),
    OrtVariant("BASIC", level="BASIC"),
    OrtVariant("1 thread", threads=1),
    OrtVariant("no spinning", spinning=False),
    OrtVariant("no mem pattern", mem_pattern=False),
    OrtVariant("544 window", window_px=544),
    OrtVariant("1024 window", window_px=1024),
)
"""Run by run in turn in one child, so that they share the machine's noise; ``production`` is the control."""


# --- shared by parent and children ----------------------------------------------------------------


def demo_meta() -> dict[str, Any]:
    """The demo bundle's ``model.json``."""
    from rtsmonitor.modelstore import DEMO_BUNDLE, META_NAME

    meta: dict[str, Any] = json.loads((DEMO_BUNDLE / META_NAME).read_text())
    return meta


def architecture(name: str) -> dict[str, Any]:
    """``base_filters``, ``levels``, ``dropout`` of model ``name`` and where they come from."""
    from rtstrain.train import PRESETS

    if name == "demo":
        recorded = demo_meta().get("training", {}).get("config", {})
        if {"base_filters", "levels", "dropout"} <= recorded.keys():
            keys = ("base_filters", "levels", "dropout")
            return {**{k: recorded[k] for k in keys}, "source": "demo bundle model.json training.config"}
    preset = PRESETS[name]
    return {
        "base_filters": preset.base_filters,
        "levels": preset.levels,
        "dropout": preset.dropout,
        "source": f"rtstrain.train preset {name}",
    }


def synthetic_stack(seed: int = SEED) -> Any:
    """A seeded 5-layer stack on the ``horton01`` grid: smooth fields over each layer's normalisation range.

    Values span the demo normalisation's ``[low, high]`` per layer (with pixel noise), and a
    cloud covering about 3 % of the site is NaN in the spectral layers, as in real stacks.
    """
    from rtsmonitor.sites import paper_site
    from rtsmonitor.stack import INPUT_LAYERS, Stack

    grid = paper_site(SITE_ID).grid()
    height, width = grid.shape
    norm = demo_meta()["normalisation"]
    rng = np.random.default_rng(seed)
    coarse = rng.random((len(INPUT_LAYERS), height // 50 + 2, width // 50 + 2), dtype=np.float32)
    smooth = np.repeat(np.repeat(coarse, 50, axis=1), 50, axis=2)[:, :height, :width]
    unit = 0.8 * smooth + 0.2 * rng.random((len(INPUT_LAYERS), height, width), dtype=np.float32)
    low = np.asarray(norm["low"], np.float32)[:, None, None]
    high = np.asarray(norm["high"], np.float32)[:, None, None]
    data = (low + unit * (high - low)).astype(np.float32)
    rows, cols = np.ogrid[:height, :width]
    cloud = (rows - 0.3 * height) ** 2 + (cols - 0.7 * width) ** 2 < (0.1 * height) ** 2
    data[:4, cloud] = np.nan
    return Stack(data, INPUT_LAYERS, grid, {"synthetic": True, "seed": seed})


def processed_pixels(shape: tuple[int, int], window_px: int, overlap_px: int, multiple_px: int) -> int:
    """Pixels the sliding windows feed the model (each window padded up to ``multiple_px``)."""
    from rtsmonitor.inference import window_spans

    def axis(length: int) -> int:
        return sum(
            -(-size // multiple_px) * multiple_px
            for _, size in window_spans(length, window_px, overlap_px, multiple_px)
        )

    return axis(shape[0]) * axis(shape[1])


# --- children ------------------------------------------------------------------------------------


def child_prepare(name: str, out_dir: Path) -> dict[str, Any]:
    """Build model ``name`` (random weights), save ``model.keras``, export ``model.onnx`` + ``model.json``."""
    import keras

    from rtsmonitor.stack import INPUT_LAYERS
    from rtsmonitor.tiling import Normalisation
    from rtstrain.export import export_onnx, write_model_json
    from rtstrain.unet import build_unet, input_multiple

    arch = architecture(name)
    keras.utils.set_random_seed(SEED)
    model = build_unet(
        len(INPUT_LAYERS), arch["base_filters"], arch["levels"], arch["dropout"], name=f"rts_unet_{name}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.keras")
    t0 = time.perf_counter()
    onnx_path = export_onnx(model, out_dir / "model.onnx")
    export_s = time.perf_counter() - t0
    write_model_json(
        out_dir / "model.json",
        name=f"bench-{name}",
        version="random-weights",
        onnx_path=onnx_path,
        normalisation=Normalisation.from_dict(demo_meta()["normalisation"]),
        tile_size_px=64,
        input_multiple_px=input_multiple(model),
        threshold=0.5,
        metrics={},
        manifest_sha256="none: random weights, for benchmarks only",
        training={"architecture": arch, "weights": f"random, seed {SEED}"},
    )
    return {
        "params": int(model.count_params()),
        "flops_per_px": conv_flops_per_pixel(model),
        "input_multiple_px": input_multiple(model),
        "export_s": export_s,
        **{k: arch[k] for k in ("base_filters", "levels", "source")},
    }


class KerasWindows:
    """Stand-in for :class:`rtsmonitor.inference.Model` that runs the windows through a Keras model.

    It has what :func:`~rtsmonitor.inference.predict_stack` uses of a ``Model`` (normalisation,
    layers, threshold, input multiple, ``predict_normalised``), read from the same ``model.json``,
    and pads each window exactly as ``Model.predict_normalised`` does.
    """

    def __init__(self, model: Any, meta: dict[str, Any], eager: bool) -> None:
        from rtsmonitor.tiling import Normalisation

        self.keras_model = model
        self.meta = meta
        self.eager = eager
        self.normalisation = Normalisation.from_dict(meta["normalisation"])
        self.input_layers = tuple(str(v) for v in meta["input_layers"])
        self.threshold = float(meta["threshold"])
        self.input_multiple_px = int(meta["input_multiple_px"])
        self.label = f"{meta['name']}/{meta['version']} (keras)"

    def check_layers(self, layers: tuple[str, ...], source: str = "stack") -> None:
        """Raise ``ValueError`` unless ``layers`` include the model's input layers."""
        missing = [n for n in self.input_layers if n not in layers]
        if missing:
            raise ValueError(f"{source} lacks layers {missing}")

    def summary(self) -> dict[str, Any]:
        """What a prediction records about the model."""
        return {"name": self.meta["name"], "version": self.meta["version"], "engine": "keras"}

    def predict_normalised(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """RTS probability [N, H, W] of normalised windows [N, H, W, L], padded as production pads."""
        from rtsmonitor.inference import PADDING_MODE

        height, width = int(x.shape[1]), int(x.shape[2])
        multiple = self.input_multiple_px
        pad = ((0, 0), (0, -height % multiple), (0, -width % multiple), (0, 0))
        padded = np.pad(x, pad, mode=PADDING_MODE) if any(p[1] for p in pad) else x
        padded = np.ascontiguousarray(padded, np.float32)
        out = self.keras_model(padded, training=False) if self.eager else self.keras_model.predict_on_batch(padded)
        return np.asarray(out, dtype=np.float32)[:, :height, :width, 0]


def _ort_model(
    bundle: Path, level: str = "ALL", threads: int = 0, spinning: bool = True, mem_pattern: bool = True
) -> tuple[Any, int]:
    """The production ``Model.load`` and its thread count, or a ``Model`` whose session options differ from ``load``'s.

    ``level``: graph optimisation ``ORT_ENABLE_<level>``; ``threads``: intra-op threads (0: production's
    :data:`~rtsmonitor.inference.DEFAULT_THREADS`); ``spinning``: ``session.intra_op.allow_spinning``;
    ``mem_pattern``: ``SessionOptions.enable_mem_pattern``. The defaults are production's.
    """
    import onnxruntime

    from rtsmonitor.inference import DEFAULT_THREADS, Model
    from rtsmonitor.modelstore import ONNX_NAME, read_bundle_meta
    from rtsmonitor.tiling import Normalisation

    threads = threads or DEFAULT_THREADS
    if level == "ALL" and spinning and mem_pattern:  # onnxruntime's defaults, which Model.load keeps
        return Model.load(bundle, threads=threads), threads
    meta = read_bundle_meta(bundle)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, f"ORT_ENABLE_{level}")
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.enable_mem_pattern = mem_pattern
    session = onnxruntime.InferenceSession(
        str(bundle / ONNX_NAME), sess_options=options, providers=["CPUExecutionProvider"]
    )
    norm = Normalisation.from_dict(meta["normalisation"])
    return Model(session, meta, norm, tuple(meta["input_layers"]), float(meta["threshold"])), threads


def child_engine(engine: str, bundle: Path, out_npy: Path, runs: int, args: argparse.Namespace) -> dict[str, Any]:
    """Load ``engine`` on ``bundle``, predict the synthetic site ``runs`` times after a warm-up."""
    t0 = time.perf_counter()
    from rtsmonitor.inference import DEFAULT_OVERLAP_PX, DEFAULT_WINDOW_PX, predict_stack

    info: dict[str, Any] = {}
    if engine == "keras":
        from rtsmonitor.modelstore import read_bundle_meta
        from rtstrain.export import load_keras_model  # imports TensorFlow

        model: Any = KerasWindows(load_keras_model(bundle / "model.keras"), read_bundle_meta(bundle), args.eager)
        info["call"] = "model(x)" if args.eager else "predict_on_batch"
    else:
        model, threads = _ort_model(bundle, mem_pattern=not args.no_mem_pattern)
        info.update(threads=threads, level="ORT_ENABLE_ALL", mem_pattern=not args.no_mem_pattern)
    startup_s = time.perf_counter() - t0
    startup_rss = vm_hwm_mib()
    window_px = args.window or DEFAULT_WINDOW_PX
    stack = synthetic_stack()
    last: list[Any] = []

    def predict() -> None:
        last[:] = [predict_stack(model, stack, window_px=window_px, overlap_px=DEFAULT_OVERLAP_PX)]

    times, first_s = time_calls(predict, runs)
    np.save(out_npy, last[0].probability)
    return {
        **info,
        "startup_s": startup_s,
        "startup_rss_mib": startup_rss,
        "first_run_s": first_s,
        "times_s": times,
        "window_px": window_px,
        "processed_px": processed_pixels(stack.grid.shape, window_px, DEFAULT_OVERLAP_PX, model.input_multiple_px),
        "site_px": stack.grid.width * stack.grid.height,
        "observed_fraction": last[0].observed_fraction,
        "vm_hwm_mib": vm_hwm_mib(),
    }


def child_variants(bundle: Path, runs: int) -> dict[str, Any]:
    """Time every :data:`ORT_VARIANTS` configuration ``runs`` times, in turn (rotating the order each round)."""
    from rtsmonitor.inference import DEFAULT_OVERLAP_PX, DEFAULT_WINDOW_PX, predict_stack

    sessions: dict[tuple[str, int, bool, bool], tuple[Any, int]] = {}
    for variant in ORT_VARIANTS:
        if variant.session_key not in sessions:
            sessions[variant.session_key] = _ort_model(bundle, *variant.session_key)
    stack = synthetic_stack()

    def predict(variant: OrtVariant) -> float:
        model = sessions[variant.session_key][0]
        t0 = time.perf_counter()
        predict_stack(model, stack, window_px=variant.window_px or DEFAULT_WINDOW_PX, overlap_px=DEFAULT_OVERLAP_PX)
        return time.perf_counter() - t0

    for variant in ORT_VARIANTS:
        predict(variant)  # warm-up
    times: dict[str, list[float]] = {v.label: [] for v in ORT_VARIANTS}
    for i in range(runs):
        order = ORT_VARIANTS[i % len(ORT_VARIANTS) :] + ORT_VARIANTS[: i % len(ORT_VARIANTS)]
        for variant in order:
            times[variant.label].append(predict(variant))
    multiple = int(next(iter(sessions.values()))[0].input_multiple_px)
    return {
        "times_s": times,
        "threads": {v.label: sessions[v.session_key][1] for v in ORT_VARIANTS},
        "processed_px": {
            v.label: processed_pixels(stack.grid.shape, v.window_px or DEFAULT_WINDOW_PX, DEFAULT_OVERLAP_PX, multiple)
            for v in ORT_VARIANTS
        },
    }


def child_main(argv: list[str]) -> None:
    """Entry point of a child process (``--child prepare|onnxruntime|keras|variants ...``); prints one JSON line."""
    parser = argparse.ArgumentParser(prog="inference_engines.py --child")
    parser.add_argument("what", choices=("prepare", "onnxruntime", "keras", "variants"))
    parser.add_argument("path", type=Path, help="prepare: the model folder to write; engines: the model folder")
    parser.add_argument("--name", default="demo", help="prepare: the model to build")
    parser.add_argument("--out", type=Path, help="engines: where to save the last probability raster (.npy)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--window", type=int, default=0, help="onnxruntime: window edge in px (0: production's)")
    parser.add_argument("--no-mem-pattern", action="store_true", help="onnxruntime: enable_mem_pattern off")
    parser.add_argument("--eager", action="store_true", help="keras: model(x) instead of predict_on_batch")
    args = parser.parse_args(argv)
    if args.what == "prepare":
        emit_result(child_prepare(args.name, args.path))
    elif args.what == "variants":
        emit_result(child_variants(args.path, args.runs))
    else:
        emit_result(child_engine(args.what, args.path, args.out, args.runs, args))


# --- parent --------------------------------------------------------------------------------------


def _child(args: list[str]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", *args]


def _goal(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run(quick: bool = False, runs: int | None = None) -> list[Row]:
    """Measure both engines on the paper and demo models (quick: the demo model, 1 run, no variants)."""
    runs = runs or (1 if quick else 6)
    rounds = 1 if quick else ROUNDS
    per_round = -(-runs // rounds)
    variant_runs = min(runs, VARIANT_RUNS)
    models = ("demo",) if quick else MODELS
    rows: list[Row] = []

    def add(case: str, metric: str, value: float, unit: str, note: str = "") -> None:
        rows.append(Row(BENCH, case, metric, float(value), unit, note))

    def engine_child(case: EngineCase, folder: Path, n: int, tag: str) -> ChildRun:
        out = folder / f"{case.label.replace(' ', '_')}{tag}.npy"
        args = [case.engine, str(folder), "--out", str(out), "--runs", str(n), *case.child_args()]
        return run_child(_child(args), timeout_s=CHILD_TIMEOUT_S).check(f"{case.label} on {folder.name}")

    gemm_runs = [measure_gemm(GEMM_N, GEMM_REPEATS)]
    infos: dict[str, dict[str, Any]] = {}
    children: dict[tuple[str, str], list[ChildRun]] = {}
    variants: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        for name in models:
            folder = Path(tmp) / name
            prep = run_child(_child(["prepare", str(folder), "--name", name]), timeout_s=CHILD_TIMEOUT_S)
            infos[name] = prep.check(f"export of the {name} model").result
            for r in range(rounds):  # alternate the engines, so that both meet the machine's noise
                for case in MAIN_CASES:
                    children.setdefault((name, case.label), []).append(engine_child(case, folder, per_round, f"_{r}"))
            if not quick:
                for case in EXTRA_CASES:
                    n = variant_runs if case.engine == "keras" else 1  # onnxruntime: timed in the variants child
                    children[name, case.label] = [engine_child(case, folder, n, "")]
                cmd = _child(["variants", str(folder), "--runs", str(variant_runs)])
                variants[name] = run_child(cmd, timeout_s=CHILD_TIMEOUT_S).check(f"variants on {name}").result
            ort, keras = (np.load(folder / f"{label}_0.npy") for label in ("onnxruntime", "keras"))
            both = np.isfinite(ort) & np.isfinite(keras)
            infos[name]["max_abs_diff"] = float(np.max(np.abs(ort[both] - keras[both]))) if both.any() else math.nan
    gemm_runs.append(measure_gemm(GEMM_N, GEMM_REPEATS))
    gemm_table, gemm = gemm_rows(BENCH, gemm_runs, GEMM_N)
    rows += gemm_table

    for name in models:
        info = infos[name]
        first = children[name, "onnxruntime"][0].result
        add(name, "params", info["params"], "count", f"base_filters {info['base_filters']} ({info['source']})")
        add(name, "kflop_per_px", info["flops_per_px"] / 1e3, "kFLOP", "per padded input pixel, convolutions")
        add(name, "export_s", info["export_s"], "s", "tf2onnx via rtstrain.export.export_onnx")
        add(name, "site_px", first["site_px"], "px", f"{SITE_ID} grid, observed {first['observed_fraction']:.3f}")
        note = "onnxruntime vs keras on the site, observed pixels"
        add(name, "max_abs_diff", info["max_abs_diff"], "probability", note)

        def gflops(processed_px: float, seconds: float, info: dict[str, Any] = info) -> float:
            return float(info["flops_per_px"]) * processed_px / seconds / 1e9

        for case in (*MAIN_CASES, *(() if quick else EXTRA_CASES)):
            runs_of = children[name, case.label]
            res = runs_of[0].result
            label = f"{name} {case.label}"
            times = [t for child in runs_of for t in child.result["times_s"]]
            if case in MAIN_CASES:
                add(label, "params", info["params"], "count")
                how = f"median of {len(times)} after 1 warm-up"
                if len(runs_of) > 1:
                    how = f"median of {len(times)} in {len(runs_of)} alternating processes, each after 1 warm-up"
            else:
                how = f"median of {len(times)} after 1 warm-up"
            if case.engine == "onnxruntime":
                how += f", {res['level']}, {res['threads']} threads"
            else:
                how += f", {res['call']}"
            add(label, "startup_s", median(c.result["startup_s"] for c in runs_of), "s", "import + load, new process")
            add(label, "first_run_s", median(c.result["first_run_s"] for c in runs_of), "s", "the warm-up run")
            add(label, "peak_rss_mib", max(c.peak_rss_mib for c in runs_of), "MiB", "ru_maxrss of the child")
            add(label, "startup_rss_mib", max(c.result["startup_rss_mib"] for c in runs_of), "MiB", "after start-up")
            if case.engine == "onnxruntime" and case not in MAIN_CASES:
                continue  # timed with the other variants, below
            add(label, "processed_mpx", res["processed_px"] / 1e6, "Mpx", f"window {res['window_px']} px, padded")
            seconds = median(times)
            add(label, "inference_s", seconds, "s", how)
            add(label, "gflops", gflops(res["processed_px"], seconds), "GFLOP/s", "model FLOPs processed / inference_s")
            add(label, "gemm_pct", 100 * gflops(res["processed_px"], seconds) / gemm, "%", "of the GEMM reference")

        if name in variants:
            found = variants[name]
            control = median(found["times_s"]["production"])
            for variant in ORT_VARIANTS:
                label = f"{name} ort {variant.label}"
                seconds = median(found["times_s"][variant.label])
                processed = found["processed_px"][variant.label]
                how = (
                    f"median of {variant_runs}, interleaved run by run with the other variants; "
                    f"ORT_ENABLE_{variant.level}, {found['threads'][variant.label]} threads"
                    + ("" if variant.spinning else ", no spinning")
                    + ("" if variant.mem_pattern else ", enable_mem_pattern off")
                )
                add(label, "inference_s", seconds, "s", how)
                add(label, "processed_mpx", processed / 1e6, "Mpx", f"window {variant.window_px or 512} px, padded")
                add(label, "gflops", gflops(processed, seconds), "GFLOP/s", "model FLOPs processed / inference_s")
                add(label, "gemm_pct", 100 * gflops(processed, seconds) / gemm, "%", "of the GEMM reference")
                if variant.label != "production":
                    add(label, "speedup", control / seconds, "x", "vs production in the same child (> 1: faster)")

        ort = rows_of(rows, f"{name} onnxruntime")
        keras = rows_of(rows, f"{name} keras")
        goals = f"{name} goals"
        speedup = keras["inference_s"] / ort["inference_s"]
        note = f"keras / onnxruntime time; goal >= {GOAL_SPEEDUP:g}x: {_goal(speedup >= GOAL_SPEEDUP)}"
        add(goals, "speedup", speedup, "x", note)
        memory = ort["peak_rss_mib"] / keras["peak_rss_mib"]
        note = f"onnxruntime / keras peak RSS; goal <= {GOAL_MEMORY_RATIO:g}: {_goal(memory <= GOAL_MEMORY_RATIO)}"
        add(goals, "memory_ratio", memory, "x", note)
        pct = ort["gemm_pct"]
        add(goals, "ort_gemm_pct", pct, "%", f"onnxruntime; goal >= {GOAL_GEMM_PCT:g} %: {_goal(pct >= GOAL_GEMM_PCT)}")
        if not quick:
            eager = rows_of(rows, f"{name} keras eager")
            add(goals, "speedup_vs_eager", eager["inference_s"] / ort["inference_s"], "x", "keras eager / onnxruntime")
        add(goals, "startup_speedup", keras["startup_s"] / ort["startup_s"], "x", "keras / onnxruntime start-up")
    check_rows(rows)
    return rows


def rows_of(rows: list[Row], case: str) -> dict[str, float]:
    """``{metric: value}`` of one case."""
    return {r.metric: r.value for r in rows if r.case == case}


PIVOT_COLUMNS = (
    ("params", "params"),
    ("startup_s", "startup s"),
    ("first_run_s", "1st run s"),
    ("inference_s", "median s"),
    ("processed_mpx", "Mpx"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("gflops", "GFLOP/s"),
    ("gemm_pct", "% GEMM"),
    ("speedup", "vs prod"),
)


def report(rows: list[Row]) -> None:
    """Print the engine table (one line per model and engine), then every other row."""
    engines = [
        c
        for c in dict.fromkeys(r.case for r in rows)
        if any(r.case == c and r.metric in ("gflops", "peak_rss_mib") for r in rows)
    ]
    print_pivot(rows, PIVOT_COLUMNS, engines)
    print()
    shown = {m for m, _ in PIVOT_COLUMNS} | {"startup_rss_mib"}
    print_table([r for r in rows if r.case not in engines or r.metric not in shown])


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its tables."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs", type=int, help="timed site predictions per engine, split over the rounds (default 6; quick 1)"
    )
    parser.add_argument("--quick", action="store_true", help="the demo model only, no variants")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = run(args.quick, args.runs)
    report(rows)
    print(f"\n{BENCH}: {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=2))


if __name__ == "__main__":
    main()
