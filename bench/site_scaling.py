"""Benchmark: one site-year end to end for sites of 10 to 10,000 km^2, stage by stage, time and peak RSS.

A fast synthetic scene (one Sentinel-2 L2A acquisition on one 102 km tile in UTM 9N, processing
baseline 04.00, a Copernicus-DEM-like tile in WGS84) is written once into a cache folder and served
by the local STAC/COG server (a child process: HTTP range reads are real). Each site size then runs
:func:`rtsmonitor.siteyear.process_site_year` in a fresh child process against a local store with
the bundled demo model, so its peak RSS (``VmHWM``) is that site-year's alone. The scene is cheap
noise, not the offline landscape of :mod:`rtsmonitor.offline.synthetic` (which would take longer
to render than the benchmark runs): the numbers are about time and memory, not about RTS.

    .venv/bin/python bench/site_scaling.py [--sizes 10,100,1000,10000] [--runs 1] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.shutil
import rasterio.warp
from affine import Affine
from rasterio.windows import Window

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, emit_result, median, print_table, run_child

CENTRE_LONLAT = (-126.75, 69.75)
"""Site centre (Horton 01 of Rustemeyer et al. 2022); every size is a square around it."""
TILE_KM = 102.0
"""Side of the synthetic tile, centred on the site: covers the 10,000 km^2 (100 km) site."""
YEAR = 2022
SIZES_KM2 = (10, 100, 1000, 10000)
QUICK_SIZES_KM2 = (10, 100)
CACHE = Path(os.environ.get("RTS_BENCH_CACHE", Path(tempfile.gettempdir()) / "rts-bench-scaling"))
"""Where the synthetic scene is kept between runs (``$RTS_BENCH_CACHE``)."""
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
PRODUCTION_ENV = {"MALLOC_ARENA_MAX": "2"}
"""The environment the functions image sets (docker/functions.Dockerfile): at most two malloc arenas."""
BLOCK_ROWS = 1024
"""Rows generated and written at once while building the scene (bounds the builder's memory)."""


def _field(rng: np.random.Generator, rows: int, cols: int, coarse_px: int) -> np.ndarray:
    """A smooth random field in [0, 1] of ``rows`` x ``cols``: bilinear upsampling of coarse noise."""
    coarse = rng.random((rows // coarse_px + 2, cols // coarse_px + 2))
    y = np.arange(rows) / coarse_px
    x = np.arange(cols) / coarse_px
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    c = coarse
    top = c[y0][:, x0] * (1 - fx) + c[y0][:, x0 + 1] * fx
    bottom = c[y0 + 1][:, x0] * (1 - fx) + c[y0 + 1][:, x0 + 1] * fx
    return np.asarray(top * (1 - fy) + bottom * fy)


def _write_cog(
    path: Path, shape: tuple[int, int], transform: Affine, crs: str, dtype: str, nodata: float, fill: Any
) -> None:
    """Write a single-band COG block by block: ``fill(row_off, rows) -> array``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = path.with_suffix(".plain.tif")
    profile = {
        "driver": "GTiff", "count": 1, "dtype": dtype, "width": shape[1], "height": shape[0], "crs": crs,
        "transform": transform, "nodata": nodata, "tiled": True, "blockxsize": 512, "blockysize": 512,
    }  # fmt: skip
    with rasterio.open(plain, "w", **profile) as dst:
        for row in range(0, shape[0], BLOCK_ROWS):
            rows = min(BLOCK_ROWS, shape[0] - row)
            dst.write(fill(row, rows).astype(dtype), 1, window=Window(0, row, shape[1], rows))
    rasterio.shutil.copy(plain, path, driver="COG", compress="DEFLATE", blocksize=512, overview_resampling="average")
    plain.unlink()


def build_scene(root: Path) -> Path:
    """Write (once) the tile's bands, SCL, DEM and their STAC items under ``root``; return ``root``."""
    from pyproj import Transformer

    from rtsmonitor.grid import utm_epsg

    done = root / "done.json"
    if done.exists():
        return root
    epsg = utm_epsg(*CENTRE_LONLAT)
    cx, cy = Transformer.from_crs(4326, epsg, always_xy=True).transform(*CENTRE_LONLAT)
    half = TILE_KM * 500.0
    x0, y1 = math.floor((cx - half) / 60) * 60, math.ceil((cy + half) / 60) * 60
    size10 = int(TILE_KM * 100)
    started = time.perf_counter()
    root / "files"
    when = dt.datetime(YEAR, 7, 20, 19, 21, tzinfo=dt.UTC)
    hrefs = {}
    for band, scale in (("B02", 0.05), ("B03", 0.07), ("B04", 0.06), ("B08", 0.25)):
        rng = np.random.default_rng(hash(band) % 2**32)
        hrefs[band] = f"files/T09WXV_{band}_10m.tif"

        def fill(row: int, rows: int, rng: np.random.Generator = rng, scale: float = scale) -> np.ndarray:
            base = _field(np.random.default_rng(row), rows, size10, 200)
            noise = rng.normal(0.0, 0.01, (rows, size10))
            return np.clip(1000 + 10000 * (scale * (0.6 + 0.8 * base) + noise), 1, 20000)  # DN, baseline 04.00

        transform = Affine(10, 0, x0, 0, -10, y1)
        _write_cog(root / hrefs[band], (size10, size10), transform, f"EPSG:{epsg}", "uint16", 0, fill)
    hrefs["SCL"] = "files/T09WXV_SCL_20m.tif"
    _write_cog(
        root / hrefs["SCL"], (size10 // 2, size10 // 2), Affine(20, 0, x0, 0, -20, y1), f"EPSG:{epsg}", "uint8", 0,
        lambda row, rows: np.full((rows, size10 // 2), 4),  # vegetation: clear everywhere
    )  # fmt: skip
    west, south, east, north = rasterio.warp.transform_bounds(
        f"EPSG:{epsg}", "EPSG:4326", x0, y1 - size10 * 10, x0 + size10 * 10, y1
    )
    west, south, east, north = math.floor(west), math.floor(south), math.ceil(east), math.ceil(north)
    dem_res = 1 / 3600
    dem_shape = (int((north - south) * 3600), int((east - west) * 1800))
    dem_transform = Affine(2 * dem_res, 0, west, 0, -dem_res, north)
    _write_cog(
        root / "files/dem.tif", dem_shape, dem_transform, "EPSG:4326", "float32", -32767,
        lambda row, rows: 50 + 300 * _field(np.random.default_rng(row + 7), rows, dem_shape[1], 60),
    )  # fmt: skip
    _write_items(root, epsg, (x0, y1, size10), hrefs, when, (west, south, east, north), dem_shape, dem_transform)
    done.write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
    return root


def _write_items(
    root: Path,
    epsg: int,
    tile: tuple[float, float, int],
    hrefs: dict[str, str],
    when: dt.datetime,
    dem_bounds: tuple[float, float, float, float],
    dem_shape: tuple[int, int],
    dem_transform: Affine,
) -> None:
    """STAC collections and items (the fields the search reads) for the tile and the DEM."""
    from shapely.geometry import box, mapping

    x0, y1, size10 = tile
    outline = mapping(box(x0, y1 - size10 * 10, x0 + size10 * 10, y1))
    footprint = rasterio.warp.transform_geom(f"EPSG:{epsg}", "EPSG:4326", outline)
    stamp = when.strftime("%Y%m%dT%H%M%S")
    s2_id = f"S2B_MSIL2A_{stamp}_R013_T09WXV_{stamp}"
    for collection, item in (
        ("sentinel-2-l2a", {
            "id": s2_id, "geometry": footprint, "bbox": list(rasterio.features.bounds(footprint)),
            "properties": {
                "datetime": when.isoformat().replace("+00:00", "Z"), "platform": "Sentinel-2B", "proj:epsg": epsg,
                "s2:mgrs_tile": "09WXV", "eo:cloud_cover": 0.0, "s2:processing_baseline": "04.00",
                "s2:datatake_id": f"GS2B_{stamp}_bench",
            },
            "assets": {name: {"href": href, "type": COG_TYPE, "roles": ["data"]} for name, href in hrefs.items()},
        }),
        ("cop-dem-glo-30", {
            "id": "bench-dem", "geometry": mapping(box(*dem_bounds)), "bbox": list(dem_bounds),
            "properties": {"datetime": "2021-04-22T00:00:00Z", "proj:epsg": 4326,
                           "proj:shape": list(dem_shape), "proj:transform": list(dem_transform)[:6]},
            "assets": {"data": {"href": "files/dem.tif", "type": COG_TYPE, "roles": ["data"]}},
        }),
    ):  # fmt: skip
        folder = root / "collections" / collection
        (folder / "items").mkdir(parents=True, exist_ok=True)
        (folder / "collection.json").write_text(json.dumps({
            "type": "Collection", "id": collection, "stac_version": "1.0.0", "description": "benchmark scene",
            "license": "proprietary", "links": [],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
        }))  # fmt: skip
        full = {"type": "Feature", "stac_version": "1.0.0", "links": [], "collection": collection, **item}
        (folder / "items" / f"{item['id']}.json").write_text(json.dumps(full))


def child(size_km2: float, stac_url: str, work: Path) -> dict[str, Any]:
    """One site-year of a ``size_km2`` site (in this process): stage seconds and the record's numbers."""
    from rtsmonitor.inference import Model
    from rtsmonitor.jobs import SiteYearJob
    from rtsmonitor.modelstore import DEMO_BUNDLE
    from rtsmonitor.registry import register_site
    from rtsmonitor.sites import ServiceLimits
    from rtsmonitor.siteyear import Services, process_site_year
    from rtsmonitor.stac import open_catalog
    from rtsmonitor.storage import LocalStorage
    from rtsmonitor.terrain import StacDem

    storage = LocalStorage(work / "store")
    config = {
        "id": "bench", "name": "bench", "first_year": YEAR, "last_year": YEAR, "max_cloud_pct": 10,
        "centre": {"lon": CENTRE_LONLAT[0], "lat": CENTRE_LONLAT[1], "size_km": math.sqrt(size_km2)},
    }  # fmt: skip
    register_site(storage, "bench.json", json.dumps(config).encode(), limits=ServiceLimits(max_area_km2=20_000))
    services = Services(open_catalog(stac_url), StacDem(stac_url), Model.load(DEMO_BUNDLE))
    outcome = process_site_year(storage, SiteYearJob("bench", YEAR), services)
    record = outcome.record
    if record.status != "ok":
        raise RuntimeError(f"site-year not processed: {record.status}: {record.reason}")
    return {
        "stages": outcome.stage_seconds,
        "pixels": round((record.site_area_m2 or 0) / 100),
        "rts_count": record.rts_count,
    }


def run(quick: bool = False, sizes: tuple[float, ...] | None = None, runs: int = 1) -> list[Row]:
    """Build (or reuse) the scene, then time every site size in its own child process."""
    from rtsmonitor.offline.stacserver import LocalStacServer

    sizes = sizes or (QUICK_SIZES_KM2 if quick else SIZES_KM2)
    started = time.perf_counter()
    root = build_scene(CACHE)
    rows = [Row("site_scaling", "scene", "build_s", round(time.perf_counter() - started, 1), "s", f"cached in {root}")]
    with LocalStacServer(root) as server, tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            results = []
            for run_index in range(runs):
                work = Path(tmp) / f"{size}-{run_index}"
                cmd = [sys.executable, __file__, "--child", str(size), "--stac-url", server.url, "--work", str(work)]
                results.append(run_child(cmd, env=PRODUCTION_ENV, timeout_s=1800))
            ok = [r for r in results if r.returncode == 0 and r.result]
            if not ok:
                raise RuntimeError(f"{size} km2 failed: {results[0].stderr[-2000:]}")
            case = f"{size:g} km2"
            stages = {k: median([r.result["stages"][k] for r in ok]) for k in ok[0].result["stages"]}
            for name, seconds in stages.items():
                rows.append(Row("site_scaling", case, f"{name} s", round(seconds, 2), "s"))
            total = stages["total"]
            rows.append(Row("site_scaling", case, "s per km2", round(total / size, 4), "s/km2"))
            rows.append(Row("site_scaling", case, "peak RSS", round(median([r.peak_rss_mib for r in ok]), 0), "MiB"))
            rows.append(Row("site_scaling", case, "pixels", ok[0].result["pixels"], "px"))
    return rows


def main() -> None:
    """Command line: the benchmark, or (``--child``) one site-year in this process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", help="comma-separated site areas in km2")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--stac-url", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        emit_result(child(args.child, args.stac_url, args.work))
        return
    sizes = tuple(float(s) for s in args.sizes.split(",")) if args.sizes else None
    print_table(run(args.quick, sizes, args.runs))


if __name__ == "__main__":
    main()
