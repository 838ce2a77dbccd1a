"""Confidence tiers: stricter cuts, the tier rule, the GeoJSON and record fields, and the Fig. 3 band."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from rtsmonitor.errors import RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.objects import find_objects, object_pixels, objects_geojson
from rtsmonitor.records import SiteYearRecord, read_record, write_record
from rtsmonitor.report import TIER_COLOURS, plot_site_years, site_years_figure
from rtsmonitor.storage import LocalStorage
from rtsmonitor.tiers import (
    TIER_CORE_M2,
    TIER_SHARE,
    TIERS,
    ObjectTier,
    object_tier,
    stricter_thresholds,
    tier_areas,
    tier_document,
    tier_of,
)

GRID = SiteGrid(epsg=32608, res_m=10.0, x_min=580_000.0, y_max=7_720_000.0, width=40, height=30)
T = 0.95  # the demo model's threshold: cuts at 0.975 and 0.9875


def test_stricter_thresholds_halve_the_margin_twice() -> None:
    assert stricter_thresholds(0.95) == pytest.approx((0.975, 0.9875))
    assert stricter_thresholds(0.5) == pytest.approx((0.75, 0.875))
    assert stricter_thresholds(1.0) == (1.0, 1.0)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(RtsError, match="not a probability"):
            stricter_thresholds(bad)


@pytest.mark.parametrize(
    ("values", "tier"),
    [
        ([0.99] * 20, "high"),  # every pixel above t_high
        ([0.99] * 18 + [0.96] * 2, "high"),  # 90 % above t_high
        ([0.99] * 17 + [0.98] * 3, "medium"),  # 85 % above t_high, all above t_mid
        ([0.98] * 20, "medium"),
        ([0.98] * 17 + [0.96] * 3, "low"),  # 85 % above t_mid
        ([0.96] * 20, "low"),  # only the model's cut
        ([0.999] * 9, "low"),  # all sure, but smaller than one mapping unit
        ([0.99] * 10, "high"),  # exactly one mapping unit
        ([0.99] * 19 + [np.nan], "high"),  # NaN counts below every cut
    ],
)
def test_tier_rule(values: list[float], tier: str) -> None:
    probability = np.array(values, np.float32)[None, :]
    inside = np.ones(probability.shape, bool)
    result = object_tier(probability, inside, T, 100.0)
    assert result.tier == tier
    assert result.area_m2 == 100.0 * len(values)
    assert result.area_m2 >= result.area_mid_m2 >= result.area_high_m2


def test_tier_counts_only_the_objects_pixels() -> None:
    probability = np.full((5, 5), 0.999, np.float32)
    inside = np.zeros((5, 5), bool)
    inside[1:4, 1:5] = True  # 12 pixels
    probability[1, 1:5] = 0.96  # 4 of them only at the model's cut
    result = object_tier(probability, inside, T, 100.0)
    assert (result.area_m2, result.area_mid_m2, result.area_high_m2) == (1200.0, 800.0, 800.0)
    assert result.tier == "low"  # 67 % at both cuts
    with pytest.raises(RtsError, match="differ"):
        object_tier(probability[:4], inside, T, 100.0)


def test_tier_of_uses_share_and_core() -> None:
    assert TIER_SHARE == 0.9 and TIER_CORE_M2 == 1000.0
    assert tier_of(10_000.0, 10_000.0, 9_000.0) == "high"
    assert tier_of(10_000.0, 9_000.0, 8_999.0) == "medium"
    assert tier_of(10_000.0, 8_999.0, 8_999.0) == "low"
    assert tier_of(900.0, 900.0, 900.0) == "low"


def test_tier_areas_sum_per_tier() -> None:
    tiers = [
        ObjectTier(2000.0, 2000.0, 2000.0, "high"),
        ObjectTier(1500.0, 1500.0, 0.0, "medium"),
        ObjectTier(3000.0, 100.0, 0.0, "low"),
        ObjectTier(1000.0, 1000.0, 1000.0, "high"),
    ]
    assert tier_areas(tiers) == {"high": 3000.0, "medium": 1500.0, "low": 3000.0}
    assert tier_areas([]) == dict.fromkeys(TIERS, 0.0)
    doc = tier_document(T)
    assert doc["threshold_mid"] == 0.975 and doc["threshold_high"] == 0.9875 and "t_high" in doc["rule"]


def test_geojson_features_carry_the_tier_fields() -> None:
    mask = np.zeros(GRID.shape, bool)
    mask[2:8, 2:8] = True
    mask[15:25, 20:30] = True
    probability = np.where(mask, 0.99, 0.1).astype(np.float32)
    probability[15:25, 20:23] = 0.96
    objects = find_objects(mask, probability, GRID)
    tiers = []
    for obj in objects:
        (rows, cols), inside = object_pixels(obj, GRID)
        assert np.array_equal(inside, mask[rows, cols])  # the polygon gives back the component's pixels
        tiers.append(object_tier(probability[rows, cols], inside, T, 100.0))
    doc = objects_geojson(objects, GRID, {"site_id": "x"}, per_object=[t.properties() for t in tiers])
    props = [f["properties"] for f in doc["features"]]
    assert [p["tier"] for p in props] == ["high", "low"]
    assert props[1]["area_mid_m2"] == props[1]["area_high_m2"] == 7000.0 and props[1]["site_id"] == "x"
    with pytest.raises(RtsError, match="entries"):
        objects_geojson(objects, GRID, per_object=[{}])
    with pytest.raises(RtsError, match="clash"):
        objects_geojson(objects, GRID, per_object=[{"area_m2": 1}, {}])


def test_object_pixels_margin_is_clipped_to_the_grid() -> None:
    mask = np.zeros(GRID.shape, bool)
    mask[0:3, 37:40] = True  # top right corner
    (obj,) = find_objects(mask, None, GRID, min_area_m2=0)
    (rows, cols), inside = object_pixels(obj, GRID, margin_px=2)
    assert (rows, cols) == (slice(0, 5), slice(35, 40))
    assert inside.sum() == 9 and inside[:3, 2:].all()
    with pytest.raises(RtsError, match="margin_px"):
        object_pixels(obj, GRID, margin_px=-1)


# --- records and the Fig. 3 band ------------------------------------------------------------------


def tiered_record(year: int, high: float, medium: float, low: float, count: int = 5) -> SiteYearRecord:
    area = high + medium + low
    return SiteYearRecord(
        site_id="horton01",
        year=year,
        status="ok",
        reason="clear",
        processed=datetime(2024, 9, 1, tzinfo=UTC),
        code_version="test",
        scene_id=f"S2_{year}",
        rts_count=count,
        rts_area_m2=area,
        rts_area_err_m2=0.15 * area,
        rts_area_high_m2=high,
        rts_area_medium_m2=medium,
        rts_area_low_m2=low,
        rts_filtered=json.dumps({"water": 1, "mmu": 4, "flat": 0, "removed": 5}),
        results_prefix=f"horton01/{year}/r/",
    )


def test_tier_and_filter_fields_round_trip_through_the_table(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    record = tiered_record(2021, 600_000.0, 200_000.0, 100_000.0)
    write_record(storage, record)
    back = read_record(storage, "horton01", 2021)
    assert back == record and back is not None
    assert json.loads(back.rts_filtered or "") == {"water": 1, "mmu": 4, "flat": 0, "removed": 5}


def test_chart_stacks_the_tiers_into_a_band(tmp_path: Path) -> None:
    records = [tiered_record(2020, 600_000.0, 200_000.0, 100_000.0), tiered_record(2021, 700_000.0, 0.0, 300_000.0)]
    fig = site_years_figure(records)
    panel = fig.axes[0]
    bars = [p for p in panel.patches if isinstance(p, Rectangle)]
    by_year: dict[int, list[Rectangle]] = {}
    for bar in bars:
        by_year.setdefault(round(bar.get_x() + bar.get_width() / 2), []).append(bar)
    for record in records:
        stack = sorted(by_year[record.year], key=lambda b: b.get_y())
        heights = [b.get_height() * 1e6 for b in stack]
        assert heights == pytest.approx([record.rts_area_high_m2, record.rts_area_medium_m2, record.rts_area_low_m2])
        assert (stack[-1].get_y() + stack[-1].get_height()) * 1e6 == pytest.approx(record.rts_area_m2)
        colours = [b.get_facecolor() for b in stack]
        assert colours[0] != colours[2]  # high dark, low light
    assert [t.get_text() for t in panel.get_legend().get_texts()] == ["high tier", "medium tier", "low tier"]
    counts = {round(t.xy[0]): t.xy[1] for t in panel.texts}
    assert counts[2021] == pytest.approx(1.0 * 1.15)  # the count sits above the error bar of the total
    assert set(TIER_COLOURS) == set(TIERS)
    assert plot_site_years(records, tmp_path / "chart.png").stat().st_size > 0


def test_chart_mixes_tiered_and_older_records() -> None:
    older = tiered_record(2019, 0.0, 0.0, 0.0)
    older = replace(older, rts_area_m2=500_000.0, rts_area_high_m2=None)
    fig = site_years_figure([older, tiered_record(2020, 600_000.0, 200_000.0, 100_000.0)])
    years = [round(p.get_x() + p.get_width() / 2) for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert years.count(2019) == 1 and years.count(2020) == 3
