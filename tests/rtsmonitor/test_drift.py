"""Radiometric drift check: stable-terrain reflectance of a site-year against the site's earlier years."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import rasterio
from numpy.typing import NDArray

from rtsmonitor.drift import (
    DRIFT_BANDS,
    HISTOGRAM_STEP,
    MIN_STABLE_PX,
    DriftAccumulator,
    StableReflectance,
    check_drift,
    earlier_statistics,
    histogram_median,
    stable_reflectance,
)
from rtsmonitor.errors import RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.imagery import harmonise
from rtsmonitor.inference import MASK_RTS, MASK_UNOBSERVED, Model, predict_to_files
from rtsmonitor.modelstore import DEMO_BUNDLE
from rtsmonitor.offline.synthetic import SceneSpec, World
from rtsmonitor.records import SiteYearRecord, read_records, write_record
from rtsmonitor.stack import INPUT_LAYERS
from rtsmonitor.storage import LocalStorage
from rtsmonitor.terrain import slope_degrees

EPSG = 32608
"""UTM 8N: the Mackenzie delta region, where the synthetic tundra is plausible."""
GRID = SiteGrid(EPSG, 10.0, 520_000.0, 7_700_000.0, 300, 300)
"""A 3 x 3 km site."""
SITE = "synth"
REFERENCE_DAYS = {2017: 12, 2018: 30, 2019: 41, 2020: 20}
"""Days after 1 July of the earlier years' scenes: early, peak and late summer."""
CURRENT_YEAR, CURRENT_DAY = 2021, 55
"""The year under test: a late-August scene (senescent tundra: NIR lower, red higher than at peak)."""


@cache
def world() -> World:
    return World.generate(EPSG, [GRID.bounds], seed=3, slumps_per_km2=20.0)


@cache
def slope() -> NDArray[np.float32]:
    margin = 2  # slope needs neighbours: sample the DEM with a margin and crop
    xs = GRID.x_min + GRID.res_m * (np.arange(-margin, GRID.width + margin) + 0.5)
    ys = GRID.y_max - GRID.res_m * (np.arange(-margin, GRID.height + margin) + 0.5)
    dem = world().elevation_m(*np.meshgrid(xs, ys))
    return slope_degrees(dem, GRID.res_m)[margin:-margin, margin:-margin].astype(np.float32)


def scene(year: int, day: int, baseline: str = "03.01") -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """A clear synthetic summer scene as a stack [5, H, W] (INPUT_LAYERS) and its true slump mask.

    The reflectance goes through L2A encoding and :func:`harmonise` as the reader does: DN rounded,
    plus 1000 from baseline 04.00 on.
    """
    spec = SceneSpec(
        datetime=dt.datetime(year, 7, 1, 20, tzinfo=dt.UTC) + dt.timedelta(days=day),
        platform="Sentinel-2A",
        processing_baseline=baseline,
        relative_orbit=43,
        aoi_bounds=GRID.bounds,
        seed=year,
    )
    reflectance = world().reflectance(GRID, spec)
    dn = np.rint(reflectance * 10000.0) + spec.dn_offset
    harmonised = harmonise(dn.astype(np.float32), baseline)
    data = np.concatenate([harmonised, slope()[None]]).astype(np.float32)
    return data, world().slump_mask(GRID, year)


def ndwi(data: NDArray[np.float32]) -> NDArray[np.float32]:
    green, nir = data[INPUT_LAYERS.index("green")], data[INPUT_LAYERS.index("nir")]
    out: NDArray[np.float32] = (green - nir) / (green + nir)
    return out


def record(
    year: int, stats: StableReflectance | None, *, status: str = "ok", suspect: bool | None = None
) -> SiteYearRecord:
    extra = (
        {"rts_count": 0, "rts_area_m2": 0.0, "scene_id": f"S2A_{year}", "results_prefix": f"{SITE}/{year}/r/"}
        if status == "ok"
        else {}
    )
    return SiteYearRecord(
        site_id=SITE,
        year=year,
        status=status,  # type: ignore[arg-type]
        reason="",
        processed=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        code_version="test",
        stable_reflectance=None if stats is None else stats.to_json(),
        suspect=suspect,
        **extra,  # type: ignore[arg-type]
    )


@cache
def earlier_records() -> tuple[SiteYearRecord, ...]:
    out = []
    for year, day in REFERENCE_DAYS.items():
        data, rts = scene(year, day)
        out.append(record(year, stable_reflectance(data, INPUT_LAYERS, rts)))
    return tuple(out)


def brighter(data: NDArray[np.float32], factor: float, where: NDArray[np.bool_] | None = None) -> NDArray[np.float32]:
    """``data`` with its four bands multiplied by ``factor`` (only ``where``, if given); slope unchanged."""
    out = data.copy()
    scaled = out[:4] * np.float32(factor)
    out[:4] = scaled if where is None else np.where(where[None], scaled, out[:4])
    return out


# --- the statistic ----------------------------------------------------------------------------------


def test_histogram_median_equals_numpy_median_of_dn_values() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000, 1001):
        dn = rng.integers(0, 3000, n)
        counts = np.bincount(dn, minlength=10001).astype(np.int64)
        assert histogram_median(counts) == pytest.approx(float(np.median(dn)) * HISTOGRAM_STEP, abs=1e-12)
    assert np.isnan(histogram_median(np.zeros(10001, dtype=np.int64)))


def test_strip_by_strip_equals_whole_array() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    whole = DriftAccumulator()
    whole.add(data, INPUT_LAYERS, rts)
    strips = DriftAccumulator()
    for start in range(0, GRID.height, 37):  # uneven strips
        strips.add(data[:, start : start + 37], INPUT_LAYERS, rts[start : start + 37])
    np.testing.assert_array_equal(strips.counts, whole.counts)
    assert strips.summary() == whole.summary()
    # and the medians are those of the stable pixels computed directly
    stable = np.isfinite(data).all(axis=0) & ~rts & (ndwi(data) < 0) & (data[INPUT_LAYERS.index("slope")] < 5.0)
    summary = whole.summary()
    assert summary.stable_px == int(stable.sum()) > MIN_STABLE_PX
    for i, band in enumerate(DRIFT_BANDS):
        expected = float(np.median(np.rint(data[i][stable].astype(np.float64) / HISTOGRAM_STEP))) * HISTOGRAM_STEP
        assert summary.median[band] == pytest.approx(expected, abs=1e-12)


def test_layers_are_found_by_name_in_any_order() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    order = [4, 2, 0, 3, 1]
    shuffled = stable_reflectance(data[order], [INPUT_LAYERS[i] for i in order], rts)
    assert shuffled == stable_reflectance(data, INPUT_LAYERS, rts)
    with pytest.raises(RtsError, match=r"lacks layers \['slope'\]"):
        stable_reflectance(data[:4], INPUT_LAYERS[:4])


def test_mask_values_and_boolean_masks_agree_and_unobserved_pixels_are_left_out() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    values = np.where(rts, MASK_RTS, 0).astype(np.uint8)
    values[:50] = MASK_UNOBSERVED
    data_cut = data.copy()
    data_cut[:4, :50] = np.nan
    assert stable_reflectance(data, INPUT_LAYERS, values) == stable_reflectance(data_cut, INPUT_LAYERS, rts)


def test_stored_statistics_round_trip() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    stats = stable_reflectance(data, INPUT_LAYERS, rts)
    back = StableReflectance.from_json(stats.to_json())
    assert back.stable_px == stats.stable_px and back.observed_px == stats.observed_px
    for band in DRIFT_BANDS:
        assert back.median[band] == pytest.approx(stats.median[band], abs=1e-6)
    with pytest.raises(RtsError, match="not a stable-terrain document"):
        StableReflectance.from_json('{"median": 3}')


# --- the check --------------------------------------------------------------------------------------


def test_clean_year_is_not_suspect() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    check = check_drift(stable_reflectance(data, INPUT_LAYERS, rts), earlier_records(), CURRENT_YEAR)
    assert not check.suspect, check.reason
    assert check.reason.startswith("within tolerance against 4 earlier years (2017, 2018, 2019, 2020)")
    figures = check.figures
    assert figures["reference_years"] == [2017, 2018, 2019, 2020]
    assert abs(figures["brightness_shift"]) < 0.05
    # late August: the synthetic tundra's NIR is well below the peak-season reference, and still accepted
    assert figures["ratio"]["nir"] < 0.95


def test_fifteen_percent_brighter_scene_is_suspect_with_its_figures() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    clean = check_drift(stable_reflectance(data, INPUT_LAYERS, rts), earlier_records(), CURRENT_YEAR)
    check = check_drift(stable_reflectance(brighter(data, 1.15), INPUT_LAYERS, rts), earlier_records(), CURRENT_YEAR)
    assert check.suspect
    assert check.reason.startswith("radiometric drift against 4 earlier years (2017, 2018, 2019, 2020): brightness +")
    assert check.flags[0].startswith("brightness +") and "beyond +-10%" in check.flags[0]
    shift = check.figures["brightness_shift"]
    assert shift == pytest.approx((1.0 + clean.figures["brightness_shift"]) * 1.15 - 1.0, abs=2e-3)
    for band in DRIFT_BANDS:
        assert check.figures["ratio"][band] == pytest.approx(clean.figures["ratio"][band] * 1.15, rel=2e-3)
    fields = check.record_fields()
    assert fields["suspect"] is True
    stored = json.loads(fields["drift"])
    assert stored["reason"] == check.reason and stored["reference"] == check.figures["reference"]
    assert json.loads(fields["stable_reflectance"])["median"]["nir"] == pytest.approx(
        check.figures["current"]["nir"], abs=1e-9
    )


def test_fifteen_percent_darker_scene_is_suspect() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    check = check_drift(stable_reflectance(brighter(data, 0.85), INPUT_LAYERS, rts), earlier_records(), CURRENT_YEAR)
    assert check.suspect and check.flags[0].startswith("brightness -")


def test_a_missed_baseline_offset_is_suspect() -> None:
    """Baseline 04.00 DN read as if they had no offset: +0.1 reflectance on every band."""
    data, rts = scene(2022, 30, baseline="04.00")
    unharmonised = data.copy()
    unharmonised[:4] += np.float32(0.1)
    ok = check_drift(stable_reflectance(data, INPUT_LAYERS, rts), earlier_records(), 2022)
    wrong = check_drift(stable_reflectance(unharmonised, INPUT_LAYERS, rts), earlier_records(), 2022)
    assert not ok.suspect, ok.reason
    assert wrong.suspect and wrong.figures["ratio"]["blue"] > 3.0 and len(wrong.flags) == 5  # brightness + 4 bands


def test_offset_only_on_rts_water_or_steep_pixels_is_not_suspect() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    water = ndwi(data) >= 0
    steep = data[INPUT_LAYERS.index("slope")] >= 5.0
    assert rts.sum() > 500 and water.sum() > 500 and steep.sum() > 500  # the scene has all three
    clean = DriftAccumulator()
    clean.add(data, INPUT_LAYERS, rts)
    for where, factor in ((rts, 1.5), (water, 3.0), (steep, 1.4)):
        acc = DriftAccumulator()
        acc.add(brighter(data, factor, where), INPUT_LAYERS, rts)
        np.testing.assert_array_equal(acc.counts, clean.counts)  # those pixels are not counted at all
        assert not check_drift(acc.summary(), earlier_records(), CURRENT_YEAR).suspect
    # while the same offset on every pixel is flagged
    acc = DriftAccumulator()
    acc.add(brighter(data, 1.5), INPUT_LAYERS, rts)
    assert check_drift(acc.summary(), earlier_records(), CURRENT_YEAR).suspect


def test_phenology_like_band_changes_pass_but_one_broken_band_is_suspect() -> None:
    data, rts = scene(CURRENT_YEAR, 20)  # peak season
    senescent = data.copy()  # the synthetic tundra's seasonal amplitude on vegetation, applied to every pixel
    senescent[INPUT_LAYERS.index("red")] *= np.float32(1.15)
    senescent[INPUT_LAYERS.index("nir")] *= np.float32(0.83)
    check = check_drift(stable_reflectance(senescent, INPUT_LAYERS, rts), earlier_records(), CURRENT_YEAR)
    assert not check.suspect, check.reason
    assert check.figures["ratio"]["nir"] < 0.85 and abs(check.figures["brightness_shift"]) < 0.05
    broken = data.copy()
    broken[INPUT_LAYERS.index("blue")] *= np.float32(1.4)
    check = check_drift(stable_reflectance(broken, INPUT_LAYERS, rts), earlier_records(), CURRENT_YEAR)
    assert check.suspect and check.flags == (f"blue {check.figures['ratio']['blue'] - 1:+.1%} beyond +-25%",)


def test_no_earlier_year_is_not_suspect() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    stats = stable_reflectance(brighter(data, 1.15), INPUT_LAYERS, rts)
    for records in ([], [record(2022, stats)], [record(2019, None)]):  # none, only later, none with statistics
        check = check_drift(stats, records, CURRENT_YEAR)
        assert not check.suspect
        assert check.figures["reference"] is None and check.figures["reference_years"] == []
        assert check.reason.startswith("not compared: no earlier")
        assert check.record_fields()["suspect"] is False


def test_reference_uses_earlier_ok_non_suspect_years_only() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    bright = stable_reflectance(brighter(scene(2016, 30)[0], 1.3), INPUT_LAYERS, rts)
    tiny = StableReflectance(dict.fromkeys(DRIFT_BANDS, 0.5), MIN_STABLE_PX - 1, 10_000)
    records = [
        *earlier_records(),
        record(2016, bright, suspect=True),  # suspect years never serve as reference
        record(2015, None, status="failed"),
        record(2014, tiny),  # too few stable pixels
        record(2023, bright),  # later years do not count
        record(CURRENT_YEAR, bright),  # nor the year's own previous record
    ]
    assert sorted(earlier_statistics(records, CURRENT_YEAR)) == [2017, 2018, 2019, 2020]
    current = stable_reflectance(data, INPUT_LAYERS, rts)
    check = check_drift(current, records, CURRENT_YEAR)
    reference = [StableReflectance.from_json(r.stable_reflectance or "") for r in earlier_records()]
    for band in DRIFT_BANDS:
        expected = float(np.median([s.median[band] for s in reference]))
        assert check.figures["reference"][band] == pytest.approx(expected, abs=1e-6)


def test_too_few_stable_pixels_are_not_compared() -> None:
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    cloudy = brighter(data, 1.3)
    cloudy[:4, 5:] = np.nan  # a scene clear over 5 rows only (1500 px)
    check = check_drift(stable_reflectance(cloudy, INPUT_LAYERS, rts), earlier_records(), CURRENT_YEAR)
    assert not check.suspect and check.reason.startswith("not compared:") and check.figures["stable_px"] < MIN_STABLE_PX


def test_drift_fields_survive_the_records_table(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    for earlier in earlier_records():
        write_record(storage, earlier)
    data, rts = scene(CURRENT_YEAR, CURRENT_DAY)
    check = check_drift(
        stable_reflectance(brighter(data, 1.15), INPUT_LAYERS, rts), read_records(storage, SITE), CURRENT_YEAR
    )
    assert check.suspect
    write_record(storage, replace(record(CURRENT_YEAR, None), **check.record_fields()))
    stored = read_records(storage, SITE)[-1]
    assert stored.year == CURRENT_YEAR and stored.suspect is True and stored.status == "ok"
    assert json.loads(stored.drift or "")["reason"] == check.reason
    # a suspect year is no reference for the next one
    assert sorted(earlier_statistics(read_records(storage, SITE), 2022)) == [2017, 2018, 2019, 2020]


# --- in the prediction loop -----------------------------------------------------------------------


def test_staged_reader_strips_and_mask_sink_equal_one_whole_add(tmp_path: Path) -> None:
    """The lead's recipe: ``stage`` in the reader, ``add_mask`` as ``predict_to_files``' ``on_mask``."""
    model = Model.load(DEMO_BUNDLE, threads=1)
    data, _ = scene(CURRENT_YEAR, CURRENT_DAY)
    data[:4, 100:140, 60:200] = np.nan  # a cloud
    acc = DriftAccumulator()
    reads: list[tuple[int, int]] = []

    def read(row_off: int, col_off: int, height: int, width: int) -> NDArray[np.float32]:
        reads.append((row_off, height))
        strip = data[:, row_off : row_off + height, col_off : col_off + width]
        acc.stage(row_off, strip, INPUT_LAYERS)
        return strip[[INPUT_LAYERS.index(name) for name in model.input_layers]]

    summary = predict_to_files(
        model,
        read,
        GRID,
        tmp_path / "probability.tif",
        tmp_path / "mask.tif",
        window_px=128,
        overlap_px=32,
        on_mask=acc.add_mask,
    )
    assert len(reads) > 2 and any(a + h > b for (a, h), (b, _) in itertools.pairwise(reads))  # overlaps
    assert acc.pending_rows == 0
    with rasterio.open(summary.mask_path) as src:
        mask = src.read(1)
    whole = DriftAccumulator()
    whole.add(data, INPUT_LAYERS, mask)
    np.testing.assert_array_equal(acc.counts, whole.counts)
    assert acc.summary() == whole.summary() and acc.summary().stable_px > MIN_STABLE_PX
    assert (mask == MASK_RTS).any()  # the model found slumps, which were left out


def test_staging_refuses_gaps_and_out_of_order_masks() -> None:
    data, _ = scene(CURRENT_YEAR, CURRENT_DAY)
    acc = DriftAccumulator()
    acc.stage(0, data[:, :64], INPUT_LAYERS)
    with pytest.raises(RtsError, match="never staged"):
        acc.stage(100, data[:, 100:164], INPUT_LAYERS)
    with pytest.raises(RtsError, match="full width"):
        acc.stage(32, data[:, 32:96, :100], INPUT_LAYERS)
    acc.stage(32, data[:, 32:96], INPUT_LAYERS)  # overlapping rows are kept once
    assert acc.pending_rows == 96
    with pytest.raises(RtsError, match="do not follow"):
        acc.add_mask(10, np.zeros((10, GRID.width), np.uint8))
    with pytest.raises(RtsError, match="do not follow"):
        acc.add_mask(0, np.zeros((97, GRID.width), np.uint8))
    acc.add_mask(0, np.zeros((96, GRID.width), np.uint8))
    assert acc.pending_rows == 0


# --- end to end: the drift check inside process_site_year -------------------------------------------


def _brighten(root: Path, year: int, factor: float) -> int:
    """Scale the 10 m and 20 m reflectance bands of the corpus' ``year`` scenes by ``factor``; return files changed."""
    changed = 0
    for band in (root / "files").rglob(f"*_{year}*_B0[2348]_10m.tif"):
        with rasterio.open(band) as src:
            profile, data = src.profile, src.read()
        scaled = np.clip(data.astype(np.float64) * factor, 0, np.iinfo(data.dtype).max).astype(data.dtype)
        with rasterio.open(band, "w", **profile) as dst:
            dst.write(scaled)
        changed += 1
    return changed


@pytest.mark.parametrize(("factor", "suspect"), [(1.0, False), (1.15, True)])
def test_a_site_year_with_a_brightness_offset_is_recorded_suspect(tmp_path: Path, factor: float, suspect: bool) -> None:
    from rtsmonitor.inference import Model
    from rtsmonitor.jobs import SiteYearJob
    from rtsmonitor.modelstore import DEMO_BUNDLE
    from rtsmonitor.offline.corpus import build_corpus
    from rtsmonitor.offline.stacserver import LocalStacServer
    from rtsmonitor.records import read_record
    from rtsmonitor.registry import register_site
    from rtsmonitor.sites import SiteConfig
    from rtsmonitor.siteyear import Services, process_site_year
    from rtsmonitor.stac import open_catalog
    from rtsmonitor.storage import LocalStorage
    from rtsmonitor.terrain import StacDem

    config = {
        "id": "drift01",
        "name": "Drift test site",
        "centre": {"lon": -126.75, "lat": 69.75, "size_km": 3.0},
        "first_year": 2020,
        "last_year": 2021,
    }
    grid = SiteConfig.model_validate(config).grid()
    corpus = build_corpus(
        tmp_path / "stac", [("drift01", grid)], [2020, 2021], scenes_per_year=1, seed=3, progress=False
    )
    assert _brighten(corpus.root, 2021, factor) == 4  # blue, green, red, nir of the one 2021 scene
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, "drift01.json", json.dumps(config).encode())
    with LocalStacServer(corpus.root) as server:
        services = Services(open_catalog(server.url), StacDem(server.url), Model.load(DEMO_BUNDLE))
        for year in (2020, 2021):
            process_site_year(storage, SiteYearJob("drift01", year), services)
    first, second = read_record(storage, "drift01", 2020), read_record(storage, "drift01", 2021)
    assert first is not None and first.suspect is False and first.stable_reflectance
    assert second is not None and second.status == "ok" and second.suspect is suspect
    figures = json.loads(second.drift or "{}")
    assert figures and ("suspect" in json.dumps(figures).lower() or figures.get("reference") is not None)
