"""A synthetic Sentinel-2 L2A + Copernicus DEM corpus for sites and summers (offline demo and tests).

:func:`build_corpus` renders, for every site and summer, a few acquisitions with varied cloud, snow
and swath edges (at least one clear one over the site in most years; processing baseline >= 04.00
from 2022 on, so both DN encodings occur), plus the DEM, into one folder that
:mod:`rtsmonitor.offline.stacserver` serves as a STAC API. Layout under ``root``::

    collections/sentinel-2-l2a/collection.json
    collections/sentinel-2-l2a/items/<item id>.json      one item per tile and acquisition
    collections/cop-dem-glo-30/collection.json
    collections/cop-dem-glo-30/items/<item id>.json      one item per 1 x 1 degree tile
    files/sentinel-2-l2a/<tile>/<sensing time>/T<tile>_<sensing time>_<B02|B03|B04|B08>_10m.tif
    files/sentinel-2-l2a/<tile>/<sensing time>/T<tile>_<sensing time>_SCL_20m.tif
    files/cop-dem-glo-30/<item id>.tif
    corpus.json                                          what was generated, scene by scene

Asset hrefs in the items are relative to ``root``; the server makes them absolute.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rtsmonitor.grid import SiteGrid
from rtsmonitor.offline.synthetic import (
    DEFAULT_TILE_SIZE_M,
    REAL_TILE_OVERLAP_M,
    REAL_TILE_SIZE_M,
    REGION_SLUMPS_PER_KM2,
    Bounds,
    SceneSpec,
    Slump,
    TileLayout,
    World,
    seeded_rng,
    utm_to_lonlat,
    write_dem,
    write_scene,
)

REGION_MARGIN_M = 1000.0
"""Full-detail landscape extends this far beyond each site, in metres (room for reprojection and
the DEM boxcar)."""
OVERPASS_SOLAR_HOUR = 10.9
"""Local solar time of a Sentinel-2 overpass at high northern latitudes, in hours (10:30 at the
descending node; the real 2019-06-29 item over 06VVN was sensed near 11:30 solar time)."""
CLOUDY_YEAR_PROBABILITY = 0.15
"""Chance that a summer (other than the first) has no clear acquisition over a site."""

SCENE_KINDS: tuple[str, ...] = ("cloudy", "clear_site_cloudy_tile", "snow", "swath_edge", "partly_cloudy")
"""The non-clear acquisition types, cycled through from summer to summer."""


def processing_baseline_for_year(year: int) -> str:
    """A processing baseline typical of Planetary Computer's archive for a summer of ``year``.

    2016-2019 data were reprocessed with 02.12 (as the real 2019 item), 2020 has 02.14, 2021 has
    03.00/03.01, 2022 has 04.00 (the first baseline with the +1000 DN offset), 2023 has 05.09 and
    later years 05.10.
    """
    if year <= 2019:
        return "02.12"
    return {2020: "02.14", 2021: "03.01", 2022: "04.00", 2023: "05.09"}.get(year, "05.10")


@dataclass(frozen=True)
class CorpusScene:
    """One generated acquisition over a group of nearby sites.

    Attributes
    ----------
    site_ids : the sites whose area of interest (the union of their bounds) the spec refers to.
    kind : "clear" or one of :data:`SCENE_KINDS`.
    spec : the acquisition.
    item_ids : the STAC items written (one per tile that intersects the sites).
    """

    site_ids: tuple[str, ...]
    kind: str
    spec: SceneSpec
    item_ids: tuple[str, ...]


@dataclass(frozen=True)
class CorpusSummary:
    """What :func:`build_corpus` wrote.

    Attributes
    ----------
    root : the corpus folder.
    worlds : the landscape of every site (sites in one UTM zone share a world).
    layouts : the tiling of every UTM zone, by EPSG code.
    scenes : every acquisition, in generation order.
    dem_item_ids : the ``cop-dem-glo-30`` items written.
    seconds : wall time of the build.
    """

    root: Path
    worlds: Mapping[str, World]
    layouts: Mapping[int, TileLayout]
    scenes: tuple[CorpusScene, ...]
    dem_item_ids: tuple[str, ...]
    seconds: float

    def scenes_for(self, site_id: str, year: int | None = None) -> list[CorpusScene]:
        """The acquisitions over ``site_id`` (of ``year`` if given), in date order."""
        found = [s for s in self.scenes if site_id in s.site_ids and (year is None or s.spec.year == year)]
        return sorted(found, key=lambda s: s.spec.datetime)


def summer_scenes(
    aoi_bounds: Bounds, epsg: int, year: int, n: int, seed: int, *, first_year: bool = False
) -> list[tuple[str, SceneSpec]]:
    """``n`` acquisitions of one July-August over ``aoi_bounds`` as (kind, spec), in date order.

    One is clear over the AOI (cloud 0, tile-wide cloud < 6 %) unless the summer is drawn cloudy
    (probability :data:`CLOUDY_YEAR_PROBABILITY`, never when ``first_year``); the others cycle
    through :data:`SCENE_KINDS`, starting at a year-dependent offset so consecutive summers differ.
    """
    if n < 1:
        raise ValueError(f"scenes per year must be >= 1, got {n}")
    rng = seeded_rng("summer", seed, epsg, aoi_bounds, year)
    lon, _ = utm_to_lonlat(epsg, (aoi_bounds[0] + aoi_bounds[2]) / 2, (aoi_bounds[1] + aoi_bounds[3]) / 2)
    orbit_rng = seeded_rng("orbits", seed, epsg, aoi_bounds)
    orbits = [int(o) for o in orbit_rng.choice(np.arange(1, 144), size=2, replace=False)]
    cloudy_year = not first_year and rng.random() < CLOUDY_YEAR_PROBABILITY
    kinds = ["partly_cloudy" if cloudy_year else "clear"]
    offset = (year * max(n - 1, 1)) % len(SCENE_KINDS)
    kinds += [SCENE_KINDS[(offset + k) % len(SCENE_KINDS)] for k in range(n - 1)]
    free_days = list(range(62))  # 1 July .. 31 August
    specs = []
    for index, kind in enumerate(kinds):
        early = [d for d in free_days if d < 12]
        day = int(rng.choice(early if kind == "snow" and early else free_days))
        free_days.remove(day)
        orbit = orbits[index % 2]
        hours = (OVERPASS_SOLAR_HOUR - lon / 15.0 + (0.3 if orbit == orbits[1] else 0.0)) % 24.0
        when = datetime(year, 7, 1, tzinfo=UTC) + timedelta(
            days=day, hours=hours, milliseconds=int(rng.integers(0, 1000))
        )
        if year <= 2016:
            platform = "Sentinel-2A"
        elif year >= 2025:
            platform = "Sentinel-2B" if rng.random() < 0.5 else "Sentinel-2C"
        else:
            platform = "Sentinel-2A" if rng.random() < 0.5 else "Sentinel-2B"
        cloud, tile_cloud, snow, nodata = _fractions(kind, rng)
        specs.append(
            (
                kind,
                SceneSpec(
                    datetime=when,
                    platform=platform,
                    processing_baseline=processing_baseline_for_year(year),
                    relative_orbit=orbit,
                    aoi_bounds=aoi_bounds,
                    cloud_fraction=cloud,
                    tile_cloud_fraction=tile_cloud,
                    snow_fraction=snow,
                    nodata_fraction=nodata,
                    seed=int(rng.integers(0, 2**62)),
                ),
            )
        )
    return sorted(specs, key=lambda ks: ks[1].datetime)


def _fractions(kind: str, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """(cloud over AOI, tile-wide cloud, snow, no-data) of a scene kind."""
    u = rng.uniform
    if kind == "clear":
        return 0.0, u(0.0, 0.06), 0.0, 0.0
    if kind == "cloudy":
        cloud = u(0.3, 0.8)
        return cloud, min(1.0, cloud + u(-0.1, 0.2)), 0.0, 0.0
    if kind == "clear_site_cloudy_tile":
        return 0.0, u(0.25, 0.6), 0.0, 0.0
    if kind == "snow":
        return u(0.0, 0.05), u(0.0, 0.08), u(0.1, 0.3), 0.0
    if kind == "swath_edge":
        return u(0.0, 0.03), u(0.0, 0.06), 0.0, u(0.15, 0.5)
    if kind == "partly_cloudy":
        return u(0.1, 0.3), u(0.1, 0.35), 0.0, 0.0
    raise ValueError(f"unknown scene kind {kind!r}")


def _clusters(sites: Sequence[tuple[str, SiteGrid]], gap_m: float) -> list[list[tuple[str, SiteGrid]]]:
    """Sites of one UTM zone grouped when their bounds are closer than ``gap_m`` (single linkage)."""
    groups: list[list[tuple[str, SiteGrid]]] = []
    for site in sites:
        touching = [g for g in groups if any(_gap(site[1].bounds, other.bounds) < gap_m for _, other in g)]
        merged = [site]
        for g in touching:
            merged.extend(g)
            groups.remove(g)
        groups.append(merged)
    return groups


def _gap(a: Bounds, b: Bounds) -> float:
    dx = max(b[0] - a[2], a[0] - b[2], 0.0)
    dy = max(b[1] - a[3], a[1] - b[3], 0.0)
    return math.hypot(dx, dy)


def build_corpus(
    root: Path,
    sites: Sequence[tuple[str, SiteGrid]],
    years: Sequence[int],
    scenes_per_year: int = 3,
    seed: int = 0,
    tile_size_m: float = DEFAULT_TILE_SIZE_M,
    *,
    overlap_m: float | None = None,
    slumps: Mapping[str, Sequence[Slump]] | None = None,
    slumps_per_km2: float = REGION_SLUMPS_PER_KM2,
    progress: bool = True,
) -> CorpusSummary:
    """Render a corpus of Sentinel-2 L2A-like scenes and DEM tiles for ``sites`` and ``years``.

    Parameters
    ----------
    root : output folder (created; existing files of the same items are overwritten).
    sites : (site id, 10 m site grid) pairs; sites in one UTM zone share one world, and sites
        closer than one tile share their acquisitions.
    years : the summers (July-August) to render.
    scenes_per_year : acquisitions per site group and summer.
    seed : seeds everything; the same arguments give identical files' pixels.
    tile_size_m : tile side in metres (multiple of 60; :data:`REAL_TILE_SIZE_M` for real tiles).
    overlap_m : tile overlap; by default about 9 % of the side (9780 m for real-size tiles).
    slumps : user-given slumps per site id (e.g. real labels via
        :func:`rtsmonitor.offline.synthetic.slumps_from_wgs84`, in that site's UTM zone). A site
        with given slumps gets no random ones, so its labels are its complete truth.
    slumps_per_km2 : density of random slumps on sites without given ones.
    progress : show a tqdm progress bar.
    """
    started = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if overlap_m is None:
        overlap_m = REAL_TILE_OVERLAP_M if tile_size_m == REAL_TILE_SIZE_M else _default_overlap(tile_size_m)
    slumps = dict(slumps or {})
    unknown = sorted(set(slumps) - {site_id for site_id, _ in sites})
    if unknown:
        raise ValueError(f"slumps given for unknown sites: {unknown}")
    by_epsg: dict[int, list[tuple[str, SiteGrid]]] = {}
    for site_id, grid in sites:
        by_epsg.setdefault(grid.epsg, []).append((site_id, grid))

    worlds: dict[str, World] = {}
    layouts: dict[int, TileLayout] = {}
    plans: list[tuple[World, TileLayout, tuple[str, ...], str, SceneSpec]] = []
    for epsg, zone_sites in by_epsg.items():
        regions = [
            (
                g.bounds[0] - REGION_MARGIN_M,
                g.bounds[1] - REGION_MARGIN_M,
                g.bounds[2] + REGION_MARGIN_M,
                g.bounds[3] + REGION_MARGIN_M,
            )
            for _, g in zone_sites
        ]
        world = World.generate(
            epsg,
            regions,
            seed=int(seeded_rng("world", seed, epsg).integers(0, 2**62)),
            slumps=[s for site_id, _ in zone_sites for s in slumps.get(site_id, ())],
            slumps_per_km2=[0.0 if site_id in slumps else slumps_per_km2 for site_id, _ in zone_sites],
        )
        layout = TileLayout(epsg, tile_size_m, overlap_m)
        layouts[epsg] = layout
        for site_id, _ in zone_sites:
            worlds[site_id] = world
        for group in _clusters(zone_sites, tile_size_m):
            ids = tuple(site_id for site_id, _ in group)
            aoi = (
                min(g.bounds[0] for _, g in group),
                min(g.bounds[1] for _, g in group),
                max(g.bounds[2] for _, g in group),
                max(g.bounds[3] for _, g in group),
            )
            for year in years:
                for kind, spec in summer_scenes(aoi, epsg, year, scenes_per_year, seed, first_year=year == min(years)):
                    plans.append((world, layout, ids, kind, spec))

    scenes: list[CorpusScene] = []
    dem_ids: list[str] = []
    with tqdm(total=len(plans) + len(sites), desc="synthetic corpus", unit="scene", disable=not progress) as bar:
        for world, layout, ids, kind, spec in plans:
            items = write_scene(world, layout, spec, root)
            scenes.append(CorpusScene(ids, kind, spec, tuple(item["id"] for item in items)))
            bar.update(1)
        for site_id, grid in sites:
            for item in write_dem(worlds[site_id], root, grid.bbox_wgs84()):
                if item["id"] not in dem_ids:
                    dem_ids.append(item["id"])
            bar.update(1)
    summary = CorpusSummary(
        root=root,
        worlds=worlds,
        layouts=layouts,
        scenes=tuple(scenes),
        dem_item_ids=tuple(dem_ids),
        seconds=time.perf_counter() - started,
    )
    _write_manifest(summary, sites, years, seed)
    return summary


def _default_overlap(tile_size_m: float) -> float:
    return float(max(1, round(0.09 * tile_size_m / 60.0)) * 60)


def _write_manifest(
    summary: CorpusSummary, sites: Sequence[tuple[str, SiteGrid]], years: Sequence[int], seed: int
) -> None:
    """``corpus.json``: the arguments and every scene's spec and items (for people and the demo)."""
    layouts = {
        str(epsg): {"tile_size_m": lay.tile_size_m, "overlap_m": lay.overlap_m} for epsg, lay in summary.layouts.items()
    }
    manifest = {
        "generator": "rtsmonitor.offline.synthetic",
        "seed": seed,
        "years": list(years),
        "sites": {site_id: grid.to_dict() for site_id, grid in sites},
        "layouts": layouts,
        "scenes": [
            {
                "sites": list(scene.site_ids),
                "kind": scene.kind,
                "datetime": scene.spec.datetime.isoformat().replace("+00:00", "Z"),
                "platform": scene.spec.platform,
                "processing_baseline": scene.spec.processing_baseline,
                "relative_orbit": scene.spec.relative_orbit,
                "aoi_bounds": list(scene.spec.aoi_bounds),
                "cloud_fraction": scene.spec.cloud_fraction,
                "tile_cloud_fraction": scene.spec.tile_cloud_fraction,
                "snow_fraction": scene.spec.snow_fraction,
                "nodata_fraction": scene.spec.nodata_fraction,
                "seed": scene.spec.seed,
                "item_ids": list(scene.item_ids),
            }
            for scene in summary.scenes
        ],
        "dem_item_ids": list(summary.dem_item_ids),
    }
    (summary.root / "corpus.json").write_text(json.dumps(manifest, indent=2))
