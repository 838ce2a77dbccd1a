"""RTS objects: components, minimum mapping unit, polygons, probabilities and GeoJSON."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box, shape

from rtsmonitor.errors import RtsError
from rtsmonitor.grid import SiteGrid, grid_for_centre, project_geometry
from rtsmonitor.objects import (
    CONNECTIVITY,
    DEFAULT_MIN_AREA_M2,
    find_objects,
    objects_geojson,
    total_area_m2,
)

# A 50 x 40 px grid at 10 m in UTM 9N, near Horton (Rustemeyer et al. 2022).
GRID = SiteGrid(epsg=32609, res_m=10.0, x_min=500_000.0, y_max=7_740_000.0, width=50, height=40)


def pixel_box(row0: int, col0: int, row1: int, col1: int, grid: SiteGrid = GRID) -> Polygon:
    """The UTM box covering pixel rows row0..row1-1 and columns col0..col1-1."""
    r = grid.res_m
    return box(grid.x_min + col0 * r, grid.y_max - row1 * r, grid.x_min + col1 * r, grid.y_max - row0 * r)


def empty_mask() -> np.ndarray:
    return np.zeros(GRID.shape, dtype=bool)


def test_default_mmu_is_a_tenth_of_a_hectare() -> None:
    assert DEFAULT_MIN_AREA_M2 == 1000.0  # 0.1 ha, 10 pixels of 10 m


def test_two_squares_have_exact_area_perimeter_and_outline() -> None:
    mask = empty_mask()
    mask[2:12, 30:40] = True  # 10 x 10 px, first pixel at row 2
    mask[20:25, 5:10] = True  # 5 x 5 px
    objects = find_objects(mask, None, GRID)
    assert [o.id for o in objects] == [1, 2]
    big, small = objects
    assert big.pixels == 100 and big.area_m2 == 10_000.0
    assert big.perimeter_m == pytest.approx(400.0)
    assert big.geometry.equals(pixel_box(2, 30, 12, 40))
    assert small.pixels == 25 and small.area_m2 == 2_500.0
    assert small.perimeter_m == pytest.approx(200.0)
    assert small.geometry.equals(pixel_box(20, 5, 25, 10))
    assert total_area_m2(objects) == 12_500.0
    for o in objects:
        assert o.geometry.area == pytest.approx(o.area_m2)
        assert math.isnan(o.mean_probability) and math.isnan(o.max_probability)


def test_ids_follow_row_major_order_of_first_pixel() -> None:
    mask = empty_mask()
    mask[10:20, 0:10] = True  # left, but starts lower
    mask[5:15, 30:40] = True  # right, starts higher: id 1
    first, second = find_objects(mask, None, GRID)
    assert first.geometry.equals(pixel_box(5, 30, 15, 40))
    assert second.geometry.equals(pixel_box(10, 0, 20, 10))
    assert (first.id, second.id) == (1, 2)


def test_ring_keeps_its_hole() -> None:
    mask = empty_mask()
    mask[5:15, 5:15] = True
    mask[8:12, 8:12] = False  # 4 x 4 hole
    (ring,) = find_objects(mask, None, GRID)
    assert isinstance(ring.geometry, Polygon)
    assert len(ring.geometry.interiors) == 1
    assert ring.pixels == 84 and ring.area_m2 == 8_400.0
    assert ring.geometry.area == pytest.approx(8_400.0)
    assert ring.perimeter_m == pytest.approx(400.0 + 160.0)
    assert ring.geometry.equals(pixel_box(5, 5, 15, 15).difference(pixel_box(8, 8, 12, 12)))


def test_diagonal_contact_follows_connectivity() -> None:
    mask = empty_mask()
    mask[0:4, 0:4] = True
    mask[4:8, 4:8] = True  # touches the first square only at a corner
    objects = find_objects(mask, None, GRID, min_area_m2=0)
    if CONNECTIVITY == 8:
        (obj,) = objects
        assert isinstance(obj.geometry, MultiPolygon)
        assert len(obj.geometry.geoms) == 2
        assert obj.geometry.is_valid
        assert obj.pixels == 32 and obj.geometry.area == pytest.approx(3_200.0)
        assert obj.perimeter_m == pytest.approx(2 * 160.0)
    else:
        assert len(objects) == 2


def test_hole_open_only_at_a_corner_gives_a_valid_polygon() -> None:
    # 3 x 3 ring without its centre and without its lower-right corner: the hole meets the outside
    # at one point, which a naive polygon would encode as a self-touching (invalid) shell
    mask = empty_mask()
    mask[10:13, 10:13] = True
    mask[11, 11] = False
    mask[12, 12] = False
    (obj,) = find_objects(mask, None, GRID, min_area_m2=0)
    assert obj.geometry.is_valid
    assert obj.pixels == 7 and obj.geometry.area == pytest.approx(700.0)
    assert obj.perimeter_m == pytest.approx(16 * 10.0)  # 7 px * 4 edges - 2 * 6 shared edges


def test_speck_below_the_mapping_unit_is_dropped() -> None:
    mask = empty_mask()
    mask[0:3, 0:3] = True  # 9 px = 900 m2 < 0.1 ha: dropped
    mask[10:12, 10:15] = True  # 10 px = 1000 m2: kept (inclusive)
    mask[30:40, 30:40] = True
    objects = find_objects(mask, None, GRID)
    assert [o.pixels for o in objects] == [10, 100]
    assert [o.id for o in objects] == [1, 2]  # renumbered without gaps
    assert len(find_objects(mask, None, GRID, min_area_m2=0)) == 3
    assert len(find_objects(mask, None, GRID, min_area_m2=1001)) == 1


def test_probability_statistics_are_per_object() -> None:
    mask = empty_mask()
    mask[0:10, 0:10] = True
    mask[20:30, 20:30] = True
    prob = np.zeros(GRID.shape, dtype=np.float32)
    prob[0:10, 0:10] = 0.6
    prob[0:5, 0:10] = 0.8  # first object: mean 0.7, max 0.8
    prob[20:30, 20:30] = np.linspace(0.5, 0.95, 100, dtype=np.float32).reshape(10, 10)
    prob[30:40, 30:40] = 1.0  # outside the mask: ignored
    first, second = find_objects(mask, prob, GRID)
    assert first.mean_probability == pytest.approx(0.7, abs=1e-6)
    assert first.max_probability == pytest.approx(0.8, abs=1e-6)
    assert second.mean_probability == pytest.approx(0.725, abs=1e-6)
    assert second.max_probability == pytest.approx(0.95, abs=1e-6)
    windows: list[tuple[slice, slice]] = []

    def read(rows: slice, cols: slice) -> np.ndarray:
        windows.append((rows, cols))
        return prob[rows, cols]

    # read window by window (as from probability.tif): the same statistics, only each object's box read
    assert find_objects(mask, read, GRID) == [first, second]
    assert windows == [(slice(0, 10), slice(0, 10)), (slice(20, 30), slice(20, 30))]


def test_centroid_is_in_wgs84() -> None:
    mask = empty_mask()
    mask[10:20, 10:20] = True
    (obj,) = find_objects(mask, None, GRID)
    west, south, east, north = GRID.bbox_wgs84()
    lon, lat = obj.centroid_lonlat
    assert west < lon < east and south < lat < north
    back = project_geometry(shapely.Point(lon, lat), GRID.epsg)
    assert back.distance(pixel_box(10, 10, 20, 20).centroid) < 1e-3


def test_empty_mask_gives_no_objects() -> None:
    assert find_objects(empty_mask(), None, GRID) == []
    assert objects_geojson([], GRID)["features"] == []


@pytest.mark.parametrize(
    ("mask", "prob", "match"),
    [
        (np.zeros((40, 49), bool), None, r"mask shape \(40, 49\) does not match the grid shape \(40, 50\)"),
        (np.zeros((40, 50), bool), np.zeros((50, 40)), r"probability shape \(50, 40\) does not match"),
        (np.zeros((40, 50), np.float32), None, "mask must be boolean"),
        (np.zeros((40, 50), bool), np.zeros((40, 50), np.uint8), "probability must be floating"),
    ],
)
def test_bad_inputs_are_named(mask: np.ndarray, prob: np.ndarray | None, match: str) -> None:
    with pytest.raises(RtsError, match=match):
        find_objects(mask, prob, GRID)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_min_area_is_named(bad: float) -> None:
    with pytest.raises(RtsError, match="min_area_m2"):
        find_objects(empty_mask(), None, GRID, min_area_m2=bad)


def test_integer_mask_is_accepted() -> None:
    mask = np.zeros(GRID.shape, dtype=np.uint8)
    mask[0:10, 0:10] = 1
    assert [o.area_m2 for o in find_objects(mask, None, GRID)] == [10_000.0]


def test_geojson_is_wgs84_lonlat_and_round_trips_area() -> None:
    grid = grid_for_centre(-126.75, 69.75, 1.0)  # Horton 01, 100 x 100 px
    mask = np.zeros(grid.shape, dtype=bool)
    mask[10:20, 10:20] = True
    mask[50:80, 40:70] = True
    mask[60:70, 50:60] = False  # a hole
    prob = np.where(mask, 0.9, 0.1).astype(np.float32)
    objects = find_objects(mask, prob, grid)
    doc = objects_geojson(objects, grid, {"site_id": "horton01", "year": 2021})
    doc = json.loads(json.dumps(doc, allow_nan=False))  # strict JSON
    assert doc["type"] == "FeatureCollection"
    assert doc["properties"] == {"site_id": "horton01", "year": 2021}
    assert len(doc["features"]) == 2
    west, south, east, north = grid.bbox_wgs84()
    for feature, obj in zip(doc["features"], objects, strict=True):
        props = feature["properties"]
        assert props["id"] == obj.id == feature["id"]
        assert props["site_id"] == "horton01" and props["year"] == 2021
        assert props["area_m2"] == obj.area_m2 and props["pixels"] == obj.pixels
        assert props["perimeter_m"] == pytest.approx(obj.perimeter_m)
        assert props["mean_probability"] == pytest.approx(0.9) and props["max_probability"] == pytest.approx(0.9)
        coords = np.array([xy for ring in feature["geometry"]["coordinates"] for xy in ring])
        assert np.all((coords[:, 0] > west) & (coords[:, 0] < east)), "x must be longitude"
        assert np.all((coords[:, 1] > south) & (coords[:, 1] < north)), "y must be latitude"
        assert np.allclose(coords, np.round(coords, 7))
        lonlat = shape(feature["geometry"])
        assert lonlat.exterior.is_ccw and all(not hole.is_ccw for hole in lonlat.interiors)  # RFC 7946 winding
        back = project_geometry(lonlat, grid.epsg)
        assert back.area == pytest.approx(obj.area_m2, rel=1e-3)
        assert back.symmetric_difference(obj.geometry).area < 1e-3 * obj.area_m2  # 1e-7 deg is about 1 cm
    assert len(shape(doc["features"][1]["geometry"]).interiors) == 1


def test_geojson_writes_missing_probability_as_null() -> None:
    mask = empty_mask()
    mask[0:10, 0:10] = True
    doc = objects_geojson(find_objects(mask, None, GRID), GRID)
    props = doc["features"][0]["properties"]
    assert props["mean_probability"] is None and props["max_probability"] is None
    assert "properties" not in doc
    json.dumps(doc, allow_nan=False)


def test_geojson_refuses_clashing_properties() -> None:
    mask = empty_mask()
    mask[0:10, 0:10] = True
    with pytest.raises(RtsError, match="area_m2"):
        objects_geojson(find_objects(mask, None, GRID), GRID, {"area_m2": 5})


def test_full_site_mask_with_hundreds_of_objects() -> None:
    """A 1000 x 1000 px site (100 km2) with one rectangle per 50 px cell: 400 candidates."""
    grid = grid_for_centre(48.51, 69.35, 10.0)  # Kolguev 02
    assert grid.shape == (1000, 1000)
    rng = np.random.default_rng(42)
    mask = np.zeros(grid.shape, dtype=bool)
    prob = rng.uniform(0.0, 0.4, grid.shape).astype(np.float32)
    firsts: list[tuple[int, int, int]] = []
    for i in range(20):
        for j in range(20):
            h, w = rng.integers(2, 40, size=2)
            r0, c0 = i * 50 + 1 + int(rng.integers(0, 48 - h)), j * 50 + 1 + int(rng.integers(0, 48 - w))
            mask[r0 : r0 + h, c0 : c0 + w] = True
            prob[r0 : r0 + h, c0 : c0 + w] = 0.75
            if h * w >= 10:  # the default unit: 10 px
                firsts.append((r0, c0, int(h * w)))
    expected_pixels = [n for _, _, n in sorted(firsts)]  # row-major order of first pixels
    started = time.perf_counter()
    objects = find_objects(mask, prob, grid)
    elapsed = time.perf_counter() - started
    print(f"{len(objects)} objects from a 1000x1000 mask in {elapsed:.3f} s")
    assert 300 < len(objects) < 400
    assert [o.pixels for o in objects] == expected_pixels
    assert [o.id for o in objects] == list(range(1, len(objects) + 1))
    assert total_area_m2(objects) == pytest.approx(100.0 * sum(expected_pixels))
    for o in objects:
        assert o.geometry.area == pytest.approx(o.area_m2)
        assert o.mean_probability == pytest.approx(0.75)
    doc = objects_geojson(objects, grid, {"site_id": "kolguev02"})
    assert len(doc["features"]) == len(objects)
