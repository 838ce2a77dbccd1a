"""Benchmark (issue 7, item 5): training throughput of the paper configuration on the CPU.

The U-Net of :func:`rtstrain.unet.build_unet` at the ``PAPER`` preset's width (16), compiled as
:func:`rtstrain.train.train` compiles it (Adam at the preset's learning rate, 1e-4;
:class:`rtstrain.losses.BceDiceLoss` with the Dice and BCE metrics; seeds and deterministic ops
from the preset), trains with ``model.fit`` on in-memory arrays exactly as ``train`` does
(``batch_size`` 32, ``shuffle=True``) on **synthetic tiles**: 2048 seeded random 64 x 64 x 5
tiles, half of them with a rectangular RTS patch (the 1:1 undersampled mix), some invalid pixels.
No dataset needs building: speed does not depend on what the tiles show.

A callback stamps the end of every batch; the first :data:`WARMUP_STEPS` steps (graph tracing,
memory-pool growth) are left out. **tiles/s** = timed steps x batch / their elapsed time (epoch
boundaries and shuffling included, as in a real run); **s/step** is the median step. Validation
speed is ``model.evaluate`` on 512 tiles (after one untimed pass), as ``fit`` validates after each
epoch at the same batch size.

The projection uses the tile counts of the paper configuration on the synthetic paper corpus (41
images, primary split): the demo bundle was trained with the paper's tiling, 1:1 undersampling
and one blurred copy per tile (``DEMO`` differs from ``PAPER`` only in width, epochs and learning
rate), and its ``model.json`` records ``training.tiles``: 1568 training tiles (784 after
undersampling, doubled by augmentation) and 1350 validation tiles per epoch. Epoch time = 1568 /
train tiles/s + 1350 / validation tiles/s; 100 epochs (``PAPER.epochs``) = 100 x that (checkpoint
writes left out). The real paper's dataset (Rustemeyer et al. 2022) gives no tile count.

Training GFLOP/s is approximate: 3 x the forward FLOPs (:func:`bench.common.conv_flops_per_pixel`;
the backward pass costs about twice the forward), against numpy's float32 GEMM measured in the
same run, before and after training (:func:`bench.common.gemm_rows`). The training runs in a
child process (TensorFlow keeps its memory and threads for the life of a process), whose peak
RSS is reported too.

Usage::

    .venv/bin/python bench/training_throughput.py            # about 2.5 minutes on 2 cores
    .venv/bin/python bench/training_throughput.py --quick    # the QUICK preset's width and batch, ~20 s
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

if __package__ in (None, ""):  # run as a script (python bench/training_throughput.py): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Row,
    check_rows,
    conv_flops_per_pixel,
    emit_result,
    gemm_rows,
    measure_gemm,
    median,
    print_table,
    run_child,
    vm_hwm_mib,
)

BENCH = "training_throughput"
SEED = 0
WARMUP_STEPS = 4
"""Steps left out of the timing (the first one traces the training graph)."""
TRAIN_TILES = 2048
"""Synthetic training tiles in full mode: 64 steps of 32 per epoch."""
EPOCHS = 3
"""Epochs over the synthetic tiles in full mode: 192 steps, 188 of them timed."""
VAL_TILES = 512
"""Synthetic validation tiles for the evaluation speed."""
QUICK_TILES, QUICK_EPOCHS, QUICK_VAL_TILES = 96, 1, 32
"""Quick mode (``QUICK`` preset: width 4, batch 8): 12 steps, 8 of them timed."""
FALLBACK_TILES = {"tiles_train": 1568, "tiles_val": 1350}
"""The demo bundle's recorded tile counts (used if its ``model.json`` lacks them)."""
CHILD_TIMEOUT_S = 900.0


def paper_tile_counts() -> tuple[dict[str, int], str]:
    """Training and validation tiles per epoch of the paper configuration, and where they come from."""
    from rtsmonitor.modelstore import DEMO_BUNDLE, META_NAME

    tiles = json.loads((DEMO_BUNDLE / META_NAME).read_text()).get("training", {}).get("tiles", {})
    if {"tiles_train", "tiles_val"} <= tiles.keys():
        counts = {k: int(tiles[k]) for k in ("tiles_train", "tiles_val")}
        return counts, "demo bundle model.json training.tiles (paper tiling on the synthetic paper corpus)"
    return dict(FALLBACK_TILES), "recorded demo-bundle counts (model.json lacks training.tiles)"


def synthetic_tiles(n: int, size: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``n`` normalised tiles [n, size, size, 5] in [0, 1] and packed targets [n, size, size, 2].

    Every other tile holds a random rectangle of RTS pixels (the 1:1 undersampled mix); about 2 %
    of the pixels are invalid (validity 0), as cloud edges are in real tiles.
    """
    from rtsmonitor.stack import INPUT_LAYERS
    from rtstrain.losses import pack_targets

    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, len(INPUT_LAYERS)), dtype=np.float32)
    y = np.zeros((n, size, size, 1), np.float32)
    for i in range(0, n, 2):
        r0, c0 = rng.integers(0, size // 2, 2)
        h, w = rng.integers(4, size // 2, 2)
        y[i, r0 : r0 + h, c0 : c0 + w] = 1.0
    valid = (rng.random((n, size, size, 1)) > 0.02).astype(np.float32)
    return x, pack_targets(y, valid)


def child_train(quick: bool) -> dict[str, Any]:
    """Compile the U-Net as ``rtstrain.train.train`` does, fit it on synthetic tiles, time steps and evaluation."""
    t0 = time.perf_counter()
    import keras

    from rtsmonitor.stack import INPUT_LAYERS
    from rtstrain.losses import BceDiceLoss, bce_metric, dice_metric
    from rtstrain.train import PAPER, QUICK, seed_everything
    from rtstrain.unet import build_unet

    config = QUICK if quick else PAPER
    n_tiles, epochs, n_val = (QUICK_TILES, QUICK_EPOCHS, QUICK_VAL_TILES) if quick else (TRAIN_TILES, EPOCHS, VAL_TILES)
    seed_everything(config.seed, config.deterministic)
    model = build_unet(len(INPUT_LAYERS), config.base_filters, config.levels, config.dropout)
    flops_per_px = conv_flops_per_pixel(model)  # before compile: cloning a compiled model recompiles it
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=BceDiceLoss(config.dice_weight),
        metrics=[dice_metric, bce_metric],
    )
    startup_s = time.perf_counter() - t0
    x, y = synthetic_tiles(n_tiles, config.tile_size_px, SEED)
    xv, yv = synthetic_tiles(n_val, config.tile_size_px, SEED + 1)
    stamps: list[float] = []

    class StepTimer(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            stamps.append(time.perf_counter())

    fit_started = time.perf_counter()
    model.fit(x, y, batch_size=config.batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=[StepTimer()])
    steps = np.diff([fit_started, *stamps])
    timed = len(stamps) - WARMUP_STEPS
    if timed < 1:
        raise RuntimeError(f"only {len(stamps)} steps: need more than {WARMUP_STEPS}")
    elapsed = stamps[-1] - stamps[WARMUP_STEPS - 1]
    model.evaluate(xv[: config.batch_size], yv[: config.batch_size], batch_size=config.batch_size, verbose=0)
    eval_started = time.perf_counter()
    model.evaluate(xv, yv, batch_size=config.batch_size, verbose=0)
    eval_s = time.perf_counter() - eval_started
    return {
        "config": {k: getattr(config, k) for k in ("base_filters", "batch_size", "learning_rate", "tile_size_px")},
        "params": int(model.count_params()),
        "flops_per_px": flops_per_px,
        "startup_s": startup_s,
        "first_steps_s": float(sum(steps[:WARMUP_STEPS])),
        "steps": len(stamps),
        "timed_steps": timed,
        "timed_s": elapsed,
        "step_s": [float(s) for s in steps[WARMUP_STEPS:]],
        "val_tiles": n_val,
        "eval_s": eval_s,
        "vm_hwm_mib": vm_hwm_mib(),
    }


def _child(args: list[str]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", *args]


def run(quick: bool = False) -> list[Row]:
    """Measure training and validation throughput (quick: the ``QUICK`` preset, a dozen steps)."""
    from rtstrain.train import PAPER

    rows: list[Row] = []

    def add(case: str, metric: str, value: float, unit: str, note: str = "") -> None:
        rows.append(Row(BENCH, case, metric, float(value), unit, note))

    gemm_runs = [measure_gemm()]
    child = run_child(_child(["--quick"] if quick else []), timeout_s=CHILD_TIMEOUT_S).check("training child")
    gemm_runs.append(measure_gemm())
    gemm_table, gemm = gemm_rows(BENCH, gemm_runs)
    res = child.result
    cfg = res["config"]
    case = f"{'quick' if quick else 'paper'} width {cfg['base_filters']} batch {cfg['batch_size']}"
    batch, tile_px = cfg["batch_size"], cfg["tile_size_px"]
    tiles_per_s = res["timed_steps"] * batch / res["timed_s"]
    val_tiles_per_s = res["val_tiles"] / res["eval_s"]
    counts, source = paper_tile_counts()
    epoch_s = counts["tiles_train"] / tiles_per_s + counts["tiles_val"] / val_tiles_per_s
    train_gflops = 3 * res["flops_per_px"] * tile_px**2 * tiles_per_s / 1e9
    timed = f"{res['timed_steps']} steps after {WARMUP_STEPS} warm-up steps"

    add(case, "params", res["params"], "count", f"{tile_px} px tiles, Adam {cfg['learning_rate']:g}, BceDiceLoss")
    add(case, "startup_s", res["startup_s"], "s", "import TensorFlow, build and compile")
    add(case, "first_steps_s", res["first_steps_s"], "s", f"the {WARMUP_STEPS} warm-up steps (tracing)")
    add(case, "tiles_per_s", tiles_per_s, "tiles/s", f"training, {timed}")
    add(case, "s_per_step", median(res["step_s"]), "s", f"median of {res['timed_steps']} steps of {batch} tiles")
    add(case, "val_tiles_per_s", val_tiles_per_s, "tiles/s", f"model.evaluate on {res['val_tiles']} tiles")
    add(case, "train_gflops", train_gflops, "GFLOP/s", "approx.: 3 x forward FLOPs x tiles/s")
    add(
        case,
        "gemm_pct",
        100 * train_gflops / gemm,
        "%",
        f"of the GEMM reference, {gemm:.0f} GFLOP/s (same run)",
    )
    add(case, "peak_rss_mib", child.peak_rss_mib, "MiB", "ru_maxrss of the training child")
    add("paper dataset", "tiles_train", counts["tiles_train"], "tiles", source)
    add("paper dataset", "tiles_val", counts["tiles_val"], "tiles", source)
    add(case, "epoch_s", epoch_s, "s", "projected: paper tiles_train / tiles/s + tiles_val / val tiles/s")
    add(case, "run_h", PAPER.epochs * epoch_s / 3600, "h", f"projected {PAPER.epochs} epochs (PAPER.epochs)")
    rows += gemm_table
    check_rows(rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with ``--child``, the training child) and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the QUICK preset's width and batch, a dozen steps")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.child:
        emit_result(child_train(args.quick))
        return
    started = time.perf_counter()
    rows = run(args.quick)
    print_table(rows)
    print(f"\n{BENCH}: {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=2))


if __name__ == "__main__":
    main()
