"""Shared helpers of the benchmarks: the result row, medians, child processes with their peak RSS, tables.

Every benchmark module exposes ``run(quick: bool = False) -> list[Row]`` and a ``main()``; the
numbers are printed, never asserted (timings on a shared 2-core machine are noisy: we report
medians and say how many runs they are the median of).

Peak memory is always measured in a separate process: TensorFlow and onnxruntime each keep their
allocations (and thread pools) for the life of a process, so measuring one after the other in one
process would charge the second with the first's memory. :func:`run_child` starts a command and
reads its peak resident set size from the kernel (``wait4`` rusage, ``ru_maxrss``) for that child
alone; :func:`peak_rss_child` also takes a picklable callable, which then runs in a ``spawn``
process and reports its own ``VmHWM`` from ``/proc/self/status``. A child hands its numbers back
by printing one line ``RESULT_MARKER + json`` (:func:`emit_result`).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The repository root (children run there)."""

RESULT_MARKER = "BENCH_RESULT "
"""Prefix of the one stdout line in which a child process returns its numbers as JSON."""

CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
"""Extra environment of child processes (quiet TensorFlow's C++ logging; it does not change speed)."""

MIB = 1024 * 1024


@dataclass(frozen=True)
class Row:
    """One measured number.

    Attributes
    ----------
    bench : the benchmark module, e.g. ``inference_engines``.
    case : what was measured, e.g. ``paper onnxruntime``.
    metric : which quantity, e.g. ``inference_s``.
    value : the number (finite; times in seconds, memory in MiB, rates per second).
    unit : its unit, e.g. ``s``, ``MiB``, ``GFLOP/s``, ``%``, ``x``.
    note : how it was measured or what it is compared with (``goal >= 2x: PASS``).

    """

    bench: str
    case: str
    metric: str
    value: float
    unit: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def median(values: Iterable[float]) -> float:
    """Median of ``values`` (raises ``ValueError`` when empty)."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("median of no values")
    return float(statistics.median(data))


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 1) -> tuple[list[float], float]:
    """Call ``fn`` ``warmup`` times, then ``runs`` times; return the timed runs' seconds and the first call's.

    The first call's time is returned separately because it holds one-off costs (graph tracing,
    memory-pool growth) that a user pays once per process.
    """
    first = math.nan
    for i in range(warmup):
        t0 = time.perf_counter()
        fn()
        if i == 0:
            first = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times, first


# --- peak memory -----------------------------------------------------------------------------------


def vm_hwm_mib() -> float:
    """Peak resident set size of the calling process so far (``VmHWM`` in ``/proc/self/status``), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@dataclass
class ChildRun:
    """What a child process did.

    Attributes
    ----------
    returncode : its exit status (negative: killed by that signal).
    peak_rss_mib : its peak resident set size in MiB (kernel rusage of this child alone, or its
        own ``VmHWM`` for a callable).
    wall_s : seconds from start to exit, interpreter start-up included.
    result : the JSON it emitted with :func:`emit_result` (empty if none), or a callable's return value.
    stdout, stderr : its output (a callable's is not captured).

    """

    returncode: int
    peak_rss_mib: float
    wall_s: float
    result: Any = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""

    def check(self, what: str) -> ChildRun:
        """Raise ``RuntimeError`` with the end of stderr unless the child exited 0 with a result."""
        if self.returncode != 0 or self.result in ({}, None):
            tail = "\n".join(self.stderr.strip().splitlines()[-25:])
            raise RuntimeError(f"{what} failed (exit {self.returncode}):\n{tail}")
        return self


def emit_result(result: Mapping[str, Any]) -> None:
    """Child side: print ``result`` as the one JSON line the parent reads (:data:`RESULT_MARKER`)."""
    sys.stdout.write(RESULT_MARKER + json.dumps(dict(result)) + "\n")
    sys.stdout.flush()


def _parse_result(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            parsed: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            return parsed
    return {}


def run_child(cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout_s: float | None = None) -> ChildRun:
    """Run ``cmd`` in the repository root and return its exit status, output, JSON result and peak RSS.

    The peak RSS is the kernel's ``ru_maxrss`` of this one child (``os.wait4``), unlike
    ``getrusage(RUSAGE_CHILDREN)``, which is the largest of all children waited for so far.
    Output goes to temporary files (no pipe can fill up). A child still running after
    ``timeout_s`` is killed (the result then has a negative return code).
    """
    full_env = {**os.environ, **CHILD_ENV, **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, cwd=REPO_ROOT, env=full_env)
        timer = threading.Timer(timeout_s, proc.kill) if timeout_s else None
        if timer is not None:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer is not None:
                timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        stdout, stderr = _read_all(out), _read_all(err)
    return ChildRun(proc.returncode, usage.ru_maxrss / 1024, wall, _parse_result(stdout), stdout, stderr)


def _read_all(f: IO[str]) -> str:
    f.seek(0)
    return f.read()


def _call_and_report(fn: Callable[[], Any], conn: Any) -> None:
    """Body of a :func:`peak_rss_child` process: call ``fn``, send back its result and ``VmHWM``."""
    try:
        conn.send((0, fn(), vm_hwm_mib()))
    except BaseException as exc:  # report any failure to the parent rather than dying silently
        conn.send((1, repr(exc), vm_hwm_mib()))
        raise
    finally:
        conn.close()


def peak_rss_child(
    target: Sequence[str] | Callable[[], Any],
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> ChildRun:
    """Run ``target`` in a fresh process and measure its peak RSS.

    ``target`` is either a command (see :func:`run_child`) or a picklable callable without
    arguments (a module-level function, a ``functools.partial`` of one). A callable runs in a
    ``spawn`` process (a fresh interpreter: nothing of this process's memory is shared or counted);
    its return value comes back as :attr:`ChildRun.result` and its peak RSS is the child's own
    ``VmHWM``. ``env`` applies only to commands.
    """
    if not callable(target):
        return run_child(target, env, timeout_s)
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    started = time.perf_counter()
    process = ctx.Process(target=_call_and_report, args=(target, sender))
    process.start()
    sender.close()
    failed, result, peak = 1, "no result", math.nan
    if receiver.poll(timeout_s):
        with contextlib.suppress(EOFError):  # the child died before sending
            failed, result, peak = receiver.recv()
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join()
    wall = time.perf_counter() - started
    code = process.exitcode if process.exitcode is not None else -9
    if failed and code == 0:
        code = 1
    return ChildRun(code, peak, wall, result if not failed else None, "", "" if not failed else str(result))


# --- machine reference -----------------------------------------------------------------------------


def gemm_gflops(n: int = 2048, repeats: int = 5) -> tuple[float, list[float]]:
    """float32 matrix-multiply throughput of numpy's BLAS: ``(GFLOP/s of the median, all run times)``.

    One ``n x n`` by ``n x n`` product is ``2 n^3`` FLOPs; one untimed product first. The BLAS
    uses as many threads as it is allowed (``OPENBLAS_NUM_THREADS``, by default all cores).
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    np.matmul(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / median(times) / 1e9, times


def has_avx512() -> bool:
    """Whether the CPU has AVX-512 (``avx512f`` in ``/proc/cpuinfo``)."""
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def measure_gemm(n: int = 2048, repeats: int = 7) -> dict[str, list[float]]:
    """Seconds of ``repeats`` float32 ``n x n`` products in numpy per OpenBLAS kernel choice, each set in a fresh child.

    ``default``: the kernels OpenBLAS picks for the CPU. ``avx512``: its SkylakeX (AVX-512)
    kernels (``OPENBLAS_CORETYPE=SkylakeX``), only where the CPU has AVX-512. numpy's OpenBLAS
    picks its AVX2 (Haswell) kernels on the AMD EPYC of our machines, which reach only about 55 %
    of what its AVX-512 kernels do there, while oneDNN (TensorFlow) and MLAS (onnxruntime) use
    AVX-512: the higher of the two is the fair reference for them. See :func:`gemm_rows`.
    """
    code = (
        "from bench.common import emit_result, gemm_gflops; "
        f"emit_result({{'times': gemm_gflops({int(n)}, {int(repeats)})[1]}})"
    )
    kernels: dict[str, dict[str, str]] = {"default": {}}
    if has_avx512():
        kernels["avx512"] = {"OPENBLAS_CORETYPE": "SkylakeX"}
    return {
        name: [
            float(t) for t in run_child([sys.executable, "-c", code], env, 120).check(f"GEMM ({name})").result["times"]
        ]
        for name, env in kernels.items()
    }


def gemm_rows(bench: str, samples: Sequence[Mapping[str, Sequence[float]]], n: int = 2048) -> tuple[list[Row], float]:
    """Rows of the GEMM rates in ``samples`` (:func:`measure_gemm` results) and the reference GFLOP/s.

    On a shared machine a single product is often slowed down by other work: each kernel's rate is
    the *best* of all its products (the machine's undisturbed rate), with the median of each set
    in the note; the reference is the highest of those rates. An engine's percentage of it is
    therefore a lower bound of its efficiency when the machine was busy during the engine's runs.
    """
    flop = 2.0 * n**3
    rows: list[Row] = []
    for kernel in samples[0]:
        times = [t for sample in samples for t in sample[kernel]]
        medians = ", ".join(f"{flop / median(sample[kernel]) / 1e9:.0f}" for sample in samples)
        note = (
            f"best of {len(times)} float32 {n}^3 products; median of each set of {len(samples[0][kernel])}: {medians}"
        )
        rows.append(Row(bench, "numpy", f"gemm_{kernel}_gflops", flop / min(times) / 1e9, "GFLOP/s", note))
    reference = max(r.value for r in rows)
    rows.append(
        Row(bench, "numpy", "gemm_reference_gflops", reference, "GFLOP/s", "highest GEMM rate above: the % reference")
    )
    return rows, reference


def conv_flops_per_pixel(model: Any, probe_px: int = 64) -> float:
    """Forward FLOPs per input pixel of a fully convolutional Keras model (2 FLOPs per multiply-add).

    Counts every ``Conv2D`` (``Conv2DTranspose`` too): ``2 * kh * kw * c_in * c_out`` per output
    pixel, summed over layers with each layer's own output size. The model is cloned on a fixed
    ``probe_px`` square input to read those sizes; ``probe_px`` must be a multiple of the model's
    input multiple, and then the count per input pixel is the same for every such size. Biases,
    activations, batch normalisation, pooling, upsampling and concatenation are left out (under
    1 % of the total for the U-Net). Pass an uncompiled model (cloning a compiled one recompiles
    it, which needs its custom losses and metrics registered).
    """
    import keras

    channels = int(model.inputs[0].shape[-1])
    fixed = keras.models.clone_model(model, input_tensors=keras.Input((probe_px, probe_px, channels)))
    macs = 0
    for layer in fixed.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Conv2DTranspose):
            kh, kw = layer.kernel_size
            c_in = int(layer.input.shape[-1])
            _, height, width, c_out = layer.output.shape
            macs += kh * kw * c_in * int(c_out) * int(height) * int(width)
    return 2.0 * macs / (probe_px * probe_px)


# --- tables ----------------------------------------------------------------------------------------


def format_value(value: float) -> str:
    """A number with about four significant digits, thousands separated when large."""
    if not math.isfinite(value):
        return str(value)
    if value != 0 and abs(value) >= 10_000:
        return f"{value:,.0f}"
    if value == int(value) and abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.4g}"


def print_table(rows: Sequence[Row], file: IO[str] | None = None) -> None:
    """Print ``rows`` as an aligned table: bench, case, metric, value, unit, note (one line per row)."""
    out = file or sys.stdout
    header = ("bench", "case", "metric", "value", "unit", "note")
    cells = [header] + [(r.bench, r.case, r.metric, format_value(r.value), r.unit, r.note) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    for n, cell in enumerate(cells):
        left = "  ".join(
            (c.rjust(w) if i == 3 and n else c.ljust(w)) for i, (c, w) in enumerate(zip(cell[:-1], widths, strict=True))
        )
        print(f"{left}  {cell[-1]}".rstrip(), file=out)
        if n == 0:
            print("-" * (sum(widths) + 2 * len(widths) + 4), file=out)


def print_pivot(
    rows: Sequence[Row],
    columns: Sequence[tuple[str, str]],
    cases: Sequence[str] | None = None,
    file: IO[str] | None = None,
) -> None:
    """Print one line per case with the given ``(metric, heading)`` columns (blank where not measured)."""
    out = file or sys.stdout
    order = list(cases) if cases is not None else list(dict.fromkeys(r.case for r in rows))
    values = {(r.case, r.metric): r.value for r in rows}
    cells = [("case", *(h for _, h in columns))]
    for case in order:
        cells.append((case, *(format_value(values[case, m]) if (case, m) in values else "" for m, _ in columns)))
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    for n, cell in enumerate(cells):
        parts = [cell[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cell[1:], widths[1:], strict=True)]
        print("  ".join(parts), file=out)
        if n == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)), file=out)


def check_rows(rows: Sequence[Row]) -> None:
    """Raise ``ValueError`` unless every row has non-empty names and a finite value."""
    for row in rows:
        if not (row.bench and row.case and row.metric and row.unit):
            raise ValueError(f"row with an empty name or unit: {row}")
        if not math.isfinite(row.value):
            raise ValueError(f"row with a non-finite value: {row}")
