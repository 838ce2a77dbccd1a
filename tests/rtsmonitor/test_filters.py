"""False-positive filters: each removes the false object made for it and keeps the slump beside it.

One seeded scene of 40 x 60 pixels holds a true slump (bare mud on a 10 degree slope) and one false
object per filter: a lake (open water), a bright haze patch at a cloud edge, a flat bright sand
field and a speck below the mapping unit. The filters are run the way the evaluation runs them
(arrays) and the way the monitor runs them (``mask.tif`` plus the filter rasters written strip by
strip), and switched through the site config. The end-to-end test runs a small site-year through
:func:`~rtsmonitor.siteyear.process_site_year` and reads the tiers and filter results back from
the record and ``rts.geojson``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from numpy.typing import NDArray

from rtsmonitor.errors import ConfigError, RtsError
from rtsmonitor.filters import (
    FILTER_NAMES,
    FLAT_SLOPE_DEG,
    FilterRasters,
    ObjectContext,
    ObjectScreen,
    context_from_arrays,
    edges_reason,
    flat_reason,
    judge,
    removal_counts,
    screen_objects,
    small_components,
    water_pixels,
    water_reason,
)
from rtsmonitor.grid import SiteGrid
from rtsmonitor.imagery import SCL_CLOUD_HIGH, SCL_WATER
from rtsmonitor.inference import MASK_NOT_RTS, MASK_RTS, MASK_UNOBSERVED, Model
from rtsmonitor.jobs import SiteYearJob
from rtsmonitor.modelstore import DEMO_BUNDLE
from rtsmonitor.objects import RtsObject, find_objects, object_pixels
from rtsmonitor.offline.corpus import build_corpus
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.records import RESULTS_CONTAINER
from rtsmonitor.registry import register_site
from rtsmonitor.sites import FilterSwitches, SiteConfig, parse_site_config
from rtsmonitor.siteyear import Services, process_site_year
from rtsmonitor.stac import open_catalog
from rtsmonitor.storage import LocalStorage
from rtsmonitor.terrain import StacDem
from rtsmonitor.tiers import TIERS

GRID = SiteGrid(epsg=32608, res_m=10.0, x_min=580_000.0, y_max=7_720_000.0, width=60, height=40)
SCL_VEGETATION, SCL_BARE = 4, 5
TUNDRA = (0.050, 0.300)  # green, NIR reflectance
MUD = (0.095, 0.150)  # slump floor
LAKE = (0.034, 0.012)
HAZE = (0.200, 0.250)  # bright fringe at a cloud edge
SAND = (0.180, 0.250)

# (rows, cols) of each object; the slump and the tiny speck sit on 10 and 8 degree slopes
SLUMP = (slice(5, 13), slice(5, 15))
WATER = (slice(5, 13), slice(22, 30))
EDGE = (slice(22, 30), slice(20, 28))
CLOUD = (slice(18, 36), slice(28, 45))  # unobserved, right of the haze patch (touching it)
FLAT = (slice(24, 32), slice(3, 13))
TINY = (slice(30, 32), slice(50, 52))
FALSE_OBJECT = {"water": WATER, "edges": EDGE, "flat": FLAT, "mmu": TINY}


class Scene:
    """The seeded test scene: reflectance, SCL, slope, observed pixels and the classified mask."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        shape = GRID.shape
        self.green = np.full(shape, TUNDRA[0], np.float32) + rng.normal(0, 0.003, shape).astype(np.float32)
        self.nir = np.full(shape, TUNDRA[1], np.float32) + rng.normal(0, 0.01, shape).astype(np.float32)
        self.scl = np.full(shape, SCL_VEGETATION, np.uint8)
        self.slope = (4.0 + rng.normal(0, 0.5, shape)).astype(np.float32)  # rolling tundra
        self.rts = np.zeros(shape, bool)
        for box, (green, nir), slope, scl in (
            (SLUMP, MUD, 10.0, SCL_BARE),
            (WATER, LAKE, 3.0, SCL_WATER),  # a lake in a valley: the smoothed DEM slope mixes in its walls
            (EDGE, HAZE, 6.0, SCL_BARE),
            (FLAT, SAND, 0.5, SCL_BARE),
            (TINY, MUD, 8.0, SCL_BARE),
        ):
            self.green[box], self.nir[box], self.slope[box], self.scl[box] = green, nir, slope, scl
            self.rts[box] = True
        self.scl[CLOUD] = SCL_CLOUD_HIGH
        self.observed = self.scl != SCL_CLOUD_HIGH
        self.green[~self.observed] = np.nan
        self.nir[~self.observed] = np.nan
        self.rts &= self.observed

    def water(self, *, scl: bool = True) -> NDArray[np.bool_]:
        return water_pixels(self.green, self.nir, self.scl if scl else None)

    def objects(self) -> list[RtsObject]:
        return find_objects(self.rts, None, GRID, min_area_m2=0)

    def array_context(self, obj: RtsObject) -> ObjectContext:
        (rows, cols), inside = object_pixels(obj, GRID)
        return context_from_arrays((rows, cols), inside, self.observed, self.water(), self.slope, 100.0)


def box_of(obj: RtsObject) -> tuple[int, int]:
    (rows, cols), _ = object_pixels(obj, GRID)
    return rows.start, cols.start


NAMED = {(SLUMP[0].start, SLUMP[1].start): "slump"} | {
    (box[0].start, box[1].start): name for name, box in FALSE_OBJECT.items()
}


def names(objects: list[RtsObject]) -> set[str]:
    return {NAMED[box_of(o)] for o in objects}


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene()


def test_the_scene_has_the_slump_and_one_false_object_per_filter(scene: Scene) -> None:
    assert names(scene.objects()) == {"slump", *FILTER_NAMES}


@pytest.mark.parametrize("name", FILTER_NAMES)
def test_each_filter_alone_removes_its_false_object_and_keeps_the_slump(scene: Scene, name: str) -> None:
    kept, removed = screen_objects(scene.objects(), scene.array_context, [name])
    assert names([r.obj for r in removed]) == {name}
    assert "slump" in names(kept)
    (item,) = removed
    assert list(item.reasons) == [name] and item.reasons[name]


def test_all_filters_keep_only_the_slump(scene: Scene) -> None:
    kept, removed = screen_objects(scene.objects(), scene.array_context, FILTER_NAMES)
    assert names(kept) == {"slump"}
    assert removal_counts(removed, FILTER_NAMES) == {"water": 1, "edges": 1, "mmu": 1, "flat": 1, "removed": 4}


@pytest.mark.parametrize("name", FILTER_NAMES)
def test_switching_a_filter_off_in_the_site_config_keeps_its_object(scene: Scene, name: str) -> None:
    config = parse_site_config(
        json.dumps(
            {
                "id": "test01",
                "name": "Test",
                "centre": {"lon": -126.75, "lat": 69.75, "size_km": 3.0},
                "filters": {n: n != name for n in FILTER_NAMES},
            }
        ),
        "test01.json",
    )
    assert name not in config.filters.enabled()
    kept, _ = screen_objects(scene.objects(), scene.array_context, config.filters.enabled())
    assert names(kept) == {"slump", name}


def test_water_by_scl_alone_and_by_ndwi_alone(scene: Scene) -> None:
    (lake,) = [o for o in scene.objects() if box_of(o) == (WATER[0].start, WATER[1].start)]
    (rows, cols), inside = object_pixels(lake, GRID)
    # NDWI alone (the dataset stacks have no SCL): (0.034 - 0.012) / 0.046 = 0.48 > 0
    ndwi_only = context_from_arrays((rows, cols), inside, scene.observed, scene.water(scl=False), scene.slope, 100.0)
    assert water_reason(ndwi_only) is not None
    # SCL alone: turbid water brighter in NIR than green still has SCL class 6
    turbid = scene.scl == SCL_WATER
    scl_only = context_from_arrays((rows, cols), inside, scene.observed, turbid, scene.slope, 100.0)
    assert water_reason(scl_only) is not None
    assert water_pixels(np.array([0.05]), np.array([0.06]), np.array([SCL_WATER])).tolist() == [True]
    assert water_pixels(np.array([0.05]), np.array([0.06])).tolist() == [False]
    assert water_pixels(np.array([np.nan]), np.array([np.nan])).tolist() == [False]


def test_a_lake_shore_slump_with_a_few_water_pixels_is_kept() -> None:
    inside = np.zeros((10, 10), bool)
    inside[2:8, 2:8] = True  # 36 pixels
    water = np.zeros_like(inside)
    water[2:8, 2:4] = True  # 12 of them in the lake: a third
    ctx = ObjectContext(inside, np.ones_like(inside), water, np.full(inside.shape, 9.0), 100.0)
    assert water_reason(ctx) is None
    water[2:8, 2:5] = True  # half of them
    assert water_reason(ctx) is not None


def test_the_grid_edge_is_not_a_cloud_edge() -> None:
    rts = np.zeros(GRID.shape, bool)
    rts[0:6, 0:6] = True  # in the grid's corner, everything observed
    (obj,) = find_objects(rts, None, GRID)
    (rows, cols), inside = object_pixels(obj, GRID, margin_px=1)
    assert (rows.start, cols.start) == (0, 0) and inside.shape == (7, 7)
    ctx = ObjectContext(inside, np.ones_like(inside), None, None, 100.0)
    assert edges_reason(ctx) is None
    observed = np.ones_like(inside)
    observed[6, 6] = False  # one unobserved pixel diagonal to the object's corner: 8-neighbourhood
    assert edges_reason(ObjectContext(inside, observed, None, None, 100.0)) is not None


def test_flat_needs_level_ground_under_nearly_all_of_the_object() -> None:
    inside = np.ones((10, 10), bool)
    slope = np.full(inside.shape, 0.5, np.float32)
    assert flat_reason(ObjectContext(inside, inside, None, slope, 100.0)) is not None
    slope[:, :2] = 8.0  # a fifth of it on a slope: its 95th percentile is 8 degrees
    assert flat_reason(ObjectContext(inside, inside, None, slope, 100.0)) is None
    slope[:] = FLAT_SLOPE_DEG  # exactly the threshold: not below it
    assert flat_reason(ObjectContext(inside, inside, None, slope, 100.0)) is None
    nan = np.full(inside.shape, np.nan, np.float32)  # no DEM: no judgement
    assert flat_reason(ObjectContext(inside, inside, None, nan, 100.0)) is None
    assert flat_reason(ObjectContext(inside, inside, None, None, 100.0)) is None


def test_unknown_filter_names_and_mismatched_rasters_are_refused(scene: Scene) -> None:
    obj = scene.objects()[0]
    with pytest.raises(RtsError, match="unknown filter"):
        judge(scene.array_context(obj), ["cloud"])
    with pytest.raises(RtsError, match="differ in shape"):
        ObjectContext(np.ones((3, 3), bool), np.ones((3, 4), bool), None, None, 100.0)


def test_small_components_counts_what_the_mapping_unit_drops(scene: Scene) -> None:
    assert small_components(scene.rts, 10) == 1  # the 4-pixel speck
    assert small_components(np.zeros((5, 5), bool), 10) == 0


# --- the monitor's way: mask.tif and the filter rasters, written strip by strip -------------------------


def write_mask(scene: Scene, path: Path) -> Path:
    mask = np.where(scene.observed, np.where(scene.rts, MASK_RTS, MASK_NOT_RTS), MASK_UNOBSERVED).astype(np.uint8)
    profile = {"driver": "GTiff", "count": 1, "width": GRID.width, "height": GRID.height, "dtype": "uint8"}
    with rasterio.open(path, "w", crs=GRID.crs, transform=GRID.transform, **profile) as dst:
        dst.write(mask, 1)
    return path


@pytest.fixture
def rasters(scene: Scene, tmp_path: Path) -> Iterator[FilterRasters]:
    rasters = FilterRasters(GRID, tmp_path)
    with rasters:
        for start, stop in ((0, 25), (15, 40)):  # overlapping strips, as the inference loop reads them
            rows = slice(start, stop)
            rasters.add(start, scene.green[rows], scene.nir[rows], scene.scl[rows], scene.slope[rows])
    assert rasters.complete()
    yield rasters


def test_filter_rasters_hold_the_water_flag_and_slope(scene: Scene, rasters: FilterRasters) -> None:
    with rasterio.open(rasters.water_path) as src:
        np.testing.assert_array_equal(src.read(1).astype(bool), scene.water())
    with rasterio.open(rasters.slope_path) as src:
        np.testing.assert_array_equal(src.read(1), scene.slope)


def test_filter_rasters_refuse_a_gap_and_use_outside_their_block(scene: Scene, tmp_path: Path) -> None:
    rasters = FilterRasters(GRID, tmp_path)
    with pytest.raises(RtsError, match="outside"):
        rasters.add(0, scene.green, scene.nir, scene.scl, scene.slope)
    with rasters, pytest.raises(RtsError, match="skipped"):
        rasters.add(10, scene.green[10:], scene.nir[10:], scene.scl[10:], scene.slope[10:])


def test_the_monitor_path_decides_as_the_array_path(scene: Scene, rasters: FilterRasters, tmp_path: Path) -> None:
    mask_path = write_mask(scene, tmp_path / "mask.tif")
    with ObjectScreen(GRID, mask_path, rasters) as screen:
        for obj in scene.objects():
            assert judge(screen.context(obj), FILTER_NAMES) == judge(scene.array_context(obj), FILTER_NAMES)
        kept, removed = screen_objects(scene.objects(), screen.context, FILTER_NAMES)
    assert names(kept) == {"slump"} and len(removed) == 4
    with ObjectScreen(GRID, mask_path, None) as screen:  # no rasters: water and flat cannot judge
        kept, _ = screen_objects(scene.objects(), screen.context, FILTER_NAMES)
    assert names(kept) == {"slump", "water", "flat"}


def test_no_filter_enabled_reads_nothing(scene: Scene) -> None:
    def context(obj: RtsObject) -> ObjectContext:
        raise AssertionError("read")

    kept, removed = screen_objects(scene.objects(), context, ())
    assert len(kept) == 5 and removed == [] and removal_counts(removed, ()) == {"removed": 0}


# --- the site config ----------------------------------------------------------------------------------


def test_filter_switches_defaults_and_names() -> None:
    assert tuple(FilterSwitches.model_fields) == FILTER_NAMES
    assert FilterSwitches().enabled() == ("water", "mmu", "flat")
    config = SiteConfig.model_validate({"id": "a1", "name": "A", "centre": {"lon": 0, "lat": 69, "size_km": 1}})
    assert config.filters == FilterSwitches()  # configs stored before the switches existed keep working


@pytest.mark.parametrize(
    ("filters", "field", "fragment"),
    [
        ({"water": "no"}, "filters.water", "'no' is not allowed"),
        ({"flat": 1}, "filters.flat", "1 is not allowed"),
        ({"cloud": True}, "filters.cloud", "unknown field 'cloud' (allowed: water, edges, mmu, flat)"),
        ({"edge": True}, "filters.edge", "did you mean 'edges'?"),
        ("all", "filters", "'all' is not allowed"),
    ],
)
def test_bad_filter_switches_name_their_field(filters: object, field: str, fragment: str) -> None:
    raw = {"id": "a1", "name": "A", "centre": {"lon": 0, "lat": 69, "size_km": 1}, "filters": filters}
    with pytest.raises(ConfigError) as caught:
        parse_site_config(json.dumps(raw), "a1.json")
    ((where, message),) = caught.value.problems
    assert where == field and fragment in message, (where, message)


# --- end to end: one small site-year ------------------------------------------------------------------

CENTRE = {"lon": -126.75, "lat": 69.75, "size_km": 3.0}
YEAR = 2021


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("filters-e2e")
    grid = SiteConfig.model_validate({"id": "tiny01", "name": "Tiny", "centre": CENTRE}).grid()
    corpus = build_corpus(root / "stac", [("tiny01", grid)], [YEAR], scenes_per_year=1, seed=3, progress=False)
    with LocalStacServer(corpus.root) as server:
        yield Services(open_catalog(server.url), StacDem(server.url), Model.load(DEMO_BUNDLE))


def run_site(services: Services, folder: Path, site_id: str, filters: dict[str, bool] | None) -> tuple[object, dict]:
    storage = LocalStorage(folder)
    config = {"id": site_id, "name": "Tiny", "centre": CENTRE, "first_year": YEAR, "last_year": YEAR}
    if filters is not None:
        config["filters"] = filters
    register_site(storage, f"{site_id}.json", json.dumps(config).encode())
    record = process_site_year(storage, SiteYearJob(site_id, YEAR), services).record
    assert record.status == "ok" and record.results_prefix is not None, record.reason
    collection = json.loads(storage.blobs.read_bytes(RESULTS_CONTAINER, record.results_prefix + "rts.geojson"))
    return record, collection


def test_a_site_year_carries_tiers_and_filter_results(services: Services, tmp_path: Path) -> None:
    record, collection = run_site(services, tmp_path / "on", "tiny01", None)
    off_record, off_collection = run_site(services, tmp_path / "off", "tiny02", dict.fromkeys(FILTER_NAMES, False))
    # the record: area per tier adds up to the area; removals per enabled filter
    tiers = (record.rts_area_high_m2, record.rts_area_medium_m2, record.rts_area_low_m2)
    assert all(t is not None for t in tiers)
    assert sum(tiers) == pytest.approx(record.rts_area_m2, abs=0.5)
    counts = json.loads(record.rts_filtered)
    assert list(counts) == ["water", "mmu", "flat", "removed"]  # the defaults: edges off
    per_filter = [counts["water"], counts["mmu"], counts["flat"]]
    assert max(per_filter) <= counts["removed"] <= sum(per_filter)  # an object may fail several filters
    assert counts["flat"] >= 1  # the seeded corpus has a bright patch on level ground
    # with every filter off, nothing is removed and every component is an object
    assert json.loads(off_record.rts_filtered) == {"removed": 0}
    assert off_record.rts_count == record.rts_count + counts["removed"]
    assert off_record.rts_area_m2 >= record.rts_area_m2
    # the GeoJSON: tier fields on every feature, the rule and the removed objects at the top level
    for feature in collection["features"]:
        props = feature["properties"]
        assert props["tier"] in TIERS
        assert props["area_m2"] >= props["area_mid_m2"] >= props["area_high_m2"] >= 0
    assert [f["properties"]["id"] for f in collection["features"]] == list(range(1, record.rts_count + 1))
    by_tier = {tier: 0.0 for tier in TIERS}
    for feature in collection["features"]:
        by_tier[feature["properties"]["tier"]] += feature["properties"]["area_m2"]
    assert by_tier["high"] == pytest.approx(record.rts_area_high_m2, abs=0.5)
    assert collection["tiers"]["threshold"] == services.model.threshold
    assert collection["tiers"]["threshold_mid"] > services.model.threshold
    assert collection["filters"]["enabled"] == ["water", "mmu", "flat"]
    assert collection["filters"]["removed"] == counts
    removed = collection["filters"]["objects"]
    assert len(removed) == counts["removed"] - counts["mmu"]
    assert all(set(item["filters"]) <= {"water", "flat"} and item["reasons"] for item in removed)
    assert off_collection["filters"] == {"enabled": [], "removed": {"removed": 0}, "objects": []}
