"""Per-slump tracking on a synthetic site-series with known truth.

The series is built straight into a local store, without the model: each year's RTS mask is a set of
pixel rectangles on the site grid, turned into ``rts.geojson`` by the pipeline's own
:func:`~rtsmonitor.objects.find_objects` / :func:`~rtsmonitor.objects.objects_geojson`, plus a
``mask.tif`` (255 under clouds) and an ok record. Outlines lie on pixel edges, so every area is a
whole number of 100 m^2 pixels and the truth of each growth is exact: the tracked growth must match
it to the 0.01 m^2 the rows are rounded to. Where the areas have to come from the reprojected
outlines instead (no area properties), the tolerance is the coordinate rounding of the GeoJSON,
1e-7 degrees (at most 1.1 cm) along the perimeters.

Truth (1 px = 10 m; no-scene 2019; 2021's rts.geojson is broken):

- A appears in 2017;
- B's 400 m headwall retreats 30 m/yr (12 000 m^2/yr, beyond one pixel of edge shift): active;
- B2's retreats 10 m/yr (Lacelle et al. 2015's slow end): 4 000 m^2/yr, within the noise: stable;
- C grows by exactly one pixel all round in 2017 and shrinks back in 2018: stable both times;
- D vanishes in 2018 (its footprint observed);
- E and F merge in 2018 through a 12-pixel bridge; G splits in 2018 when its 12-pixel bridge goes;
- H is under clouds in 2018 (no row, not vanished) and seen again in 2020;
- I (the 10-pixel minimum mapping unit) shifts by one pixel in 2017 and stays the same slump.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hooked_blobs import HookedBlobs
from pyproj import Transformer
from rasterio.io import MemoryFile
from shapely.geometry import box

from rtsmonitor.objects import find_objects, objects_geojson
from rtsmonitor.records import (
    RESULTS_CONTAINER,
    SiteYearRecord,
    read_record,
    read_record_versioned,
    results_prefix,
    set_tracking_counts,
    write_record,
)
from rtsmonitor.registry import register_site
from rtsmonitor.sites import SiteConfig
from rtsmonitor.storage import LocalStorage, Storage
from rtsmonitor.tracking import (
    MATCH_MIN_OVERLAP,
    OBJECTS_TABLE,
    SlumpYear,
    TrackedObject,
    YearObjects,
    edge_shift_area_m2,
    read_slump_rows,
    slumps_blob_name,
    track_site,
    track_years,
)

SITE = "tiny01"
CONFIG = {
    "id": SITE,
    "name": "Tiny test site",
    "centre": {"lon": -126.75, "lat": 69.75, "size_km": 3.0},
    "first_year": 2016,
    "last_year": 2022,
}
GRID = SiteConfig.model_validate(CONFIG).grid()
RES_M = GRID.res_m
PIXEL_M2 = RES_M**2
OK_YEARS = (2016, 2017, 2018, 2020, 2022)  # 2019: no scene; 2021: broken rts.geojson
BROKEN_YEAR = 2021
ROUNDING_M2 = 0.01  # rows hold areas and growth rounded to 0.01 m^2
DEGREE_ROUNDING_M = 0.011  # GeoJSON coordinates are rounded to 1e-7 deg: <= 1.1 cm

Rect = tuple[int, int, int, int]  # row0, row1, col0, col1: pixel rows and columns, ends exclusive


def headwall(year: int, col0: int, col1: int, retreat_px: int) -> Rect:
    """A slump whose toe stays on row 100 and whose headwall retreats north by ``retreat_px`` a year."""
    depth = 3 + retreat_px * (year - 2016)
    return (100 - depth, 100, col0, col1)


def truth(year: int) -> dict[str, list[Rect]]:
    """The RTS of each named slump in ``year`` (pixel rectangles; absent names are not there)."""
    shapes: dict[str, list[Rect]] = {
        "B": [headwall(year, 60, 100, 3)],
        "B2": [headwall(year, 120, 160, 1)],
        "C": [(39, 51, 199, 211)] if year == 2017 else [(40, 50, 200, 210)],
        "H": [(150, 160, 200, 215)],
        "I": [(281, 283, 250, 255)] if year >= 2017 else [(280, 282, 250, 255)],
    }
    if year >= 2017:
        shapes["A"] = [(20, 30, 20, 35)]
    if year < 2018:
        shapes["D"] = [(40, 48, 240, 255)]
        shapes["E"] = [(200, 210, 20, 40)]
        shapes["F"] = [(200, 210, 43, 53)]
        shapes["G"] = [(250, 260, 100, 112), (254, 256, 112, 118), (250, 260, 118, 126)]
    else:
        shapes["E"] = [(200, 210, 20, 40), (203, 207, 40, 43), (200, 210, 43, 53)]
        shapes["G"] = [(250, 260, 100, 112)]
        shapes["G2"] = [(250, 260, 118, 126)]
    if year == 2018:
        del shapes["H"]  # under the clouds of CLOUDS
    return shapes


CLOUDS = {2018: [(140, 170, 190, 225)]}
"""Unobserved pixels (mask 255) by year."""

EXPECTED_STATUS: dict[str, dict[int, str]] = {
    "A": {2017: "new", 2018: "stable", 2020: "stable", 2022: "stable"},
    "B": {2016: "new", 2017: "active", 2018: "active", 2020: "active", 2022: "active"},
    "B2": {2016: "new", 2017: "stable", 2018: "stable", 2020: "stable", 2022: "stable"},
    "C": {2016: "new", 2017: "stable", 2018: "stable", 2020: "stable", 2022: "stable"},
    "D": {2016: "new", 2017: "stable", 2018: "vanished"},
    "E": {2016: "new", 2017: "stable", 2018: "stable", 2020: "stable", 2022: "stable"},
    "F": {2016: "new", 2017: "stable", 2018: "merged"},
    "G": {2016: "new", 2017: "stable", 2018: "stable", 2020: "stable", 2022: "stable"},
    "G2": {2018: "new", 2020: "stable", 2022: "stable"},
    "H": {2016: "new", 2017: "stable", 2020: "stable", 2022: "stable"},
    "I": {2016: "new", 2017: "stable", 2018: "stable", 2020: "stable", 2022: "stable"},
}


def burn(rects: list[Rect]) -> np.ndarray:
    out = np.zeros(GRID.shape, dtype=bool)
    for r0, r1, c0, c1 in rects:
        out[r0:r1, c0:c1] = True
    return out


def pixels(rects: list[Rect]) -> int:
    return int(np.count_nonzero(burn(rects)))


def perimeter_m(rects: list[Rect]) -> float:
    """Perimeter of the union of the rectangles (pixel edges between RTS and non-RTS), in metres."""
    padded = np.pad(burn(rects), 1)
    edges = np.count_nonzero(padded[1:, :] != padded[:-1, :]) + np.count_nonzero(padded[:, 1:] != padded[:, :-1])
    return float(edges) * RES_M


def noise(rects: list[Rect]) -> float:
    return perimeter_m(rects) * RES_M + 4 * PIXEL_M2  # one pixel of edge shift all round (simple outlines)


TO_WGS84 = Transformer.from_crs(GRID.epsg, 4326, always_xy=True)


def pixel_centroid(name: str) -> tuple[float, float]:
    """(row, column) of the centroid of a slump's pixels in 2016: north to south, then west to east."""
    rows, cols = np.nonzero(burn(truth(2016)[name]))
    return float(rows.mean()), float(cols.mean())


def lonlat(rects: list[Rect]) -> tuple[float, float]:
    """Centroid of the pixels of the rectangles in WGS84."""
    rows, cols = np.nonzero(burn(rects))
    x = GRID.x_min + (cols.mean() + 0.5) * RES_M
    y = GRID.y_max - (rows.mean() + 0.5) * RES_M
    lon, lat = TO_WGS84.transform(x, y)
    return float(lon), float(lat)


def mask_tif(rts: np.ndarray, clouds: list[Rect]) -> bytes:
    values = np.where(rts, 1, 0).astype(np.uint8)
    for r0, r1, c0, c1 in clouds:
        values[r0:r1, c0:c1] = 255
    profile = {
        "driver": "GTiff",
        "height": GRID.height,
        "width": GRID.width,
        "count": 1,
        "dtype": "uint8",
        "crs": GRID.crs,
        "transform": GRID.transform,
        "nodata": 255,
    }
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(values, 1)
        return bytes(memory.read())


def record(year: int, run_id: str, count: int = 0, area_m2: float = 0.0) -> SiteYearRecord:
    return SiteYearRecord(
        site_id=SITE,
        year=year,
        status="ok",
        reason="clear scene",
        processed=datetime(2024, 9, 1, tzinfo=UTC),
        code_version="test",
        scene_id=f"S2_{year}",
        rts_count=count,
        rts_area_m2=area_m2,
        run_id=run_id,
        results_prefix=results_prefix(SITE, year, run_id),
    )


def write_year(
    storage: Storage,
    year: int,
    shapes: Mapping[str, list[Rect]],
    *,
    run_id: str = "run-a",
    clouds: list[Rect] | None = None,
    with_mask: bool = True,
    area_properties: bool = True,
    geojson: bytes | None = None,
) -> None:
    """Write an ok site-year: rts.geojson made by the pipeline's object code, mask.tif, the record."""
    rts = burn([rect for rects in shapes.values() for rect in rects])
    objects = find_objects(rts, None, GRID)
    collection = objects_geojson(objects, GRID, {"site_id": SITE, "year": year, "scene_id": f"S2_{year}"})
    if not area_properties:
        for feature in collection["features"]:
            del feature["properties"]["area_m2"], feature["properties"]["perimeter_m"]
    prefix = results_prefix(SITE, year, run_id)
    data = json.dumps(collection).encode() if geojson is None else geojson
    storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + "rts.geojson", data)
    if with_mask:
        storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + "mask.tif", mask_tif(rts, clouds or []))
    write_record(storage, record(year, run_id, len(objects), sum(o.area_m2 for o in objects)))


def build_series(storage: Storage, *, area_properties: bool = True) -> None:
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())
    for year in OK_YEARS:
        write_year(storage, year, truth(year), clouds=CLOUDS.get(year), area_properties=area_properties)
    write_record(
        storage,
        SiteYearRecord(
            site_id=SITE,
            year=2019,
            status="no-scene",
            reason="no summer scene under the cloud limit",
            processed=datetime(2024, 9, 1, tzinfo=UTC),
            code_version="test",
        ),
    )
    write_year(storage, BROKEN_YEAR, truth(BROKEN_YEAR), geojson=b'{"type": "FeatureCollection", "features": [')


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path / "store")
    build_series(store)
    return store


def find(rows: list[SlumpYear], year: int, shape_: list[Rect]) -> SlumpYear:
    """The row of ``year`` nearest to the centroid of ``shape_`` (one pixel at most away)."""
    lon, lat = lonlat(shape_)
    candidates = [r for r in rows if r.year == year and r.status not in ("vanished", "merged")]
    best = min(candidates, key=lambda r: math.hypot((r.lon - lon) * math.cos(math.radians(lat)), r.lat - lat))
    assert math.hypot((best.lon - lon) * math.cos(math.radians(lat)), best.lat - lat) * 111_000 < RES_M
    return best


def ids_by_name(rows: list[SlumpYear]) -> dict[str, str]:
    """Each named slump's id, from the row of its first year."""
    return {name: find(rows, min(years), truth(min(years))[name]).slump_id for name, years in EXPECTED_STATUS.items()}


def by_key(rows: list[SlumpYear]) -> dict[tuple[str, int], SlumpYear]:
    return {(r.slump_id, r.year): r for r in rows}


# --- the known truth -------------------------------------------------------------------------------


def test_each_slump_gets_its_true_status_every_observed_year(storage: LocalStorage) -> None:
    result = track_site(storage, SITE)
    ids = ids_by_name(result.rows)
    assert len(set(ids.values())) == len(ids), "two named slumps share an id"
    rows = by_key(result.rows)
    got = {name: {y: rows[(ids[name], y)].status for y in OK_YEARS if (ids[name], y) in rows} for name in ids}
    assert got == EXPECTED_STATUS
    assert len(result.rows) == sum(len(years) for years in EXPECTED_STATUS.values())
    assert result.rows == read_slump_rows(storage, SITE)


def test_ids_are_stable_and_numbered_by_first_sighting(storage: LocalStorage) -> None:
    rows = track_site(storage, SITE).rows
    ids = ids_by_name(rows)
    for name, years in EXPECTED_STATUS.items():
        for year in years:
            if year in OK_YEARS and name in truth(year):
                assert find(rows, year, truth(year)[name]).slump_id == ids[name], (name, year)
    # 2016's slumps north to south, then west to east (by centroid), then 2017's A, then 2018's piece
    first = sorted((name for name, years in EXPECTED_STATUS.items() if min(years) == 2016), key=pixel_centroid)
    assert [ids[n] for n in [*first, "A", "G2"]] == [f"s{k:04d}" for k in range(1, len(first) + 3)]
    for row in rows:
        assert row.first_year == min(EXPECTED_STATUS[next(n for n, i in ids.items() if i == row.slump_id)])


def test_growth_matches_the_pixel_exact_truth(storage: LocalStorage) -> None:
    rows = by_key(track_site(storage, SITE).rows)
    ids = ids_by_name(list(rows.values()))
    for name in ("A", "B", "B2", "C", "G2", "H", "I"):
        seen = [y for y in OK_YEARS if (ids[name], y) in rows]
        for previous, year in itertools.pairwise(seen):
            row = rows[(ids[name], year)]
            before, after = truth(previous)[name], truth(year)[name]
            change = (pixels(after) - pixels(before)) * PIXEL_M2
            assert row.previous_year == previous
            assert row.growth_m2_per_yr == pytest.approx(change / (year - previous), abs=ROUNDING_M2), (name, year)
            assert row.noise_m2 == pytest.approx(noise(before), abs=ROUNDING_M2), (name, year)
            assert row.area_m2 == pixels(after) * PIXEL_M2
            assert row.last_year == year
    b, b2 = ids["B"], ids["B2"]
    assert {rows[(b, y)].growth_m2_per_yr for y in (2017, 2018, 2020, 2022)} == {12_000.0}  # 30 m/yr x 400 m
    assert {rows[(b2, y)].growth_m2_per_yr for y in (2017, 2018, 2020, 2022)} == {4_000.0}  # 10 m/yr x 400 m
    # C: exactly one pixel of edge shift all round is noise, in both directions
    c2017, c2018 = rows[(ids["C"], 2017)], rows[(ids["C"], 2018)]
    assert c2017.growth_m2_per_yr == c2017.noise_m2 == edge_shift_area_m2(400.0, RES_M) == 4400.0
    assert c2018.growth_m2_per_yr == -4400.0 and c2018.noise_m2 == 5200.0
    assert rows[(b2, 2020)].noise_m2 > 2 * 4_000  # two years of slow retreat are still within the noise


def test_merges_and_splits_are_recorded(storage: LocalStorage) -> None:
    rows = by_key(track_site(storage, SITE).rows)
    ids = ids_by_name(list(rows.values()))
    e, f, g, g2 = (ids[n] for n in ("E", "F", "G", "G2"))
    merged = rows[(f, 2018)]
    assert (merged.status, merged.merged_into, merged.area_m2, merged.previous_year) == ("merged", e, 0.0, 2017)
    assert merged.growth_m2_per_yr is None and merged.last_year == 2017
    assert not [key for key in rows if key[0] == f and key[1] > 2018]
    survivor = rows[(e, 2018)]
    assert survivor.merged_from == f and survivor.first_year == 2016
    # the merged slump grew by its bridge only; the threshold is both earlier outlines' edge shift
    assert survivor.growth_m2_per_yr == 12 * PIXEL_M2
    assert survivor.noise_m2 == noise(truth(2017)["E"]) + noise(truth(2017)["F"])
    assert survivor.area_m2 == pixels(truth(2018)["E"]) * PIXEL_M2
    piece, kept = rows[(g2, 2018)], rows[(g, 2018)]
    assert (piece.status, piece.split_from, piece.first_year) == ("new", g, 2018)
    assert piece.growth_m2_per_yr is None and kept.split_from is None
    assert kept.growth_m2_per_yr == -12 * PIXEL_M2 and kept.status == "stable"  # the lost bridge
    assert all(r.merged_into is None for key, r in rows.items() if key != (f, 2018))


def test_hidden_and_unscened_years_make_nothing_vanish(storage: LocalStorage) -> None:
    rows = track_site(storage, SITE).rows
    assert {r.year for r in rows} == set(OK_YEARS)  # nothing in the no-scene or the broken year
    ids = ids_by_name(rows)
    h = by_key(rows)
    assert (ids["H"], 2018) not in h
    seen_again = h[(ids["H"], 2020)]
    assert (seen_again.status, seen_again.previous_year, seen_again.growth_m2_per_yr) == ("stable", 2017, 0.0)
    gone = h[(ids["D"], 2018)]
    assert (gone.area_m2, gone.last_year, gone.growth_m2_per_yr) == (0.0, 2017, None)
    assert [r.year for r in rows if r.slump_id == ids["D"]] == [2016, 2017, 2018]
    assert (ids["B"], 2020) in h and h[(ids["B"], 2020)].previous_year == 2018


def test_records_count_new_vanished_and_growing_slumps(storage: LocalStorage) -> None:
    result = track_site(storage, SITE)
    expected = {2016: (9, 0, 0), 2017: (1, 0, 1), 2018: (0, 1, 1), 2020: (0, 0, 1), 2022: (0, 0, 1)}
    assert {y: c.as_tuple() for y, c in result.counts.items()} == expected
    for year in (*OK_YEARS, 2019, BROKEN_YEAR):
        stored = read_record(storage, SITE, year)
        assert stored is not None
        counts = (stored.rts_new, stored.rts_vanished, stored.rts_growing)
        assert counts == expected.get(year, (None, None, None)), year
        assert stored.run_id == ("run-a" if stored.status == "ok" else None)


def test_a_broken_result_blob_is_reported_and_the_rest_is_produced(storage: LocalStorage) -> None:
    result = track_site(storage, SITE)
    assert list(result.broken_years) == [BROKEN_YEAR]
    assert "rts.geojson is not JSON" in result.broken_years[BROKEN_YEAR]
    assert f"{SITE}/{BROKEN_YEAR}/run-a/" in result.broken_years[BROKEN_YEAR]
    assert not result.mask_problems
    assert sum(r.year == 2022 for r in result.rows) == len([n for n in EXPECTED_STATUS if 2022 in EXPECTED_STATUS[n]])
    # a blob of another site-year is broken too, and a missing one
    elsewhere = {"type": "FeatureCollection", "features": [], "properties": {"site_id": SITE, "year": 2020}}
    write_year(storage, BROKEN_YEAR, {}, geojson=json.dumps(elsewhere).encode())
    assert "holds the objects of tiny01 2020" in track_site(storage, SITE).broken_years[BROKEN_YEAR]
    storage.blobs.delete(RESULTS_CONTAINER, f"{SITE}/{BROKEN_YEAR}/run-a/rts.geojson")
    assert track_site(storage, SITE).broken_years[BROKEN_YEAR].endswith("rts.geojson is missing")


def test_slumps_blob_holds_the_present_slumps(storage: LocalStorage) -> None:
    result = track_site(storage, SITE)
    collection = json.loads(storage.blobs.read_bytes(RESULTS_CONTAINER, slumps_blob_name(SITE)))
    assert slumps_blob_name(SITE) == f"_tracking/{SITE}/slumps.geojson"
    present = [r for r in result.rows if r.status not in ("vanished", "merged")]
    features = collection["features"]
    assert [(f["properties"]["slump_id"], f["properties"]["year"]) for f in features] == [
        (r.slump_id, r.year) for r in present
    ]
    for feature, row in zip(features, present, strict=True):
        assert feature["properties"] == {
            "slump_id": row.slump_id,
            "year": row.year,
            "status": row.status,
            "area_m2": row.area_m2,
            "growth_m2_per_yr": row.growth_m2_per_yr,
            "first_year": row.first_year,
        }
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")


def test_areas_from_reprojected_outlines_stay_within_the_coordinate_rounding(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    build_series(storage, area_properties=False)
    rows = by_key(track_site(storage, SITE).rows)
    ids = ids_by_name(list(rows.values()))
    for name, year, previous in (("B", 2017, 2016), ("B", 2020, 2018), ("C", 2017, 2016), ("E", 2018, 2017)):
        before = truth(previous)[name] + (truth(previous)["F"] if name == "E" else [])
        after = truth(year)[name]
        change = (pixels(after) - pixels(before)) * PIXEL_M2
        tolerance = DEGREE_ROUNDING_M * (perimeter_m(before) + perimeter_m(after)) / (year - previous)
        assert rows[(ids[name], year)].growth_m2_per_yr == pytest.approx(change / (year - previous), abs=tolerance)
    got = {name: {y: rows[(ids[name], y)].status for y in OK_YEARS if (ids[name], y) in rows} for name in ids}
    assert got == EXPECTED_STATUS


# --- idempotence and re-runs -----------------------------------------------------------------------


def stored_state(storage: Storage) -> tuple[list[object], bytes, list[str | None]]:
    keys = [str(e["RowKey"]) for e in storage.tables.query(OBJECTS_TABLE, SITE)]
    rows = [storage.tables.get_versioned(OBJECTS_TABLE, SITE, key) for key in keys]  # with their ETags
    blob = storage.blobs.read_bytes(RESULTS_CONTAINER, slumps_blob_name(SITE))
    etags = [read_record_versioned(storage, SITE, year)[1] for year in (*OK_YEARS, 2019, BROKEN_YEAR)]
    return list(rows), blob, etags


def test_tracking_again_changes_nothing(storage: LocalStorage) -> None:
    first = track_site(storage, SITE)
    state = stored_state(storage)
    second = track_site(storage, SITE)
    assert second == first and second.rounds == 1
    assert stored_state(storage) == state  # same rows, same blob, no record rewritten (same ETags)


def test_rerunning_a_year_rederives_it_and_the_later_years(storage: LocalStorage) -> None:
    before = by_key(track_site(storage, SITE).rows)
    ids = ids_by_name(list(before.values()))
    shapes = truth(2020)
    del shapes["H"]  # the re-run of 2020 sees H gone, its footprint observed
    write_year(storage, 2020, shapes, run_id="run-b")
    result = track_site(storage, SITE)
    after = by_key(result.rows)
    assert {k: r for k, r in after.items() if k[1] < 2020} == {k: r for k, r in before.items() if k[1] < 2020}
    assert after[(ids["H"], 2020)].status == "vanished"
    assert (ids["H"], 2022) not in after  # the stale row is deleted
    reborn = find(result.rows, 2022, truth(2022)["H"])  # vanished is final: seen again, it is a new slump
    assert reborn.status == "new" and reborn.slump_id == "s0012" and reborn.first_year == 2022
    assert read_slump_rows(storage, SITE) == result.rows
    assert result.counts[2020].as_tuple() == (0, 1, 1) and result.counts[2022].as_tuple() == (1, 0, 1)
    stored = read_record(storage, SITE, 2020)
    assert stored is not None and (stored.run_id, stored.rts_vanished) == ("run-b", 1)
    # putting the first run back restores every earlier row and count
    write_year(storage, 2020, truth(2020), run_id="run-c")
    assert by_key(track_site(storage, SITE).rows) == before


def test_a_year_without_a_readable_mask_makes_nothing_vanish(storage: LocalStorage) -> None:
    write_year(storage, 2018, truth(2018), run_id="run-b", clouds=CLOUDS[2018], with_mask=False)
    result = track_site(storage, SITE)
    ids = ids_by_name(result.rows)
    assert "mask.tif is missing" in result.mask_problems[2018]
    rows = by_key(result.rows)
    assert (ids["D"], 2018) not in rows and (ids["H"], 2018) not in rows
    assert rows[(ids["D"], 2020)].status == "vanished"  # 2020's mask saw its footprint empty
    assert rows[(ids["D"], 2020)].last_year == 2017
    assert result.counts[2018].vanished == 0 and result.counts[2020].vanished == 1


def test_a_commit_during_tracking_makes_it_track_again(storage: LocalStorage, tmp_path: Path) -> None:
    committed: list[str] = []

    def commit_another_run(operation: str, args: tuple[object, ...]) -> None:
        name = args[1]
        if operation == "blob write" and name == slumps_blob_name(SITE) and not committed:
            committed.append(name)  # another worker commits a re-run of 2022 while this one writes
            shapes = truth(2022)
            del shapes["A"]
            write_year(storage, 2022, shapes, run_id="run-b")

    hooked = Storage(HookedBlobs(storage.blobs, commit_another_run), storage.tables, storage.queues)
    result = track_site(hooked, SITE)
    assert committed and result.rounds == 2
    fresh = LocalStorage(tmp_path / "fresh")
    build_series(fresh)
    shapes = truth(2022)
    del shapes["A"]
    write_year(fresh, 2022, shapes, run_id="run-b")
    assert replace(result, rounds=1) == track_site(fresh, SITE)
    assert read_slump_rows(storage, SITE) == result.rows
    ids = ids_by_name(result.rows)
    assert by_key(result.rows)[(ids["A"], 2022)].status == "vanished"


def test_counts_are_written_only_onto_their_run(storage: LocalStorage) -> None:
    assert set_tracking_counts(storage, SITE, 2016, "run-a", (1, 2, 3))
    stored, etag = read_record_versioned(storage, SITE, 2016)
    assert stored is not None and (stored.rts_new, stored.rts_vanished, stored.rts_growing) == (1, 2, 3)
    assert set_tracking_counts(storage, SITE, 2016, "run-a", (1, 2, 3))  # unchanged: not rewritten
    assert read_record_versioned(storage, SITE, 2016)[1] == etag
    assert not set_tracking_counts(storage, SITE, 2016, "run-old", (0, 0, 0))
    assert not set_tracking_counts(storage, SITE, 2019, "x", (0, 0, 0))  # no-scene
    assert not set_tracking_counts(storage, SITE, 2030, "run-a", (0, 0, 0))  # no record


# --- the matching rule -----------------------------------------------------------------------------


def square_object(x0: float, y0: float, side: float) -> TrackedObject:
    geometry = box(x0, y0, x0 + side, y0 + side)
    return TrackedObject(geometry, geometry.area, geometry.length, 1, (0.0, 0.0), {"type": "Polygon"})


def all_observed(footprints: object) -> list[float]:
    return [1.0] * len(footprints)  # type: ignore[arg-type]


@pytest.mark.parametrize(("shift_px", "same"), [(0, True), (7, True), (8, False)])
def test_overlap_over_the_smaller_object_decides_a_match(shift_px: int, same: bool) -> None:
    # a 10 x 10 px slump, then a 20 x 20 px object shifted east: overlap of the smaller = (10 - shift) / 10
    earlier = square_object(0.0, 0.0, 100.0)
    later = square_object(shift_px * RES_M, 0.0, 200.0)
    assert ((10 - shift_px) / 10 >= MATCH_MIN_OVERLAP) is same
    tracks = track_years(
        SITE, [YearObjects(2016, "a", (earlier,)), YearObjects(2017, "b", (later,), all_observed)], RES_M
    )
    statuses = sorted((r.slump_id, r.status) for r in tracks.rows if r.year == 2017)
    assert statuses == ([("s0001", "active")] if same else [("s0001", "vanished"), ("s0002", "new")])


def test_merge_of_two_keeps_the_larger_and_split_keeps_the_largest_piece() -> None:
    big, small = square_object(0.0, 0.0, 100.0), square_object(200.0, 0.0, 50.0)
    joined_geometry = box(0.0, 0.0, 250.0, 100.0)
    joined = TrackedObject(joined_geometry, joined_geometry.area, joined_geometry.length, 1, (0.0, 0.0), {})
    years = [
        YearObjects(2016, "a", (small, big)),
        YearObjects(2017, "b", (joined,), all_observed),
        YearObjects(2018, "c", (square_object(0.0, 0.0, 90.0), square_object(200.0, 0.0, 50.0)), all_observed),
    ]
    rows = by_key(track_years(SITE, years, RES_M).rows)
    assert rows[("s0002", 2017)].merged_into == "s0001" and rows[("s0001", 2017)].merged_from == "s0002"
    assert rows[("s0003", 2018)].split_from == "s0001" and rows[("s0001", 2018)].area_m2 == 8100.0
