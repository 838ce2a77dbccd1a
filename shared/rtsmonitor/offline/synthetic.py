"""Seeded synthetic Sentinel-2 L2A scenes and Copernicus DEM tiles, written like Planetary Computer.

The generator is the offline stand-in for the Planetary Computer collections ``sentinel-2-l2a`` and
``cop-dem-glo-30`` (DESIGN.md, "Local stand-ins"). It renders a deterministic tundra landscape:

- a :class:`World` in one UTM zone: rolling hills, incised valleys (walls of 5-20 degrees) with
  rivers, gravel bars and eroding banks, lakes in flat lows, bright sand patches, and retrogressive
  thaw slumps (:class:`Slump`): bare horseshoe-shaped floors on slopes that grow every year
  (random slumps are placed on valley walls; user-given slumps, e.g. real label polygons, get a
  local hillslope of about 8-14 degrees built under them). The elevation is an analytic function of
  UTM coordinates (:meth:`World.elevation_m`), so a DEM can be sampled on any lattice;
- a :class:`SceneSpec` per acquisition: date, platform, processing baseline, and how much cloud,
  cloud shadow, snow and no-data the scene has over an area of interest (AOI) and tile-wide;
- a :class:`TileLayout` of MGRS-like tiles, each written as COGs (B02, B03, B04, B08 at 10 m,
  SCL at 20 m) plus one STAC item with exactly the shape of a real Planetary Computer item
  (:func:`write_scene`), and 1 x 1 degree DEM items (:func:`write_dem`).

Only the spectra are invented. Reflectances follow typical published Sentinel-2 L2A values for
low-Arctic tundra, water, bare mineral soil, snow and cloud (e.g. Raynolds et al. 2006, Remote
Sens. Environ. 102:271-281 for tundra NDVI 0.5-0.8; ESA Sen2Cor L2A Product User Manual for the
SCL classes); the digital numbers follow the L2A product definition: reflectance = DN / 10000
before processing baseline 04.00, and (DN - 1000) / 10000 from 04.00 on (BOA_ADD_OFFSET, ESA
"Sentinel-2 L2A processing baseline 04.00" note, January 2022).

Speed. Full 10 m detail exists only inside the world's *regions* (each site plus a margin); the
rest of a tile is rendered at 60 m and replicated to 10 m. Readers of a site never see the
difference, overviews and quick-looks do. Every value is a pure function of the pixel's position
and the seeds, so overlapping tiles of one acquisition carry identical pixels and
:func:`truth_reflectance` returns exactly what a correct reader gets on any aligned 10 m grid.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from scipy.optimize import nnls
from shapely.geometry import MultiPolygon, Polygon, box, mapping
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from rtsmonitor.grid import SiteGrid, project_geometry

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
U64 = npt.NDArray[np.uint64]
Bool = npt.NDArray[np.bool_]
Bounds = tuple[float, float, float, float]

# --- Sentinel-2 L2A product constants ---------------------------------------------------------

S2_COLLECTION = "sentinel-2-l2a"
"""Planetary Computer collection id of Sentinel-2 Level-2A."""
BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")
"""The 10 m bands written (blue, green, red, NIR), in this order in every reflectance array."""
QUANTIFICATION_VALUE = 10000
"""L2A BOA_QUANTIFICATION_VALUE: reflectance = (DN + BOA_ADD_OFFSET) / 10000 (dimensionless)."""
BOA_ADD_OFFSET_DN = 1000
"""DN offset added from processing baseline 04.00 on (written as BOA_ADD_OFFSET = -1000 in the
product metadata: reflectance = (DN - 1000) / 10000). Zero before 04.00."""
OFFSET_BASELINE = "04.00"
"""First processing baseline with the BOA_ADD_OFFSET (25 January 2022)."""

SCL_NO_DATA = 0
SCL_SATURATED_DEFECTIVE = 1
SCL_DARK_FEATURES = 2
SCL_CLOUD_SHADOW = 3
SCL_VEGETATION = 4
SCL_NOT_VEGETATED = 5
SCL_WATER = 6
SCL_UNCLASSIFIED = 7
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_THIN_CIRRUS = 10
SCL_SNOW_ICE = 11
"""Sen2Cor scene classification (SCL) values (Sen2Cor L2A Product User Manual)."""
SCL_CLOUD_CLASSES: tuple[int, ...] = (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_THIN_CIRRUS)
"""The SCL classes counted in ``eo:cloud_cover`` (medium + high probability clouds + thin cirrus)."""

FINE_RES_M = 10.0
"""Resolution of the 10 m bands, in metres."""
SCL_RES_M = 20.0
"""Resolution of the SCL asset, in metres."""
COARSE_RES_M = 60.0
"""Resolution at which the parts of a tile outside every region are rendered, in metres."""

DEFAULT_TILE_SIZE_M = 30_000.0
"""Side of a synthetic tile, in metres (small for speed; real Sentinel-2 tiles are 109.8 km)."""
DEFAULT_TILE_OVERLAP_M = 2_700.0
"""Overlap of neighbouring synthetic tiles, in metres (about 9 % of the side, as for real tiles)."""
REAL_TILE_SIZE_M = 109_800.0
"""Side of a real Sentinel-2 MGRS tile (10980 pixels of 10 m)."""
REAL_TILE_OVERLAP_M = 9_780.0
"""Overlap that gives real-size tiles a 60 m-aligned step (100.02 km; real tiles: 9.8 km, 100 km)."""

COG_BLOCK_PX = 512
"""Internal tile size of the written COGs for rasters up to 8192 pixels a side (1024 above)."""

REGION_SLUMPS_PER_KM2 = 0.8
"""Default density of random slumps, per km^2 of region. At the median size of 1.2 ha this gives
about 1 % of the area as RTS, the order of the paper's 1-2 km^2 per 100 km^2 site."""
DEM_YEAR = 2013
"""Year of the DEM surface: Copernicus DEM comes from TanDEM-X acquisitions of 2011-2015, so slumps
younger than this are not in the DEM."""

# --- Reflectance end-members (B02, B03, B04, B08), dimensionless surface reflectance -----------

TUNDRA_SPARSE = (0.040, 0.060, 0.065, 0.200)
"""Dry, sparse tundra (NDVI about 0.5)."""
TUNDRA_LUSH = (0.026, 0.050, 0.038, 0.300)
"""Lush shrub tundra (NDVI about 0.78)."""
WET_TUNDRA = (0.030, 0.046, 0.040, 0.190)
"""Wet sedge tundra of valley floors and lake shores (NDVI about 0.65)."""
LAKE_WATER = (0.035, 0.034, 0.020, 0.012)
"""Clear lake water (NIR well below 0.03)."""
RIVER_WATER = (0.055, 0.065, 0.055, 0.025)
"""Turbid river water."""
GRAVEL = (0.110, 0.130, 0.150, 0.190)
"""Gravel bars (bare, NDVI about 0.12)."""
BANK = (0.085, 0.105, 0.125, 0.165)
"""Eroding river banks: bare mineral soil on steep slopes (a false friend of RTS)."""
SAND = (0.150, 0.180, 0.210, 0.250)
"""Bright sand patches (NDVI about 0.09)."""
SLUMP_FLOOR = (0.075, 0.095, 0.115, 0.150)
"""Wet thawed mud of an active slump floor (NDVI about 0.13)."""
SNOW = (0.85, 0.83, 0.80, 0.70)
"""Fresh to old snow."""
CLOUD = (0.68, 0.66, 0.65, 0.63)
"""Optically thick cloud; scaled by 0.6-1.0 by the cloud texture (0.4-0.7)."""

COVER_TUNDRA = 1
COVER_WET_TUNDRA = 2
COVER_SAND = 3
COVER_BANK = 4
COVER_GRAVEL = 5
COVER_RIVER = 6
COVER_LAKE = 7
COVER_SLUMP = 8
"""Land-cover codes of :meth:`World.land_cover` (higher code wins where features overlap)."""

_COVER_REFLECTANCE = np.array(
    [TUNDRA_SPARSE, TUNDRA_SPARSE, WET_TUNDRA, SAND, BANK, GRAVEL, RIVER_WATER, LAKE_WATER, SLUMP_FLOOR],
    dtype=np.float32,
)
_BASE_ELEVATION_M = 120.0
_EPS = 1e-9

HILLSLOPE_DEG: tuple[float, float] = (8.0, 14.0)
"""Range of the downslope gradient, in degrees, at the centroid of each user-given slump (uniform,
seeded). Real RTS form on slopes (valley sides, lake shores, coastal bluffs) with the headwall
upslope; the range is this generator's choice, inside the 5-20 degrees its random slumps are placed
on. The local hillslope built under a given slump tops up the terrain's own slope to this value."""
HILLSLOPE_WIDTH_M: tuple[float, float] = (60.0, 500.0)
"""Bounds of the half-width (tanh scale) of a given slump's hillslope step, in metres; within them
the width is 1.25 times the slump's half-length along the slope plus 20 m."""
HILLSLOPE_REACH_FACTOR = 3.0
"""The hillslope fades to zero at this many widths from the slump's centroid (along and across)."""
HILLSLOPE_FOLLOW_TERRAIN_DEG = 3.0
"""A given slump on terrain at least this steep (degrees) faces the terrain's own downslope
direction; on flatter ground it faces the direction of a smooth seeded field (so that neighbouring
slumps face about the same way, as along one lake shore or valley side)."""
HILLSLOPE_DIRECTION_SPACING_M = 4000.0
"""Lattice spacing of the smooth seeded direction field, in metres."""


# --- Deterministic hashing: every random value is a pure function of seeds and position --------


def _key(*parts: object) -> int:
    """A stable 63-bit key from any reprs (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seeded_rng(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded from any reprs (stable across runs and machines)."""
    return np.random.default_rng(_key(*parts))


def _mix64(z: U64) -> U64:
    """SplitMix64 finaliser (Steele et al. 2014), elementwise, wrapping arithmetic."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _lattice_hash(ix: npt.NDArray[np.int64], iy: npt.NDArray[np.int64], key: int) -> U64:
    """(len(iy), len(ix)) hashes of the integer lattice points (ix, iy) under ``key``."""
    hx = _mix64(ix.astype(np.uint64) ^ np.uint64(key))
    hy = _mix64(iy.astype(np.uint64) + np.uint64(key ^ 0x5DEECE66D))
    return _mix64(hy[:, None] ^ (hx[None, :] * np.uint64(0x9E3779B97F4A7C15)))


def _smoothstep(t: F64) -> F64:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _value_noise(xs: F64, ys: F64, spacing_m: float, key: int) -> F64:
    """Smooth value noise in [-1, 1] on the grid of x centres ``xs`` and y centres ``ys``.

    Lattice values at multiples of ``spacing_m`` are hashed from their global indices and
    interpolated with smoothstep weights, separably, so any pixel's value depends only on its
    coordinates (a tile and a site window of the same scene agree).
    """
    gx = xs / spacing_m
    gy = ys / spacing_m
    ix0 = np.floor(gx)
    iy0 = np.floor(gy)
    sx = _smoothstep(gx - ix0)
    sy = _smoothstep(gy - iy0)
    ix_min, iy_min = int(ix0.min()), int(iy0.min())
    lx = np.arange(ix_min, int(ix0.max()) + 2, dtype=np.int64)
    ly = np.arange(iy_min, int(iy0.max()) + 2, dtype=np.int64)
    lattice = (_lattice_hash(lx, ly, key) >> np.uint64(11)).astype(np.float64) * (2.0 / 2.0**53) - 1.0
    jx = (ix0 - ix_min).astype(np.intp)
    jy = (iy0 - iy_min).astype(np.intp)
    rows = lattice[jy] * (1.0 - sy)[:, None] + lattice[jy + 1] * sy[:, None]
    out: F64 = rows[:, jx] * (1.0 - sx)[None, :] + rows[:, jx + 1] * sx[None, :]
    return out


def _fbm(xs: F64, ys: F64, octaves: Sequence[tuple[float, float]], key: int) -> F64:
    """Sum of value-noise octaves given as (spacing_m, weight)."""
    total = np.zeros((ys.size, xs.size))
    for i, (spacing, weight) in enumerate(octaves):
        total += weight * _value_noise(xs, ys, spacing, key + 7919 * (i + 1))
    return total


def _pixel_uniforms(grid: SiteGrid, key: int) -> F32:
    """Four independent uniform variates in [-sqrt(3), sqrt(3)) (unit variance) per pixel: (4, H, W).

    Hashed from the pixel's global index on the grid's resolution, so a pixel draws the same values
    in every window that contains it.
    """
    xs, ys = _centres(grid)
    ix = np.floor(xs / grid.res_m).astype(np.int64)
    iy = np.floor(ys / grid.res_m).astype(np.int64)
    h = _lattice_hash(ix, iy, key)
    out = np.empty((4, grid.height, grid.width), dtype=np.float32)
    for b in range(4):
        u16 = ((h >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.float32)
        out[b] = (u16 * np.float32(1.0 / 65536.0) - np.float32(0.5)) * np.float32(math.sqrt(12.0))
    return out


# --- Grids --------------------------------------------------------------------------------------


def _centres(grid: SiteGrid) -> tuple[F64, F64]:
    """The x centres (W,) and y centres (H,) of a grid's pixels."""
    xs: F64 = grid.x_min + (np.arange(grid.width, dtype=np.float64) + 0.5) * grid.res_m
    ys: F64 = grid.y_max - (np.arange(grid.height, dtype=np.float64) + 0.5) * grid.res_m
    return xs, ys


def _check_aligned(grid: SiteGrid, res_m: float) -> None:
    if abs(grid.res_m - res_m) > 1e-9:
        raise ValueError(f"grid resolution must be {res_m} m, got {grid.res_m}")
    for name, value in (("x_min", grid.x_min), ("y_max", grid.y_max)):
        if abs(value / res_m - round(value / res_m)) > 1e-6:
            raise ValueError(f"grid {name}={value} is not a multiple of {res_m} m")


def _snapped_grid(epsg: int, bounds: Bounds, res_m: float) -> SiteGrid:
    """The grid of ``res_m`` pixels, edges on multiples of ``res_m``, that covers ``bounds``."""
    x0 = math.floor(bounds[0] / res_m + 1e-9) * res_m
    y0 = math.floor(bounds[1] / res_m + 1e-9) * res_m
    x1 = math.ceil(bounds[2] / res_m - 1e-9) * res_m
    y1 = math.ceil(bounds[3] / res_m - 1e-9) * res_m
    return SiteGrid(epsg, res_m, x0, y1, max(1, round((x1 - x0) / res_m)), max(1, round((y1 - y0) / res_m)))


def _overlap(a: SiteGrid, b: SiteGrid) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Index windows (rows, cols) into ``a`` and into ``b`` of their common area (same, aligned res)."""
    res = a.res_m
    ax0, ay0, ax1, ay1 = a.bounds
    bx0, by0, bx1, by1 = b.bounds
    x0, x1 = max(ax0, bx0), min(ax1, bx1)
    y0, y1 = max(ay0, by0), min(ay1, by1)
    if x1 - x0 < res / 2 or y1 - y0 < res / 2:
        return None

    def window(g: SiteGrid) -> tuple[slice, slice]:
        c0 = round((x0 - g.x_min) / res)
        r0 = round((g.y_max - y1) / res)
        return slice(r0, r0 + round((y1 - y0) / res)), slice(c0, c0 + round((x1 - x0) / res))

    return window(a), window(b)


def _inside(inner: Bounds, outer: Bounds) -> bool:
    return (
        inner[0] >= outer[0] - _EPS
        and inner[1] >= outer[1] - _EPS
        and inner[2] <= outer[2] + _EPS
        and (inner[3] <= outer[3] + _EPS)
    )


def _intersects(a: Bounds, b: Bounds) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# --- Slumps -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slump:
    """One retrogressive thaw slump.

    Attributes
    ----------
    polygon_utm : the slump floor in the world's UTM CRS, as drawn in ``ref_year``.
    first_year : first summer the slump exists; absent before.
    growth_m_per_yr : outward growth of the outline in metres per year (the polygon is buffered by
        ``growth_m_per_yr * (year - ref_year)``; negative buffers shrink it before ``ref_year``).
    ref_year : the year ``polygon_utm`` shows; defaults to ``first_year``.
    depth_m : how far the floor lies below the surrounding surface, in metres (seen by the DEM).
    """

    polygon_utm: BaseGeometry
    first_year: int
    growth_m_per_yr: float = 2.0
    ref_year: int | None = None
    depth_m: float = 3.0

    def extent(self, year: int) -> BaseGeometry | None:
        """The slump floor in ``year`` (None before ``first_year`` or when shrunk to nothing)."""
        if year < self.first_year:
            return None
        ref = self.first_year if self.ref_year is None else self.ref_year
        distance = self.growth_m_per_yr * (year - ref)
        shape = self.polygon_utm if distance == 0 else self.polygon_utm.buffer(distance, quad_segs=4)
        return None if shape.is_empty or shape.area < 1.0 else shape


def slumps_from_wgs84(
    polygons: Iterable[tuple[BaseGeometry, int]],
    epsg: int,
    *,
    seed: int = 0,
    years_active_before: tuple[int, int] = (3, 15),
    growth_m_per_yr: tuple[float, float] = (1.0, 4.0),
) -> list[Slump]:
    """Slumps from WGS84 (lon, lat) polygons such as real label polygons.

    Parameters
    ----------
    polygons : (polygon, year drawn) pairs; invalid geometries are repaired with ``make_valid``.
    epsg : the world's UTM zone.
    seed : seeds the random first year (``years_active_before`` years before the year drawn) and
        growth rate (uniform in ``growth_m_per_yr``, metres per year) of each slump.

    Returns
    -------
    One :class:`Slump` per non-empty polygon, with ``ref_year`` = the year drawn, so the slump has
    exactly the label's shape in that year and is a little smaller before and larger after.
    """
    rng = seeded_rng("slumps_from_wgs84", seed, epsg)
    out: list[Slump] = []
    for geometry, year in polygons:
        shape = project_geometry(shapely.make_valid(geometry), epsg)
        areal = [g for g in getattr(shape, "geoms", [shape]) if isinstance(g, Polygon | MultiPolygon)]
        if not areal:
            continue
        merged = areal[0] if len(areal) == 1 else shapely.union_all(areal)
        if merged.is_empty:
            continue
        out.append(
            Slump(
                polygon_utm=merged,
                first_year=int(year) - int(rng.integers(years_active_before[0], years_active_before[1] + 1)),
                growth_m_per_yr=float(rng.uniform(*growth_m_per_yr)),
                ref_year=int(year),
                depth_m=float(rng.uniform(2.0, 6.0)),
            )
        )
    return out


# --- Terrain features -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Valley:
    ox: float
    oy: float
    tx: float
    ty: float
    depth_m: float
    width_m: float
    meander_amp_m: float
    meander_len_m: float
    meander_phase: float
    half_length_m: float
    river_half_m: float
    bar_width_m: float
    bar_len_m: float
    bar_phase: float

    def local(self, x: F64, y: F64) -> tuple[F64, F64]:
        """Along-valley coordinate u and signed distance d from the meandering centre line."""
        dx, dy = x - self.ox, y - self.oy
        u = dx * self.tx + dy * self.ty
        v = -dx * self.ty + dy * self.tx
        d = v - self.meander_amp_m * np.sin(2.0 * np.pi * u / self.meander_len_m + self.meander_phase)
        return u, d

    def taper(self, u: F64) -> F64:
        return 1.0 - _smoothstep((np.abs(u) - 0.75 * self.half_length_m) / (0.25 * self.half_length_m))

    def reach_m(self) -> float:
        return 4.0 * self.width_m + self.meander_amp_m


@dataclass(frozen=True)
class _Ellipse:
    cx: float
    cy: float
    a: float
    b: float
    cos: float
    sin: float
    level_m: float = 0.0

    def radius(self, x: F64, y: F64) -> F64:
        dx, dy = x - self.cx, y - self.cy
        u = (dx * self.cos + dy * self.sin) / self.a
        v = (-dx * self.sin + dy * self.cos) / self.b
        r: F64 = np.sqrt(u * u + v * v)
        return r


@dataclass(frozen=True)
class _Hillslopes:
    """Local hillslopes under user-given slumps, as arrays with one entry per slump.

    Hillslope i is a smooth step down along the unit vector (dx, dy): with s and t the along- and
    across-slope distances from (cx, cy), it adds ``-height_m * tanh(s / width_m) * B(s / reach_m) *
    B(t / reach_m)`` metres, B(u) = (1 - u^2)^2 for |u| < 1 and 0 beyond (smooth, compact). Its
    downslope gradient at (cx, cy) is ``height_m / width_m``.
    """

    cx: F64
    cy: F64
    dx: F64
    dy: F64
    width_m: F64
    reach_m: F64
    height_m: F64

    def __len__(self) -> int:
        return int(self.cx.size)

    def half_extent(self) -> F64:
        """Half-side of each hillslope's bounding box (the rotated square |s|, |t| < reach), in m."""
        extent: F64 = self.reach_m * (np.abs(self.dx) + np.abs(self.dy))
        return extent

    def overlapping(self, bounds: Bounds) -> npt.NDArray[np.intp]:
        """Indices of the hillslopes whose bounding box meets ``bounds`` (x0, y0, x1, y1)."""
        r = self.half_extent()
        hit = (
            (self.cx + r > bounds[0])
            & (self.cx - r < bounds[2])
            & (self.cy + r > bounds[1])
            & (self.cy - r < bounds[3])
            & (self.height_m > 0.0)
        )
        return np.nonzero(hit)[0]

    def value(self, i: int, x: F64, y: F64) -> F64:
        """Elevation added by hillslope ``i`` at (x, y), in metres."""
        ex, ey = x - self.cx[i], y - self.cy[i]
        s = ex * self.dx[i] + ey * self.dy[i]
        t = -ex * self.dy[i] + ey * self.dx[i]
        z, _, _ = _unit_step(s, t, float(self.width_m[i]), float(self.reach_m[i]))
        out: F64 = self.height_m[i] * z
        return out


@dataclass(frozen=True)
class _Terrain:
    hills: tuple[tuple[float, float, float, float], ...]  # (kx, ky, phase, amplitude)
    valleys: tuple[_Valley, ...]
    lakes: tuple[_Ellipse, ...]
    sand: tuple[_Ellipse, ...]
    hillslopes: _Hillslopes | None = None


@dataclass
class _Static:
    """Scene-independent layers of a grid."""

    refl: F32  # (4, H, W) clear-sky, flat-terrain, peak-season reflectance
    veg: Bool
    water: Bool
    dzdx: F32
    dzdy: F32
    inv_norm: F32
    snow_field: F32
    slump_texture: F32


@dataclass
class _Rendered:
    refl: F32  # (4, H, W), no-data not applied
    scl: U8  # (H, W) at the grid's resolution, no-data not applied


# --- Scenes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneSpec:
    """One synthetic Sentinel-2 acquisition.

    Attributes
    ----------
    datetime : sensing time (timezone-aware, UTC).
    platform : "Sentinel-2A", "Sentinel-2B" or "Sentinel-2C".
    processing_baseline : e.g. "02.12", "04.00", "05.09"; from "04.00" on, DN carry the +1000 offset.
    relative_orbit : relative orbit number, 1-143.
    aoi_bounds : (x_min, y_min, x_max, y_max) in the world's UTM CRS: the area the fractions refer to.
    cloud_fraction : fraction of the AOI's valid pixels flagged cloud (SCL 8, 9, 10).
    tile_cloud_fraction : cloud fraction of the wider surroundings (the AOI plus 15 km around it),
        which sets the tiles' ``eo:cloud_cover`` (approximately; the items carry the exact value).
        Clouds can thus lie away from a clear AOI, or on an AOI in an otherwise clear tile.
    snow_fraction : fraction of the AOI's land pixels under snow (SCL 11 where not cloudy).
    nodata_fraction : fraction of the AOI beyond the swath's no-data edge (a straight diagonal line
        through the tiles; DN 0 and SCL 0 beyond it).
    seed : seeds the scene's clouds, noise, gains and edge direction.
    """

    datetime: datetime
    platform: str
    processing_baseline: str
    relative_orbit: int
    aoi_bounds: Bounds
    cloud_fraction: float = 0.0
    tile_cloud_fraction: float = 0.0
    snow_fraction: float = 0.0
    nodata_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.datetime.tzinfo is None or self.datetime.utcoffset() != timedelta(0):
            raise ValueError(f"datetime must be timezone-aware UTC, got {self.datetime!r}")
        if self.platform not in ("Sentinel-2A", "Sentinel-2B", "Sentinel-2C"):
            raise ValueError(f"platform must be Sentinel-2A/B/C, got {self.platform!r}")
        parts = self.processing_baseline.split(".")
        if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
            raise ValueError(f"processing_baseline must look like '04.00', got {self.processing_baseline!r}")
        if not 1 <= self.relative_orbit <= 143:
            raise ValueError(f"relative_orbit must be 1..143, got {self.relative_orbit}")
        for name in ("cloud_fraction", "tile_cloud_fraction", "snow_fraction", "nodata_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        x0, y0, x1, y1 = self.aoi_bounds
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"aoi_bounds is empty: {self.aoi_bounds}")

    @property
    def year(self) -> int:
        """Calendar year of the acquisition."""
        return self.datetime.year

    @property
    def dn_offset(self) -> int:
        """DN offset of this scene's processing baseline: 1000 from 04.00 on, else 0."""
        return BOA_ADD_OFFSET_DN if baseline_has_offset(self.processing_baseline) else 0


def baseline_has_offset(processing_baseline: str) -> bool:
    """True for processing baselines >= 04.00, whose DN carry BOA_ADD_OFFSET = -1000."""

    def parts(baseline: str) -> tuple[int, int]:
        major, minor = baseline.split(".")
        return int(major), int(minor)

    return parts(processing_baseline) >= parts(OFFSET_BASELINE)


@dataclass(frozen=True)
class _SceneParams:
    sun_zenith_deg: float
    sun_azimuth_deg: float
    cloud_t_aoi: float
    cloud_t_out: float
    snow_t: float
    edge: tuple[float, float, float] | None  # (nx, ny, c): no data where nx*x + ny*y > c
    shadow_dx: float
    shadow_dy: float
    cloud_zone: Bounds  # the AOI and the AOI shifted by the shadow offset: clouds there follow cloud_t_aoi
    nir_factor: float
    red_factor: float
    gains: tuple[float, float, float, float]


CLOUD_OCTAVES: tuple[tuple[float, float], ...] = ((6000.0, 0.45), (2500.0, 0.30), (900.0, 0.17), (300.0, 0.08))
"""Cloud field octaves as (lattice spacing in m, weight): cells of a few km with ragged edges."""
CLOUD_FRINGE = 0.02
"""Haze below the cloud flag threshold, in cloud-field units (a faint, unflagged fringe)."""
CLOUD_RAMP = 0.18
"""Cloud-field distance above the threshold over which opacity ramps to 1 (soft edges)."""
CONTEXT_M = 15_000.0
"""The tile-wide cloud fraction applies to the AOI plus this margin, in metres."""
BLEND_M = 2_000.0
"""Distance over which the cloud threshold changes from its AOI value to its surroundings', in m."""


# --- The world ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """A deterministic landscape in one UTM zone.

    Attributes
    ----------
    epsg : the UTM zone's EPSG code.
    regions : (x_min, y_min, x_max, y_max) rectangles in metres, snapped to multiples of 60 m and
        non-overlapping, where the landscape has its full 10 m detail (lakes, valleys, sand, random
        slumps); elsewhere only hills and valley ends exist and scenes are rendered at 60 m.
    seed : seeds everything.
    slumps : every slump (user-given and random): see :meth:`generate`.
    given_slumps : how many of the leading ``slumps`` are user-given; each of them sits on a local
        hillslope (see :data:`HILLSLOPE_DEG`) that is part of the terrain.

    Build one with :meth:`generate`. Caches of rendered layers live inside (not thread-safe).
    """

    epsg: int
    regions: tuple[Bounds, ...]
    seed: int = 0
    slumps: tuple[Slump, ...] = ()
    given_slumps: int = 0
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    @classmethod
    def generate(
        cls,
        epsg: int,
        regions: Sequence[Bounds],
        seed: int = 0,
        *,
        slumps: Sequence[Slump] = (),
        slumps_per_km2: float | Sequence[float] = REGION_SLUMPS_PER_KM2,
    ) -> World:
        """A world with the given slumps plus random ones on the valley walls of each region.

        Parameters
        ----------
        epsg : the UTM zone.
        regions : bounds in metres; snapped outward to 60 m, overlapping ones are merged.
        seed : seeds the landscape and the random slumps.
        slumps : user-given slumps (e.g. from :func:`slumps_from_wgs84`). Real slumps sit on slopes
            with the headwall upslope, wherever the random terrain happens to be flat, so the
            terrain gets a smooth local hillslope under each of them: a step down of
            :data:`HILLSLOPE_DEG` degrees at the slump's centroid (the terrain's own slope
            included), facing the terrain's downslope direction where it is steeper than
            :data:`HILLSLOPE_FOLLOW_TERRAIN_DEG`, else a seeded direction. Lakes keep clear of these
            hillslopes. The DEM and the illumination of every scene see the same elevation.
        slumps_per_km2 : density of random slumps, one value or one per region (0: none, e.g. for
            regions whose slumps all come from real labels).
        """
        snapped = [
            _snapped_grid(epsg, (float(r[0]), float(r[1]), float(r[2]), float(r[3])), COARSE_RES_M).bounds
            for r in regions
        ]
        densities = (
            [float(slumps_per_km2)] * len(snapped)
            if isinstance(slumps_per_km2, int | float)
            else [float(d) for d in slumps_per_km2]
        )
        if len(densities) != len(snapped):
            raise ValueError(f"slumps_per_km2 has {len(densities)} values for {len(snapped)} regions")
        merged, merged_density = _merge_regions(snapped, densities)
        given = len(slumps)
        base = cls(epsg=epsg, regions=tuple(merged), seed=seed, slumps=tuple(slumps), given_slumps=given)
        placed: list[Slump] = []
        for region, density in zip(merged, merged_density, strict=True):
            placed.extend(base._random_slumps(region, density, [*slumps, *placed]))
        world = cls(epsg=epsg, regions=tuple(merged), seed=seed, slumps=(*slumps, *placed), given_slumps=given)
        world._cache["terrain"] = base._terrain  # the terrain does not depend on the slumps
        return world

    # -- terrain ------------------------------------------------------------------------------

    @property
    def _terrain(self) -> _Terrain:
        terrain: _Terrain | None = self._cache.get("terrain")
        if terrain is None:
            terrain = self._build_terrain()
            self._cache["terrain"] = terrain
        return terrain

    def _build_terrain(self) -> _Terrain:
        rng = seeded_rng("hills", self.seed, self.epsg)
        hills = []
        for _ in range(6):
            wavelength = float(np.exp(rng.uniform(np.log(1500.0), np.log(8000.0))))
            angle = rng.uniform(0.0, np.pi)
            k = 2.0 * np.pi / wavelength
            hills.append((k * math.cos(angle), k * math.sin(angle), rng.uniform(0, 2 * np.pi), wavelength * 0.0012))
        valleys: list[_Valley] = []
        for region in self.regions:
            valleys.extend(self._region_valleys(region))
        hillslopes = _given_hillslopes(
            _Terrain(tuple(hills), tuple(valleys), (), ()), self.slumps[: self.given_slumps], self.seed
        )
        partial = _Terrain(tuple(hills), tuple(valleys), (), (), hillslopes)
        lakes: list[_Ellipse] = []
        sand: list[_Ellipse] = []
        for region in self.regions:
            region_lakes = _place_ellipses(
                partial,
                region,
                seeded_rng("lakes", self.seed, region),
                per_km2=0.25,
                radius_m=(60.0, 700.0),
                max_slope_deg=2.0,
                avoid=lakes,
                valley_clearance=2.5,
                below_m=4.0,
                keep_clear=hillslopes,
            )
            lakes.extend(
                replace(
                    lake, level_m=float(_base_elevation(partial, np.array([lake.cx]), np.array([lake.cy]))[0]) - 0.5
                )
                for lake in region_lakes
            )
        with_lakes = _Terrain(tuple(hills), tuple(valleys), tuple(lakes), (), hillslopes)
        for region in self.regions:
            sand.extend(
                _place_ellipses(
                    with_lakes,
                    region,
                    seeded_rng("sand", self.seed, region),
                    per_km2=0.3,
                    radius_m=(13.0, 56.0),
                    max_slope_deg=4.0,
                    avoid=[*lakes, *sand],
                    valley_clearance=1.5,
                    below_m=None,
                )
            )
        return _Terrain(tuple(hills), tuple(valleys), tuple(lakes), tuple(sand), hillslopes)

    def _region_valleys(self, region: Bounds) -> list[_Valley]:
        rng = seeded_rng("valleys", self.seed, region)
        x0, y0, x1, y1 = region
        area_km2 = (x1 - x0) * (y1 - y0) / 1e6
        diagonal = math.hypot(x1 - x0, y1 - y0)
        out = []
        for _ in range(max(1, round(area_km2 / 35.0))):
            angle = rng.uniform(0.0, np.pi)
            depth = rng.uniform(20.0, 55.0)
            wall_deg = rng.uniform(6.0, 16.0)
            meander_len = rng.uniform(1200.0, 3500.0)
            out.append(
                _Valley(
                    ox=float(rng.uniform(x0, x1)),
                    oy=float(rng.uniform(y0, y1)),
                    tx=math.cos(angle),
                    ty=math.sin(angle),
                    depth_m=float(depth),
                    # the steepest wall of -D exp(-(d/W)^2) is 0.858 D / W
                    width_m=float(0.858 * depth / math.tan(math.radians(wall_deg))),
                    meander_amp_m=float(rng.uniform(0.02, 0.08) * meander_len),
                    meander_len_m=float(meander_len),
                    meander_phase=float(rng.uniform(0, 2 * np.pi)),
                    half_length_m=float(diagonal * rng.uniform(0.6, 1.0)),
                    river_half_m=float(rng.uniform(4.0, 12.0)),
                    bar_width_m=float(rng.uniform(15.0, 35.0)),
                    bar_len_m=float(rng.uniform(250.0, 600.0)),
                    bar_phase=float(rng.uniform(0, 2 * np.pi)),
                )
            )
        return out

    def elevation_m(self, x: npt.ArrayLike, y: npt.ArrayLike) -> F64:
        """Elevation in metres at UTM coordinates (x, y) (any broadcastable arrays).

        Rolling hills, incised valleys, the local hillslopes under user-given slumps, flat lake
        surfaces, and slump floors (as of :data:`DEM_YEAR`) lowered by their ``depth_m`` (looked
        up on the 10 m lattice).
        """
        xa, ya = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        elevation = _base_elevation(self._terrain, xa, ya)
        _apply_lakes(self._terrain, xa, ya, elevation)
        for index, region in enumerate(self.regions):
            depth, grid = self._slump_depth(index)
            inside = (xa >= region[0]) & (xa < region[2]) & (ya > region[1]) & (ya <= region[3])
            if inside.any():
                cols = np.minimum(((xa[inside] - grid.x_min) / grid.res_m).astype(np.intp), grid.width - 1)
                rows = np.minimum(((grid.y_max - ya[inside]) / grid.res_m).astype(np.intp), grid.height - 1)
                elevation[inside] -= depth[rows, cols]
        return elevation

    def _slump_depth(self, region_index: int) -> tuple[F32, SiteGrid]:
        cache_key = ("slump_depth", region_index)
        if cache_key not in self._cache:
            grid = _snapped_grid(self.epsg, self.regions[region_index], FINE_RES_M)
            depth = np.zeros(grid.shape, dtype=np.float32)
            for slump in self.slumps:
                shape = slump.extent(DEM_YEAR)
                if shape is not None:
                    window = _rasterise(shape, grid)
                    if window is not None:
                        (rows, cols), mask = window
                        depth[rows, cols][mask] = slump.depth_m
            self._cache[cache_key] = (depth, grid)
        cached: tuple[F32, SiteGrid] = self._cache[cache_key]
        return cached

    def _downslope(self, x: F64, y: F64) -> tuple[F64, F64, F64]:
        """Slope in degrees and the unit downslope vector (x, y) of the terrain without slumps."""
        h = 10.0
        terrain = self._terrain
        dzdx = (_lake_elevation(terrain, x + h, y) - _lake_elevation(terrain, x - h, y)) / (2 * h)
        dzdy = (_lake_elevation(terrain, x, y + h) - _lake_elevation(terrain, x, y - h)) / (2 * h)
        norm = np.maximum(np.hypot(dzdx, dzdy), 1e-12)
        return np.degrees(np.arctan(norm)), -dzdx / norm, -dzdy / norm

    def _random_slumps(self, region: Bounds, per_km2: float, existing: Sequence[Slump]) -> list[Slump]:
        rng = seeded_rng("random_slumps", self.seed, region)
        x0, y0, x1, y1 = region
        target = round((x1 - x0) * (y1 - y0) / 1e6 * per_km2)
        if target <= 0:
            return []
        margin = min(250.0, (x1 - x0) / 4, (y1 - y0) / 4)
        n_candidates = max(400, target * 60)
        cx = rng.uniform(x0 + margin, x1 - margin, n_candidates)
        cy = rng.uniform(y0 + margin, y1 - margin, n_candidates)
        slope, down_x, down_y = self._downslope(cx, cy)
        water = _water_mask(self._terrain, cx, cy)
        ok = (slope >= 5.0) & (slope <= 20.0) & ~water
        taken: list[BaseGeometry] = [s.polygon_utm for s in existing]
        out: list[Slump] = []
        for x, y, dx, dy in zip(cx[ok], cy[ok], down_x[ok], down_y[ok], strict=True):
            if len(out) >= target:
                break
            # lognormal sizes: median 1.2 ha, most 0.5-3 ha, clipped to 0.1-10 ha (MISSION.md section 5)
            area_m2 = float(np.clip(np.exp(rng.normal(np.log(12_000.0), 0.75)), 1_000.0, 100_000.0))
            polygon = _horseshoe(float(x), float(y), float(dx), float(dy), area_m2, rng)
            if any(_near(g, polygon, 30.0) and polygon.distance(g) < 30.0 for g in taken):
                continue
            first_year = int(rng.integers(1995, 2016)) if rng.random() < 0.75 else int(rng.integers(2016, 2024))
            out.append(
                Slump(
                    polygon_utm=polygon,
                    first_year=first_year,
                    growth_m_per_yr=float(rng.uniform(1.0, 4.0)),
                    ref_year=max(2019, first_year),
                    depth_m=float(rng.uniform(2.0, 6.0)),
                )
            )
            taken.append(polygon)
        return out

    # -- land cover and slumps ------------------------------------------------------------------

    def slump_mask(self, grid: SiteGrid, year: int) -> Bool:
        """Pixels of ``grid`` whose centre lies on a slump floor in ``year`` (any aligned grid)."""
        mask = np.zeros(grid.shape, dtype=bool)
        grid_box = grid.bounds
        for index, slump in enumerate(self.slumps):
            shape = self._slump_extent(index, slump, year)
            if shape is None or not _intersects(shape.bounds, grid_box):
                continue
            window = _rasterise(shape, grid)
            if window is not None:
                (rows, cols), inside = window
                mask[rows, cols] |= inside
        return mask

    def _slump_extent(self, index: int, slump: Slump, year: int) -> BaseGeometry | None:
        cache_key = ("extent", index, year)
        if cache_key not in self._cache:
            self._cache[cache_key] = slump.extent(year)
        extent: BaseGeometry | None = self._cache[cache_key]
        return extent

    def land_cover(self, grid: SiteGrid, year: int | None = None) -> U8:
        """Land-cover codes (``COVER_*``) on ``grid``; with ``year``, slump floors are ``COVER_SLUMP``."""
        xs, ys = _centres(grid)
        cover, _ = _cover_fields(self._terrain, xs, ys)
        if year is not None:
            cover[self.slump_mask(grid, year)] = COVER_SLUMP
        return cover

    # -- rendering ----------------------------------------------------------------------------

    def _static(self, grid: SiteGrid) -> _Static:
        """Scene-independent layers on ``grid`` (any resolution)."""
        xs, ys = _centres(grid)
        res = grid.res_m
        xp = np.concatenate([[xs[0] - res], xs, [xs[-1] + res]])
        yp = np.concatenate([[ys[0] + res], ys, [ys[-1] - res]])
        elevation = self.elevation_m(xp[None, :], yp[:, None])
        dzdx = ((elevation[1:-1, 2:] - elevation[1:-1, :-2]) / (2 * res)).astype(np.float32)
        dzdy = ((elevation[:-2, 1:-1] - elevation[2:, 1:-1]) / (2 * res)).astype(np.float32)
        inv_norm = (1.0 / np.sqrt(1.0 + dzdx * dzdx + dzdy * dzdy)).astype(np.float32)
        cover, proximity = _cover_fields(self._terrain, xs, ys)
        key = _key("static", self.seed)
        vigour = np.clip(0.5 + 0.8 * _fbm(xs, ys, ((700.0, 0.6), (150.0, 0.4)), key) + 0.3 * proximity, 0.0, 1.0)
        refl = np.moveaxis(_COVER_REFLECTANCE[cover], -1, 0).copy()
        tundra = cover == COVER_TUNDRA
        sparse = np.asarray(TUNDRA_SPARSE, dtype=np.float32)[:, None]
        lush = np.asarray(TUNDRA_LUSH, dtype=np.float32)[:, None]
        v = vigour[tundra].astype(np.float32)
        refl[:, tundra] = sparse * (1 - v) + lush * v
        texture = 1.0 + 0.06 * _fbm(xs, ys, ((40.0, 1.0),), key + 1)
        bare = (cover >= COVER_SAND) & (cover <= COVER_GRAVEL)
        texture = np.where(bare, texture + 0.08 * _fbm(xs, ys, ((25.0, 1.0),), key + 2), texture)
        refl *= texture.astype(np.float32)[None]
        grain = _pixel_uniforms(grid, key + 3)[0] * np.float32(0.025)
        refl *= 1.0 + grain[None]
        snow_field = _snow_field(self.seed, xs, ys, proximity)
        slump_texture = _fbm(xs, ys, ((60.0, 0.6), (20.0, 0.4)), key + 5)
        return _Static(
            refl=refl.astype(np.float32),
            veg=(cover == COVER_TUNDRA) | (cover == COVER_WET_TUNDRA),
            water=(cover == COVER_LAKE) | (cover == COVER_RIVER),
            dzdx=dzdx,
            dzdy=dzdy,
            inv_norm=inv_norm,
            snow_field=snow_field.astype(np.float32),
            slump_texture=slump_texture.astype(np.float32),
        )

    def _region_static(self, region_index: int) -> tuple[_Static, SiteGrid]:
        cache_key = ("region_static", region_index)
        if cache_key not in self._cache:
            grid = _snapped_grid(self.epsg, self.regions[region_index], FINE_RES_M)
            self._cache[cache_key] = (self._static(grid), grid)
        cached: tuple[_Static, SiteGrid] = self._cache[cache_key]
        return cached

    def _lru(self, name: str, key: Any, size: int) -> OrderedDict[Any, Any]:
        store: OrderedDict[Any, Any] = self._cache.setdefault(name, OrderedDict())
        if key in store:
            store.move_to_end(key)
        while len(store) > size:
            store.popitem(last=False)
        return store

    def _params(self, spec: SceneSpec) -> _SceneParams:
        store = self._lru("params", spec, 16)
        if spec not in store:
            store[spec] = _scene_params(self, spec)
        params: _SceneParams = store[spec]
        return params

    def _render(self, spec: SceneSpec, grid: SiteGrid, static: _Static) -> _Rendered:
        return _render(self, spec, self._params(spec), grid, static)

    def _fine(self, spec: SceneSpec, region_index: int) -> tuple[_Rendered, SiteGrid]:
        """A region rendered at 10 m for ``spec`` (cached: every tile crops the same arrays)."""
        store = self._lru("fine", (spec, region_index), 4)
        key = (spec, region_index)
        if key not in store:
            static, grid = self._region_static(region_index)
            store[key] = (self._render(spec, grid, static), grid)
        cached: tuple[_Rendered, SiteGrid] = store[key]
        return cached

    def _coarse(self, spec: SceneSpec, grid60: SiteGrid) -> _Rendered:
        store = self._lru("coarse", (spec, grid60), 2)
        key = (spec, grid60)
        if key not in store:
            store[key] = self._render(spec, grid60, self._static(grid60))
        rendered: _Rendered = store[key]
        return rendered

    def _assemble(self, spec: SceneSpec, grid: SiteGrid, band: int | None) -> npt.NDArray[Any]:
        """One band's reflectance (float32) or, with ``band=None``, the SCL at ``grid``'s resolution.

        ``grid`` is aligned at 10 m (bands) or 20 m (SCL, sampled at the top-left 10 m pixel of
        each 20 m pixel). Regions come from the cached 10 m renders, the rest from the 60 m render.
        """
        res = grid.res_m
        step = round(res / FINE_RES_M)
        dtype = np.float32 if band is not None else np.uint8
        out = np.zeros(grid.shape, dtype=dtype)
        if not any(_inside(grid.bounds, region) for region in self.regions):
            coarse_grid = _snapped_grid(self.epsg, grid.bounds, COARSE_RES_M)
            coarse = self._coarse(spec, coarse_grid)
            layer = coarse.refl[band] if band is not None else coarse.scl
            factor = round(COARSE_RES_M / res)
            r0 = round((coarse_grid.y_max - grid.y_max) / res)
            c0 = round((grid.x_min - coarse_grid.x_min) / res)
            block = layer[
                r0 // factor : (r0 + grid.height - 1) // factor + 1, c0 // factor : (c0 + grid.width - 1) // factor + 1
            ]
            upsampled = np.repeat(np.repeat(block, factor, axis=0), factor, axis=1)
            out[:] = upsampled[r0 % factor : r0 % factor + grid.height, c0 % factor : c0 % factor + grid.width]
        for index, region in enumerate(self.regions):
            if not _intersects(grid.bounds, region):
                continue
            fine, fine_grid = self._fine(spec, index)
            sampled = (
                fine_grid
                if step == 1
                else SiteGrid(
                    fine_grid.epsg,
                    res,
                    fine_grid.x_min,
                    fine_grid.y_max,
                    fine_grid.width // step,
                    fine_grid.height // step,
                )
            )
            windows = _overlap(grid, sampled)
            if windows is None:
                continue
            (dr, dc), (sr, sc) = windows
            layer = fine.refl[band] if band is not None else fine.scl
            src_rows = slice(sr.start * step, sr.stop * step, step)
            src_cols = slice(sc.start * step, sc.stop * step, step)
            out[dr, dc] = layer[src_rows, src_cols]
        return out

    def reflectance(self, grid: SiteGrid, scene: SceneSpec) -> F32:
        """Surface reflectance (B02, B03, B04, B08) of ``scene`` on an aligned 10 m ``grid``: (4, H, W).

        Clouds, shadows, snow, noise included; not quantised, and no-data not applied (see
        :func:`truth_reflectance` for what a reader of the written files gets).
        """
        _check_aligned(grid, FINE_RES_M)
        return np.stack([self._assemble(scene, grid, b) for b in range(4)]).astype(np.float32)


def _merge_regions(regions: list[Bounds], densities: list[float]) -> tuple[list[Bounds], list[float]]:
    merged = list(zip(regions, densities, strict=True))
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                (a, da), (b, db) = merged[i], merged[j]
                if a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]:
                    union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    merged[i] = (union, min(da, db))
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return [m[0] for m in merged], [m[1] for m in merged]


def _near(a: BaseGeometry, b: BaseGeometry, distance: float) -> bool:
    ax0, ay0, ax1, ay1 = a.bounds
    bx0, by0, bx1, by1 = b.bounds
    return bool(ax0 - distance < bx1 and bx0 - distance < ax1 and ay0 - distance < by1 and by0 - distance < ay1)


def _horseshoe(x: float, y: float, down_x: float, down_y: float, area_m2: float, rng: np.random.Generator) -> Polygon:
    """A slump floor: a headwall arc upslope of (x, y) and a tapering mud tongue downslope."""
    up = rng.uniform(0.7, 1.1)
    tongue = rng.uniform(0.6, 1.4)
    angles = np.linspace(-np.pi / 2, np.pi / 2, 15)
    radius = 1.0 + 0.08 * np.sin(3 * angles + rng.uniform(0, 2 * np.pi))
    arc_u = -up * np.cos(angles) * radius  # u: downslope
    arc_v = np.sin(angles) * radius
    tongue_u = np.array([0.5, 1.0, 1.0, 0.5]) * tongue
    tongue_v = np.array([0.85, 0.45, -0.45, -0.85])
    u = np.concatenate([arc_u, tongue_u])
    v = np.concatenate([arc_v, tongue_v])
    unit = Polygon(np.column_stack([u, v]))
    scale = math.sqrt(area_m2 / unit.area)
    xs = x + scale * (u * down_x - v * down_y)
    ys = y + scale * (u * down_y + v * down_x)
    return Polygon(np.column_stack([xs, ys]))


def _rasterise(shape: BaseGeometry, grid: SiteGrid) -> tuple[tuple[slice, slice], Bool] | None:
    """Pixel-centre inclusion of ``shape`` in the part of ``grid`` its bounds cover."""
    sx0, sy0, sx1, sy1 = shape.bounds
    res = grid.res_m
    c0 = max(0, math.floor((sx0 - grid.x_min) / res - 0.5))
    c1 = min(grid.width, math.ceil((sx1 - grid.x_min) / res + 0.5))
    r0 = max(0, math.floor((grid.y_max - sy1) / res - 0.5))
    r1 = min(grid.height, math.ceil((grid.y_max - sy0) / res + 0.5))
    if c1 <= c0 or r1 <= r0:
        return None
    xs = grid.x_min + (np.arange(c0, c1) + 0.5) * res
    ys = grid.y_max - (np.arange(r0, r1) + 0.5) * res
    inside = shapely.contains_xy(shape, xs[None, :], ys[:, None])
    return (slice(r0, r1), slice(c0, c1)), np.asarray(inside, dtype=bool)


def _base_elevation(terrain: _Terrain, x: F64, y: F64) -> F64:
    """Hills, valleys and the hillslopes under given slumps, without lakes or slump floors."""
    elevation = np.full(np.broadcast_shapes(x.shape, y.shape), _BASE_ELEVATION_M)
    for kx, ky, phase, amplitude in terrain.hills:
        elevation += amplitude * np.sin(kx * x + ky * y + phase)
    xa, ya = np.broadcast_arrays(x, y)
    for valley in terrain.valleys:
        u, d = valley.local(xa, ya)
        near = (np.abs(u) < valley.half_length_m) & (np.abs(d) < valley.reach_m())
        if near.any():
            un, dn = u[near], d[near]
            elevation[near] -= valley.depth_m * valley.taper(un) * np.exp(-((dn / valley.width_m) ** 2))
    if terrain.hillslopes is not None and elevation.size:
        _add_hillslopes(terrain.hillslopes, xa, ya, elevation)
    return elevation


def _bump(u: F64) -> tuple[F64, F64]:
    """B(u) = (1 - u^2)^2 for |u| < 1, else 0, and its derivative."""
    inside = np.abs(u) < 1.0
    w = np.where(inside, 1.0 - u * u, 0.0)
    return w * w, np.where(inside, -4.0 * u * w, 0.0)


def _unit_step(s: F64, t: F64, width_m: float | F64, reach_m: float | F64) -> tuple[F64, F64, F64]:
    """A unit-height hillslope step (see :class:`_Hillslopes`): value, d/ds and d/dt."""
    th = np.tanh(s / width_m)
    bs, dbs = _bump(s / reach_m)
    bt, dbt = _bump(t / reach_m)
    z: F64 = -th * bs * bt
    dz_ds: F64 = -((1.0 - th * th) / width_m * bs + th * dbs / reach_m) * bt
    dz_dt: F64 = -th * bs * dbt / reach_m
    return z, dz_ds, dz_dt


def _add_hillslopes(hillslopes: _Hillslopes, x: F64, y: F64, elevation: F64) -> None:
    """Add the hillslopes to ``elevation`` at the (broadcast) points (x, y), in place.

    Points given as a lattice (x varying along the last axis only, y along the first only, as
    :meth:`World.elevation_m` is called for rasters) are visited only in each hillslope's window.
    """
    lattice = x.ndim == 2 and (x.shape[0] == 1 or x.strides[0] == 0) and (y.shape[1] == 1 or y.strides[1] == 0)
    if lattice:
        xs, ys = x[0, :], y[:, 0]
        bounds = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    else:
        bounds = (float(x.min()), float(y.min()), float(x.max()), float(y.max()))
    reach = hillslopes.half_extent()
    for i in hillslopes.overlapping(bounds):
        cx, cy, r = float(hillslopes.cx[i]), float(hillslopes.cy[i]), float(reach[i])
        if lattice:
            cols = np.nonzero(np.abs(xs - cx) < r)[0]
            rows = np.nonzero(np.abs(ys - cy) < r)[0]
            if cols.size == 0 or rows.size == 0:
                continue
            window = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            elevation[window] += hillslopes.value(int(i), xs[window[1]][None, :], ys[window[0]][:, None])
        else:
            near = (np.abs(x - cx) < r) & (np.abs(y - cy) < r)
            if near.any():
                elevation[near] += hillslopes.value(int(i), x[near], y[near])


def _given_hillslopes(terrain: _Terrain, slumps: Sequence[Slump], seed: int) -> _Hillslopes | None:
    """The hillslopes under user-given slumps, on the terrain of hills and valleys (see :meth:`World.generate`).

    Heights are solved together (non-negative least squares) so that the downslope gradient at
    every centroid, the terrain's own slope and all neighbouring hillslopes included, is the slump's
    target from :data:`HILLSLOPE_DEG`: dense clusters of slumps do not stack their steps into cliffs.
    """
    if not slumps:
        return None
    n = len(slumps)
    rng = seeded_rng("hillslopes", seed, n)
    centroids = [s.polygon_utm.centroid for s in slumps]
    cx = np.array([c.x for c in centroids], dtype=np.float64)
    cy = np.array([c.y for c in centroids], dtype=np.float64)
    h = 10.0
    gx = (_base_elevation(terrain, cx + h, cy) - _base_elevation(terrain, cx - h, cy)) / (2 * h)
    gy = (_base_elevation(terrain, cx, cy + h) - _base_elevation(terrain, cx, cy - h)) / (2 * h)
    base_grad = np.hypot(gx, gy)
    key = _key("hillslope_direction", seed)
    fx = np.diagonal(_value_noise(cx, cy, HILLSLOPE_DIRECTION_SPACING_M, key)).copy()
    fy = np.diagonal(_value_noise(cx, cy, HILLSLOPE_DIRECTION_SPACING_M, key + 1)).copy()
    field_norm = np.hypot(fx, fy)
    fx = np.where(field_norm > 1e-9, fx / np.maximum(field_norm, 1e-9), 1.0)
    fy = np.where(field_norm > 1e-9, fy / np.maximum(field_norm, 1e-9), 0.0)
    follow = base_grad >= math.tan(math.radians(HILLSLOPE_FOLLOW_TERRAIN_DEG))
    safe = np.maximum(base_grad, 1e-12)
    dx = np.where(follow, -gx / safe, fx)
    dy = np.where(follow, -gy / safe, fy)
    width = np.empty(n)
    for i, slump in enumerate(slumps):
        parts = getattr(slump.polygon_utm, "geoms", [slump.polygon_utm])
        coords = np.concatenate([np.asarray(p.exterior.coords) for p in parts if hasattr(p, "exterior")])
        half = float(np.abs((coords[:, 0] - cx[i]) * dx[i] + (coords[:, 1] - cy[i]) * dy[i]).max())
        width[i] = min(max(1.25 * half + 20.0, HILLSLOPE_WIDTH_M[0]), HILLSLOPE_WIDTH_M[1])
    reach = HILLSLOPE_REACH_FACTOR * width
    target = np.tan(np.radians(rng.uniform(HILLSLOPE_DEG[0], HILLSLOPE_DEG[1], n)))
    wanted = np.maximum(target - (-(gx * dx + gy * dy)), 0.0)
    # a[i, j]: downslope gradient along d_i at centroid i of hillslope j of unit height
    ex = cx[:, None] - cx[None, :]
    ey = cy[:, None] - cy[None, :]
    s = ex * dx[None, :] + ey * dy[None, :]
    t = -ex * dy[None, :] + ey * dx[None, :]
    _, dz_ds, dz_dt = _unit_step(s, t, width[None, :], reach[None, :])
    along = dx[:, None] * dx[None, :] + dy[:, None] * dy[None, :]
    across = -dy[None, :] * dx[:, None] + dx[None, :] * dy[:, None]
    a = -(dz_ds * along + dz_dt * across)
    height, _ = nnls(a, wanted, maxiter=50 * n)
    return _Hillslopes(cx=cx, cy=cy, dx=dx, dy=dy, width_m=width, reach_m=reach, height_m=height)


def _apply_lakes(terrain: _Terrain, x: F64, y: F64, elevation: F64) -> None:
    for lake in terrain.lakes:
        reach = 1.6 * max(lake.a, lake.b)
        near = (np.abs(x - lake.cx) < reach) & (np.abs(y - lake.cy) < reach)
        if near.any():
            weight = 1.0 - _smoothstep((lake.radius(x[near], y[near]) - 1.0) / 0.6)
            elevation[near] = elevation[near] * (1.0 - weight) + lake.level_m * weight


def _lake_elevation(terrain: _Terrain, x: F64, y: F64) -> F64:
    xa, ya = np.broadcast_arrays(x, y)
    elevation = _base_elevation(terrain, xa, ya)
    _apply_lakes(terrain, xa, ya, elevation)
    return elevation


def _water_mask(terrain: _Terrain, x: F64, y: F64) -> Bool:
    water = np.zeros(x.shape, dtype=bool)
    for lake in terrain.lakes:
        water |= lake.radius(x, y) < 1.3
    for valley in terrain.valleys:
        u, d = valley.local(x, y)
        water |= (np.abs(d) < valley.river_half_m + valley.bar_width_m) & (np.abs(u) < valley.half_length_m)
    return water


def _place_ellipses(
    terrain: _Terrain,
    region: Bounds,
    rng: np.random.Generator,
    *,
    per_km2: float,
    radius_m: tuple[float, float],
    max_slope_deg: float,
    avoid: Sequence[_Ellipse],
    valley_clearance: float,
    below_m: float | None,
    keep_clear: _Hillslopes | None = None,
) -> list[_Ellipse]:
    """Ellipses on flat ground, clear of valleys, of ``avoid`` (lakes or sand patches) and of ``keep_clear``.

    With ``below_m``, only in lows: at least that far below the landscape's mean elevation.
    """
    x0, y0, x1, y1 = region
    target = round((x1 - x0) * (y1 - y0) / 1e6 * per_km2)
    out: list[_Ellipse] = []
    h = 10.0
    for _ in range(target * 30):
        if len(out) >= target:
            break
        a = float(np.exp(rng.uniform(np.log(radius_m[0]), np.log(radius_m[1]))))
        b = a * float(rng.uniform(0.5, 1.0))
        angle = rng.uniform(0, np.pi)
        margin = min(1.6 * a + 50.0, (x1 - x0) / 3, (y1 - y0) / 3)
        cx = float(rng.uniform(x0 + margin, x1 - margin))
        cy = float(rng.uniform(y0 + margin, y1 - margin))
        px, py = np.array([cx + h, cx - h, cx, cx]), np.array([cy, cy, cy + h, cy - h])
        e = _lake_elevation(terrain, px, py)
        slope = math.degrees(math.atan(math.hypot(e[0] - e[1], e[2] - e[3]) / (2 * h)))
        if slope > max_slope_deg or (below_m is not None and e.mean() > _BASE_ELEVATION_M - below_m):
            continue
        clear = True
        for valley in terrain.valleys:
            u, d = valley.local(np.array([cx]), np.array([cy]))
            if abs(u[0]) < valley.half_length_m and abs(d[0]) < valley_clearance * valley.width_m + 1.6 * a:
                clear = False
                break
        if not clear or any(math.hypot(cx - o.cx, cy - o.cy) < 1.6 * (a + max(o.a, o.b)) for o in [*avoid, *out]):
            continue
        if keep_clear is not None and bool(
            (np.hypot(keep_clear.cx - cx, keep_clear.cy - cy) < 1.6 * a + 1.42 * keep_clear.reach_m).any()
        ):
            continue
        out.append(_Ellipse(cx, cy, a, b, math.cos(angle), math.sin(angle)))
    return out


def _cover_fields(terrain: _Terrain, xs: F64, ys: F64) -> tuple[U8, F64]:
    """Land cover codes and valley proximity (0..1) on the grid of centres (xs, ys)."""
    xa, ya = np.broadcast_arrays(xs[None, :], ys[:, None])
    cover = np.full(xa.shape, COVER_TUNDRA, dtype=np.uint8)
    proximity = np.zeros(xa.shape)

    def claim(mask: Bool, code: int, where: Bool | None = None) -> None:
        target = cover if where is None else cover[where]
        updated = np.where(mask, np.maximum(target, code), target).astype(np.uint8)
        if where is None:
            cover[:] = updated
        else:
            cover[where] = updated

    for valley in terrain.valleys:
        u, d = valley.local(xa, ya)
        near = (np.abs(u) < valley.half_length_m) & (np.abs(d) < valley.reach_m())
        if not near.any():
            continue
        un, dn = u[near], d[near]
        taper = valley.taper(un)
        proximity[near] = np.maximum(proximity[near], taper * np.exp(-((dn / (1.5 * valley.width_m)) ** 2)))
        ad = np.abs(dn)
        bars = np.sin(2 * np.pi * un / valley.bar_len_m + valley.bar_phase) * np.sign(dn)
        inner = (ad >= valley.river_half_m) & (taper > 0.5)
        claim((ad < 0.35 * valley.width_m) & (taper > 0.3), COVER_WET_TUNDRA, near)
        claim(inner & (ad < valley.river_half_m + 0.5 * valley.bar_width_m) & (bars < -0.6), COVER_BANK, near)
        claim(inner & (ad < valley.river_half_m + valley.bar_width_m) & (bars > 0.35), COVER_GRAVEL, near)
        claim((ad < valley.river_half_m) & (taper > 0.5), COVER_RIVER, near)
    for ellipses, code, shore in ((terrain.sand, COVER_SAND, 0.0), (terrain.lakes, COVER_LAKE, 1.25)):
        for e in ellipses:
            reach = max(e.a, e.b) * max(shore, 1.0)
            cols = np.nonzero(np.abs(xs - e.cx) < reach + 10.0)[0]
            rows = np.nonzero(np.abs(ys - e.cy) < reach + 10.0)[0]
            if cols.size == 0 or rows.size == 0:
                continue
            window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            r = e.radius(xa[window], ya[window])
            sub = cover[window]
            if shore:
                sub[:] = np.where((r < shore) & (sub == COVER_TUNDRA), COVER_WET_TUNDRA, sub)
            sub[:] = np.where(r < 1.0, np.maximum(sub, code), sub)
    return cover, proximity


def _snow_field(seed: int, xs: F64, ys: F64, proximity: F64) -> F64:
    """Where snow lingers first (higher values): patchy, and more in valleys (snow beds in lee slopes)."""
    field_: F64 = 0.6 * _fbm(xs, ys, ((700.0, 0.6), (180.0, 0.4)), _key("snow", seed)) + 0.2 * proximity
    return field_


def _sun_position(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """Approximate solar zenith and azimuth (degrees, azimuth clockwise from north)."""
    doy = when.timetuple().tm_yday
    hours = when.hour + when.minute / 60 + when.second / 3600
    declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365)
    hour_angle = math.radians(15.0 * (hours + lon / 15.0 - 12.0))
    phi = math.radians(lat)
    cos_z = math.sin(phi) * math.sin(declination) + math.cos(phi) * math.cos(declination) * math.cos(hour_angle)
    zenith = math.degrees(math.acos(max(-1.0, min(1.0, cos_z))))
    azimuth = (
        math.degrees(
            math.atan2(
                math.sin(hour_angle), math.cos(hour_angle) * math.sin(phi) - math.tan(declination) * math.cos(phi)
            )
        )
        + 180.0
    )
    return zenith, azimuth % 360.0


def utm_to_lonlat(epsg: int, x: float, y: float) -> tuple[float, float]:
    """(lon, lat) in degrees of the point (x, y) of the UTM zone ``epsg``."""
    lon, lat = Transformer.from_crs(CRS.from_epsg(epsg), CRS.from_epsg(4326), always_xy=True).transform(x, y)
    return float(lon), float(lat)


def _threshold_field(aoi: Bounds, xs: F64, ys: F64, t_aoi: float, t_out: float) -> F64:
    dx = np.maximum(np.maximum(aoi[0] - xs, xs - aoi[2]), 0.0)
    dy = np.maximum(np.maximum(aoi[1] - ys, ys - aoi[3]), 0.0)
    weight = _smoothstep(np.hypot(dx[None, :], dy[:, None]) / BLEND_M)
    field_: F64 = t_aoi + (t_out - t_aoi) * weight
    return field_


def _cloud_alpha(field_: F64, threshold: F64) -> F64:
    return _smoothstep((field_ - threshold + CLOUD_FRINGE) / (CLOUD_FRINGE + CLOUD_RAMP))


def _edge_valid(edge: tuple[float, float, float] | None, xs: F64, ys: F64) -> Bool:
    if edge is None:
        return np.ones((ys.size, xs.size), dtype=bool)
    nx, ny, c = edge
    valid: Bool = (nx * xs[None, :] + ny * ys[:, None]) <= c
    return valid


def _quantile_threshold(values: F64, fraction: float) -> float:
    """The threshold above which ``fraction`` of ``values`` lie (+-2 beyond the field's range)."""
    if fraction <= 0.0 or values.size == 0:
        return 2.0
    if fraction >= 1.0:
        return -2.0
    return float(np.quantile(values, 1.0 - fraction))


def _scene_params(world: World, spec: SceneSpec) -> _SceneParams:
    rng = seeded_rng("scene", spec.seed)
    aoi = spec.aoi_bounds
    lon, lat = utm_to_lonlat(world.epsg, (aoi[0] + aoi[2]) / 2, (aoi[1] + aoi[3]) / 2)
    zenith, azimuth = _sun_position(spec.datetime, lon, lat)
    sample = _snapped_grid(world.epsg, aoi, SCL_RES_M)
    xs, ys = _centres(sample)
    edge: tuple[float, float, float] | None = None
    if spec.nodata_fraction > 0.0:
        angle = math.radians(rng.uniform(25.0, 65.0) + (90.0 if rng.random() < 0.5 else 0.0))
        nx, ny = math.cos(angle), math.sin(angle)
        projected = (nx * xs[None, :] + ny * ys[:, None]).ravel()
        c = float(np.quantile(projected, 1.0 - spec.nodata_fraction)) if spec.nodata_fraction < 1.0 else -1e12
        edge = (nx, ny, c)
    valid = _edge_valid(edge, xs, ys)
    cloud_key = _key("clouds", spec.seed)
    cloud = _fbm(xs, ys, CLOUD_OCTAVES, cloud_key)
    t_aoi = _quantile_threshold(cloud[valid], spec.cloud_fraction)
    context = (aoi[0] - CONTEXT_M, aoi[1] - CONTEXT_M, aoi[2] + CONTEXT_M, aoi[3] + CONTEXT_M)
    cxs, cys = _centres(_snapped_grid(world.epsg, context, 200.0))
    context_cloud = _fbm(cxs, cys, CLOUD_OCTAVES, cloud_key)
    context_valid = _edge_valid(edge, cxs, cys)
    cloud_height = rng.uniform(1500.0, 3000.0)
    reach = cloud_height * math.tan(math.radians(min(zenith, 80.0)))
    shadow_dx = reach * math.sin(math.radians(azimuth))
    shadow_dy = reach * math.cos(math.radians(azimuth))
    # a shadow at p falls from the cloud at p + shift: clouds over the AOI's shifted copy follow the
    # AOI's fraction too, so a clear AOI gets no shadows of clouds just outside it
    zone = (
        min(aoi[0], aoi[0] + shadow_dx),
        min(aoi[1], aoi[1] + shadow_dy),
        max(aoi[2], aoi[2] + shadow_dx),
        max(aoi[3], aoi[3] + shadow_dy),
    )
    lo, hi = -2.0, 2.0
    for _ in range(40):
        mid = (lo + hi) / 2
        flagged = context_cloud > _threshold_field(zone, cxs, cys, t_aoi, mid)
        fraction = float(flagged[context_valid].mean()) if context_valid.any() else 0.0
        if fraction > spec.tile_cloud_fraction:
            lo = mid
        else:
            hi = mid
    t_out = (lo + hi) / 2
    cover, proximity = _cover_fields(world._terrain, xs, ys)
    snow_field = _snow_field(world.seed, xs, ys, proximity)
    land = valid & (cover != COVER_LAKE) & (cover != COVER_RIVER)
    snow_t = _quantile_threshold(snow_field[land], spec.snow_fraction)
    doy = spec.datetime.timetuple().tm_yday
    greenness = math.exp(-(((doy - 200.0) / 30.0) ** 2))
    gains = rng.normal(1.0, 0.015, 4)
    return _SceneParams(
        sun_zenith_deg=zenith,
        sun_azimuth_deg=azimuth,
        cloud_t_aoi=t_aoi,
        cloud_t_out=t_out,
        snow_t=snow_t,
        edge=edge,
        shadow_dx=shadow_dx,
        shadow_dy=shadow_dy,
        cloud_zone=zone,
        nir_factor=0.8 + 0.2 * greenness,
        red_factor=1.2 - 0.2 * greenness,
        gains=(float(gains[0]), float(gains[1]), float(gains[2]), float(gains[3])),
    )


def _render(world: World, spec: SceneSpec, params: _SceneParams, grid: SiteGrid, static: _Static) -> _Rendered:
    """Surface reflectance and SCL of one scene on ``grid`` (no-data not applied)."""
    xs, ys = _centres(grid)
    refl = static.refl.copy()
    refl[3] *= np.where(static.veg, np.float32(params.nir_factor), np.float32(1.0))
    refl[2] *= np.where(static.veg, np.float32(params.red_factor), np.float32(1.0))
    slumps = world.slump_mask(grid, spec.year)
    if slumps.any():
        floor = np.asarray(SLUMP_FLOOR, dtype=np.float32)[:, None] * (1.0 + 0.15 * static.slump_texture[slumps])
        regrowth = np.clip(0.15 + 0.25 * static.slump_texture[slumps], 0.0, 0.4)
        refl[:, slumps] = floor * (1.0 - regrowth) + refl[:, slumps] * regrowth
    zen, az = math.radians(params.sun_zenith_deg), math.radians(params.sun_azimuth_deg)
    cos_i = (
        math.cos(zen) - math.sin(zen) * (static.dzdx * math.sin(az) + static.dzdy * math.cos(az))
    ) * static.inv_norm
    illumination = np.clip(1.0 + 0.6 * (cos_i / max(math.cos(zen), 0.1) - 1.0), 0.45, 1.6)
    refl *= np.where(static.water, np.float32(1.0), illumination.astype(np.float32))[None]
    land = ~static.water
    snow_depth = ((static.snow_field - params.snow_t) / 0.06 + 0.5).astype(np.float64)
    snow = (_smoothstep(snow_depth) * land).astype(np.float32)
    refl += snow[None] * (np.asarray(SNOW, dtype=np.float32)[:, None, None] - refl)
    cloud_key = _key("clouds", spec.seed)
    cloud_field = _fbm(xs, ys, CLOUD_OCTAVES, cloud_key)
    threshold = _threshold_field(params.cloud_zone, xs, ys, params.cloud_t_aoi, params.cloud_t_out)
    cloud_alpha = _cloud_alpha(cloud_field, threshold)
    cloudy = cloud_field > threshold
    sxs, sys_ = xs + params.shadow_dx, ys + params.shadow_dy
    shadow_alpha = _cloud_alpha(
        _fbm(sxs, sys_, CLOUD_OCTAVES, cloud_key),
        _threshold_field(params.cloud_zone, sxs, sys_, params.cloud_t_aoi, params.cloud_t_out),
    )
    refl *= (1.0 - 0.6 * shadow_alpha).astype(np.float32)[None]
    cloud_texture = 0.8 + 0.2 * _value_noise(xs, ys, 350.0, cloud_key + 11)
    cloud_refl = np.asarray(CLOUD, dtype=np.float32)[:, None, None] * cloud_texture.astype(np.float32)[None]
    refl += cloud_alpha.astype(np.float32)[None] * (cloud_refl - refl)
    refl *= np.asarray(params.gains, dtype=np.float32)[:, None, None]
    refl += (np.float32(0.0015) + np.float32(0.015) * refl) * _pixel_uniforms(grid, _key("noise", spec.seed))
    np.clip(refl, 1.0 / QUANTIFICATION_VALUE, 1.0, out=refl)

    ndvi = (refl[3] - refl[2]) / (refl[3] + refl[2])
    scl = np.where(ndvi >= 0.35, SCL_VEGETATION, SCL_NOT_VEGETATED).astype(np.uint8)
    scl[static.water] = SCL_WATER
    scl[snow > 0.5] = SCL_SNOW_ICE
    scl[(shadow_alpha > 0.25) & ~cloudy] = SCL_CLOUD_SHADOW
    scl[cloudy] = np.where(
        cloud_alpha[cloudy] < 0.3,
        SCL_THIN_CIRRUS,
        np.where(cloud_alpha[cloudy] < 0.65, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH),
    ).astype(np.uint8)
    return _Rendered(refl=refl, scl=scl)


# --- Truth accessors ------------------------------------------------------------------------------


def _valid_mask(world: World, spec: SceneSpec, grid: SiteGrid) -> Bool:
    """Pixels of ``grid`` on the data side of the scene's swath edge (tested at pixel centres)."""
    xs, ys = _centres(grid)
    return _edge_valid(world._params(spec).edge, xs, ys)


def _to_dn(refl: F32, offset: int) -> U16:
    """Digital numbers of reflectances: round(reflectance * 10000) + offset, at least 1 (0 is no data)."""
    dn = np.rint(refl * np.float32(QUANTIFICATION_VALUE)).astype(np.int32)
    out: U16 = (np.clip(dn, 1, 65535 - offset) + offset).astype(np.uint16)
    return out


def _scl20(world: World, spec: SceneSpec, grid20: SiteGrid) -> U8:
    scl: U8 = world._assemble(spec, grid20, None)
    xs, ys = _centres(grid20)
    # each 20 m SCL pixel takes the class (and validity) of its top-left 10 m pixel
    scl[~_edge_valid(world._params(spec).edge, xs - FINE_RES_M / 2, ys + FINE_RES_M / 2)] = SCL_NO_DATA
    return scl


def truth_reflectance(world: World, spec: SceneSpec, grid: SiteGrid) -> F32:
    """What a correct reader returns on an aligned 10 m ``grid`` after harmonisation: (4, H, W).

    Reflectance = (DN - offset) / 10000 with offset 1000 for baseline >= 04.00; NaN where no data.
    """
    _check_aligned(grid, FINE_RES_M)
    valid = _valid_mask(world, spec, grid)
    out = np.empty((4, grid.height, grid.width), dtype=np.float32)
    for band in range(4):
        dn = _to_dn(world._assemble(spec, grid, band), spec.dn_offset)
        out[band] = (dn.astype(np.float32) - np.float32(spec.dn_offset)) / np.float32(QUANTIFICATION_VALUE)
        out[band][~valid] = np.nan
    return out


def truth_scl(world: World, spec: SceneSpec, grid: SiteGrid) -> U8:
    """The SCL on an aligned 10 m ``grid`` (nearest from the 20 m SCL), 0 where no data."""
    _check_aligned(grid, FINE_RES_M)
    grid20 = _snapped_grid(world.epsg, grid.bounds, SCL_RES_M)
    scl = _scl20(world, spec, grid20)
    r0 = round((grid20.y_max - grid.y_max) / FINE_RES_M)
    c0 = round((grid.x_min - grid20.x_min) / FINE_RES_M)
    rows = (np.arange(grid.height) + r0) // 2
    cols = (np.arange(grid.width) + c0) // 2
    out: U8 = scl[rows[:, None], cols[None, :]]
    return out


# --- Tiles --------------------------------------------------------------------------------------

_MGRS_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_LATITUDE_BANDS = "CDEFGHJKLMNPQRSTUVWX"


@dataclass(frozen=True)
class Tile:
    """One synthetic MGRS-like tile: a square of ``size_m`` with its north-west corner at (x_min, y_max)."""

    name: str
    epsg: int
    x_min: float
    y_max: float
    size_m: float

    @property
    def bounds(self) -> Bounds:
        """(x_min, y_min, x_max, y_max) in metres."""
        return (self.x_min, self.y_max - self.size_m, self.x_min + self.size_m, self.y_max)

    def grid(self, res_m: float = FINE_RES_M) -> SiteGrid:
        """The tile's pixel grid at ``res_m`` (10 m bands, 20 m SCL)."""
        n = round(self.size_m / res_m)
        return SiteGrid(self.epsg, res_m, self.x_min, self.y_max, n, n)


@dataclass(frozen=True)
class TileLayout:
    """MGRS-like tiling of one UTM zone.

    Tile (i, j) spans x in [i * step, i * step + size] and y in [j * step, j * step + size], with
    step = ``tile_size_m - overlap_m``; both must be multiples of 60 m so that the 10, 20 and 60 m
    lattices of every tile coincide with the site grids. Names look like real MGRS tile ids
    ("09WXX"): zone, latitude band of the tile centre, then column and row letters (i and j
    modulo 24, so names repeat only 24 tiles apart).
    """

    epsg: int
    tile_size_m: float = DEFAULT_TILE_SIZE_M
    overlap_m: float = DEFAULT_TILE_OVERLAP_M

    def __post_init__(self) -> None:
        step = self.tile_size_m - self.overlap_m
        for name, value in (("tile_size_m", self.tile_size_m), ("step (tile_size_m - overlap_m)", step)):
            if value <= 0 or abs(value / COARSE_RES_M - round(value / COARSE_RES_M)) > 1e-9:
                raise ValueError(f"{name} must be a positive multiple of 60 m, got {value}")
        if not 32601 <= self.epsg <= 32660 and not 32701 <= self.epsg <= 32760:
            raise ValueError(f"epsg must be a WGS84 UTM zone (326zz/327zz), got {self.epsg}")

    @property
    def step_m(self) -> float:
        """Distance between the origins of neighbouring tiles, in metres."""
        return self.tile_size_m - self.overlap_m

    def tile(self, i: int, j: int) -> Tile:
        """The tile in column ``i`` and row ``j``."""
        x_min = i * self.step_m
        y_min = j * self.step_m
        _, lat = utm_to_lonlat(self.epsg, x_min + self.tile_size_m / 2, y_min + self.tile_size_m / 2)
        band = _LATITUDE_BANDS[min(max(int((lat + 80.0) // 8.0), 0), len(_LATITUDE_BANDS) - 1)]
        name = f"{self.epsg % 100:02d}{band}{_MGRS_LETTERS[i % 24]}{_MGRS_LETTERS[j % 24]}"
        return Tile(name, self.epsg, x_min, y_min + self.tile_size_m, self.tile_size_m)

    def tiles_for_bounds(self, bounds: Bounds) -> list[Tile]:
        """Every tile whose area overlaps ``bounds`` (x_min, y_min, x_max, y_max) in metres."""
        x0, y0, x1, y1 = bounds
        step, size = self.step_m, self.tile_size_m
        i_range = range(math.floor((x0 - size) / step) + 1, math.ceil(x1 / step))
        j_range = range(math.floor((y0 - size) / step) + 1, math.ceil(y1 / step))
        return [
            self.tile(i, j)
            for j in j_range
            for i in i_range
            if i * step < x1 and i * step + size > x0 and j * step < y1 and j * step + size > y0
        ]


# --- Writing: Sentinel-2 L2A -------------------------------------------------------------------

_EO_BANDS: dict[str, dict[str, Any]] = {
    "B02": {
        "name": "B02",
        "common_name": "blue",
        "description": "Band 2 - Blue",
        "center_wavelength": 0.49,
        "full_width_half_max": 0.098,
    },
    "B03": {
        "name": "B03",
        "common_name": "green",
        "description": "Band 3 - Green",
        "center_wavelength": 0.56,
        "full_width_half_max": 0.045,
    },
    "B04": {
        "name": "B04",
        "common_name": "red",
        "description": "Band 4 - Red",
        "center_wavelength": 0.665,
        "full_width_half_max": 0.038,
    },
    "B08": {
        "name": "B08",
        "common_name": "nir",
        "description": "Band 8 - NIR",
        "center_wavelength": 0.842,
        "full_width_half_max": 0.145,
    },
}
_BAND_TITLES = {
    "B02": "Band 2 - Blue - 10m",
    "B03": "Band 3 - Green - 10m",
    "B04": "Band 4 - Red - 10m",
    "B08": "Band 8 - NIR - 10m",
}
_SCL_TITLE = "Scene classfication map (SCL)"  # sic: the spelling of the real Planetary Computer items
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_S2_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
]
_S2_LICENSE = "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"
_PLATFORM_LAUNCH = {
    "Sentinel-2A": datetime(2015, 6, 23, tzinfo=UTC),
    "Sentinel-2B": datetime(2017, 3, 7, tzinfo=UTC),
    "Sentinel-2C": datetime(2024, 9, 5, tzinfo=UTC),
}
_ORBITS_PER_DAY = 143 / 10
"""Sentinel-2 makes 143 orbits in its 10-day repeat cycle (for the absolute orbit numbers in ids)."""


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%S")


def _iso(when: datetime) -> str:
    """RFC 3339 in the items' style: ``2019-06-29T21:25:29.024000Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a rename), so a server re-scanning the folder sees it whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _write_cog(path: Path, array: npt.NDArray[Any], grid: SiteGrid, nodata: float | None, resampling: str) -> None:
    """Write a one-band Cloud-Optimized GeoTIFF (DEFLATE, internal tiles, overviews)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    profile: dict[str, Any] = {
        "driver": "COG",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": array.dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "compress": "DEFLATE",
        "level": 1,  # fastest DEFLATE: the noisy 10 m detail compresses little better at higher levels
        "predictor": "YES",
        "blocksize": COG_BLOCK_PX if max(grid.width, grid.height) <= 8192 else 1024,
        "overview_resampling": resampling,
        "num_threads": "ALL_CPUS",
        "bigtiff": "IF_SAFER",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(array, 1)
    os.replace(tmp, path)


def _footprint_wgs84(tile: Tile, edge: tuple[float, float, float] | None) -> BaseGeometry:
    """The tile's valid-data area (the tile minus the part beyond the swath edge) in WGS84."""
    shape: BaseGeometry = box(*tile.bounds)
    if edge is not None:
        nx, ny, c = edge
        far = 1e7
        px, py = nx * c, ny * c  # the edge's point closest to the origin
        halfplane = Polygon(
            [
                (px - ny * far, py + nx * far),
                (px + ny * far, py - nx * far),
                (px + ny * far - nx * far, py - nx * far - ny * far),
                (px - ny * far - nx * far, py + nx * far - ny * far),
            ]
        )
        shape = shape.intersection(halfplane)
    shape = shape.segmentize(tile.size_m / 8)
    to_wgs84 = Transformer.from_crs(CRS.from_epsg(tile.epsg), CRS.from_epsg(4326), always_xy=True)
    projected = shapely.transform(shape, to_wgs84.transform, interleaved=False)
    projected = shapely.set_precision(projected, 1e-8)
    return orient(projected, sign=1.0) if isinstance(projected, Polygon) else projected


def _ids(spec: SceneSpec, tile: Tile) -> dict[str, str]:
    """The real naming patterns of a Sentinel-2 L2A product (ids, product URI, granule, datastrip)."""
    sat = "S2" + spec.platform[-1]
    rng = seeded_rng("generation", spec.seed)
    if baseline_has_offset(spec.processing_baseline) or spec.year >= 2020:
        generated = spec.datetime + timedelta(hours=float(rng.uniform(2.0, 8.0)))
    else:  # older archive: reprocessed later (as the real 2019 item, generated 2020-10-06)
        generated = datetime(2020, 9, 1, tzinfo=UTC) + timedelta(days=float(rng.uniform(0, 180)))
    generated = generated.replace(microsecond=0)
    absolute = int((spec.datetime - _PLATFORM_LAUNCH[spec.platform]).total_seconds() / 86400 * _ORBITS_PER_DAY) + 1
    baseline = spec.processing_baseline
    sensing = _stamp(spec.datetime)
    gen = _stamp(generated)
    gen2 = _stamp(generated + timedelta(seconds=2))
    datastrip_start = _stamp(spec.datetime + timedelta(seconds=1))
    orbit = f"R{spec.relative_orbit:03d}"
    return {
        "id": f"{sat}_MSIL2A_{sensing}_{orbit}_T{tile.name}_{gen}",
        "product_uri": f"{sat}_MSIL2A_{sensing}_N{baseline.replace('.', '')}_{orbit}_T{tile.name}_{gen}.SAFE",
        "granule_id": f"{sat}_OPER_MSI_L2A_TL_ESRI_{gen2}_A{absolute:06d}_T{tile.name}_N{baseline}",
        "datatake_id": f"G{sat}_{sensing}_{absolute:06d}_N{baseline}",
        "datastrip_id": f"{sat}_OPER_MSI_L2A_DS_ESRI_{gen2}_S{datastrip_start}_N{baseline}",
        "generation_time": generated.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(rng.integers(0, 1000)):03d}Z",
    }


def _pct(count: int, total: int) -> float:
    return round(100.0 * count / total, 6) if total else 0.0


def _s2_item(spec: SceneSpec, tile: Tile, scl: U8, params: _SceneParams, hrefs: dict[str, str]) -> dict[str, Any]:
    """The STAC item of one tile, shaped like a real Planetary Computer ``sentinel-2-l2a`` item."""
    ids = _ids(spec, tile)
    counts = np.bincount(scl.ravel(), minlength=12)
    total = int(scl.size)
    valid = total - int(counts[SCL_NO_DATA])

    def pct(code: int) -> float:
        return _pct(int(counts[code]), valid)

    doy = spec.datetime.timetuple().tm_yday
    earth_sun = 1.0 - 0.01673 * math.cos(0.0172 * (doy - 4))
    footprint = _footprint_wgs84(tile, params.edge)
    properties: dict[str, Any] = {
        "datetime": _iso(spec.datetime),
        "platform": spec.platform,
        "proj:epsg": tile.epsg,
        "instruments": ["msi"],
        "s2:mgrs_tile": tile.name,
        "constellation": "Sentinel 2",
        "s2:granule_id": ids["granule_id"],
        "eo:cloud_cover": round(sum(pct(c) for c in SCL_CLOUD_CLASSES), 6),
        "s2:datatake_id": ids["datatake_id"],
        "s2:product_uri": ids["product_uri"],
        "s2:datastrip_id": ids["datastrip_id"],
        "s2:product_type": "S2MSI2A",
        "sat:orbit_state": "descending",
        "s2:datatake_type": "INS-NOBS",
        "s2:generation_time": ids["generation_time"],
        "sat:relative_orbit": spec.relative_orbit,
        "s2:water_percentage": pct(SCL_WATER),
        "s2:mean_solar_zenith": round(params.sun_zenith_deg, 10),
        "s2:mean_solar_azimuth": round(params.sun_azimuth_deg, 10),
        "s2:processing_baseline": spec.processing_baseline,
        "s2:snow_ice_percentage": pct(SCL_SNOW_ICE),
        "s2:vegetation_percentage": pct(SCL_VEGETATION),
        "s2:thin_cirrus_percentage": pct(SCL_THIN_CIRRUS),
        "s2:cloud_shadow_percentage": pct(SCL_CLOUD_SHADOW),
        "s2:nodata_pixel_percentage": _pct(int(counts[SCL_NO_DATA]), total),
        "s2:unclassified_percentage": pct(SCL_UNCLASSIFIED),
        "s2:dark_features_percentage": pct(SCL_DARK_FEATURES),
        "s2:not_vegetated_percentage": pct(SCL_NOT_VEGETATED),
        "s2:degraded_msi_data_percentage": 0.0,
        "s2:high_proba_clouds_percentage": pct(SCL_CLOUD_HIGH),
        "s2:reflectance_conversion_factor": round(1.0 / earth_sun**2, 14),
        "s2:medium_proba_clouds_percentage": pct(SCL_CLOUD_MEDIUM),
        "s2:saturated_defective_pixel_percentage": pct(SCL_SATURATED_DEFECTIVE),
    }
    proj_bbox = [float(v) for v in tile.bounds]
    assets: dict[str, Any] = {}
    for name in BANDS:
        grid = tile.grid(FINE_RES_M)
        assets[name] = {
            "href": hrefs[name],
            "type": COG_MEDIA_TYPE,
            "title": _BAND_TITLES[name],
            "gsd": 10,
            "eo:bands": [dict(_EO_BANDS[name])],
            "proj:bbox": proj_bbox,
            "proj:shape": [grid.height, grid.width],
            "proj:transform": [float(v) for v in list(grid.transform)[:6]],
            "roles": ["data"],
        }
    grid20 = tile.grid(SCL_RES_M)
    assets["SCL"] = {
        "href": hrefs["SCL"],
        "type": COG_MEDIA_TYPE,
        "title": _SCL_TITLE,
        "gsd": 20.0,
        "proj:bbox": proj_bbox,
        "proj:shape": [grid20.height, grid20.width],
        "proj:transform": [float(v) for v in list(grid20.transform)[:6]],
        "roles": ["data"],
    }
    item_path = f"collections/{S2_COLLECTION}/items/{ids['id']}"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": ids["id"],
        "properties": properties,
        "geometry": mapping(footprint),
        "links": [
            {"rel": "collection", "href": f"collections/{S2_COLLECTION}", "type": "application/json"},
            {"rel": "parent", "href": f"collections/{S2_COLLECTION}", "type": "application/json"},
            {"rel": "root", "href": "./", "type": "application/json"},
            {"rel": "self", "href": item_path, "type": "application/geo+json"},
            {"rel": "license", "href": _S2_LICENSE},
        ],
        "assets": assets,
        "bbox": [float(v) for v in footprint.bounds],
        "stac_extensions": list(_S2_EXTENSIONS),
        "collection": S2_COLLECTION,
    }


def _collection_links(collection_id: str) -> list[dict[str, str]]:
    """The items, parent, root and self links of a collection document (relative to the corpus root)."""
    return [
        {"rel": "items", "type": "application/geo+json", "href": f"collections/{collection_id}/items"},
        {"rel": "parent", "type": "application/json", "href": "./"},
        {"rel": "root", "type": "application/json", "href": "./"},
        {"rel": "self", "type": "application/json", "href": f"collections/{collection_id}"},
    ]


def _s2_collection() -> dict[str, Any]:
    """The ``sentinel-2-l2a`` collection document, in the real one's shape (item_assets shortened)."""
    item_assets: dict[str, Any] = {
        name: {
            "gsd": 10,
            "type": COG_MEDIA_TYPE,
            "raster:bands": [{"nodata": 0, "data_type": "uint16"}],
            "roles": ["data"],
            "title": _BAND_TITLES[name],
            "eo:bands": [dict(_EO_BANDS[name])],
        }
        for name in BANDS
    }
    item_assets["SCL"] = {
        "gsd": 20,
        "type": COG_MEDIA_TYPE,
        "raster:bands": [{"nodata": 0, "data_type": "uint8"}],
        "roles": ["data"],
        "title": _SCL_TITLE,
    }
    return {
        "id": S2_COLLECTION,
        "type": "Collection",
        "links": [
            *_collection_links(S2_COLLECTION),
            {
                "rel": "license",
                "href": "https://scihub.copernicus.eu/twiki/pub/SciHubWebPortal/TermsConditions/"
                "Sentinel_Data_Terms_and_Conditions.pdf",
                "title": "Copernicus Sentinel data terms",
            },
        ],
        "title": "Sentinel-2 Level-2A",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2015-06-27T10:25:31.456000Z", None]]},
        },
        "license": "proprietary",
        "keywords": ["Sentinel", "Copernicus", "ESA", "Satellite", "Global", "Imagery", "Reflectance"],
        "providers": [
            {
                "url": "https://sentinel.esa.int/web/sentinel/missions/sentinel-2",
                "name": "ESA",
                "roles": ["producer", "licensor"],
            },
            {"url": "https://planetarycomputer.microsoft.com", "name": "Microsoft", "roles": ["host", "processor"]},
        ],
        "summaries": {
            "gsd": [10, 20],
            "eo:bands": [{"gsd": 10, **_EO_BANDS[name]} for name in BANDS],
            "platform": ["Sentinel-2A", "Sentinel-2B", "Sentinel-2C"],
            "instruments": ["msi"],
            "constellation": ["sentinel-2"],
            "view:off_nadir": [0],
        },
        "description": "Synthetic Sentinel-2 Level-2A scenes (offline stand-in for Microsoft Planetary "
        "Computer's sentinel-2-l2a): generated by rtsmonitor.offline.synthetic.",
        "item_assets": item_assets,
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.0.0/schema.json",
        ],
        "msft:short_description": "Synthetic Sentinel-2 L2A scenes for offline tests and demos.",
    }


def write_scene(
    world: World, layout: TileLayout, spec: SceneSpec, root: Path, aoi_bounds: Bounds | None = None
) -> list[dict[str, Any]]:
    """Write one acquisition: COGs and a STAC item for every tile that intersects the AOI.

    Parameters
    ----------
    world, layout : the landscape and its tiling (same EPSG).
    spec : the acquisition.
    root : the corpus folder (see the module docstring of :mod:`rtsmonitor.offline.corpus`).
    aoi_bounds : the area whose tiles are written; defaults to ``spec.aoi_bounds``.

    Returns
    -------
    The item dicts as written to ``root/collections/sentinel-2-l2a/items/<id>.json``. Asset hrefs are
    relative to ``root`` (``files/sentinel-2-l2a/<tile>/<sensing time>/<file>.tif``). Tiles that fall
    entirely beyond the swath edge are skipped, as Planetary Computer has no empty items.
    """
    if layout.epsg != world.epsg:
        raise ValueError(f"layout EPSG {layout.epsg} differs from world EPSG {world.epsg}")
    root = Path(root)
    params = world._params(spec)
    items: list[dict[str, Any]] = []
    collection_path = root / "collections" / S2_COLLECTION / "collection.json"
    if not collection_path.exists():
        _write_json(collection_path, _s2_collection())
    for tile in layout.tiles_for_bounds(aoi_bounds or spec.aoi_bounds):
        grid20 = tile.grid(SCL_RES_M)
        scl = _scl20(world, spec, grid20)
        if not scl.any():
            continue
        grid10 = tile.grid(FINE_RES_M)
        sensing = _stamp(spec.datetime)
        folder = f"files/{S2_COLLECTION}/{tile.name}/{sensing}"
        hrefs = {name: f"{folder}/T{tile.name}_{sensing}_{name}_10m.tif" for name in BANDS}
        hrefs["SCL"] = f"{folder}/T{tile.name}_{sensing}_SCL_20m.tif"
        valid = _valid_mask(world, spec, grid10)
        for band, name in enumerate(BANDS):
            dn = _to_dn(world._assemble(spec, grid10, band), spec.dn_offset)
            dn[~valid] = 0
            _write_cog(root / hrefs[name], dn, grid10, nodata=0, resampling="average")
        _write_cog(root / hrefs["SCL"], scl, grid20, nodata=0, resampling="nearest")
        item = _s2_item(spec, tile, scl, params, hrefs)
        _write_json(root / "collections" / S2_COLLECTION / "items" / f"{item['id']}.json", item)
        items.append(item)
    return items


# --- Writing: Copernicus DEM GLO-30 --------------------------------------------------------------

DEM_COLLECTION = "cop-dem-glo-30"
"""Planetary Computer collection id of the Copernicus DEM GLO-30."""
ARCSEC = 1.0 / 3600.0


def glo30_lon_spacing_arcsec(lat_south: int) -> float:
    """GLO-30 longitude pixel spacing in arc seconds for the 1-degree tile whose south edge is ``lat_south``.

    Copernicus DEM Product Handbook: 1" below 50 deg, 1.5" for 50-60, 2" for 60-70, 3" for 70-80,
    5" for 80-85 and 10" for 85-90 deg (north or south); latitude spacing is always 1".
    """
    lat = lat_south if lat_south >= 0 else -(lat_south + 1)
    for limit, spacing in ((50, 1.0), (60, 1.5), (70, 2.0), (80, 3.0), (85, 5.0)):
        if lat < limit:
            return spacing
    return 10.0


def dem_item_id(lat_south: int, lon_west: int) -> str:
    """Planetary Computer id of a GLO-30 tile, e.g. ``Copernicus_DSM_COG_10_N69_00_W127_00_DEM``."""
    ns = f"{'N' if lat_south >= 0 else 'S'}{abs(lat_south):02d}_00"
    ew = f"{'E' if lon_west >= 0 else 'W'}{abs(lon_west):03d}_00"
    return f"Copernicus_DSM_COG_10_{ns}_{ew}_DEM"


def _dem_window(lat_south: int, lon_west: int, bbox: Bounds) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the GLO-30 tile's pixels whose centres cover ``bbox``."""
    dlon = glo30_lon_spacing_arcsec(lat_south) * ARCSEC
    n_cols = round(1.0 / dlon)
    west, south, east, north = bbox
    # pixel centres: lat = lat_south + 1 - row * 1", lon = lon_west + col * dlon (pixel-is-point)
    row0 = max(0, math.floor((lat_south + 1 - north) / ARCSEC))
    row1 = min(3600, math.ceil((lat_south + 1 - south) / ARCSEC) + 1)
    col0 = max(0, math.floor((west - lon_west) / dlon))
    col1 = min(n_cols, math.ceil((east - lon_west) / dlon) + 1)
    return row0, row1, col0, col1


def write_dem(world: World, root: Path, bbox_wgs84: Bounds, margin_m: float = 2000.0) -> list[dict[str, Any]]:
    """Write ``cop-dem-glo-30`` items covering ``bbox_wgs84`` (west, south, east, north) plus ``margin_m``.

    Each item is one real GLO-30 1 x 1 degree tile id and lattice (EPSG:4326, 1" in latitude, the
    latitude-dependent longitude spacing of :func:`glo30_lon_spacing_arcsec`, pixel centres on whole
    arc seconds), but its raster is clipped to the requested area instead of the whole degree (a
    degree at 69 N is 6.5 M pixels). Writing again for another area of the same tile extends the
    raster to cover both. Values are :meth:`World.elevation_m` at the pixel centres (float32, m).
    """
    root = Path(root)
    west, south, east, north = bbox_wgs84
    dlat = margin_m / 111_320.0
    dlon = margin_m / (111_320.0 * max(math.cos(math.radians(max(abs(south), abs(north)))), 0.01))
    area = (west - dlon, south - dlat, east + dlon, north + dlat)
    collection_path = root / "collections" / DEM_COLLECTION / "collection.json"
    if not collection_path.exists():
        _write_json(collection_path, _dem_collection())
    to_utm = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_epsg(world.epsg), always_xy=True)
    items = []
    for lat_south in range(math.floor(area[1]), math.ceil(area[3])):
        for lon_west in range(math.floor(area[0]), math.ceil(area[2])):
            item_id = dem_item_id(lat_south, lon_west)
            item_path = root / "collections" / DEM_COLLECTION / "items" / f"{item_id}.json"
            row0, row1, col0, col1 = _dem_window(lat_south, lon_west, area)
            if item_path.exists():
                old = json.loads(item_path.read_text())
                t = old["properties"]["proj:transform"]
                old_row0 = round((lat_south + 1 + ARCSEC / 2 - t[5]) / ARCSEC)
                old_col0 = round((t[2] + t[0] / 2 - lon_west) / t[0])
                h, w = old["properties"]["proj:shape"]
                row0, row1 = min(row0, old_row0), max(row1, old_row0 + h)
                col0, col1 = min(col0, old_col0), max(col1, old_col0 + w)
            if row1 <= row0 or col1 <= col0:
                continue
            spacing = glo30_lon_spacing_arcsec(lat_south) * ARCSEC
            lats = lat_south + 1 - np.arange(row0, row1) * ARCSEC
            lons = lon_west + np.arange(col0, col1) * spacing
            lon2, lat2 = np.meshgrid(lons, lats)
            x, y = to_utm.transform(lon2, lat2)
            elevation = world.elevation_m(np.asarray(x), np.asarray(y)).astype(np.float32)
            transform = Affine(
                spacing, 0.0, lon_west + (col0 - 0.5) * spacing, 0.0, -ARCSEC, lat_south + 1 - (row0 - 0.5) * ARCSEC
            )
            href = f"files/{DEM_COLLECTION}/{item_id}.tif"
            _write_dem_cog(root / href, elevation, transform)
            item = _dem_item(item_id, href, transform, elevation.shape)
            _write_json(item_path, item)
            items.append(item)
    return items


def _write_dem_cog(path: Path, elevation: F32, transform: Affine) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    height, width = elevation.shape
    with rasterio.open(
        tmp,
        "w",
        driver="COG",
        width=width,
        height=height,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=transform,
        compress="DEFLATE",
        predictor="YES",
        blocksize=COG_BLOCK_PX,
        overview_resampling="average",
        bigtiff="IF_SAFER",
    ) as dst:
        dst.write(elevation, 1)
    os.replace(tmp, path)


def _dem_item(item_id: str, href: str, transform: Affine, shape: tuple[int, ...]) -> dict[str, Any]:
    """A ``cop-dem-glo-30`` item in Planetary Computer's shape."""
    west, north = transform.c, transform.f
    east, south = west + transform.a * shape[1], north + transform.e * shape[0]
    footprint = orient(box(west, south, east, north), sign=1.0)
    name = item_id.removeprefix("Copernicus_DSM_COG_10_").removesuffix("_DEM")
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "properties": {
            "gsd": 30,
            "datetime": "2021-04-22T00:00:00Z",
            "platform": "TanDEM-X",
            "proj:epsg": 4326,
            "proj:shape": [int(shape[0]), int(shape[1])],
            "proj:transform": [float(v) for v in list(transform)[:6]],
        },
        "geometry": mapping(footprint),
        "links": [
            {"rel": "collection", "href": f"collections/{DEM_COLLECTION}", "type": "application/json"},
            {"rel": "parent", "href": f"collections/{DEM_COLLECTION}", "type": "application/json"},
            {"rel": "root", "href": "./", "type": "application/json"},
            {"rel": "self", "href": f"collections/{DEM_COLLECTION}/items/{item_id}", "type": "application/geo+json"},
        ],
        "assets": {
            "data": {
                "href": href,
                "type": COG_MEDIA_TYPE,
                "title": name,
                "roles": ["data"],
                "raster:bands": [{"unit": "meter", "data_type": "float32", "spatial_resolution": 30}],
            }
        },
        "bbox": [west, south, east, north],
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.0.0/schema.json",
        ],
        "collection": DEM_COLLECTION,
    }


def _dem_collection() -> dict[str, Any]:
    """The ``cop-dem-glo-30`` collection document in Planetary Computer's shape."""
    return {
        "type": "Collection",
        "id": DEM_COLLECTION,
        "stac_version": "1.0.0",
        "description": "Synthetic Copernicus DEM GLO-30 tiles (offline stand-in for Microsoft Planetary "
        "Computer's cop-dem-glo-30): generated by rtsmonitor.offline.synthetic.",
        "links": [
            *_collection_links(DEM_COLLECTION),
            {
                "rel": "license",
                "href": "https://spacedata.copernicus.eu/documents/20126/0/CSCDA_ESA_Mission-specific+Annex.pdf",
                "title": "Copernicus DEM License",
            },
        ],
        "stac_extensions": ["https://stac-extensions.github.io/item-assets/v1.0.0/schema.json"],
        "item_assets": {"data": {"type": COG_MEDIA_TYPE, "roles": ["data"]}},
        "title": "Copernicus DEM GLO-30",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2021-04-22T00:00:00Z", "2021-04-22T00:00:00Z"]]},
        },
        "license": "proprietary",
        "keywords": ["Copernicus", "DEM", "DSM", "Elevation"],
        "providers": [
            {
                "name": "European Space Agency",
                "roles": ["licensor"],
                "url": "https://spacedata.copernicus.eu/documents/20126/0/CSCDA_ESA_Mission-specific+Annex.pdf",
            },
            {"name": "Microsoft", "roles": ["host"], "url": "https://planetarycomputer.microsoft.com"},
        ],
        "summaries": {"gsd": [30], "platform": ["tandem-x"]},
    }
