"""The fixed 10 m UTM grid of a site: every layer of every year is read onto it.

A grid is snapped to whole multiples of its resolution in the site's UTM zone, so that it is the
same whenever it is derived from the same site config, and so that its 10 m pixels coincide with
the Sentinel-2 10 m pixels (whose tile origins are whole multiples of 10 m in the same zone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from rasterio.crs import CRS as RioCRS
from rasterio.features import rasterize
from rasterio.warp import transform_bounds
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

DEFAULT_RES_M = 10.0
"""Pixel size of the site grid in metres: the Sentinel-2 10 m bands (B02, B03, B04, B08)."""


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone containing (lon, lat): 326zz north, 327zz south."""
    if not -180.0 <= lon <= 180.0 or not -90.0 <= lat <= 90.0:
        raise ValueError(f"lon/lat out of range: ({lon}, {lat})")
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


@dataclass(frozen=True)
class SiteGrid:
    """A north-up raster grid in a UTM zone.

    Attributes
    ----------
    epsg : EPSG code of the UTM zone.
    res_m : pixel size in metres (square pixels).
    x_min, y_max : west and north edges of the grid in metres (multiples of ``res_m``).
    width, height : size in pixels.

    """

    epsg: int
    res_m: float
    x_min: float
    y_max: float
    width: int
    height: int

    @property
    def crs(self) -> RioCRS:
        """The grid's CRS as a rasterio CRS."""
        return RioCRS.from_epsg(self.epsg)

    @property
    def transform(self) -> Affine:
        """Affine transform from (col, row) to (x, y) of pixel corners."""
        return Affine(self.res_m, 0.0, self.x_min, 0.0, -self.res_m, self.y_max)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) in metres."""
        return (
            self.x_min,
            self.y_max - self.height * self.res_m,
            self.x_min + self.width * self.res_m,
            self.y_max,
        )

    @property
    def area_m2(self) -> float:
        """Area covered by the grid in square metres."""
        return self.width * self.height * self.res_m**2

    def bbox_wgs84(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees, densified so that the whole grid is inside."""
        west, south, east, north = transform_bounds(self.crs, "EPSG:4326", *self.bounds, densify_pts=21)
        return (float(west), float(south), float(east), float(north))

    def footprint_wgs84(self) -> Polygon:
        """The grid's outline as a WGS84 polygon (edges densified)."""
        to_wgs84 = Transformer.from_crs(CRS.from_epsg(self.epsg), CRS.from_epsg(4326), always_xy=True)
        outline = box(*self.bounds).segmentize(self.res_m * max(self.width, self.height) / 20)
        return Polygon(shapely.transform(outline, to_wgs84.transform, interleaved=False).exterior)

    def window(self, row_off: int, col_off: int, height: int, width: int) -> SiteGrid:
        """The part of this grid ``height`` x ``width`` pixels from (``row_off``, ``col_off``): same pixels."""
        if row_off < 0 or col_off < 0 or height < 1 or width < 1:
            raise ValueError(f"window ({row_off}, {col_off}, {height}, {width}) is empty or starts before the grid")
        if row_off + height > self.height or col_off + width > self.width:
            raise ValueError(f"window ({row_off}, {col_off}, {height}, {width}) leaves the {self.shape} grid")
        return SiteGrid(
            self.epsg,
            self.res_m,
            self.x_min + col_off * self.res_m,
            self.y_max - row_off * self.res_m,
            width,
            height,
        )

    def coarsened(self, factor: int) -> SiteGrid:
        """The grid with pixels ``factor`` times larger, covering at least this grid (same origin)."""
        if factor < 1:
            raise ValueError(f"coarsening factor must be at least 1, got {factor}")
        return SiteGrid(
            self.epsg,
            self.res_m * factor,
            self.x_min,
            self.y_max,
            math.ceil(self.width / factor),
            math.ceil(self.height / factor),
        )

    def gtiff_profile(self, count: int = 1) -> dict[str, Any]:
        """The rasterio profile of a ``count``-band GeoTIFF on this grid (add dtype, nodata, tiling)."""
        return {
            "driver": "GTiff",
            "count": count,
            "width": self.width,
            "height": self.height,
            "crs": self.crs,
            "transform": self.transform,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for stack sidecars and model metadata)."""
        return {
            "epsg": self.epsg,
            "res_m": self.res_m,
            "x_min": self.x_min,
            "y_max": self.y_max,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SiteGrid:
        """Inverse of :meth:`to_dict`."""
        return cls(
            epsg=int(data["epsg"]),
            res_m=float(data["res_m"]),
            x_min=float(data["x_min"]),
            y_max=float(data["y_max"]),
            width=int(data["width"]),
            height=int(data["height"]),
        )


def grid_for_bounds(epsg: int, bounds: tuple[float, float, float, float], res_m: float = DEFAULT_RES_M) -> SiteGrid:
    """The smallest snapped grid in ``epsg`` that covers ``bounds`` (x_min, y_min, x_max, y_max)."""
    x0, y0, x1, y1 = bounds
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty bounds: {bounds}")
    x_min = math.floor(x0 / res_m) * res_m
    y_min = math.floor(y0 / res_m) * res_m
    x_max = math.ceil(x1 / res_m) * res_m
    y_max = math.ceil(y1 / res_m) * res_m
    return SiteGrid(
        epsg=epsg,
        res_m=res_m,
        x_min=x_min,
        y_max=y_max,
        width=round((x_max - x_min) / res_m),
        height=round((y_max - y_min) / res_m),
    )


def project_geometry(geometry_wgs84: BaseGeometry, epsg: int) -> BaseGeometry:
    """A WGS84 (lon, lat) geometry in the CRS ``epsg``."""
    to_utm = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_epsg(epsg), always_xy=True)
    return shapely.transform(geometry_wgs84, to_utm.transform, interleaved=False)


def burn_wgs84(geometries_wgs84: Sequence[BaseGeometry], grid: SiteGrid) -> NDArray[np.bool_]:
    """Boolean raster on ``grid``: True where a pixel centre lies inside one of the WGS84 geometries."""
    shapes = [project_geometry(g, grid.epsg) for g in geometries_wgs84]
    if not shapes:
        return np.zeros(grid.shape, dtype=bool)
    burned: NDArray[np.uint8] = rasterize(
        [(s, 1) for s in shapes], out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8"
    )
    return burned.astype(bool)


def grid_for_geometry(geometry_wgs84: BaseGeometry, res_m: float = DEFAULT_RES_M) -> SiteGrid:
    """The snapped grid covering a WGS84 geometry, in the UTM zone of the geometry's centroid."""
    centre = geometry_wgs84.centroid
    epsg = utm_epsg(centre.x, centre.y)
    return grid_for_bounds(epsg, project_geometry(geometry_wgs84, epsg).bounds, res_m)


def grid_for_centre(lon: float, lat: float, size_km: float, res_m: float = DEFAULT_RES_M) -> SiteGrid:
    """A square grid of side ``size_km`` centred on (lon, lat) in that point's UTM zone."""
    epsg = utm_epsg(lon, lat)
    x, y = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_epsg(epsg), always_xy=True).transform(lon, lat)
    half_m = size_km * 1000.0 / 2.0
    cx = round(x / res_m) * res_m
    cy = round(y / res_m) * res_m
    return grid_for_bounds(epsg, (cx - half_m, cy - half_m, cx + half_m, cy + half_m), res_m)
