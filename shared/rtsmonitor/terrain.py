"""Slope from a digital elevation model (DEM), on the site grid.

Rustemeyer et al. 2022 (IGARSS, doi:10.1109/IGARSS46834.2022.9884869) add a slope layer computed
from a DEM smoothed with a boxcar (moving-average) filter; they took the DEM from Google Earth
Engine. Two sources stand behind one interface here:

- :class:`StacDem` (default, no account): Copernicus DEM GLO-30 from a STAC API, by default
  Microsoft Planetary Computer (collection ``cop-dem-glo-30``, asset ``data``). Copernicus DEM
  (c) DLR e.V. 2010-2014 and (c) Airbus Defence and Space GmbH 2014-2018, provided under
  COPERNICUS by the European Union and ESA.
- :class:`EarthEngineDem` (extra ``gee``): ArcticDEM v4 2 m mosaic (Porter et al. 2023,
  doi:10.7910/DVN/3VDC4W) or Copernicus GLO-30 through the Earth Engine ``computePixels`` API with a
  service account.

Slope follows Horn (1981), "Hill shading and the reflectance map", Proc. IEEE 69(1):14-47, with
the grid's true pixel size in metres.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.vrt import WarpedVRT
from scipy.ndimage import uniform_filter

from rtsmonitor.errors import DemError, MissingExtraError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.stac import open_catalog, read_env

COP_DEM_COLLECTION = "cop-dem-glo-30"
"""Planetary Computer collection of the Copernicus DEM GLO-30 (30 m, EPSG:4326 1-degree tiles)."""
COP_DEM_ASSET = "data"
"""Asset key of the elevation COG in a ``cop-dem-glo-30`` item (metres above the EGM2008 geoid)."""

BOXCAR_WINDOW_M = 50.0
"""Side of the square boxcar (moving-average) window applied to the DEM before slope, in metres.

The paper does not give the size. 50 m (5 x 5 pixels at 10 m) spans a little more than one
GLO-30 pixel in every direction, which removes the blockiness of a 30 m DEM resampled to 10 m
without flattening slump headwalls (tens of metres across)."""

EE_DATASETS: dict[str, tuple[str, str, bool]] = {
    "arcticdem": ("UMN/PGC/ArcticDEM/V4/2m_mosaic", "elevation", False),
    "glo30": ("COPERNICUS/DEM/GLO30", "DEM", True),
}
"""Earth Engine DEM options: name -> (asset id, elevation band, asset is an ImageCollection)."""

EE_MAX_CHUNK_PX = 1024
"""Side of the largest block requested from Earth Engine ``computePixels`` in one call, in pixels
(the API refuses requests over 48 MB or 32768 pixels a side)."""


class DemSource(Protocol):
    """Anything that returns elevation in metres on a site grid."""

    def elevation(self, grid: SiteGrid) -> NDArray[np.float32]:
        """Elevation in metres on ``grid`` (NaN where the DEM has no data)."""
        ...


def boxcar_px(res_m: float, window_m: float = BOXCAR_WINDOW_M) -> int:
    """The boxcar window in pixels for a grid of ``res_m``: odd, at least 1."""
    size = max(1, round(window_m / res_m))
    return size if size % 2 == 1 else size + 1


def slope_degrees(dem_m: NDArray[np.floating[Any]], res_m: float, smooth_px: int = 1) -> NDArray[np.float32]:
    """Slope in degrees by Horn's method, after a ``smooth_px`` x ``smooth_px`` boxcar filter.

    Parameters
    ----------
    dem_m : elevation in metres, north-up, square pixels.
    res_m : true pixel size in metres (not degrees: reproject geographic DEMs first).
    smooth_px : side of the moving-average window in pixels (1 = no smoothing).

    Notes
    -----
    Edges are handled by repeating the outermost row/column, which biases slope towards zero in the
    outermost ``smooth_px // 2 + 1`` pixels: read the DEM with a margin and crop (as
    :func:`slope_on_grid` does). NaN in the DEM gives NaN slope around it.

    """
    z = np.asarray(dem_m, dtype=np.float64)
    if smooth_px > 1:
        z = uniform_filter(z, size=smooth_px, mode="nearest")
    p = np.pad(z, 1, mode="edge")
    a, b, c = p[:-2, :-2], p[:-2, 1:-1], p[:-2, 2:]
    d, f = p[1:-1, :-2], p[1:-1, 2:]
    g, h, i = p[2:, :-2], p[2:, 1:-1], p[2:, 2:]
    dz_dx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8.0 * res_m)
    dz_dy = ((g + 2 * h + i) - (a + 2 * b + c)) / (8.0 * res_m)
    return np.degrees(np.arctan(np.hypot(dz_dx, dz_dy))).astype(np.float32)


def padded_grid(grid: SiteGrid, margin_px: int) -> SiteGrid:
    """``grid`` grown by ``margin_px`` pixels on every side."""
    return SiteGrid(
        epsg=grid.epsg,
        res_m=grid.res_m,
        x_min=grid.x_min - margin_px * grid.res_m,
        y_max=grid.y_max + margin_px * grid.res_m,
        width=grid.width + 2 * margin_px,
        height=grid.height + 2 * margin_px,
    )


def slope_on_grid(source: DemSource, grid: SiteGrid, window_m: float = BOXCAR_WINDOW_M) -> NDArray[np.float32]:
    """Slope in degrees on ``grid`` from ``source``, smoothed with a ``window_m`` boxcar.

    The DEM is read with a margin so that neither the boxcar nor Horn's 3 x 3 stencil sees the
    grid's edge.
    """
    size = boxcar_px(grid.res_m, window_m)
    margin = size // 2 + 2
    dem = source.elevation(padded_grid(grid, margin))
    if not np.isfinite(dem).any():
        raise DemError(f"the DEM has no data over the site grid {grid.to_dict()}")
    slope = slope_degrees(dem, grid.res_m, size)
    return slope[margin:-margin, margin:-margin]


def warp_to_grid(hrefs: list[str], grid: SiteGrid, resampling: Resampling) -> NDArray[np.float32]:
    """Read several single-band rasters onto ``grid`` and mosaic them (first valid value wins).

    Only the blocks of each source that the grid touches are read (a WarpedVRT sized to the
    grid). Pixels that no source covers, or that are no data in the source, are NaN.
    """
    out = np.full(grid.shape, np.nan, dtype=np.float32)
    with read_env():
        for href in hrefs:
            with rasterio.open(href) as src:
                nodata = src.nodata
                if nodata is None:
                    nodata = np.nan if np.dtype(src.dtypes[0]).kind == "f" else 0
                with WarpedVRT(
                    src,
                    crs=grid.crs,
                    transform=grid.transform,
                    width=grid.width,
                    height=grid.height,
                    resampling=resampling,
                    nodata=nodata,
                ) as vrt:
                    band = vrt.read(1, masked=True).astype(np.float32).filled(np.nan)
            fill = np.isnan(out) & np.isfinite(band)
            out[fill] = band[fill]
    return out


@dataclass(frozen=True)
class StacDem:
    """Copernicus DEM GLO-30 from a STAC API (default: Planetary Computer, signed)."""

    stac_url: str
    collection: str = COP_DEM_COLLECTION
    asset: str = COP_DEM_ASSET

    def elevation(self, grid: SiteGrid) -> NDArray[np.float32]:
        """Elevation in metres on ``grid``, bilinear from the DEM tiles the grid touches."""
        client = open_catalog(self.stac_url)
        items = list(client.search(collections=[self.collection], bbox=grid.bbox_wgs84()).items())
        if not items:
            raise DemError(
                f"no {self.collection} item at {self.stac_url} covers bbox {grid.bbox_wgs84()}: "
                "check the STAC URL and that the DEM collection exists there"
            )
        hrefs = []
        for item in items:
            if self.asset not in item.assets:
                raise DemError(f"DEM item {item.id} has no asset {self.asset!r} (has {sorted(item.assets)})")
            hrefs.append(item.assets[self.asset].href)
        return warp_to_grid(sorted(hrefs), grid, Resampling.bilinear)


@dataclass(frozen=True)
class EarthEngineDem:
    """A DEM from Google Earth Engine through ``ee.data.computePixels`` (extra ``gee``).

    Authentication uses a service account: ``service_account`` (its e-mail) and ``key_file`` (its
    JSON key). The request is built by :meth:`requests` without touching the network, so it can
    be checked offline.
    """

    dataset: str = "arcticdem"
    service_account: str | None = None
    key_file: str | None = None
    project: str | None = None

    def __post_init__(self) -> None:
        """Reject an unknown dataset name early, naming the choices."""
        if self.dataset not in EE_DATASETS:
            raise DemError(f"dem dataset {self.dataset!r} is not one of {sorted(EE_DATASETS)}")

    def requests(self, grid: SiteGrid) -> list[dict[str, Any]]:
        """The ``computePixels`` requests (less the expression) that cover ``grid``, in blocks."""
        asset_id, band, _ = EE_DATASETS[self.dataset]
        out = []
        for row in range(0, grid.height, EE_MAX_CHUNK_PX):
            for col in range(0, grid.width, EE_MAX_CHUNK_PX):
                out.append(
                    {
                        "asset_id": asset_id,
                        "band": band,
                        "fileFormat": "GEO_TIFF",
                        "grid": {
                            "dimensions": {
                                "width": min(EE_MAX_CHUNK_PX, grid.width - col),
                                "height": min(EE_MAX_CHUNK_PX, grid.height - row),
                            },
                            "affineTransform": {
                                "scaleX": grid.res_m,
                                "shearX": 0.0,
                                "translateX": grid.x_min + col * grid.res_m,
                                "shearY": 0.0,
                                "scaleY": -grid.res_m,
                                "translateY": grid.y_max - row * grid.res_m,
                            },
                            "crsCode": f"EPSG:{grid.epsg}",
                        },
                        "window": (row, col),
                    }
                )
        return out

    def elevation(self, grid: SiteGrid) -> NDArray[np.float32]:
        """Elevation in metres on ``grid`` (bilinear, computed by Earth Engine)."""
        ee = _import_ee()
        if self.service_account and self.key_file:
            credentials = ee.ServiceAccountCredentials(self.service_account, self.key_file)
            ee.Initialize(credentials, project=self.project)
        else:
            ee.Initialize(project=self.project)
        asset_id, band, is_collection = EE_DATASETS[self.dataset]
        image = ee.ImageCollection(asset_id).mosaic() if is_collection else ee.Image(asset_id)
        image = image.select(band).resample("bilinear")
        out = np.full(grid.shape, np.nan, dtype=np.float32)
        for request in self.requests(grid):
            row, col = request["window"]
            payload = {"expression": image, "fileFormat": request["fileFormat"], "grid": request["grid"]}
            with MemoryFile(ee.data.computePixels(payload)) as mem, mem.open() as src:
                block = src.read(1, masked=True).astype(np.float32).filled(np.nan)
            out[row : row + block.shape[0], col : col + block.shape[1]] = block
        return out


def _import_ee() -> Any:
    """Import earthengine-api or say which extra installs it."""
    try:
        return importlib.import_module("ee")
    except ImportError as exc:
        raise MissingExtraError("the Earth Engine DEM needs earthengine-api: pip install 'rtsmonitor[gee]'") from exc
