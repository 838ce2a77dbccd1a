"""Tests of the synthetic Sentinel-2 L2A / Copernicus DEM generator and the corpus builder."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.windows import from_bounds
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import Point, shape

from rtsmonitor.grid import SiteGrid, grid_for_centre
from rtsmonitor.offline.corpus import build_corpus, processing_baseline_for_year
from rtsmonitor.offline.synthetic import (
    BANDS,
    COVER_BANK,
    COVER_GRAVEL,
    COVER_LAKE,
    COVER_SAND,
    COVER_TUNDRA,
    SCL_CLOUD_CLASSES,
    SCL_NO_DATA,
    SCL_SNOW_ICE,
    SceneSpec,
    Slump,
    TileLayout,
    World,
    baseline_has_offset,
    dem_item_id,
    glo30_lon_spacing_arcsec,
    slumps_from_wgs84,
    truth_reflectance,
    truth_scl,
    write_dem,
    write_scene,
)

REAL_STAC = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "stac"
REAL_ITEM = REAL_STAC / "planetary-computer_sentinel-2-l2a_item_T06VVN_2019-06-29.json"

EPSG = 32609
# A small layout (6 km tiles, 600 m overlap: step 5400 m) and a 2 x 1.5 km site across a tile corner.
LAYOUT = TileLayout(EPSG, tile_size_m=6000.0, overlap_m=600.0)
SITE = SiteGrid(EPSG, 10.0, 5400.0 * 108 + 5000.0, 5400.0 * 1430 + 1500.0, 200, 150)


def _region(grid: SiteGrid, margin: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = grid.bounds
    return (x0 - margin, y0 - margin, x1 + margin, y1 + margin)


def _spec(**kwargs: object) -> SceneSpec:
    values: dict[str, object] = {
        "datetime": datetime(2019, 7, 20, 19, 40, 5, 24000, tzinfo=UTC),
        "platform": "Sentinel-2B",
        "processing_baseline": "02.12",
        "relative_orbit": 43,
        "aoi_bounds": SITE.bounds,
        "seed": 11,
    }
    values.update(kwargs)
    return SceneSpec(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(EPSG, [_region(SITE, 1000.0)], seed=3, slumps_per_km2=3.0)


def _read_window(root: Path, item: dict, asset: str, grid: SiteGrid) -> np.ndarray:
    """The part of ``grid`` that an item's asset covers, read from the local file (NaN elsewhere)."""
    path = root / item["assets"][asset]["href"]
    out = np.full(grid.shape, np.nan)
    with rasterio.open(path) as ds:
        x0, y0, x1, y1 = grid.bounds
        tx0, ty0, tx1, ty1 = ds.bounds
        ix0, iy0, ix1, iy1 = max(x0, tx0), max(y0, ty0), min(x1, tx1), min(y1, ty1)
        window = from_bounds(ix0, iy0, ix1, iy1, ds.transform).round_offsets().round_lengths()
        data = ds.read(1, window=window)
        r0 = round((grid.y_max - iy1) / grid.res_m)
        c0 = round((ix0 - grid.x_min) / grid.res_m)
        out[r0 : r0 + data.shape[0], c0 : c0 + data.shape[1]] = data
    return out


# --- the world ----------------------------------------------------------------------------------


def test_same_seed_same_world_and_pixels(world: World) -> None:
    again = World.generate(EPSG, [_region(SITE, 1000.0)], seed=3, slumps_per_km2=3.0)
    assert [s.polygon_utm.wkb for s in again.slumps] == [s.polygon_utm.wkb for s in world.slumps]
    spec = _spec(cloud_fraction=0.2, tile_cloud_fraction=0.3)
    np.testing.assert_array_equal(again.reflectance(SITE, spec), world.reflectance(SITE, spec))
    other = World.generate(EPSG, [_region(SITE, 1000.0)], seed=4, slumps_per_km2=3.0)
    assert not np.array_equal(other.reflectance(SITE, spec), world.reflectance(SITE, spec))


def test_landscape_has_slopes_lakes_and_bare_look_alikes(world: World) -> None:
    x0, y0, x1, y1 = world.regions[0]
    region = SiteGrid(EPSG, 10.0, x0, y1, round((x1 - x0) / 10), round((y1 - y0) / 10))
    cover = world.land_cover(region)
    assert (cover == COVER_TUNDRA).mean() > 0.5
    assert np.isin(cover, [COVER_GRAVEL, COVER_BANK, COVER_SAND]).any()
    xs = x0 + (np.arange(region.width) + 0.5) * 10
    ys = y1 - (np.arange(region.height) + 0.5) * 10
    elevation = world.elevation_m(xs[None, :], ys[:, None])
    dzdy, dzdx = np.gradient(elevation, 10.0)
    slope = np.degrees(np.arctan(np.hypot(dzdx, dzdy)))
    assert 0.01 < ((slope >= 5) & (slope <= 20)).mean() < 0.5
    assert np.percentile(slope, 50) < 5
    # every random slump sits on a slope (5-20 degrees at its seed point, DEM-lowered floor)
    assert len(world.slumps) >= 10
    areas_ha = np.array([s.polygon_utm.area / 1e4 for s in world.slumps])
    assert areas_ha.min() >= 0.09 and areas_ha.max() <= 10.1
    assert 0.3 < np.median(areas_ha) < 3.0


def test_slumps_grow_and_appear(world: World) -> None:
    areas = [world.slump_mask(SITE, year).sum() for year in (2016, 2019, 2022)]
    assert areas[0] <= areas[1] <= areas[2] and areas[2] > areas[0]
    slump = Slump(Point(0, 0).buffer(50.0), first_year=2018, growth_m_per_yr=3.0)
    assert slump.extent(2017) is None
    assert slump.extent(2018) is not None and slump.extent(2018).area == pytest.approx(slump.polygon_utm.area)
    assert slump.extent(2020).area == pytest.approx(math.pi * 56.0**2, rel=0.02)


def test_slumps_from_wgs84_keep_the_label_shape_in_its_year() -> None:
    lon, lat = -126.75, 69.75
    to_wgs84 = Transformer.from_crs(EPSG, 4326, always_xy=True)
    to_utm = Transformer.from_crs(4326, EPSG, always_xy=True)
    x, y = to_utm.transform(lon, lat)
    ring = [to_wgs84.transform(x + 60 * math.cos(a), y + 40 * math.sin(a)) for a in np.linspace(0, 2 * np.pi, 40)]
    polygon = shape({"type": "Polygon", "coordinates": [ring]})
    (slump,) = slumps_from_wgs84([(polygon, 2019)], EPSG, seed=1)
    assert slump.ref_year == 2019 and slump.first_year < 2019
    assert slump.extent(2019).area == pytest.approx(math.pi * 60 * 40, rel=0.02)
    assert slump.extent(2016).area < slump.extent(2019).area < slump.extent(2021).area
    grid = grid_for_centre(lon, lat, 1.0)
    world = World.generate(EPSG, [grid.bounds], seed=0, slumps=[slump], slumps_per_km2=0.0)
    assert world.slumps == (slump,)
    assert world.slump_mask(grid, 2019).sum() * 100 == pytest.approx(math.pi * 60 * 40, rel=0.1)


def test_reflectance_magnitudes_of_a_clear_scene(world: World) -> None:
    spec = _spec(datetime=datetime(2019, 7, 19, 19, 40, tzinfo=UTC))
    refl = world.reflectance(SITE, spec)
    assert refl.dtype == np.float32 and refl.shape == (4, *SITE.shape)
    cover = world.land_cover(SITE, 2019)
    tundra = cover == COVER_TUNDRA
    blue, green, red, nir = (np.median(refl[b][tundra]) for b in range(4))
    assert 0.02 < blue < 0.05 and 0.035 < green < 0.075 and 0.03 < red < 0.07 and 0.2 < nir < 0.35
    ndvi = (refl[3] - refl[2]) / (refl[3] + refl[2])
    assert 0.5 < np.median(ndvi[tundra]) < 0.8
    slumps = world.slump_mask(SITE, 2019)
    assert slumps.any()
    assert 0.05 < np.median(ndvi[slumps]) < 0.3
    assert 0.06 < np.median(refl[2][slumps]) < 0.2


def test_scene_spec_validates() -> None:
    with pytest.raises(ValueError, match="cloud_fraction"):
        _spec(cloud_fraction=1.5)
    with pytest.raises(ValueError, match="processing_baseline"):
        _spec(processing_baseline="4.0")
    with pytest.raises(ValueError, match="UTC"):
        _spec(datetime=datetime(2019, 7, 1))
    assert not baseline_has_offset("03.01") and baseline_has_offset("04.00") and baseline_has_offset("05.09")


# --- tiles ----------------------------------------------------------------------------------------


def test_layout_tiles_are_60m_aligned_and_named_like_mgrs() -> None:
    tiles = LAYOUT.tiles_for_bounds(SITE.bounds)
    assert len(tiles) == 4
    for tile in tiles:
        assert re.fullmatch(r"09W[A-HJ-NP-Z]{2}", tile.name)
        assert tile.x_min % 60 == 0 and tile.y_max % 60 == 0
        x0, y0, x1, y1 = tile.bounds
        assert x0 < SITE.bounds[2] and x1 > SITE.bounds[0] and y0 < SITE.bounds[3] and y1 > SITE.bounds[1]
    assert len({t.name for t in tiles}) == 4
    real = TileLayout(EPSG, 109_800.0, 9_780.0)
    assert real.tile(5, 70).grid().shape == (10980, 10980)
    with pytest.raises(ValueError, match="multiple of 60"):
        TileLayout(EPSG, 30_000.0, 2_750.0)


# --- written scenes -----------------------------------------------------------------------------


Written = tuple[Path, dict[str, tuple[SceneSpec, list[dict]]]]


@pytest.fixture(scope="module")
def written(world: World, tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Three acquisitions written into one folder: (root, {name: (spec, items)})."""
    root = tmp_path_factory.mktemp("scenes")
    specs = {
        "old": _spec(cloud_fraction=0.3, tile_cloud_fraction=0.1, snow_fraction=0.15),
        "new": _spec(
            datetime=datetime(2022, 7, 21, 19, 40, tzinfo=UTC),
            processing_baseline="04.00",
            seed=12,
            nodata_fraction=0.3,
        ),
        "clear_site": _spec(
            datetime=datetime(2021, 8, 2, 19, 40, tzinfo=UTC),
            processing_baseline="03.01",
            cloud_fraction=0.0,
            tile_cloud_fraction=0.6,
            seed=13,
        ),
    }
    return root, {name: (spec, write_scene(world, LAYOUT, spec, root)) for name, spec in specs.items()}


@pytest.mark.parametrize("name", ["old", "new"])
def test_dn_encoding_matches_truth_for_both_baselines(world: World, written: Written, name: str) -> None:
    root, scenes = written
    spec, items = scenes[name]
    offset = 1000 if name == "new" else 0
    truth = truth_reflectance(world, spec, SITE)
    assert len(items) == 4
    covered = np.zeros(SITE.shape, dtype=bool)
    for item in items:
        for band, asset in enumerate(BANDS):
            dn = _read_window(root, item, asset, SITE)
            inside = ~np.isnan(dn)
            data = inside & (dn > 0)
            np.testing.assert_allclose((dn[data] - offset) / 10000.0, truth[band][data], atol=0.5e-4, rtol=0)
            # no-data in the file exactly where the truth is NaN
            np.testing.assert_array_equal(dn[inside] == 0, np.isnan(truth[band][inside]))
            covered |= inside
    assert covered.all()  # the four tiles together cover the site (mosaic across tiles)
    with rasterio.open(root / items[0]["assets"]["B02"]["href"]) as ds:
        assert ds.nodata == 0 and ds.dtypes[0] == "uint16" and ds.res == (10.0, 10.0)


def test_scl_matches_truth_and_spec_fractions(world: World, written: Written) -> None:
    root, scenes = written
    spec, items = scenes["old"]
    scl = truth_scl(world, spec, SITE)
    cloudy = np.isin(scl, SCL_CLOUD_CLASSES)
    assert cloudy.mean() == pytest.approx(0.3, abs=0.05)
    land_clear = ~cloudy & (world.land_cover(SITE) != COVER_LAKE)
    assert 0.03 < (scl[land_clear] == SCL_SNOW_ICE).mean() < 0.3
    grid20 = SiteGrid(EPSG, 20.0, SITE.x_min, SITE.y_max, SITE.width // 2, SITE.height // 2)
    for item in items:
        with rasterio.open(root / item["assets"]["SCL"]["href"]) as ds:
            assert ds.res == (20.0, 20.0) and ds.dtypes[0] == "uint8"
        from_file = _read_window(root, item, "SCL", grid20)
        inside = ~np.isnan(from_file)
        np.testing.assert_array_equal(from_file[inside], scl[::2, ::2][inside])


def test_high_tile_cloud_cover_with_a_clear_site(world: World, written: Written) -> None:
    spec, items = written[1]["clear_site"]
    assert not np.isin(truth_scl(world, spec, SITE), SCL_CLOUD_CLASSES).any()
    assert max(item["properties"]["eo:cloud_cover"] for item in items) > 20.0


def test_nodata_edge(world: World, written: Written) -> None:
    spec, items = written[1]["new"]
    truth = truth_reflectance(world, spec, SITE)
    assert np.isnan(truth[0]).mean() == pytest.approx(0.3, abs=0.03)
    assert (truth_scl(world, spec, SITE) == SCL_NO_DATA).mean() == pytest.approx(0.3, abs=0.03)
    nodata = [item["properties"]["s2:nodata_pixel_percentage"] for item in items]
    assert max(nodata) > 0
    for item in items:
        footprint = shape(item["geometry"])
        if item["properties"]["s2:nodata_pixel_percentage"] > 1:
            full = shape(written[1]["old"][1][0]["geometry"]).area
            assert footprint.area < full


def test_items_have_the_shape_of_the_real_planetary_computer_item(written: Written) -> None:
    real = json.loads(REAL_ITEM.read_text())
    root, scenes = written
    _, items = scenes["old"]
    for item in items:
        assert list(item) == list(real)
        assert list(item["properties"]) == list(real["properties"])
        assert item["stac_version"] == real["stac_version"]
        assert item["stac_extensions"] == real["stac_extensions"]
        assert set(item["assets"]) == {"B02", "B03", "B04", "B08", "SCL"}
        for name, asset in item["assets"].items():
            assert list(asset) == list(real["assets"][name]), name
            assert asset["type"] == real["assets"][name]["type"]
            assert asset["roles"] == real["assets"][name]["roles"]
            assert asset["href"].startswith("files/sentinel-2-l2a/") and asset["href"].endswith(".tif")
        for name in BANDS:
            assert item["assets"][name]["eo:bands"] == real["assets"][name]["eo:bands"]
            assert item["assets"][name]["proj:shape"] == [600, 600]
        assert item["assets"]["SCL"]["proj:shape"] == [300, 300]
        assert {link["rel"] for link in item["links"]} >= {"collection", "parent", "root", "self"}
        props = item["properties"]
        tile = props["s2:mgrs_tile"]
        assert re.fullmatch(rf"S2B_MSIL2A_20190720T194005_R043_T{tile}_\d{{8}}T\d{{6}}", item["id"])
        assert props["s2:product_uri"].startswith("S2B_MSIL2A_20190720T194005_N0212_R043_T")
        assert props["datetime"] == "2019-07-20T19:40:05.024000Z"
        assert props["eo:cloud_cover"] == pytest.approx(
            props["s2:high_proba_clouds_percentage"]
            + props["s2:medium_proba_clouds_percentage"]
            + props["s2:thin_cirrus_percentage"],
            abs=1e-5,
        )
        assert 20 < props["s2:mean_solar_zenith"] < 70
        minx, miny, maxx, maxy = item["bbox"]
        assert shape(item["geometry"]).bounds == pytest.approx((minx, miny, maxx, maxy))
    collection = json.loads((root / "collections/sentinel-2-l2a/collection.json").read_text())
    real_collection = json.loads((REAL_STAC / "planetary-computer_sentinel-2-l2a_collection.json").read_text())
    assert set(collection) <= set(real_collection)
    assert set(collection["item_assets"]) == {"B02", "B03", "B04", "B08", "SCL"}


def test_written_files_are_valid_cogs(written: Written) -> None:
    root, scenes = written
    _, items = scenes["old"]
    for asset in ("B02", "SCL"):
        valid, errors, _ = cog_validate(str(root / items[0]["assets"][asset]["href"]))
        assert valid, errors


# --- DEM --------------------------------------------------------------------------------------------


def test_dem_items_sample_the_world_on_the_glo30_lattice(world: World, tmp_path: Path) -> None:
    items = write_dem(world, tmp_path, SITE.bbox_wgs84(), margin_m=500.0)
    assert [item["id"] for item in items] == ["Copernicus_DSM_COG_10_N69_00_W127_00_DEM"]
    assert dem_item_id(69, -127) == items[0]["id"] and dem_item_id(-1, 30) == "Copernicus_DSM_COG_10_S01_00_E030_00_DEM"
    assert glo30_lon_spacing_arcsec(69) == 2.0 and glo30_lon_spacing_arcsec(72) == 3.0
    assert glo30_lon_spacing_arcsec(45) == 1.0
    item = items[0]
    assert item["properties"]["proj:epsg"] == 4326 and list(item["assets"]) == ["data"]
    assert item["assets"]["data"]["roles"] == ["data"]
    to_utm = Transformer.from_crs(4326, EPSG, always_xy=True)
    with rasterio.open(tmp_path / item["assets"]["data"]["href"]) as ds:
        assert ds.crs.to_epsg() == 4326 and ds.dtypes[0] == "float32"
        assert ds.res[0] == pytest.approx(2 / 3600) and ds.res[1] == pytest.approx(1 / 3600)
        # pixel centres on whole arc seconds
        assert ((ds.transform.c + ds.res[0] / 2) * 3600) % 2 == pytest.approx(0, abs=1e-6)
        assert ((ds.transform.f - ds.res[1] / 2) * 3600) % 1 == pytest.approx(0, abs=1e-6)
        data = ds.read(1)
        rng = np.random.default_rng(0)
        for row, col in zip(rng.integers(0, ds.height, 20), rng.integers(0, ds.width, 20), strict=True):
            lon, lat = ds.xy(row, col)
            x, y = to_utm.transform(lon, lat)
            assert data[row, col] == pytest.approx(world.elevation_m(np.array([x]), np.array([y]))[0], abs=0.5)
        first_shape = ds.shape
    valid, errors, _ = cog_validate(str(tmp_path / item["assets"]["data"]["href"]))
    assert valid, errors
    # another area in the same degree tile extends the clipped raster
    west, south, east, north = SITE.bbox_wgs84()
    write_dem(world, tmp_path, (west - 0.05, south, east - 0.05, north), margin_m=500.0)
    with rasterio.open(tmp_path / item["assets"]["data"]["href"]) as ds:
        assert ds.width > first_shape[1] and ds.height == first_shape[0]


# --- the corpus ---------------------------------------------------------------------------------


def test_build_corpus_is_reproducible_and_mixes_baselines(tmp_path: Path) -> None:
    sites = [("a", grid_for_centre(-126.75, 69.75, 1.0)), ("b", grid_for_centre(-126.70, 69.74, 1.0))]
    kwargs = {"years": [2021, 2022], "scenes_per_year": 2, "seed": 5, "tile_size_m": 6000.0, "progress": False}
    first = build_corpus(tmp_path / "one", sites, **kwargs)  # type: ignore[arg-type]
    second = build_corpus(tmp_path / "two", sites, **kwargs)  # type: ignore[arg-type]
    assert first.worlds["a"] is first.worlds["b"]  # one zone, one world
    assert len(first.scenes) == 4  # the two sites are close: they share acquisitions
    assert [s.item_ids for s in first.scenes] == [s.item_ids for s in second.scenes]
    for scene in first.scenes:
        assert scene.spec.processing_baseline == processing_baseline_for_year(scene.spec.year)
        assert baseline_has_offset(scene.spec.processing_baseline) == (scene.spec.year >= 2022)
        assert 7 <= scene.spec.datetime.month <= 8
    assert {s.kind for s in first.scenes_for("a", 2021)} >= {"clear"}  # the first summer always has one
    href = json.loads(
        (first.root / "collections/sentinel-2-l2a/items" / f"{first.scenes[0].item_ids[0]}.json").read_text()
    )["assets"]["B08"]["href"]
    with rasterio.open(first.root / href) as a, rasterio.open(second.root / href) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    assert first.dem_item_ids == ("Copernicus_DSM_COG_10_N69_00_W127_00_DEM",)
    manifest = json.loads((first.root / "corpus.json").read_text())
    assert len(manifest["scenes"]) == 4 and set(manifest["sites"]) == {"a", "b"}
