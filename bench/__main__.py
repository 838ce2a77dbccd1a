"""Run every benchmark and print one table: ``python -m bench [--quick] [--only NAME,...] [--markdown FILE]``.

The benchmarks (each also runs on its own, ``python bench/<name>.py``):

- ``inference_engines``: one 100 km^2 site through onnxruntime and Keras (paper-size and demo
  U-Nets): time, start-up, peak RSS, GFLOP/s against numpy's float32 GEMM in the same run;
- ``site_scaling``: one site-year end to end for 10 to 10,000 km^2, stage by stage, peak RSS;
- ``queue_throughput``: site-years per minute of 1, 2 and 4 queue workers against Azurite;
- ``training_throughput``: tiles/s and epoch time of the paper configuration on CPU;
- ``quantisation``: int8 (static QDQ and dynamic) demo U-Net against float32: time and pixel F1;
- ``soak`` (run only when named, ``--only soak``: the full run takes minutes and is an audit, not a
  timing): a few hundred site-year messages through 4 queue workers against Azurite with 10 %
  injected faults, a killed worker and permanent failures, then an audit of the store (every
  message accounted for, no duplicate, no orphan, no record without its blobs). On its own,
  ``python -m bench.soak`` also exits 1 when the audit finds a problem.

Numbers are medians of the runs each benchmark makes; ratios come from one run. No timing is
asserted anywhere: these print what the machine did.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, print_table

BENCHMARKS = ("inference_engines", "site_scaling", "queue_throughput", "training_throughput", "quantisation", "soak")
ON_REQUEST = ("soak",)
"""Benchmarks that run only when ``--only`` names them (not part of the default set)."""


def machine() -> str:
    """One line naming the machine the numbers come from."""
    import os

    import numpy as np

    return f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| bench | case | metric | value | unit | note |", "|---|---|---|---:|---|---|"]
    for r in rows:
        value = f"{r.value:,.4g}" if isinstance(r.value, float) and abs(r.value) < 1e4 else f"{r.value:,.0f}"
        lines.append(f"| {r.bench} | {r.case} | {r.metric} | {value} | {r.unit} | {r.note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benchmarks named by ``--only`` (default all but :data:`ON_REQUEST`) and print their rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest cases only (a smoke run)")
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of {', '.join(BENCHMARKS)} (default: all but {', '.join(ON_REQUEST)})",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else [name for name in BENCHMARKS if name not in ON_REQUEST]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    print(f"machine: {machine()}")
    rows: list[Row] = []
    started = time.perf_counter()
    for name in names:
        begun = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        found = module.run(quick=args.quick)
        rows += found
        print(f"{name}: {len(found)} rows in {time.perf_counter() - begun:.0f} s", flush=True)
    rows.append(Row("all", "-", "wall", round(time.perf_counter() - started, 1), "s", "python -m bench"))
    print()
    print_table(rows)
    if args.markdown:
        args.markdown.write_text(f"Machine: {machine()}\n\n" + markdown(rows))
        print(f"\nwrote {args.markdown}")


if __name__ == "__main__":
    main()
