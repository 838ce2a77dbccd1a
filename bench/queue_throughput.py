"""Benchmark: site-years per minute of 1, 2 and 4 concurrent queue workers against Azurite.

N sites of 25 km^2 (the cached scene of :mod:`bench.site_scaling`, served by the local STAC/COG
server) are registered in Azurite; their N site-year messages are then drained by W worker
processes at once, each running the Functions' queue handler through
:func:`rtsmonitor.jobs.run_queue` (what ``rts monitor`` runs; the Functions host would run one such
loop per worker). Each worker gives onnxruntime ``max(1, cores // W)`` threads. Throughput counts
from the workers' start (imports, model load) to the empty queue.

    .venv/bin/python bench/queue_throughput.py [--jobs 12] [--workers 1,2,4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, Row, emit_result, print_table
from bench.site_scaling import CACHE, CENTRE_LONLAT, PRODUCTION_ENV, YEAR, build_scene

SITE_KM = 5.0
"""Side of each benchmark site in km (25 km^2: a quarter of a paper site, so many fit in a run)."""
JOBS = 12
QUICK_JOBS = 4
WORKERS = (1, 2, 4)
QUICK_WORKERS = (1, 2)


def worker(connection_string: str, stac_url: str, threads: int) -> dict[str, Any]:
    """Drain the queue in this process; return how many site-years it processed."""
    from rtsmonitor.handlers import on_job
    from rtsmonitor.inference import Model
    from rtsmonitor.jobs import run_queue
    from rtsmonitor.modelstore import DEMO_BUNDLE
    from rtsmonitor.siteyear import Services
    from rtsmonitor.stac import open_catalog
    from rtsmonitor.storage.azure import AzureStorage
    from rtsmonitor.terrain import StacDem

    storage = AzureStorage.from_connection_string(connection_string)
    services = Services(open_catalog(stac_url), StacDem(stac_url), Model.load(DEMO_BUNDLE, threads=threads))
    run = run_queue(
        storage,
        lambda m: on_job(storage, lambda: services, m.content, m.dequeue_count),
        lambda m, e: None,
        retry_delay_s=5,
    )
    return {"processed": len(run.succeeded), "failures": run.failures}


def run(quick: bool = False, jobs: int | None = None, workers: tuple[int, ...] | None = None) -> list[Row]:
    """Register the sites once, then time each worker count on the same N messages."""
    from rtsmonitor.jobs import SITE_YEARS_QUEUE, SiteYearJob
    from rtsmonitor.offline.azurite import running_azurite
    from rtsmonitor.offline.stacserver import LocalStacServer
    from rtsmonitor.registry import register_site
    from rtsmonitor.storage.azure import AzureStorage

    jobs = jobs or (QUICK_JOBS if quick else JOBS)
    workers = workers or (QUICK_WORKERS if quick else WORKERS)
    cores = os.cpu_count() or 1
    root = build_scene(CACHE)
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_azurite(Path(tmp) / "azurite") as connection,
        LocalStacServer(root) as server,
    ):
        storage = AzureStorage.from_connection_string(connection)
        for i in range(jobs):
            config = {
                "id": f"bench-{i:03d}", "name": f"bench {i}", "first_year": YEAR, "last_year": YEAR,
                "centre": {"lon": CENTRE_LONLAT[0], "lat": CENTRE_LONLAT[1], "size_km": SITE_KM},
            }  # fmt: skip
            register_site(storage, f"bench-{i:03d}.json", json.dumps(config).encode())
        queued = storage.queues.peek_count(SITE_YEARS_QUEUE)
        if queued != jobs:
            raise RuntimeError(f"expected {jobs} queued site-years, found {queued}")
        for count in workers:
            if count > 1:  # the same site-years again (a re-run replaces their records)
                for i in range(jobs):
                    storage.queues.send(SITE_YEARS_QUEUE, SiteYearJob(f"bench-{i:03d}", YEAR).to_message())
            threads = max(1, cores // count)
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                connection,
                "--stac-url",
                server.url,
                "--threads",
                str(threads),
            ]
            started = time.perf_counter()
            procs = [
                subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    env={**os.environ, **PRODUCTION_ENV},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(count)
            ]
            outputs = [p.communicate(timeout=1800) for p in procs]
            wall = time.perf_counter() - started
            if any(p.returncode for p in procs):
                raise RuntimeError(f"a worker failed: {outputs[0][1][-2000:]}")
            case = f"{count} worker{'s' if count > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
            rows.append(Row("queue_throughput", case, "site-years/min", round(jobs / wall * 60, 1), "1/min"))
            rows.append(
                Row("queue_throughput", case, "wall", round(wall, 1), "s", f"{jobs} site-years of {SITE_KM**2:g} km2")
            )
    base = next((r.value for r in rows if r.metric == "site-years/min"), None)
    if base:
        for r in [r for r in rows if r.metric == "site-years/min"]:
            rows.append(Row("queue_throughput", r.case, "speed-up vs 1 worker", round(r.value / base, 2), "x"))
    return rows


def main() -> None:
    """Command line: the benchmark, or (``--worker``) one queue worker."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--workers", help="comma-separated worker counts")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--stac-url", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        emit_result(worker(args.worker, args.stac_url, args.threads))
        return
    workers = tuple(int(w) for w in args.workers.split(",")) if args.workers else None
    print_table(run(args.quick, args.jobs, workers))


if __name__ == "__main__":
    main()
