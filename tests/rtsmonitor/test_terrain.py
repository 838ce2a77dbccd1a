"""Slope: Horn's method against analytic surfaces, DEM reprojection, Earth Engine requests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from rtsmonitor.errors import DemError
from rtsmonitor.grid import SiteGrid, grid_for_centre
from rtsmonitor.terrain import (
    EE_MAX_CHUNK_PX,
    EarthEngineDem,
    boxcar_px,
    slope_degrees,
    slope_on_grid,
    warp_to_grid,
)


def pixel_centres(grid: SiteGrid) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    cols = np.arange(grid.width) + 0.5
    rows = np.arange(grid.height) + 0.5
    x = grid.x_min + cols * grid.res_m
    y = grid.y_max - rows * grid.res_m
    return np.meshgrid(x, y)


@dataclass(frozen=True)
class PlaneDem:
    """z = gx * x + gy * y (+ offset): a plane of known gradient in metres per metre."""

    gx: float
    gy: float

    def elevation(self, grid: SiteGrid) -> NDArray[np.float32]:
        x, y = pixel_centres(grid)
        return (self.gx * (x - grid.x_min) + self.gy * (y - grid.y_max) + 500.0).astype(np.float32)


@pytest.mark.parametrize(("gx", "gy"), [(0.0, 0.0), (0.1, 0.0), (0.0, -0.25), (0.3, 0.4), (-0.7, 0.2)])
def test_slope_of_a_plane_is_exact(gx: float, gy: float) -> None:
    grid = grid_for_centre(-126.75, 69.75, 2.0)
    slope = slope_on_grid(PlaneDem(gx, gy), grid)
    expected = np.degrees(np.arctan(np.hypot(gx, gy)))
    assert slope.shape == grid.shape
    assert np.abs(slope - expected).max() < 0.1


def test_boxcar_does_not_bias_a_plane_but_smooths_a_bump() -> None:
    z = np.add.outer(np.arange(40.0), np.zeros(40))  # 1 m per pixel northward
    z[20, 20] += 30.0
    raw = slope_degrees(z, 10.0, 1)
    smooth = slope_degrees(z, 10.0, 5)
    assert raw[20, 21] > smooth[20, 21]
    assert abs(smooth[5, 5] - np.degrees(np.arctan(0.1))) < 1e-6


def test_slope_uses_the_pixel_size() -> None:
    z = np.add.outer(np.zeros(10), np.arange(10.0) * 3.0)  # 3 m per pixel eastward
    assert np.allclose(slope_degrees(z, 30.0)[2:-2, 2:-2], 5.710593, atol=1e-5)  # atan(0.1)
    assert np.allclose(slope_degrees(z, 3.0)[2:-2, 2:-2], 45.0, atol=1e-5)


def test_boxcar_size_is_odd() -> None:
    assert boxcar_px(10.0) == 5
    assert boxcar_px(20.0) == 3
    assert boxcar_px(10.0, 40.0) == 5
    assert boxcar_px(100.0) == 1


def test_geographic_dem_reprojected_to_utm_keeps_the_slope(tmp_path: Path) -> None:
    """A GLO-30-like DEM (EPSG:4326, 1 x 2 arcsec) of a tilted plane read onto a UTM site grid."""
    grid = grid_for_centre(-126.75, 69.75, 3.0)
    to_utm = Transformer.from_crs(4326, grid.epsg, always_xy=True)
    west, south, east, north = grid.bbox_wgs84()
    dlat, dlon = 1 / 3600, 2 / 3600
    west, north = west - 0.02, north + 0.01
    width, height = int((east + 0.02 - west) / dlon), int((north + 0.01 - south) / dlat)
    lon = west + (np.arange(width) + 0.5) * dlon
    lat = north - (np.arange(height) + 0.5) * dlat
    x, y = to_utm.transform(*np.meshgrid(lon, lat))
    gx, gy = 0.12, -0.05
    dem = (gx * x + gy * y - (gx * x.mean() + gy * y.mean()) + 300.0).astype(np.float32)
    path = tmp_path / "dem.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=from_origin(west, north, dlon, dlat),
        nodata=-32767.0,
    ) as dst:
        dst.write(dem, 1)

    @dataclass(frozen=True)
    class FileDem:
        def elevation(self, g: SiteGrid) -> NDArray[np.float32]:
            return warp_to_grid([str(path)], g, Resampling.bilinear)

    slope = slope_on_grid(FileDem(), grid)
    expected = np.degrees(np.arctan(np.hypot(gx, gy)))
    assert np.isfinite(slope).all()
    assert np.abs(slope - expected).max() < 0.1


def test_a_dem_without_data_over_the_site_is_an_error() -> None:
    @dataclass(frozen=True)
    class EmptyDem:
        def elevation(self, g: SiteGrid) -> NDArray[np.float32]:
            return np.full(g.shape, np.nan, dtype=np.float32)

    with pytest.raises(DemError, match="no data"):
        slope_on_grid(EmptyDem(), grid_for_centre(10.0, 60.0, 1.0))


def test_earth_engine_requests_cover_the_grid_in_blocks() -> None:
    grid = grid_for_centre(124.40, 69.12, 15.0)  # 1500 x 1500 px: 2 x 2 blocks
    requests = EarthEngineDem("arcticdem").requests(grid)
    assert len(requests) == 4
    first = requests[0]
    assert first["asset_id"] == "UMN/PGC/ArcticDEM/V4/2m_mosaic"
    assert first["band"] == "elevation"
    assert first["grid"]["crsCode"] == f"EPSG:{grid.epsg}"
    assert first["grid"]["affineTransform"]["translateX"] == grid.x_min
    assert first["grid"]["affineTransform"]["scaleY"] == -grid.res_m
    covered = sum(r["grid"]["dimensions"]["width"] * r["grid"]["dimensions"]["height"] for r in requests)
    assert covered == grid.width * grid.height
    last = requests[-1]
    assert last["grid"]["dimensions"] == {"width": 1500 - EE_MAX_CHUNK_PX, "height": 1500 - EE_MAX_CHUNK_PX}
    assert last["grid"]["affineTransform"]["translateY"] == grid.y_max - EE_MAX_CHUNK_PX * grid.res_m
    glo = EarthEngineDem("glo30").requests(grid)[0]
    assert (glo["asset_id"], glo["band"]) == ("COPERNICUS/DEM/GLO30", "DEM")


def test_unknown_earth_engine_dataset_is_named() -> None:
    with pytest.raises(DemError, match="'srtm'"):
        EarthEngineDem("srtm")
