"""ARTS inventories of a synthetic, tracked two-site series: fields, lineage, statistics, files and the CLI.

The series is written straight into a local store without the model, as in test_tracking.py: each
site-year's RTS is a set of pixel rectangles turned into ``rts.geojson`` by the pipeline's own
:func:`~rtsmonitor.objects.find_objects` / :func:`~rtsmonitor.objects.objects_geojson`, with a
``mask.tif``, a seeded random ``probability.tif`` COG and an ok record; then the sites are tracked.

Truth on site ``alpha`` (1 px = 10 m; ok 2018, 2019, 2020):

- A stays (RepeatRTS);
- B and C merge in 2019 (B, the larger, survives; MergedRTS lists both 2018 polygons);
- D splits in 2019 into D and D2 (both list D's 2018 polygon in SplitRTS);
- E vanishes in 2019 and F forms on its scar in 2020 (F's StabilizedRTS = E 2018; E 2018's NewRTS = F);
- G shrinks in 2019 while H appears beside it, grazing G's 2018 outline by 8 of its 168 pixels, too
  little to be one slump (H's UnknownRelationship = G 2018).

Site ``beta``: three slumps in 2019, one of them two squares touching at a corner (one 8-connected
object: a MultiPolygon), none in 2020 (an empty inventory).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from pyproj import Transformer
from rasterio.io import MemoryFile
from shapely.geometry import Point, shape

from rtsmonitor import inventory
from rtsmonitor.arts import RELATIONSHIP_FIELDS, REPEAT_FIELD, arts_problems, arts_uid
from rtsmonitor.cli import main
from rtsmonitor.errors import NotFoundError, RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.inventory import (
    COLUMNS,
    FORMATS,
    GPKG_LAYER,
    InventoryInputError,
    export_sites,
    site_year_inventory,
    write_inventory,
    year_inventory,
)
from rtsmonitor.objects import find_objects, objects_geojson
from rtsmonitor.records import RESULTS_CONTAINER, SiteYearRecord, results_prefix, write_record
from rtsmonitor.registry import register_site
from rtsmonitor.sites import SiteConfig
from rtsmonitor.storage import LocalStorage, Storage
from rtsmonitor.tracking import read_slump_rows, slumps_blob_name, track_site

Rect = tuple[int, int, int, int]  # row0, row1, col0, col1 (ends exclusive)
RUN = "20240901T000000000000Z-aaaaaaaa"
TODAY = dt.date(2024, 9, 1)
RELATIONS = (*RELATIONSHIP_FIELDS, REPEAT_FIELD)


def config(site_id: str, name: str, lon: float) -> dict[str, Any]:
    return {
        "id": site_id,
        "name": name,
        "centre": {"lon": lon, "lat": 69.75, "size_km": 2.0},
        "first_year": 2018,
        "last_year": 2020,
    }


SITES = {"alpha": config("alpha", "Alpha test site", -126.75), "beta": config("beta", "Beta test site", -126.60)}
GRIDS = {site: SiteConfig.model_validate(c).grid() for site, c in SITES.items()}


def alpha(year: int) -> dict[str, list[Rect]]:
    shapes: dict[str, list[Rect]] = {"A": [(20, 30, 20, 40)]}
    if year == 2018:
        shapes |= {
            "B": [(60, 70, 20, 35)],
            "C": [(60, 70, 38, 50)],
            "D": [(100, 110, 20, 60)],
            "E": [(140, 155, 20, 40)],
            "G": [(20, 30, 100, 130)],
        }
    else:
        shapes |= {
            "B": [(60, 70, 20, 50)],
            "D": [(100, 110, 20, 38)],
            "D2": [(100, 110, 44, 60)],
            "G": [(20, 30, 100, 124)],
            "H": [(28, 40, 126, 140)],
        }
    if year == 2020:
        shapes["F"] = [(145, 160, 30, 50)]
    return shapes


TRUTH: dict[tuple[str, int], dict[str, list[Rect]]] = {
    **{("alpha", year): alpha(year) for year in (2018, 2019, 2020)},
    ("beta", 2019): {
        "P": [(50, 60, 50, 70)],
        "Q": [(80, 95, 80, 90)],
        "R": [(120, 124, 120, 124), (124, 128, 124, 128)],
    },
    ("beta", 2020): {},
}


def burn(grid: SiteGrid, rects: list[Rect]) -> np.ndarray:
    out = np.zeros(grid.shape, dtype=bool)
    for r0, r1, c0, c1 in rects:
        out[r0:r1, c0:c1] = True
    return out


def geotiff(grid: SiteGrid, array: np.ndarray, nodata: float | None, driver: str = "COG") -> bytes:
    with MemoryFile() as memory:
        with memory.open(
            driver=driver,
            width=grid.width,
            height=grid.height,
            count=1,
            dtype=array.dtype,
            crs=grid.crs,
            transform=grid.transform,
            nodata=nodata,
        ) as dataset:
            dataset.write(array, 1)
        return bytes(memory.read())


def scene_id(year: int) -> str:
    return f"S2A_MSIL2A_{year}0712T203611_R099_T09WWR_{year}0712T221450"


def write_site_year(storage: Storage, site: str, year: int, shapes: Mapping[str, list[Rect]], run: str) -> np.ndarray:
    """An ok site-year: rts.geojson from the pipeline's object code, mask, probability COG, record."""
    grid = GRIDS[site]
    rts = burn(grid, [rect for rects in shapes.values() for rect in rects])
    seed = zlib.crc32(f"{site}/{year}/{run}".encode())
    probability = np.random.default_rng(seed).random(grid.shape, dtype=np.float32)
    objects = find_objects(rts, probability, grid)
    collection = objects_geojson(objects, grid, {"site_id": site, "year": year, "scene_id": scene_id(year)})
    prefix = results_prefix(site, year, run)
    storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + "rts.geojson", json.dumps(collection).encode())
    storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + "mask.tif", geotiff(grid, rts.astype(np.uint8), 255))
    storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + "probability.tif", geotiff(grid, probability, float("nan")))
    record = SiteYearRecord(
        site_id=site,
        year=year,
        status="ok",
        reason="clear scene",
        processed=datetime(2024, 9, 1, tzinfo=UTC),
        code_version="test",
        scene_id=scene_id(year),
        scene_datetime=f"{year}-07-12T20:36:11.024000+00:00",
        rts_count=len(objects),
        rts_area_m2=sum(o.area_m2 for o in objects),
        model_name="rts-unet-demo",
        model_version="demo-1",
        threshold=0.5,
        run_id=run,
        results_prefix=prefix,
    )
    write_record(storage, record)
    return probability


@dataclass
class Series:
    root: Path
    storage: LocalStorage
    probability: dict[tuple[str, int], np.ndarray]


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    root = tmp_path_factory.mktemp("inventory") / "store"
    storage = LocalStorage(root)
    for site, site_config in SITES.items():
        register_site(storage, f"{site}.json", json.dumps(site_config).encode())
    probability = {key: write_site_year(storage, *key, shapes, RUN) for key, shapes in TRUTH.items()}
    for site in SITES:
        track_site(storage, site)
    return Series(root, storage, probability)


def inventory_of(series: Series, site: str, year: int) -> gpd.GeoDataFrame:
    return site_year_inventory(series.storage, site, year, contribution_date=TODAY)


def name_rows(frame: gpd.GeoDataFrame, site: str, year: int) -> dict[str, pd.Series]:
    """The inventory row of each named truth slump (the row whose polygon holds its first pixel's centre)."""
    grid = GRIDS[site]
    to_wgs84 = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
    named = {}
    for name, rects in TRUTH[(site, year)].items():
        r0, _, c0, _ = rects[0]
        point = Point(to_wgs84.transform(grid.x_min + (c0 + 0.5) * grid.res_m, grid.y_max - (r0 + 0.5) * grid.res_m))
        hits = frame[frame.geometry.contains(point)]
        assert len(hits) == 1, (name, year)
        named[name] = hits.iloc[0]
    return named


# --- fields -------------------------------------------------------------------------------------------


def test_site_year_inventory_follows_the_arts_rules_and_the_stored_results(series: Series) -> None:
    frame = inventory_of(series, "alpha", 2019)
    assert arts_problems(frame) == []
    assert list(frame.columns) == [*COLUMNS, "geometry"]
    assert {c: str(frame[c].dtype) for c in COLUMNS} == COLUMNS
    assert frame.crs.to_epsg() == 4326
    assert len(frame) == len(TRUTH[("alpha", 2019)]) == 6
    assert list(frame["slump_id"]) == sorted(frame["slump_id"])

    rows = {(r.slump_id, r.year): r for r in read_slump_rows(series.storage, "alpha")}
    collection = json.loads(
        series.storage.blobs.read_bytes(RESULTS_CONTAINER, results_prefix("alpha", 2019, RUN) + "rts.geojson")
    )
    stored = [shape(f["geometry"]) for f in collection["features"]]
    for name, row in name_rows(frame, "alpha", 2019).items():
        tracked = rows[(row["slump_id"], 2019)]
        assert (row["CentroidLat"], row["CentroidLon"]) == (tracked.lat, tracked.lon)
        assert row["status"] == tracked.status and row["first_year"] == tracked.first_year
        assert row["Area"] == int(burn(GRIDS["alpha"], TRUTH[("alpha", 2019)][name]).sum()) * 100.0  # UTM m^2
        assert sum(row.geometry.equals_exact(g, tolerance=0) for g in stored) == 1  # the stored polygon, as is
    assert set(frame["RegionName"]) == {"Alpha test site"}
    assert set(frame["CreatorLab"]) == {"rtsmonitor"}
    assert set(frame["BaseMapDate"]) == {"2019-07-12"}
    assert set(frame["BaseMapID"]) == {scene_id(2019)}
    assert set(frame["BaseMapSource"]) == {"Sentinel-2 L2A"}
    assert set(frame["BaseMapResolution"]) == {10.0}
    assert set(frame["TrainClass"]) == {"Positive"} and set(frame["LabelType"]) == {"Polygon"}
    assert set(frame["ContributionDate"]) == {"2024-09-01"}
    assert set(frame["Notes"]) == {
        "mapped automatically by rtsmonitor: rts-unet-demo demo-1, probability threshold 0.5"
    }
    assert frame["UID"].is_unique
    assert all(uid == arts_uid(row) for uid, row in zip(frame["UID"], frame.to_dict("records"), strict=True))


def test_the_operator_joins_creator_lab_and_changes_the_uids(series: Series) -> None:
    plain = inventory_of(series, "alpha", 2018)
    signed = site_year_inventory(series.storage, "alpha", 2018, operator="Permafrost Lab", contribution_date=TODAY)
    assert set(signed["CreatorLab"]) == {"rtsmonitor (Permafrost Lab)"}
    assert arts_problems(signed) == []
    assert not set(plain["UID"]) & set(signed["UID"])


def test_lineage_becomes_arts_relationships(series: Series) -> None:
    frames = {year: inventory_of(series, "alpha", year) for year in (2018, 2019, 2020)}
    named = {year: name_rows(frames[year], "alpha", year) for year in frames}

    def uid(name: str, year: int) -> str:
        return str(named[year][name]["UID"])

    expected: dict[tuple[str, int], dict[str, set[str]]] = {
        ("E", 2018): {"NewRTS": {uid("F", 2020)}},
        ("A", 2019): {REPEAT_FIELD: {uid("A", 2018)}},
        ("B", 2019): {"MergedRTS": {uid("B", 2018), uid("C", 2018)}},
        ("D", 2019): {"SplitRTS": {uid("D", 2018)}},
        ("D2", 2019): {"SplitRTS": {uid("D", 2018)}},
        ("G", 2019): {REPEAT_FIELD: {uid("G", 2018)}},
        ("H", 2019): {"UnknownRelationship": {uid("G", 2018)}},
        ("F", 2020): {"StabilizedRTS": {uid("E", 2018)}},
        **{(n, 2020): {REPEAT_FIELD: {uid(n, 2019)}} for n in ("A", "B", "D", "D2", "G", "H")},
    }
    for year, rows in named.items():
        for name, row in rows.items():
            relations = {field: set(filter(None, str(row[field]).split(","))) for field in RELATIONS}
            assert relations == {f: expected.get((name, year), {}).get(f, set()) for f in RELATIONS}, (name, year)
    assert named[2019]["D2"]["status"] == "new" and named[2020]["F"]["status"] == "new"
    assert all(arts_problems(frame) == [] for frame in frames.values())


def test_probability_statistics_are_those_of_the_pixels_inside(series: Series) -> None:
    for site, year in (("alpha", 2018), ("alpha", 2019), ("beta", 2019)):
        probability = series.probability[(site, year)]
        for name, row in name_rows(inventory_of(series, site, year), site, year).items():
            pixels = probability[burn(GRIDS[site], TRUTH[(site, year)][name])].astype(np.float64)
            assert row["PixelCount"] == pixels.size
            expected = (pixels.min(), pixels.max(), pixels.mean(), np.median(pixels), pixels.std())
            got = (row["ProbMin"], row["ProbMax"], row["ProbMean"], row["ProbMedian"], row["ProbStd"])
            assert got == tuple(round(float(v), inventory.PROB_DECIMALS) for v in expected), (site, year, name)


# --- the year's inventory across sites ------------------------------------------------------------------


def test_year_inventory_merges_the_sites(series: Series) -> None:
    merged = year_inventory(series.storage, 2019, contribution_date=TODAY)
    parts = [inventory_of(series, site, 2019) for site in ("alpha", "beta")]
    pd.testing.assert_frame_equal(merged, pd.concat(parts, ignore_index=True), check_exact=True)
    assert list(merged["site_id"]) == ["alpha"] * 6 + ["beta"] * 3
    assert set(merged.loc[merged["site_id"] == "beta", "RegionName"]) == {"Beta test site"}
    assert merged["UID"].is_unique and arts_problems(merged) == []
    only_beta = year_inventory(series.storage, 2019, ["beta"], contribution_date=TODAY)
    pd.testing.assert_frame_equal(only_beta, parts[1])
    assert export_sites(series.storage, 2018) == ["alpha"]
    assert export_sites(series.storage, 2020, ["beta", "alpha", "beta"]) == ["beta", "alpha"]


@pytest.mark.parametrize(
    ("year", "sites", "parameter", "message"),
    [
        (2031, None, "year", "no site has an ok record for 2031 (years with one: 2018, 2019, 2020)"),
        (2018, ["beta"], "year", "site beta has no ok record for 2018 (its years with one: 2019, 2020)"),
        (2019, ["gamma"], "site_ids", "unknown site 'gamma'"),
        (2019, ["Not_A_Site"], "site_ids", "'Not_A_Site' is not a site id"),
    ],
)
def test_bad_choices_name_the_input(
    series: Series, year: int, sites: list[str] | None, parameter: str, message: str
) -> None:
    with pytest.raises(InventoryInputError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        year_inventory(series.storage, year, sites)
    assert caught.value.parameter == parameter


def test_an_empty_site_year_keeps_its_columns(series: Series, tmp_path: Path) -> None:
    frame = inventory_of(series, "beta", 2020)
    assert len(frame) == 0 and list(frame.columns) == [*COLUMNS, "geometry"]
    assert {c: str(frame[c].dtype) for c in COLUMNS} == COLUMNS
    for fmt in ("gpkg", "parquet"):
        # the GeoPackage keeps the field types; pyogrio's default reader guesses `object` for an empty
        # text column, its Arrow reader reads the stored type
        back = read(write_inventory(frame, tmp_path / f"empty{FORMATS[fmt][1]}", fmt), fmt, use_arrow=True)
        pd.testing.assert_frame_equal(back, frame)


# --- files ----------------------------------------------------------------------------------------------


def read(path: Path, fmt: str, *, use_arrow: bool = False) -> gpd.GeoDataFrame:
    if fmt == "parquet":
        return gpd.read_parquet(path)
    if fmt == "geojson":  # GeoJSON has no field types: GDAL takes YYYY-MM-DD text for dates unless told
        return gpd.read_file(path, engine="pyogrio", use_arrow=use_arrow, DATE_AS_STRING="YES")
    return gpd.read_file(path, layer=GPKG_LAYER, engine="pyogrio", use_arrow=use_arrow)


@pytest.mark.parametrize("fmt", ["gpkg", "parquet"])
def test_geopackage_and_geoparquet_read_back_identical(series: Series, tmp_path: Path, fmt: str) -> None:
    frame = year_inventory(series.storage, 2019, contribution_date=TODAY)
    path = write_inventory(frame, tmp_path / f"inventory{FORMATS[fmt][1]}", fmt)
    back = read(path, fmt)
    assert back.crs.to_epsg() == 4326
    assert list(back.geometry.to_wkb()) == list(frame.geometry.to_wkb())  # identical geometry, type included
    assert back.geometry.geom_equals_exact(frame.geometry, tolerance=0).all()
    pd.testing.assert_frame_equal(back, frame, check_exact=True)  # identical attributes, dtypes included
    assert arts_problems(back) == []
    assert set(back.geometry.geom_type) == {"Polygon", "MultiPolygon"}  # as stored, not promoted
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_geojson_keeps_geometry_and_the_arts_rules(series: Series, tmp_path: Path) -> None:
    frame = year_inventory(series.storage, 2019, contribution_date=TODAY)
    back = read(write_inventory(frame, tmp_path / "inventory.geojson", "geojson"), "geojson")
    assert back.geometry.geom_equals_exact(frame.geometry, tolerance=0).all()
    assert arts_problems(back) == []
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)  # GeoJSON reads small integers as int32


def test_a_failed_write_leaves_the_old_file(series: Series, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = inventory_of(series, "beta", 2019)
    path = write_inventory(frame, tmp_path / "inventory.gpkg", "gpkg")
    before = path.read_bytes()

    def broken(frame: Any, target: Path, fmt: str) -> None:
        target.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(inventory, "_write", broken)
    with pytest.raises(OSError, match="disk full"):
        write_inventory(frame, path, "gpkg")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["inventory.gpkg"]


def test_bytes_for_a_blob(series: Series) -> None:
    data = inventory.inventory_bytes(inventory_of(series, "beta", 2019), "parquet")
    assert data[:4] == b"PAR1"


# --- tracking that is missing or stale -------------------------------------------------------------------


def test_missing_or_stale_tracking_is_reported(series: Series, tmp_path: Path) -> None:
    storage = LocalStorage(shutil.copytree(series.root, tmp_path / "store"))
    # a re-run of 2019 committed, not yet tracked: the stored rows describe the old objects
    write_site_year(storage, "beta", 2019, {"P": [(50, 60, 50, 75)]}, "20240902T000000000000Z-bbbbbbbb")
    with pytest.raises(
        RtsError, match=r"site beta 2019: the tracking rows \(3 slumps\) do not match .* track the site again"
    ):
        site_year_inventory(storage, "beta", 2019)
    track_site(storage, "beta")
    assert len(site_year_inventory(storage, "beta", 2019)) == 1
    storage.blobs.delete(RESULTS_CONTAINER, slumps_blob_name("alpha"))
    with pytest.raises(RtsError, match="is missing: track the site first"):
        site_year_inventory(storage, "alpha", 2019)
    with pytest.raises(NotFoundError):
        site_year_inventory(storage, "gamma", 2019)


# --- the command ---------------------------------------------------------------------------------------------


def export(series: Series, *args: str) -> Any:
    return CliRunner().invoke(main, ["export", "--store", str(series.root), *args])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_cli_exports_the_year(series: Series, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out" / f"rts-2019{FORMATS[fmt][1]}"
    result = export(series, "--year", "2019", "--format", fmt, "--out", str(out), "--sites", "beta,alpha")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 9 slump(s) of 2019 from 2 site(s) (alpha, beta)" in result.output
    back = read(out, fmt)
    expected = year_inventory(series.storage, 2019)
    assert arts_problems(back) == []
    assert list(back["UID"]) == list(expected["UID"])
    assert [p.name for p in out.parent.iterdir()] == [out.name]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--year", "2019", "--format", "shp"], "--format shp: 'shp' is not one of gpkg, parquet, geojson"),
        (
            ["--year", "2019", "--format", "gpkg", "--sites", "gamma"],
            "--sites gamma: unknown site 'gamma' (registered: alpha, beta)",
        ),
        (
            ["--year", "2019", "--format", "gpkg", "--sites", "alpha,Bad_Id"],
            "--sites Bad_Id: 'Bad_Id' is not a site id",
        ),
        (["--year", "2031", "--format", "gpkg"], "--year 2031: no site has an ok record for 2031"),
        (["--year", "2018", "--format", "gpkg", "--sites", "beta"], "--year 2018: site beta has no ok record for 2018"),
        (
            ["--year", "2019", "--format", "parquet", "--out", "{out}/x.gpkg"],
            "does not end in .parquet (--format parquet)",
        ),
    ],
)
def test_cli_refuses_bad_input_and_writes_nothing(
    series: Series, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    args = [a.replace("{out}", str(out)) for a in args]
    if "--out" not in args:
        args += ["--out", str(out / "inventory.gpkg")]
    result = export(series, *args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert not out.exists()


def test_cli_needs_a_store(tmp_path: Path) -> None:
    out = tmp_path / "x.gpkg"
    args = ["export", "--year", "2019", "--format", "gpkg", "--store", str(tmp_path / "none"), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "--store: no store at" in result.output
    assert not out.exists()
