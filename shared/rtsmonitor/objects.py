"""RTS objects: connected components of a classified RTS mask, as polygons with area and probability.

The U-Net of Rustemeyer et al. 2022 (IGARSS, doi:10.1109/IGARSS46834.2022.9884869) classifies pixels;
the monitoring records count and measure slumps. This module turns a boolean mask on a
:class:`~rtsmonitor.grid.SiteGrid` into numbered objects (polygons in the grid's UTM CRS) and writes
them as an RFC 7946 GeoJSON FeatureCollection in WGS84.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon, mapping, shape

from rtsmonitor.errors import RtsError
from rtsmonitor.grid import SiteGrid

DEFAULT_MIN_AREA_M2 = 1000.0
"""Minimum mapping unit in m^2 (0.1 ha = 10 pixels of 10 m); smaller components are dropped.

0.1 ha is the lower end of the size range of active RTS (mostly 0.1-10 ha; MISSION.md §5). In the
Nitze et al. 2021 labels of the paper's four regions (1239 polygons, ``shared/data/labels``), 40
polygons (3.2 %) are smaller than 0.1 ha and they hold 0.08 % of the labelled area; so the unit
removes classifier speckle of a few pixels while costing almost no RTS area. The comparison is
inclusive: a component of exactly ``min_area_m2`` is kept.
"""

CONNECTIVITY = 8
"""Pixel connectivity of an object: 8 (pixels touching only at a corner belong to one object).

RTS scars are narrow arcs (headwall, mud-flow lobes) that a thresholded 10 m probability map often
renders as pixel chains joined only diagonally; 8-connectivity keeps such a slump one object instead
of counting it several times. Its polygon is then a MultiPolygon whose parts touch at corners
(a valid geometry), because single polygons cannot be joined at a point.
"""

LONLAT_DECIMALS = 7
"""Decimal places of GeoJSON coordinates in degrees (1e-7 deg is about 1 cm; RFC 7946 §11.2)."""

_STRUCTURE = ndimage.generate_binary_structure(2, 2 if CONNECTIVITY == 8 else 1)

Geometry: TypeAlias = Polygon | MultiPolygon
"""The outline of one object: a Polygon, or a MultiPolygon whose parts touch at corners."""


@dataclass(frozen=True)
class RtsObject:
    """One mapped RTS: a connected component of the mask.

    Attributes
    ----------
    id : 1.. in row-major order of each object's first pixel (top row first, then left to right).
    geometry : outline in the grid's UTM CRS (metres), holes kept; a MultiPolygon where parts touch
        only at corners (see :data:`CONNECTIVITY`).
    area_m2 : pixel count times the pixel area (equals the polygon area).
    perimeter_m : length of all rings (outer and holes) in metres.
    pixels : number of pixels.
    mean_probability, max_probability : of the RTS probability over the object's pixels (NaN when
        no probability was given).
    centroid_lonlat : (lon, lat) of the polygon centroid in WGS84 degrees.

    """

    id: int
    geometry: Geometry
    area_m2: float
    perimeter_m: float
    pixels: int
    mean_probability: float
    max_probability: float
    centroid_lonlat: tuple[float, float]


ProbabilityWindow = Callable[[slice, slice], NDArray[np.floating[Any]]]
"""``read(rows, cols)``: the probability of a window of the grid (e.g. read from ``probability.tif``),
so that a large site's probabilities need not be in memory at once."""


def _check_inputs(
    mask: NDArray[Any], probability: NDArray[Any] | ProbabilityWindow | None, grid: SiteGrid, min_area_m2: float
) -> NDArray[np.bool_]:
    """The mask as booleans, after checking shapes, dtypes and the minimum area."""
    mask = np.asarray(mask)
    if mask.shape != grid.shape:
        raise RtsError(f"mask shape {mask.shape} does not match the grid shape {grid.shape} (height, width)")
    if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer)):
        raise RtsError(f"mask must be boolean (or 0/1 integers), got dtype {mask.dtype}: threshold probabilities first")
    if probability is not None and not callable(probability):
        probability = np.asarray(probability)
        if probability.shape != grid.shape:
            raise RtsError(
                f"probability shape {probability.shape} does not match the grid shape {grid.shape} (height, width)"
            )
        if not np.issubdtype(probability.dtype, np.floating):
            raise RtsError(f"probability must be floating point in [0, 1], got dtype {probability.dtype}")
    if not math.isfinite(min_area_m2) or min_area_m2 < 0:
        raise RtsError(f"min_area_m2 must be a finite number >= 0, got {min_area_m2}")
    return mask.astype(bool, copy=False)


def find_objects(
    mask: NDArray[np.bool_],
    probability: NDArray[np.floating[Any]] | ProbabilityWindow | None,
    grid: SiteGrid,
    *,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
) -> list[RtsObject]:
    """RTS objects of a mask: connected components (:data:`CONNECTIVITY`) of at least ``min_area_m2``.

    Parameters
    ----------
    mask : (height, width) booleans on ``grid``, True = RTS.
    probability : (height, width) RTS probability on ``grid``, a :data:`ProbabilityWindow` that
        reads it window by window, or None (then the probability statistics are NaN). NaN inside
        an object propagates to its statistics.
    grid : the grid of the mask.
    min_area_m2 : minimum mapping unit; smaller components are dropped (area >= unit is kept).

    Returns
    -------
    The objects, numbered 1.. in row-major order of their first pixel.

    Raises
    ------
    RtsError
        If the shapes do not match the grid, the mask is not boolean/integer or the unit is invalid.

    """
    mask = _check_inputs(mask, probability, grid, min_area_m2)
    labels, count = ndimage.label(mask, structure=_STRUCTURE)  # numbered in row-major scan order
    if count == 0:
        return []
    pixel_area = grid.res_m**2
    to_wgs84 = Transformer.from_crs(CRS.from_epsg(grid.epsg), CRS.from_epsg(4326), always_xy=True)
    objects: list[RtsObject] = []
    # Object by object within its bounding box, so memory beyond the label raster stays small
    # however large the site (no relabelled or float64 copy of the whole site).
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == label
        n = int(np.count_nonzero(inside))
        if n * pixel_area < min_area_m2:
            continue
        if probability is None:
            mean, peak = math.nan, math.nan
        else:
            window = probability(*box) if callable(probability) else probability[box]
            values = np.asarray(window[inside], dtype=np.float64)
            mean, peak = float(values.mean()), float(values.max())
        # 4-connected polygons never join at a corner, so every part is a valid polygon; the parts
        # of one 8-connected object are gathered into a MultiPolygon.
        transform = grid.transform * Affine.translation(box[1].start, box[0].start)
        polys = [
            shape(geom)
            for geom, _ in rasterio.features.shapes(
                inside.astype(np.uint8), mask=inside, connectivity=4, transform=transform
            )
        ]
        geometry: Geometry = polys[0] if len(polys) == 1 else MultiPolygon(polys)
        centroid = geometry.centroid
        lon, lat = to_wgs84.transform(centroid.x, centroid.y)
        objects.append(
            RtsObject(
                id=len(objects) + 1,
                geometry=geometry,
                area_m2=n * pixel_area,
                perimeter_m=float(geometry.length),
                pixels=n,
                mean_probability=mean,
                max_probability=peak,
                centroid_lonlat=(float(lon), float(lat)),
            )
        )
    return objects


def object_pixels(
    obj: RtsObject, grid: SiteGrid, *, margin_px: int = 0
) -> tuple[tuple[slice, slice], NDArray[np.bool_]]:
    """The object's pixels on ``grid``: a window (rows, cols) and a boolean raster of it.

    The window is the object's bounding box grown by ``margin_px`` on every side, clipped to the grid.
    The raster is the object's polygon burnt at pixel centres, which gives back exactly the pixels
    of the component :func:`find_objects` traced (its edges run along pixel edges).
    """
    if margin_px < 0:
        raise RtsError(f"margin_px must be >= 0, got {margin_px}")
    x_min, y_min, x_max, y_max = obj.geometry.bounds
    col0 = round((x_min - grid.x_min) / grid.res_m) - margin_px
    col1 = round((x_max - grid.x_min) / grid.res_m) + margin_px
    row0 = round((grid.y_max - y_max) / grid.res_m) - margin_px
    row1 = round((grid.y_max - y_min) / grid.res_m) + margin_px
    rows = slice(max(row0, 0), min(row1, grid.height))
    cols = slice(max(col0, 0), min(col1, grid.width))
    if rows.start >= rows.stop or cols.start >= cols.stop:
        raise RtsError(f"object {obj.id} lies outside the grid {grid.shape}")
    transform = grid.transform * Affine.translation(cols.start, rows.start)
    burnt = rasterio.features.rasterize(
        [(obj.geometry, 1)],
        out_shape=(rows.stop - rows.start, cols.stop - cols.start),
        transform=transform,
        fill=0,
        dtype="uint8",
    )
    inside: NDArray[np.bool_] = burnt.astype(bool)
    return (rows, cols), inside


def total_area_m2(objects: Sequence[RtsObject]) -> float:
    """Summed area of the objects in m^2."""
    return float(sum(o.area_m2 for o in objects))


def _json_number(value: float, digits: int) -> float | None:
    """A rounded float, or None for NaN/inf (which JSON cannot hold)."""
    return round(value, digits) if math.isfinite(value) else None


def _as_lists(value: Any) -> Any:
    """``value`` with tuples turned into lists (what a JSON round trip gives)."""
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


OBJECT_PROPERTIES = ("id", "area_m2", "perimeter_m", "pixels", "mean_probability", "max_probability")
"""Per-object GeoJSON properties; extra ``properties`` may not reuse these names."""


def objects_geojson(
    objects: Sequence[RtsObject],
    grid: SiteGrid,
    properties: Mapping[str, Any] | None = None,
    per_object: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The objects as an RFC 7946 FeatureCollection in WGS84 (lon, lat), rings counter-clockwise.

    Parameters
    ----------
    objects : from :func:`find_objects` on ``grid``.
    grid : the grid whose CRS the object geometries are in.
    properties : extra properties (e.g. site id, year, model version) copied into every feature and
        kept as the collection's top-level ``properties`` member.
    per_object : one mapping of further properties per object (e.g. its confidence tier,
        :mod:`rtsmonitor.tiers`), in the order of ``objects``.

    Returns
    -------
    A JSON-serialisable dict. Coordinates are rounded to :data:`LONLAT_DECIMALS` decimals; a NaN
    probability is written as null.

    Raises
    ------
    RtsError
        If an extra property would overwrite an object property, or ``per_object`` does not have
        one entry per object.

    """
    extra = dict(properties or {})
    clashes = sorted(set(extra) & set(OBJECT_PROPERTIES))
    if clashes:
        raise RtsError(f"extra GeoJSON properties {clashes} clash with the per-object properties {OBJECT_PROPERTIES}")
    if per_object is not None and len(per_object) != len(objects):
        raise RtsError(f"per_object has {len(per_object)} entries for {len(objects)} objects")
    if per_object is not None:
        clashes = sorted({k for props in per_object for k in props} & set(OBJECT_PROPERTIES).union(extra))
        if clashes:
            raise RtsError(f"per-object properties {clashes} clash with the object or extra properties")
    to_wgs84 = Transformer.from_crs(CRS.from_epsg(grid.epsg), CRS.from_epsg(4326), always_xy=True)
    features = []
    for index, obj in enumerate(objects):
        lonlat = shapely.transform(obj.geometry, to_wgs84.transform, interleaved=False)
        lonlat = shapely.orient_polygons(lonlat)  # exterior counter-clockwise, holes clockwise (RFC 7946 §3.1.6)
        lonlat = shapely.transform(lonlat, lambda xy: np.round(xy, LONLAT_DECIMALS))
        features.append(
            {
                "type": "Feature",
                "id": obj.id,
                "geometry": _as_lists(mapping(lonlat)),
                "properties": {
                    "id": obj.id,
                    "area_m2": round(obj.area_m2, 2),
                    "perimeter_m": round(obj.perimeter_m, 2),
                    "pixels": obj.pixels,
                    "mean_probability": _json_number(obj.mean_probability, 4),
                    "max_probability": _json_number(obj.max_probability, 4),
                    **(per_object[index] if per_object is not None else {}),
                    **extra,
                },
            }
        )
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if extra:
        collection["properties"] = extra
    return collection
