"""The fixed UTM site grid: zone choice, snapping, reproducibility."""

from __future__ import annotations

import pytest
from shapely.geometry import box

from rtsmonitor.grid import SiteGrid, grid_for_bounds, grid_for_centre, grid_for_geometry, utm_epsg


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (-139.0, 69.6, 32607),
        (-126.75, 69.75, 32609),
        (48.35, 69.22, 32639),
        (124.4, 69.12, 32651),
        (-180.0, 10.0, 32601),
        (180.0, 10.0, 32660),
        (3.0, -45.0, 32731),
    ],
)
def test_utm_zone(lon: float, lat: float, epsg: int) -> None:
    assert utm_epsg(lon, lat) == epsg


def test_out_of_range_position_is_named() -> None:
    with pytest.raises(ValueError, match=r"\(200.0, 10.0\)"):
        utm_epsg(200.0, 10.0)


def test_centre_grid_is_snapped_square_and_reproducible() -> None:
    grid = grid_for_centre(-126.75, 69.75, 10.0)
    assert grid.shape == (1000, 1000)
    assert grid.x_min % 10 == 0 and grid.y_max % 10 == 0
    assert grid.area_m2 == pytest.approx(100e6)
    assert grid_for_centre(-126.75, 69.75, 10.0) == grid
    west, south, east, north = grid.bbox_wgs84()
    assert west < -126.75 < east and south < 69.75 < north
    assert grid.footprint_wgs84().contains(box(-126.76, 69.74, -126.74, 69.76))


def test_bounds_snap_outward() -> None:
    grid = grid_for_bounds(32609, (100003.0, 200007.0, 100996.0, 200991.0))
    assert grid.bounds == (100000.0, 200000.0, 101000.0, 201000.0)
    assert grid.transform.a == 10.0 and grid.transform.e == -10.0


def test_geometry_grid_covers_the_polygon() -> None:
    polygon = box(48.30, 69.20, 48.40, 69.25)
    grid = grid_for_geometry(polygon)
    assert grid.epsg == 32639
    assert grid.footprint_wgs84().buffer(1e-9).contains(polygon)


def test_dict_round_trip() -> None:
    grid = grid_for_centre(124.4, 69.12, 3.0)
    assert SiteGrid.from_dict(grid.to_dict()) == grid


def test_empty_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="empty bounds"):
        grid_for_bounds(32609, (10.0, 10.0, 10.0, 20.0))


def test_window_and_coarsened_grids_keep_the_pixels_in_place() -> None:
    grid = SiteGrid(32609, 10.0, 500000.0, 7700000.0, 1000, 800)
    part = grid.window(100, 30, 50, 70)
    assert part.shape == (50, 70)
    assert part.transform * (0, 0) == grid.transform * (30, 100)
    assert part.transform * (70, 50) == grid.transform * (100, 150)
    with pytest.raises(ValueError, match="leaves"):
        grid.window(790, 0, 20, 10)
    with pytest.raises(ValueError, match="empty"):
        grid.window(0, 0, 0, 10)
    coarse = grid.coarsened(3)
    assert coarse.shape == (267, 334) and coarse.res_m == 30.0
    assert coarse.transform * (0, 0) == grid.transform * (0, 0)
    x_max, y_min = coarse.bounds[2], coarse.bounds[1]
    assert x_max >= grid.bounds[2] and y_min <= grid.bounds[1]  # covers the whole grid
