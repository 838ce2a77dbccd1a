"""False-positive filters of RTS objects: open water, cloud and no-data edges, the mapping unit, flat terrain.

The U-Net of Rustemeyer et al. 2022 (IGARSS, doi:10.1109/IGARSS46834.2022.9884869) classifies pixels
from four bands and slope; some of its objects are things no slump can be. Each filter here is a
rule on one object (a connected component of the classified mask, :mod:`rtsmonitor.objects`) and
the rasters around it, and says why it drops the object, or nothing:

- ``water``: at least :data:`WATER_FRACTION` of the object's pixels are open water: scene
  classification (SCL) class 6, or NDWI = (green - NIR) / (green + NIR) above
  :data:`NDWI_WATER_THRESHOLD` (McFeeters 1996). Slump floors are wet mud, not open water.
- ``edges``: the object touches (8-neighbourhood) a pixel without a clear observation (no data,
  cloud, cloud shadow, cirrus, snow: ``mask.tif`` 255). Haze and shadow fringes around clouds look
  like bare ground, and a slump cut by a cloud has an unknown area; neither belongs in a yearly area.
  The edge of the grid itself is not an unobserved pixel.
- ``mmu``: the object is smaller than the minimum mapping unit,
  :data:`~rtsmonitor.objects.DEFAULT_MIN_AREA_M2` (0.1 ha, ten 10 m pixels; see there).
- ``flat``: the :data:`FLAT_PERCENTILE` th percentile of the slope under the object is below
  :data:`FLAT_SLOPE_DEG`: the whole object lies on flat ground. RTS develop where ice-rich ground is
  exposed on a slope (coastal bluffs, lake shores, valley sides) and retreat upslope (Lantuit &
  Pollard 2008, Geomorphology 95:84-102; Kokelj & Jorgenson 2013, Permafrost Periglac. Process.
  24:108-119); a bright patch on level ground is a field of sand, gravel or a drained lake bed.

Each filter is switched on or off per site (``filters`` of the site config,
:class:`~rtsmonitor.sites.FilterSwitches`; water, mmu and flat on by default, edges off). A removed
object is left out of the features of ``rts.geojson``, the counts, areas and carbon; the record
counts removals per filter (``rts_filtered``). Their effect on the held-out evaluation images and
on partly clouded views of them is measured by ``python -m rtstrain.filter_eval`` (the tables in
the demo model's ``report.md``): water, mmu and flat raised object precision (0.27 -> 0.39 together
on the test images) at a cost of 0.002 pixel recall; edges removed mostly true slumps cut by
clouds (pixel recall 0.88 -> 0.50 on the clouded views), hence off by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.windows import Window
from scipy import ndimage

from rtsmonitor.errors import RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.imagery import SCL_WATER
from rtsmonitor.inference import MASK_UNOBSERVED
from rtsmonitor.objects import DEFAULT_MIN_AREA_M2, RtsObject, object_pixels

FILTER_NAMES: tuple[str, ...] = ("water", "edges", "mmu", "flat")
"""The filters, in the order they are described and reported."""

NDWI_WATER_THRESHOLD = 0.0
"""NDWI (unitless) above which a pixel is open water: McFeeters 1996, "The use of the Normalized
Difference Water Index (NDWI) in the delineation of open water features", Int. J. Remote Sens.
17(7):1425-1432, NDWI = (green - NIR) / (green + NIR) > 0 for water. Here green is B03 and NIR B08.
Wet tundra, slump mud and bare soil have NIR above green (NDWI about -0.2 to -0.6)."""
WATER_FRACTION = 0.5
"""Share (0..1) of an object's pixels that must be water for the ``water`` filter to drop it: a
mostly-water object. A slump on a lake shore whose outline spills a few pixels into the lake keeps
them (its mud dominates); a false object over a lake or river is nearly all water."""
FLAT_SLOPE_DEG = 2.0
"""Slope in degrees below which ground counts as flat for the ``flat`` filter. The slope layer is
the boxcar-smoothed DEM slope the model reads (:mod:`rtsmonitor.terrain`); 2 degrees is a 3.5 %
grade, flatter than the slopes on which the paper's and the ARTS slumps sit (the synthetic corpus
builds 8-14 degree hillslopes under them). The rule is deliberately mild: it drops only objects
whose ground is level almost everywhere (:data:`FLAT_PERCENTILE`)."""
FLAT_PERCENTILE = 95.0
"""Percentile (0..100) of the slope under an object that must stay below :data:`FLAT_SLOPE_DEG` for
the ``flat`` filter to drop it: "flat across the whole object", robust to a few noisy DEM pixels
(the maximum would let one spike keep a field)."""
MIN_AREA_M2 = DEFAULT_MIN_AREA_M2
"""Minimum mapping unit of the ``mmu`` filter in m^2 (:data:`rtsmonitor.objects.DEFAULT_MIN_AREA_M2`)."""

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class ObjectContext:
    """What the filters see of one object: equally shaped rasters of its bounding box grown by a pixel.

    Attributes
    ----------
    inside : the object's pixels.
    observed : pixels with a clear observation (False: no data, cloud, shadow, snow). Pixels
        outside the grid are not part of the window at all.
    water : open-water pixels (:func:`water_pixels`), or None when unknown (the filter keeps).
    slope_deg : slope in degrees (NaN where the DEM has no data), or None when unknown.
    pixel_area_m2 : area of one pixel.

    """

    inside: NDArray[np.bool_]
    observed: NDArray[np.bool_]
    water: NDArray[np.bool_] | None
    slope_deg: NDArray[np.floating[Any]] | None
    pixel_area_m2: float

    def __post_init__(self) -> None:
        """Check that the rasters have one shape."""
        shapes = {a.shape for a in (self.inside, self.observed, self.water, self.slope_deg) if a is not None}
        if len(shapes) != 1:
            raise RtsError(f"object context rasters differ in shape: {sorted(shapes)}")

    @property
    def pixels(self) -> int:
        """Number of object pixels."""
        return int(np.count_nonzero(self.inside))


def water_pixels(
    green: NDArray[np.floating[Any]], nir: NDArray[np.floating[Any]], scl: NDArray[np.integer[Any]] | None = None
) -> NDArray[np.bool_]:
    """Open-water pixels: SCL class 6 (where ``scl`` is given) or NDWI > :data:`NDWI_WATER_THRESHOLD`.

    ``green`` and ``nir`` are reflectances (B03, B08); NaN (unobserved) is never water by NDWI.
    """
    green = np.asarray(green, dtype=np.float32)
    nir = np.asarray(nir, dtype=np.float32)
    total = green + nir
    with np.errstate(invalid="ignore", divide="ignore"):
        ndwi = np.where(total > 0, (green - nir) / total, np.nan)
        water: NDArray[np.bool_] = ndwi > NDWI_WATER_THRESHOLD
    if scl is not None:
        water |= np.asarray(scl) == SCL_WATER
    return water


def water_reason(ctx: ObjectContext) -> str | None:
    """Why the ``water`` filter drops the object, or None to keep it."""
    if ctx.water is None or ctx.pixels == 0:
        return None
    share = np.count_nonzero(ctx.water & ctx.inside) / ctx.pixels
    if share >= WATER_FRACTION:
        return f"{100 * share:.0f} % of its pixels are open water (SCL 6 or NDWI > {NDWI_WATER_THRESHOLD:g})"
    return None


def edges_reason(ctx: ObjectContext) -> str | None:
    """Why the ``edges`` filter drops the object (it touches an unobserved pixel), or None to keep it."""
    ring = ndimage.binary_dilation(ctx.inside, structure=_EIGHT) & ~ctx.inside
    touching = int(np.count_nonzero(ring & ~ctx.observed))
    if touching:
        return f"it touches {touching} unobserved pixel(s) (no data, cloud, shadow or snow)"
    return None


def mmu_reason(ctx: ObjectContext, min_area_m2: float = MIN_AREA_M2) -> str | None:
    """Why the ``mmu`` filter drops the object (smaller than ``min_area_m2``), or None to keep it."""
    area = ctx.pixels * ctx.pixel_area_m2
    if area < min_area_m2:
        return f"its area {area:g} m^2 is below the minimum mapping unit of {min_area_m2:g} m^2"
    return None


def flat_reason(ctx: ObjectContext) -> str | None:
    """Why the ``flat`` filter drops the object (level ground under all of it), or None to keep it."""
    if ctx.slope_deg is None:
        return None
    slopes = np.asarray(ctx.slope_deg[ctx.inside], dtype=np.float64)
    slopes = slopes[np.isfinite(slopes)]
    if slopes.size == 0:
        return None
    level = float(np.percentile(slopes, FLAT_PERCENTILE))
    if level < FLAT_SLOPE_DEG:
        return (
            f"the {FLAT_PERCENTILE:g}th percentile of its slope is {level:.2f} degrees, below {FLAT_SLOPE_DEG:g} "
            "(flat ground)"
        )
    return None


FILTERS: dict[str, Callable[[ObjectContext], str | None]] = {
    "water": water_reason,
    "edges": edges_reason,
    "mmu": mmu_reason,
    "flat": flat_reason,
}
"""The filter functions by name (:data:`FILTER_NAMES`)."""


def check_names(names: Collection[str]) -> None:
    """Raise :class:`RtsError` naming any filter name that is not one of :data:`FILTER_NAMES`."""
    unknown = sorted(set(names) - set(FILTER_NAMES))
    if unknown:
        raise RtsError(f"unknown filter(s) {unknown} (known: {', '.join(FILTER_NAMES)})")


def judge(ctx: ObjectContext, enabled: Collection[str]) -> dict[str, str]:
    """The reasons of every enabled filter that drops the object (empty: keep it), in :data:`FILTER_NAMES` order."""
    check_names(enabled)
    reasons: dict[str, str] = {}
    for name in FILTER_NAMES:
        if name in enabled:
            reason = FILTERS[name](ctx)
            if reason is not None:
                reasons[name] = reason
    return reasons


def context_from_arrays(
    box: tuple[slice, slice],
    inside: NDArray[np.bool_],
    observed: NDArray[np.bool_],
    water: NDArray[np.bool_] | None,
    slope_deg: NDArray[np.floating[Any]] | None,
    pixel_area_m2: float,
) -> ObjectContext:
    """The :class:`ObjectContext` of the object ``inside`` (on the window ``box``) from whole-image arrays.

    ``box`` is the object's bounding box on the image; the context is grown by one pixel on each side
    where the image allows it. ``observed``, ``water`` and ``slope_deg`` cover the whole image.
    """
    height, width = observed.shape
    rows = slice(max(box[0].start - 1, 0), min(box[0].stop + 1, height))
    cols = slice(max(box[1].start - 1, 0), min(box[1].stop + 1, width))
    grown = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
    r0, c0 = box[0].start - rows.start, box[1].start - cols.start
    grown[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]] = inside
    return ObjectContext(
        inside=grown,
        observed=observed[rows, cols],
        water=None if water is None else water[rows, cols],
        slope_deg=None if slope_deg is None else slope_deg[rows, cols],
        pixel_area_m2=pixel_area_m2,
    )


def small_components(mask: NDArray[np.bool_], min_px: float) -> int:
    """Number of 8-connected components of ``mask`` with fewer than ``min_px`` pixels (what the MMU drops)."""
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return 0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return int(np.count_nonzero(sizes < min_px))


# --- the rasters the filters need during a site-year --------------------------------------------------

WATER_FILE = "filter-water.tif"
"""Temporary raster of open-water pixels (uint8 0/1, :func:`water_pixels`), beside ``probability.tif``."""
SLOPE_FILE = "filter-slope.tif"
"""Temporary raster of the slope in degrees (float32, NaN no data), beside ``probability.tif``."""


class FilterRasters:
    """Writes the rasters the filters read (water, slope) strip by strip, then reads object windows.

    The site-year pipeline never holds a whole site: its scene reader hands each strip it reads to
    :meth:`add` (strips may overlap; rows already written are skipped). After the prediction the
    files are read window by window (:meth:`context`). Both files are plain DEFLATE GeoTIFFs in
    ``folder`` (a temporary folder: they are not products).
    """

    def __init__(self, grid: SiteGrid, folder: Path) -> None:
        self.grid = grid
        self.water_path = Path(folder) / WATER_FILE
        self.slope_path = Path(folder) / SLOPE_FILE
        self.rows_written = 0
        self._water: Any = None
        self._slope: Any = None

    def __enter__(self) -> FilterRasters:
        profile = {**self.grid.gtiff_profile(), "compress": "deflate"}
        self._water = rasterio.open(self.water_path, "w", dtype="uint8", **profile)
        self._slope = rasterio.open(self.slope_path, "w", dtype="float32", nodata=np.nan, **profile)
        return self

    def add(
        self,
        row_off: int,
        green: NDArray[np.floating[Any]],
        nir: NDArray[np.floating[Any]],
        scl: NDArray[np.integer[Any]] | None,
        slope_deg: NDArray[np.floating[Any]],
    ) -> None:
        """Write the water flag and slope of full-width grid rows from ``row_off``; skip rows written before."""
        if self._water is None:
            raise RtsError("FilterRasters.add outside its 'with' block")
        start = max(self.rows_written - row_off, 0)
        height = green.shape[0] - start
        if height <= 0:
            return
        if row_off > self.rows_written:
            raise RtsError(f"filter raster rows {self.rows_written}..{row_off} were skipped")
        part = slice(start, None)
        water = water_pixels(green[part], nir[part], None if scl is None else scl[part])
        window = Window(0, row_off + start, self.grid.width, height)
        self._water.write(water.astype(np.uint8), 1, window=window)
        self._slope.write(np.asarray(slope_deg[part], dtype=np.float32), 1, window=window)
        self.rows_written = row_off + start + height

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for dataset in (self._water, self._slope):
            if dataset is not None:
                dataset.close()
        self._water = self._slope = None

    def complete(self) -> bool:
        """Whether every row of the grid was written."""
        return self.rows_written >= self.grid.height


class ObjectScreen:
    """Builds the :class:`ObjectContext` of objects on a grid from ``mask.tif`` and :class:`FilterRasters` files.

    Use as a context manager (the files stay open inside it). ``rasters`` None: water and slope
    are unknown (those filters keep every object).
    """

    def __init__(self, grid: SiteGrid, mask_path: Path, rasters: FilterRasters | None) -> None:
        self.grid = grid
        self.mask_path = Path(mask_path)
        self.rasters = rasters
        self._open: list[Any] = []

    def __enter__(self) -> ObjectScreen:
        self._open = [rasterio.open(self.mask_path)]
        if self.rasters is not None:
            self._open += [rasterio.open(self.rasters.water_path), rasterio.open(self.rasters.slope_path)]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for dataset in self._open:
            dataset.close()
        self._open = []

    def context(self, obj: RtsObject) -> ObjectContext:
        """The object's context: its bounding box grown by one pixel (clipped to the grid)."""
        if not self._open:
            raise RtsError("ObjectScreen.context outside its 'with' block")
        (rows, cols), inside = object_pixels(obj, self.grid, margin_px=1)
        window = Window.from_slices(rows, cols)
        observed = self._open[0].read(1, window=window) != MASK_UNOBSERVED
        water = slope = None
        if len(self._open) == 3:
            water = self._open[1].read(1, window=window).astype(bool)
            slope = self._open[2].read(1, window=window)
        return ObjectContext(inside, observed, water, slope, self.grid.res_m**2)


@dataclass(frozen=True)
class Removed:
    """An object a filter removed, and why (filter name -> reason, every enabled filter that fired)."""

    obj: RtsObject
    reasons: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: filters, reasons, area, pixels and centroid (lon, lat)."""
        lon, lat = self.obj.centroid_lonlat
        return {
            "filters": list(self.reasons),
            "reasons": self.reasons,
            "area_m2": round(self.obj.area_m2, 2),
            "pixels": self.obj.pixels,
            "lon": round(lon, 6) if math.isfinite(lon) else None,
            "lat": round(lat, 6) if math.isfinite(lat) else None,
        }


def screen_objects(
    objects: Sequence[RtsObject], context: Callable[[RtsObject], ObjectContext], enabled: Collection[str]
) -> tuple[list[RtsObject], list[Removed]]:
    """Split ``objects`` into those every enabled filter keeps and those some filter removes.

    ``context`` gives each object's :class:`ObjectContext` (e.g. :meth:`ObjectScreen.context`).
    With no filter enabled nothing is read and every object is kept.
    """
    check_names(enabled)
    if not enabled:
        return list(objects), []
    kept: list[RtsObject] = []
    removed: list[Removed] = []
    for obj in objects:
        reasons = judge(context(obj), enabled)
        if reasons:
            removed.append(Removed(obj, reasons))
        else:
            kept.append(obj)
    return kept, removed


def removal_counts(removed: Sequence[Removed], enabled: Collection[str], mmu_dropped: int = 0) -> dict[str, int]:
    """Objects removed per enabled filter (an object counts under every filter that fired) and in all.

    ``mmu_dropped``: components the minimum mapping unit dropped before vectorising (they reach no
    other filter). Keys: the enabled filters in :data:`FILTER_NAMES` order, then ``removed``.
    """
    counts = {name: 0 for name in FILTER_NAMES if name in enabled}
    for item in removed:
        for name in item.reasons:
            counts[name] = counts.get(name, 0) + 1
    if "mmu" in counts:
        counts["mmu"] += mmu_dropped
    counts["removed"] = len(removed) + mmu_dropped
    return counts


def enabled_names(switches: Mapping[str, bool]) -> tuple[str, ...]:
    """The names of the filters switched on in ``switches`` (a mapping such as ``FilterSwitches.model_dump()``)."""
    check_names(switches)
    return tuple(name for name in FILTER_NAMES if switches.get(name, False))
