"""Sentinel-2 L2A scenes: search, ranking by cloud over the site, windowed reads, harmonisation.

Data: Copernicus Sentinel-2 Level-2A surface reflectance (ESA; free and open under the Copernicus
data policy), served as COGs by Microsoft Planetary Computer (collection ``sentinel-2-l2a``).

Reflectance is ``(DN - offset) / 10000``. From processing baseline 04.00 (products from
25 January 2022 on) ESA adds ``BOA_ADD_OFFSET = -1000`` to L2A products, i.e. the stored DN is
``10000 * reflectance + 1000`` (ESA, "Sentinel-2 L2A Product Specification", S2-PDGS-MPC-L2A-PSD,
and the baseline 04.00 note of the Sentinel-2 Processing Baseline page). The offset is keyed on
the item's ``s2:processing_baseline``, not on its date: reprocessed older scenes carry it too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pystac
from numpy.typing import NDArray
from pystac_client import Client
from rasterio.enums import Resampling

from rtsmonitor.errors import NoSceneError, SceneError
from rtsmonitor.grid import SiteGrid, grid_for_bounds
from rtsmonitor.terrain import warp_to_grid

S2_COLLECTION = "sentinel-2-l2a"
"""Planetary Computer collection of Sentinel-2 Level-2A scenes."""

SPECTRAL_ASSETS: tuple[str, ...] = ("B02", "B03", "B04", "B08")
"""The 10 m bands the model uses (Rustemeyer et al. 2022): blue 490 nm, green 560 nm, red 665 nm, NIR 842 nm."""
SPECTRAL_LAYERS: tuple[str, ...] = ("blue", "green", "red", "nir")
"""Layer names of :data:`SPECTRAL_ASSETS`, in the same order."""
SCL_ASSET = "SCL"
"""Scene classification layer (20 m) of an L2A product."""

REFLECTANCE_SCALE_DN = 10000.0
"""L2A quantification value: DN per unit of surface reflectance (ESA L2A Product Specification)."""
BOA_ADD_OFFSET_DN = 1000
"""DN added to L2A reflectance from processing baseline 04.00 on (BOA_ADD_OFFSET = -1000)."""
OFFSET_FROM_BASELINE = (4, 0)
"""First processing baseline (major, minor) whose L2A DN carry :data:`BOA_ADD_OFFSET_DN`."""
NODATA_DN = 0
"""DN of pixels without data in every L2A band and in SCL."""

SCL_NO_DATA = 0
SCL_SATURATED_OR_DEFECTIVE = 1
SCL_CLOUD_SHADOW = 3
SCL_WATER = 6
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_THIN_CIRRUS = 10
SCL_SNOW_ICE = 11
SCL_CLOUDY: frozenset[int] = frozenset({SCL_CLOUD_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_THIN_CIRRUS})
"""SCL classes counted as cloud over the site (shadow, medium/high probability cloud, cirrus)."""
SCL_UNUSABLE: frozenset[int] = SCL_CLOUDY | {SCL_NO_DATA, SCL_SATURATED_OR_DEFECTIVE, SCL_SNOW_ICE}
"""SCL classes masked out of a stack: no data, defective, cloud, shadow, cirrus, snow and ice."""

TILE_CLOUD_PREFILTER_PCT = 80.0
"""Upper bound on the tile-wide ``eo:cloud_cover`` (%) of candidates whose SCL is read over the site.

A 110 km tile can be mostly cloudy and still clear over a 10 km site, so the site-level limit is
applied on SCL, and this loose tile-level bound only spares reading hopeless scenes."""
DAY_PENALTY_PCT_PER_DAY = 0.1
"""Ranking cost of one day between a scene and the target date, in % of unusable site area: a scene
10 days further from the target must be 1 % clearer to win."""
FALLBACK_WIDEN_DAYS = 15
"""Days added on both sides of the summer window when it holds no acceptable scene."""
LABEL_SEARCH_DAYS = 45
"""Half-width of the search window around a label date for the closest clear scene, in days."""
RANKING_RES_M = 20.0
"""Resolution at which SCL is read to rank candidates (its native 20 m)."""


def parse_baseline(baseline: str) -> tuple[int, int]:
    """``"04.00"`` -> ``(4, 0)``; raises :class:`SceneError` for anything else."""
    try:
        major, minor = baseline.split(".")
        return int(major), int(minor)
    except (AttributeError, ValueError) as exc:
        raise SceneError(f"s2:processing_baseline {baseline!r} is not of the form NN.NN") from exc


def boa_offset_dn(baseline: str) -> int:
    """DN offset of an L2A product of processing ``baseline`` (0 before 04.00, 1000 from it)."""
    return BOA_ADD_OFFSET_DN if parse_baseline(baseline) >= OFFSET_FROM_BASELINE else 0


def harmonise(dn: NDArray[np.float32], baseline: str) -> NDArray[np.float32]:
    """Surface reflectance from L2A DN (NaN = no data), the same scale for every baseline.

    Reflectance below zero (DN under the offset, seen over dark water) is clipped to 0.
    """
    reflectance = (dn - np.float32(boa_offset_dn(baseline))) / np.float32(REFLECTANCE_SCALE_DN)
    return np.where(np.isnan(reflectance), np.nan, np.maximum(reflectance, 0.0)).astype(np.float32)


@dataclass(frozen=True)
class Acquisition:
    """One satellite pass over a site: the items (MGRS tiles) of one datatake."""

    items: tuple[pystac.Item, ...]

    @property
    def id(self) -> str:
        """The id of the first item (ids joined with '+' when the pass spans several tiles)."""
        return "+".join(sorted(item.id for item in self.items))

    @property
    def datetime(self) -> dt.datetime:
        """Acquisition time (UTC)."""
        value = self.items[0].datetime
        if value is None:
            raise SceneError(f"item {self.items[0].id} has no datetime")
        return value

    @property
    def date(self) -> dt.date:
        """Acquisition date (UTC)."""
        return self.datetime.date()

    @property
    def processing_baselines(self) -> list[str]:
        """``s2:processing_baseline`` of every item."""
        return [str(item.properties.get("s2:processing_baseline", "")) for item in self.items]

    @property
    def tile_cloud_pct(self) -> float:
        """Mean tile-wide ``eo:cloud_cover`` of the items, in %."""
        return float(np.mean([float(item.properties.get("eo:cloud_cover", 100.0)) for item in self.items]))

    def hrefs(self, asset: str) -> list[tuple[pystac.Item, str]]:
        """(item, href) of ``asset`` in every item; :class:`SceneError` names a missing asset."""
        out = []
        for item in sorted(self.items, key=lambda i: i.id):
            if asset not in item.assets:
                raise SceneError(f"scene {item.id} has no asset {asset!r} (has {sorted(item.assets)})")
            out.append((item, item.assets[asset].href))
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description for sidecars and records."""
        return {
            "scene_id": self.id,
            "item_ids": sorted(item.id for item in self.items),
            "datetime": self.datetime.isoformat(),
            "platform": self.items[0].properties.get("platform"),
            "mgrs_tiles": sorted(str(item.properties.get("s2:mgrs_tile")) for item in self.items),
            "processing_baselines": self.processing_baselines,
            "tile_cloud_pct": round(self.tile_cloud_pct, 3),
        }


def group_acquisitions(items: Iterable[pystac.Item]) -> list[Acquisition]:
    """Group items by datatake (``s2:datatake_id``; else platform + time to the minute)."""
    groups: dict[str, list[pystac.Item]] = {}
    for item in items:
        key = item.properties.get("s2:datatake_id")
        if not key:
            when = item.datetime.strftime("%Y%m%dT%H%M") if item.datetime else item.id
            key = f"{item.properties.get('platform')}:{when}"
        groups.setdefault(str(key), []).append(item)
    return sorted((Acquisition(tuple(g)) for g in groups.values()), key=lambda a: (a.datetime, a.id))


def search_acquisitions(
    client: Client,
    grid: SiteGrid,
    start: dt.date,
    end: dt.date,
    max_tile_cloud_pct: float = TILE_CLOUD_PREFILTER_PCT,
) -> list[Acquisition]:
    """Every pass over ``grid`` between ``start`` and ``end`` (inclusive) under a tile cloud bound.

    Filters with CQL2-JSON (``filter``), which both Planetary Computer and the local stand-in
    support; the ranking is done here, not by the server.
    """
    search = client.search(
        collections=[S2_COLLECTION],
        bbox=grid.bbox_wgs84(),
        datetime=f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z",
        filter={"op": "<=", "args": [{"property": "eo:cloud_cover"}, max_tile_cloud_pct]},
        filter_lang="cql2-json",
        limit=100,
    )
    return group_acquisitions(search.items())


@dataclass(frozen=True)
class SceneAssessment:
    """How usable one acquisition is over one site (from its SCL read over the site)."""

    acquisition: Acquisition
    coverage: float
    """Fraction of the site with data (SCL not 0)."""
    cloud_pct: float
    """Cloud, shadow and cirrus in % of the observed part of the site."""
    snow_pct: float
    """Snow and ice in % of the observed part of the site."""
    valid_fraction: float
    """Fraction of the whole site observed clear (not no data, defective, cloud, shadow, snow)."""
    days_from_target: int
    acceptable: bool
    cost: float

    def describe(self) -> str:
        """One line for listings and reasons."""
        return (
            f"{self.acquisition.id} {self.acquisition.date} cloud over site {self.cloud_pct:.1f}% "
            f"(tile {self.acquisition.tile_cloud_pct:.1f}%), snow {self.snow_pct:.1f}%, "
            f"coverage {self.coverage:.1%}, valid {self.valid_fraction:.1%}, "
            f"{self.days_from_target:+d} d from target"
        )

    def summary(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            **self.acquisition.summary(),
            "site_cloud_pct": round(self.cloud_pct, 3),
            "site_snow_pct": round(self.snow_pct, 3),
            "coverage": round(self.coverage, 5),
            "valid_fraction": round(self.valid_fraction, 5),
            "days_from_target": self.days_from_target,
            "acceptable": self.acceptable,
        }


def scl_on_grid(acquisition: Acquisition, grid: SiteGrid) -> NDArray[np.uint8]:
    """The scene classification on ``grid`` (nearest neighbour), 0 where no tile has data."""
    scl = np.full(grid.shape, np.nan, dtype=np.float32)
    for _, href in acquisition.hrefs(SCL_ASSET):
        band = warp_to_grid([href], grid, Resampling.nearest)
        fill = np.isnan(scl) & np.isfinite(band)
        scl[fill] = band[fill]
    return np.nan_to_num(scl, nan=SCL_NO_DATA).astype(np.uint8)


def assess(
    acquisition: Acquisition,
    grid: SiteGrid,
    target: dt.date,
    max_cloud_pct: float,
    min_valid_fraction: float,
) -> SceneAssessment:
    """Read the acquisition's SCL over the site (at 20 m) and score it (lower cost is better)."""
    coarse = grid_for_bounds(grid.epsg, grid.bounds, max(RANKING_RES_M, grid.res_m))
    scl = scl_on_grid(acquisition, coarse)
    total = scl.size
    observed = int(np.count_nonzero(scl != SCL_NO_DATA))
    cloudy = int(np.isin(scl, list(SCL_CLOUDY)).sum())
    snow = int(np.count_nonzero(scl == SCL_SNOW_ICE))
    valid = int(np.count_nonzero(~np.isin(scl, list(SCL_UNUSABLE))))
    cloud_pct = 100.0 * cloudy / observed if observed else 100.0
    snow_pct = 100.0 * snow / observed if observed else 0.0
    valid_fraction = valid / total
    days = (acquisition.date - target).days
    return SceneAssessment(
        acquisition=acquisition,
        coverage=observed / total,
        cloud_pct=cloud_pct,
        snow_pct=snow_pct,
        valid_fraction=valid_fraction,
        days_from_target=days,
        acceptable=observed > 0 and cloud_pct <= max_cloud_pct and valid_fraction >= min_valid_fraction,
        cost=100.0 * (1.0 - valid_fraction) + DAY_PENALTY_PCT_PER_DAY * abs(days),
    )


@dataclass(frozen=True)
class SceneChoice:
    """The candidates of a search, best first, and the one chosen with the reason why."""

    candidates: list[SceneAssessment]
    chosen: SceneAssessment | None
    reason: str
    window: tuple[dt.date, dt.date]
    fallback: bool = False
    notes: list[str] = field(default_factory=list)

    def require(self) -> SceneAssessment:
        """The chosen scene, or :class:`NoSceneError` carrying the reason."""
        if self.chosen is None:
            raise NoSceneError(self.reason)
        return self.chosen


def _assess_all(
    client: Client,
    grid: SiteGrid,
    start: dt.date,
    end: dt.date,
    target: dt.date,
    max_cloud_pct: float,
    min_valid_fraction: float,
    known: Sequence[SceneAssessment] = (),
) -> list[SceneAssessment]:
    """Assess every acquisition of the window; those in ``known`` (same target and limits) are not read again."""
    done = {k.acquisition.id: k for k in known}
    acquisitions = search_acquisitions(client, grid, start, end)
    return [done.get(a.id) or assess(a, grid, target, max_cloud_pct, min_valid_fraction) for a in acquisitions]


def choose_summer_scene(
    client: Client,
    grid: SiteGrid,
    season: tuple[dt.date, dt.date],
    max_cloud_pct: float,
    min_valid_fraction: float,
    target: dt.date | None = None,
) -> SceneChoice:
    """The best scene of one summer over a site.

    Candidates are ranked by ``cost = 100 * (1 - valid_fraction) + 0.1 %/day * |days from
    target|`` (target: mid-season by default), where the valid fraction comes from SCL over the
    site. Acceptable scenes have at most ``max_cloud_pct`` cloud over the site and at least
    ``min_valid_fraction`` of it clear. With none in the season, the window is widened by
    :data:`FALLBACK_WIDEN_DAYS` on each side, and the choice says so.
    """
    start, end = season
    target = target or start + (end - start) / 2
    candidates = _assess_all(client, grid, start, end, target, max_cloud_pct, min_valid_fraction)
    limits = f"cloud over site <= {max_cloud_pct:g}% and valid fraction >= {min_valid_fraction:g}"
    ranked = sorted(candidates, key=lambda c: (not c.acceptable, c.cost, c.acquisition.id))
    if ranked and ranked[0].acceptable:
        best = ranked[0]
        reason = f"lowest cost among {sum(c.acceptable for c in ranked)} acceptable of {len(ranked)}: {best.describe()}"
        return SceneChoice(ranked, best, reason, (start, end))
    wide = (start - dt.timedelta(days=FALLBACK_WIDEN_DAYS), end + dt.timedelta(days=FALLBACK_WIDEN_DAYS))
    wider = _assess_all(client, grid, wide[0], wide[1], target, max_cloud_pct, min_valid_fraction, known=candidates)
    ranked_wide = sorted(wider, key=lambda c: (not c.acceptable, c.cost, c.acquisition.id))
    if ranked_wide and ranked_wide[0].acceptable:
        best = ranked_wide[0]
        reason = (
            f"fallback: no scene in {start}..{end} with {limits} ({len(ranked)} candidates); "
            f"window widened to {wide[0]}..{wide[1]}: {best.describe()}"
        )
        return SceneChoice(ranked_wide, best, reason, wide, fallback=True)
    if not ranked_wide:
        reason = f"no Sentinel-2 L2A scene over the site in {wide[0]}..{wide[1]}"
    else:
        reason = (
            f"no scene in {wide[0]}..{wide[1]} with {limits}; best of {len(ranked_wide)}: {ranked_wide[0].describe()}"
        )
    return SceneChoice(ranked_wide, None, reason, wide, fallback=True)


def closest_clear_scene(
    client: Client,
    grid: SiteGrid,
    date: dt.date,
    max_cloud_pct: float = 10.0,
    search_days: int = LABEL_SEARCH_DAYS,
    min_valid_fraction: float = 0.0,
) -> SceneChoice:
    """The scene closest in time to ``date`` with under ``max_cloud_pct`` cloud over the site.

    This is the paper's rule for pairing a label date with imagery (Rustemeyer et al. 2022:
    "closest in time to the label date with cloud cover < 10 %"), with cloud measured over the
    site from SCL. Ties on distance go to the clearer scene.
    """
    window = (date - dt.timedelta(days=search_days), date + dt.timedelta(days=search_days))
    candidates = _assess_all(client, grid, window[0], window[1], date, max_cloud_pct, min_valid_fraction)
    ranked = sorted(candidates, key=lambda c: (not c.acceptable, abs(c.days_from_target), c.cost, c.acquisition.id))
    if ranked and ranked[0].acceptable:
        best = ranked[0]
        reason = f"closest with cloud over site <= {max_cloud_pct:g}%: {best.describe()}"
        return SceneChoice(ranked, best, reason, window)
    return SceneChoice(
        ranked, None, f"no scene within {search_days} d of {date} with cloud over site <= {max_cloud_pct:g}%", window
    )


@dataclass(frozen=True)
class SceneData:
    """One acquisition read onto a site grid."""

    reflectance: NDArray[np.float32]
    """[4, H, W] surface reflectance of :data:`SPECTRAL_LAYERS`, NaN where no data."""
    scl: NDArray[np.uint8]
    """[H, W] scene classification (nearest from 20 m), 0 where no data."""
    grid: SiteGrid
    acquisition: Acquisition

    @property
    def clear(self) -> NDArray[np.bool_]:
        """Pixels with data in every band and an SCL class outside :data:`SCL_UNUSABLE`."""
        return np.isfinite(self.reflectance).all(axis=0) & ~np.isin(self.scl, list(SCL_UNUSABLE))

    @property
    def valid_fraction(self) -> float:
        """Fraction of the grid that is clear."""
        return float(self.clear.mean())


READ_THREADS = 5
"""Concurrent reads of one pass: its four 10 m bands and SCL at once (HTTP latency overlaps)."""


def _read_band(acquisition: Acquisition, asset: str, grid: SiteGrid) -> NDArray[np.float32]:
    """One band of a pass on ``grid`` as harmonised reflectance, its tiles mosaicked (first with data wins)."""
    reflectance = np.full(grid.shape, np.nan, dtype=np.float32)
    for item, href in acquisition.hrefs(asset):
        same_crs = item.properties.get("proj:epsg") == grid.epsg
        dn = warp_to_grid([href], grid, Resampling.nearest if same_crs else Resampling.bilinear)
        band = harmonise(dn, str(item.properties.get("s2:processing_baseline", "")))
        fill = np.isnan(reflectance) & np.isfinite(band)
        reflectance[fill] = band[fill]
    return reflectance


def read_scene(acquisition: Acquisition, grid: SiteGrid, *, require_data: bool = True) -> SceneData:
    """Read B02, B03, B04, B08 and SCL of one pass onto ``grid``, harmonised to reflectance.

    With ``require_data`` (the default), a pass with no data over ``grid`` is a :class:`SceneError`;
    a window of a site may lie wholly outside the swath, so window reads pass ``False``.

    Each band is read through a WarpedVRT sized to the site, so only the COG blocks under the site
    are fetched, never the whole tile. Tiles of one pass are mosaicked (first tile with data wins;
    the same pass gives the same values in tile overlaps). 10 m bands are resampled nearest when the
    tile's CRS is the grid's (the pixels coincide, values pass unchanged) and bilinear otherwise.
    The bands and SCL are read concurrently (:data:`READ_THREADS`).
    """
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:  # GDAL reads release the GIL
        scl_read = pool.submit(scl_on_grid, acquisition, grid)
        reflectance = np.stack(list(pool.map(lambda asset: _read_band(acquisition, asset, grid), SPECTRAL_ASSETS)))
        scl = scl_read.result()
    if require_data and not np.isfinite(reflectance).any():
        raise SceneError(f"scene {acquisition.id} has no data over the site grid")
    return SceneData(reflectance=reflectance, scl=scl, grid=grid, acquisition=acquisition)
