"""Benchmark: one 100 km^2 site-year stack from the local STAC/COG server, stage by stage.

Renders one summer (``--scenes`` acquisitions) of a paper site on real-size Sentinel-2 tiles
(109.8 km, 10980 x 10980 px at 10 m), serves them with the local STAC server (a separate process,
so HTTP is real), then repeats scene search + SCL ranking, band reads, slope and the COG write
``--runs`` times. Prints medians and the bytes the server sent against the size of the files behind
the hrefs. Usage::

    .venv/bin/python bench/stack_site_year.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rtsmonitor.imagery import choose_summer_scene, read_scene
from rtsmonitor.offline.corpus import build_corpus
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.offline.synthetic import REAL_TILE_SIZE_M
from rtsmonitor.sites import paper_site
from rtsmonitor.stac import open_catalog
from rtsmonitor.stack import make_stack, write_stack
from rtsmonitor.terrain import StacDem, slope_on_grid


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", default="horton01")
    parser.add_argument("--year", type=int, default=2022)
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    site = paper_site(args.site)
    grid = site.grid()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "stac"
        corpus = build_corpus(root, [(site.id, grid)], [args.year], args.scenes, 0, REAL_TILE_SIZE_M)
        tiles_km = REAL_TILE_SIZE_M / 1000
        print(f"corpus: {len(corpus.scenes)} acquisitions on {tiles_km:.1f} km tiles, {corpus.seconds:.0f} s")
        stages: dict[str, list[float]] = {k: [] for k in ("search+rank", "bands", "slope", "write", "total")}
        read_mb: list[float] = []
        with LocalStacServer(root) as server:
            client = open_catalog(server.url)
            for run in range(args.runs):
                server.reset_stats()
                t0 = time.perf_counter()
                choice = choose_summer_scene(
                    client, grid, site.season_bounds(args.year), site.max_cloud_pct, site.min_valid_fraction
                )
                chosen = choice.require()
                t1 = time.perf_counter()
                scene = read_scene(chosen.acquisition, grid)
                t2 = time.perf_counter()
                slope = slope_on_grid(StacDem(server.url), grid)
                t3 = time.perf_counter()
                write_stack(make_stack(scene, slope), Path(tmp) / f"stack{run}.tif")
                t4 = time.perf_counter()
                for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
                    stages[key].append(value)
                stats = server.stats()
                read_mb.append(stats.bytes_total / 1e6)
            files = [
                root / href.removeprefix(server.url + "/")
                for item in chosen.acquisition.items
                for key in ("B02", "B03", "B04", "B08", "SCL")
                for href in [item.assets[key].href]
            ]
        behind = sum(p.stat().st_size for p in files) / 1e6
        print(f"site {site.id}: {grid.width} x {grid.height} px, {grid.area_m2 / 1e6:.0f} km^2; {args.runs} runs")
        for key, values in stages.items():
            spread = f"(min {min(values):.2f}, max {max(values):.2f})"
            print(f"  {key:12s} median {statistics.median(values):6.2f} s  {spread}")
        print(
            f"  bytes served per site-year: median {statistics.median(read_mb):.1f} MB "
            f"(all candidates' SCL + chosen bands + DEM); the chosen scene's 5 asset files hold {behind:.0f} MB"
        )


if __name__ == "__main__":
    main()
