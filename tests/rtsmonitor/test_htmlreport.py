"""The self-contained HTML report: what it reads, what it marks broken, what it refuses, what it inlines.

The site-series is synthetic and seeded (:func:`build_site`), written without the model: records,
``rts.geojson`` and ``quicklook.png`` (drawn by :func:`rtsmonitor.quicklook.write_quicklook`) of each
ok year, and the tracking rows and ``slumps.geojson`` laid out as the issue 9 contract says. It has a
no-scene year, a failed year and a broken year (corrupt ``rts.geojson``). The headless-browser test
(tests/browser/test_report_browser.py) opens a report of the same site.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pyproj import Transformer
from scipy import ndimage

from rtsmonitor import htmlreport
from rtsmonitor.cli import main
from rtsmonitor.errors import NotFoundError
from rtsmonitor.htmlreport import (
    LEAFLET_LICENSE,
    LEAFLET_VERSION,
    collect_site_report,
    render_html,
    report_html,
    write_site_report,
)
from rtsmonitor.quicklook import RGB_LAYERS, RTS_RGB, write_quicklook
from rtsmonitor.records import RECORDS_TABLE, RESULTS_CONTAINER, SiteYearRecord, write_record
from rtsmonitor.registry import register_site
from rtsmonitor.sites import SiteConfig
from rtsmonitor.stack import Stack
from rtsmonitor.storage import LocalStorage, Storage
from rtsmonitor.tracking import OBJECTS_TABLE, slumps_blob_name

ROOT = Path(__file__).resolve().parents[2]
SITE = "synth01"
SITE_NAME = 'Synthetic <b>slumps</b> & "co"'  # text from storage that must be escaped
CONFIG = {
    "id": SITE,
    "name": SITE_NAME,
    "centre": {"lon": -126.75, "lat": 69.75, "size_km": 3.0},
    "first_year": 2018,
    "last_year": 2023,
}
NO_SCENE_REASON = "no summer scene with cloud < 10 % (best 38 %) </script><script>alert(1)</script>"
FAILED_REASON = "failed after 5 deliveries: inference: model bundle missing"
NOISE_M2 = 2000.0
RES_M = 10.0
# slump id -> year -> (centre column, centre row, half side in pixels) on the 300 x 300 px grid; a
# missing year is a year the slump is absent (vanished after it was seen)
SLUMPS: dict[str, dict[int, tuple[int, int, int]]] = {
    "s0001": {2018: (80, 80, 6), 2019: (80, 80, 8), 2021: (80, 80, 9), 2022: (80, 80, 10)},
    "s0002": {2018: (200, 120, 5), 2019: (200, 120, 5), 2021: (200, 120, 5), 2022: (200, 120, 5)},
    "s0003": {2019: (150, 230, 4), 2021: (150, 230, 4)},
}
OK_YEARS = (2018, 2019, 2021, 2022)
BROKEN_YEAR = 2021  # its rts.geojson is corrupt: tracking skipped it, the report marks it
TRACKED_YEARS = (2018, 2019, 2022)
STATUS: dict[int, dict[str, str]] = {
    2018: {"s0001": "new", "s0002": "new"},
    2019: {"s0001": "active", "s0002": "stable", "s0003": "new"},
    2022: {"s0001": "active", "s0002": "stable", "s0003": "vanished"},
}


@dataclass(frozen=True)
class SyntheticSite:
    """A store holding one site's records and results, and what the report must show of it."""

    storage: Storage
    root: Path
    present: dict[int, set[str]]  # slump ids drawn on the map per year (tracked years), or RTS count


def area_m2(half_px: int) -> float:
    return (2 * half_px * RES_M) ** 2


def square(grid: Any, col: int, row: int, half: int) -> list[list[float]]:
    """A square of the grid as a WGS84 ring (counter-clockwise)."""
    to_wgs84 = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
    x0, x1 = grid.x_min + (col - half) * RES_M, grid.x_min + (col + half) * RES_M
    y0, y1 = grid.y_max - (row + half) * RES_M, grid.y_max - (row - half) * RES_M
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return [[round(v, 7) for v in to_wgs84.transform(x, y)] for x, y in corners]


def build_site(root: Path, *, tracking: bool = True, seed: int = 9) -> SyntheticSite:
    """Write the synthetic site-series into a LocalStorage under ``root``."""
    storage = LocalStorage(root / "store")
    registration = register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode(), today=date(2024, 1, 1))
    assert registration.status == "active", registration.problems
    grid = SiteConfig.model_validate(CONFIG).grid()
    assert grid.shape == (300, 300)
    rng = np.random.default_rng(seed)
    for year in OK_YEARS:
        prefix = f"{SITE}/{year}/20240101T000000000000Z-{year}/"
        present = {sid: where[year] for sid, where in SLUMPS.items() if year in where}
        features = [
            {
                "type": "Feature",
                "id": i,
                "geometry": {"type": "Polygon", "coordinates": [square(grid, *where)]},
                "properties": {"id": i, "area_m2": area_m2(where[2]), "site_id": SITE, "year": year},
            }
            for i, where in enumerate(present.values(), start=1)
        ]
        collection = {"type": "FeatureCollection", "features": features}
        rts = b"{ this is not json" if year == BROKEN_YEAR else json.dumps(collection).encode()
        storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + "rts.geojson", rts)
        ground = 0.04 + 0.02 * rng.random(grid.shape)  # tundra: dull green, one brightness for all bands
        reflectance = (ground[None] * np.array([0.9, 1.2, 0.7])[:, None, None]).astype(np.float32)
        reflectance[:, 260:, :40] = np.nan  # an unobserved corner
        mask = np.zeros(grid.shape, dtype=bool)
        for col, row, half in present.values():
            mask[row - half : row + half, col - half : col + half] = True
            reflectance[:, row - half : row + half, col - half : col + half] = 0.12  # bare, slumped ground
        quicklook = root / f"quicklook-{year}.png"
        write_quicklook(Stack(reflectance, RGB_LAYERS, grid), mask, quicklook, title=f"{SITE} {year}")
        storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + "quicklook.png", quicklook.read_bytes())
        total = sum(area_m2(half) for _, _, half in present.values())
        counts: dict[str, Any] = {}
        if year in TRACKED_YEARS:
            statuses = STATUS[year]
            counts = {
                "rts_new": sum(s == "new" for s in statuses.values()),
                "rts_vanished": sum(s == "vanished" for s in statuses.values()),
                "rts_growing": sum(s == "active" for s in statuses.values()),
            }
        write_record(
            storage,
            SiteYearRecord(
                site_id=SITE,
                year=year,
                status="ok",
                reason="July-August, cloud < 10 %",
                processed=datetime(2024, 1, 1, tzinfo=UTC),
                code_version="test",
                scene_id=f"S2B_MSIL2A_{year}0720T211519_N0400_R000_T09WWR",
                scene_datetime=f"{year}-07-20T21:15:19+00:00",
                cloud_pct=1.5,
                valid_fraction=0.95,
                rts_count=len(present),
                rts_area_m2=total,
                rts_area_err_m2=0.15 * total,
                co2_t_per_yr=total * 0.0057 - 300.0,
                co2_t_err_per_yr=0.3 * total * 0.0057,
                model_name="rts-unet",
                model_version="demo-1",
                results_prefix=prefix,
                **counts,
            ),
        )
    for year, status, reason in ((2020, "no-scene", NO_SCENE_REASON), (2023, "failed", FAILED_REASON)):
        write_record(
            storage,
            SiteYearRecord(
                site_id=SITE,
                year=year,
                status=status,  # type: ignore[arg-type]
                reason=reason,
                processed=datetime(2024, 1, 1, tzinfo=UTC),
                code_version="test",
            ),
        )
    if tracking:
        write_tracking(storage, grid)
    present_by_year = {
        year: {sid for sid, status in STATUS[year].items() if status != "vanished"} for year in TRACKED_YEARS
    }
    return SyntheticSite(storage, root, present_by_year)


def write_tracking(storage: Storage, grid: Any) -> None:
    """The rtsobjects rows and slumps.geojson of the site, laid out as the issue 9 contract says."""
    features = []
    previous: dict[str, int] = {}
    for year in TRACKED_YEARS:
        for sid, status in STATUS[year].items():
            first_year = min(SLUMPS[sid])
            area = 0.0 if status == "vanished" else area_m2(SLUMPS[sid][year][2])
            growth = None
            if status in ("active", "stable"):
                growth = (area - area_m2(SLUMPS[sid][previous[sid]][2])) / (year - previous[sid])
            row: dict[str, Any] = {
                "PartitionKey": SITE,
                "RowKey": f"{sid}-{year:04d}",
                "slump_id": sid,
                "year": year,
                "status": status,
                "area_m2": area,
                "growth_m2_per_yr": growth,
                "previous_year": previous.get(sid),
                "first_year": first_year,
                "last_year": year if status != "vanished" else previous[sid],
                "noise_m2": NOISE_M2,
                "lon": -126.75,
                "lat": 69.75,
            }
            storage.tables.upsert(OBJECTS_TABLE, row)
            if status != "vanished":
                col, row_px, half = SLUMPS[sid][year]
                features.append(
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": [square(grid, col, row_px, half)]},
                        "properties": {
                            "slump_id": sid,
                            "year": year,
                            "status": status,
                            "area_m2": area,
                            "growth_m2_per_yr": growth,
                            "first_year": first_year,
                        },
                    }
                )
                previous[sid] = year
    blob = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    storage.blobs.write_bytes(RESULTS_CONTAINER, slumps_blob_name(SITE), blob)


@pytest.fixture
def site(tmp_path: Path) -> SyntheticSite:
    return build_site(tmp_path)


class Resources(HTMLParser):
    """Every URL-valued attribute of the page's elements, and its meta elements."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.meta: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "poster", "srcset", "data"):
                self.urls.append((tag, value or ""))
        if tag == "meta":
            self.meta.append(dict(attrs))


def page_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="rts-data">(.*?)</script>', page, re.DOTALL)
    assert match
    data: dict[str, Any] = json.loads(match.group(1))
    return data


# --- what the report reads --------------------------------------------------------------------------


def test_report_has_every_year_with_its_slumps_and_marks_the_broken_one(site: SyntheticSite) -> None:
    report = collect_site_report(site.storage, SITE)
    assert [v.year for v in report.years] == [2018, 2019, 2020, 2021, 2022, 2023]
    by_year = {v.year: v for v in report.years}
    for year in TRACKED_YEARS:
        view = by_year[year]
        assert view.source == "tracking" and view.broken is None and view.quicklook is not None
        assert {f["properties"]["slump_id"] for f in view.slumps} == site.present[year]
        assert {f["properties"]["slump_id"]: f["properties"]["status"] for f in view.slumps} == {
            sid: s for sid, s in STATUS[year].items() if s != "vanished"
        }
    assert report.broken_years.keys() == {BROKEN_YEAR}
    assert "rts.geojson is not valid JSON" in report.broken_years[BROKEN_YEAR]
    broken = by_year[BROKEN_YEAR]
    assert broken.slumps == [] and broken.quicklook is not None  # what could be read is still shown
    assert by_year[2020].status == "no-scene" and by_year[2020].reason == NO_SCENE_REASON
    assert by_year[2023].status == "failed" and by_year[2023].slumps == []
    assert report.tracking_note is None  # tracking skipped the broken year; it is marked broken instead
    assert report.chart_png.startswith(b"\x89PNG")


def test_slump_table_has_first_and_last_year_status_area_and_growth(site: SyntheticSite) -> None:
    slumps = {s.slump_id: s for s in collect_site_report(site.storage, SITE).slumps}
    assert sorted(slumps) == ["s0001", "s0002", "s0003"]
    one = slumps["s0001"]
    assert (one.first_year, one.last_year, one.status) == (2018, 2022, "active")
    assert one.area_m2 == area_m2(10) == 40_000.0
    assert one.growth_m2_per_yr == pytest.approx((40_000.0 - 25_600.0) / 3)
    assert one.mean_growth_m2_per_yr == pytest.approx((40_000.0 - 14_400.0) / 4)
    assert one.statuses == {2018: "new", 2019: "active", 2022: "active"}
    two = slumps["s0002"]
    assert (two.status, two.growth_m2_per_yr, two.mean_growth_m2_per_yr) == ("stable", 0.0, 0.0)
    three = slumps["s0003"]
    assert (three.first_year, three.last_year, three.status, three.area_m2) == (2019, 2019, "vanished", 6400.0)
    assert three.mean_growth_m2_per_yr is None  # seen in one year only


def test_quicklook_is_warped_onto_the_site_with_the_title_strip_cut_off(site: SyntheticSite) -> None:
    report = collect_site_report(site.storage, SITE)
    view = next(v for v in report.years if v.year == 2022)
    assert view.quicklook is not None and view.quicklook_bounds is not None
    assert all(abs(a - b) < 2e-4 for a, b in zip(view.quicklook_bounds, report.bbox_wgs84, strict=True))
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(view.quicklook.split(",", 1)[1]))))
    assert pixels.shape[2] == 4  # RGBA
    assert pixels[pixels.shape[0] // 2, pixels.shape[1] // 2, 3] == 255  # inside the site: opaque
    assert (pixels[..., 3] == 0).any()  # the UTM square is tilted in Web Mercator: corners transparent
    assert not (pixels[:5, :, 3] == 255).all()  # no white title strip along the top
    # each slump's magenta outline in the image lies under its polygon on the map (within 2 pixels)
    magenta = (pixels == (*RTS_RGB, 255)).all(axis=2)
    blobs, count = ndimage.label(ndimage.binary_fill_holes(magenta))
    assert count == len(view.slumps) == 2
    to_mercator = Transformer.from_crs(4326, 3857, always_xy=True)
    west, south, east, north = view.quicklook_bounds
    (x0, x1), (y0, y1) = to_mercator.transform([west, east], [north, south])
    height, width = pixels.shape[:2]
    centres = [
        (x0 + (col + 0.5) / width * (x1 - x0), y0 + (row + 0.5) / height * (y1 - y0))
        for row, col in ndimage.center_of_mass(magenta, blobs, range(1, count + 1))
    ]
    for feature in view.slumps:
        ring = np.array(feature["geometry"]["coordinates"][0][:-1])
        x, y = to_mercator.transform(ring[:, 0].mean(), ring[:, 1].mean())
        pixel_m = (x1 - x0) / width
        assert min(math.hypot(x - cx, y - cy) for cx, cy in centres) < 2 * pixel_m, feature["properties"]


def test_a_broken_quicklook_marks_its_year_and_keeps_the_rest(site: SyntheticSite) -> None:
    prefix = next(r for r in site.storage.tables.query(RECORDS_TABLE, SITE) if r["RowKey"] == "2019")["results_prefix"]
    site.storage.blobs.write_bytes(RESULTS_CONTAINER, f"{prefix}quicklook.png", b"\x89PNG\r\n\x1a\n truncated")
    report = collect_site_report(site.storage, SITE)
    assert sorted(report.broken_years) == [2019, BROKEN_YEAR]
    assert "quicklook.png cannot be read as an image" in report.broken_years[2019]
    view = next(v for v in report.years if v.year == 2019)
    assert view.quicklook is None and {f["properties"]["slump_id"] for f in view.slumps} == site.present[2019]
    page = render_html(report)
    assert "2019 is broken: quicklook.png cannot be read" in page
    site.storage.blobs.delete(RESULTS_CONTAINER, f"{prefix}quicklook.png")
    missing = collect_site_report(site.storage, SITE).broken_years[2019]
    assert missing.startswith("quicklook.png is missing (results/synth01/2019/")


def test_without_tracking_the_map_shows_detected_rts_and_says_so(tmp_path: Path) -> None:
    site = build_site(tmp_path, tracking=False)
    report = collect_site_report(site.storage, SITE)
    assert report.slumps == []
    assert report.tracking_note is not None and "tracking is not available" in report.tracking_note
    counts = {v.year: len(v.slumps) for v in report.years}
    assert counts == {2018: 2, 2019: 3, 2020: 0, 2021: 0, 2022: 2, 2023: 0}
    assert {f["properties"]["status"] for v in report.years for f in v.slumps} == {"detected"}
    page = render_html(report)
    assert "tracking is not available" in page and 'id="slumps-table"' not in page
    # a tracking blob that cannot be read: the rows alone do not draw outlines
    write_tracking(site.storage, SiteConfig.model_validate(CONFIG).grid())
    site.storage.blobs.write_bytes(RESULTS_CONTAINER, slumps_blob_name(SITE), b"[]")
    report = collect_site_report(site.storage, SITE)
    assert report.tracking_note is not None and "slumps.geojson is not a GeoJSON FeatureCollection" in (
        report.tracking_note
    )
    assert len(report.slumps) == 3 and {v.source for v in report.years if v.status == "ok"} == {"rts.geojson", None}


# --- what the page holds ----------------------------------------------------------------------------


def test_page_is_self_contained_and_loads_nothing_from_anywhere(site: SyntheticSite) -> None:
    page = report_html(site.storage, SITE)
    parser = Resources()
    parser.feed(page)
    assert parser.urls and all(url.startswith("data:") for _, url in parser.urls), parser.urls
    csp = [m for m in parser.meta if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0]["content"] == htmlreport.CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in htmlreport.CONTENT_SECURITY_POLICY
    for style in re.findall(r"<style>(.*?)</style>", page, re.DOTALL):
        urls = re.findall(r"url\(([^)]*)\)", style)
        assert all(u.startswith("data:") or u == "#default#VML" for u in urls), urls
    assert "sourceMappingURL" not in page
    assert re.search(r"<script[^>]*\ssrc=", page) is None and '<link rel="stylesheet"' not in page
    assert f"Leaflet {LEAFLET_VERSION}" in page and "BSD 2-Clause License" in page  # the licence travels along
    data = page_data(page)
    assert [y["year"] for y in data["years"]] == [2018, 2019, 2020, 2021, 2022, 2023]
    assert data["years"][data["initial"]]["year"] == 2022  # the last readable ok year
    assert all(y["quicklook"].startswith("data:image/png;base64,") for y in data["years"] if y["quicklook"])


def test_text_from_storage_is_escaped(site: SyntheticSite) -> None:
    page = report_html(site.storage, SITE)
    assert "<b>slumps</b>" not in page and "Synthetic &lt;b&gt;slumps&lt;/b&gt; &amp; &quot;co&quot;" in page
    assert "<script>alert(1)" not in page and "alert(1)" in page  # the reason is there, as inert text
    scripts = re.findall(r"<script[^>]*>", page)
    assert len(scripts) == 3  # the data, Leaflet and the page's own: nothing injected
    data = page_data(page)
    no_scene = next(y for y in data["years"] if y["year"] == 2020)
    assert NO_SCENE_REASON in no_scene["note"]  # JSON.parse gives the text back unchanged


def test_tables_list_slumps_and_records_with_the_broken_year_marked(site: SyntheticSite) -> None:
    page = report_html(site.storage, SITE)
    slumps = re.search(r'<table id="slumps-table".*?</table>', page, re.DOTALL)
    assert slumps and slumps.group(0).count("<tr data-slump-id=") == 3
    assert '<td data-sort="40000.0">40,000</td>' in slumps.group(0)
    records = re.search(r'<table id="records-table".*?</table>', page, re.DOTALL)
    assert records
    rows = re.findall(r'<tr data-year="(\d{4})" class="status-([a-z-]+)">', records.group(0))
    assert rows == [
        ("2018", "ok"),
        ("2019", "ok"),
        ("2020", "no-scene"),
        ("2021", "broken"),
        ("2022", "ok"),
        ("2023", "failed"),
    ]
    assert "broken: rts.geojson is not valid JSON" in records.group(0)
    assert "0.042 ± 0.006" in records.group(0)  # 2019: 25,600 + 10,000 + 6,400 m² in km², ± 15 %
    assert FAILED_REASON in records.group(0)


# --- what it refuses --------------------------------------------------------------------------------


def test_unknown_site_and_site_without_records_raise_not_found(site: SyntheticSite, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="'nope' is not registered"):
        collect_site_report(site.storage, "nope")
    other = dict(CONFIG, id="empty01", name="No records yet")
    register_site(site.storage, "empty01.json", json.dumps(other).encode(), today=date(2024, 1, 1))
    out = tmp_path / "reports" / "empty01.html"
    with pytest.raises(NotFoundError, match="'empty01' has no records yet"):
        write_site_report(site.storage, "empty01", out)
    assert not out.exists() and not out.parent.exists()


def test_cli_writes_the_report_atomically_and_refuses_unknown_sites(site: SyntheticSite, tmp_path: Path) -> None:
    store = str(site.root / "store")
    out = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(main, ["report", SITE, "--store", store, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout and "3 tracked slump(s)" in result.stdout
    assert "warning: 2021 is broken: rts.geojson is not valid JSON" in result.stderr
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary file left
    for args, message in (
        (["report", "nope", "--store", store], "'nope' is not registered"),
        (["report", "Bad_Id", "--store", store], "is not a site id"),
        (["report", SITE, "--store", str(tmp_path / "no-store")], "no store at"),
    ):
        missing = tmp_path / "missing.html"
        result = CliRunner().invoke(main, [*args, "--out", str(missing)])
        assert result.exit_code == 1 and message in result.stderr, result.output
        assert not missing.exists()


def test_http_endpoint_answers_the_page_or_404(site: SyntheticSite, monkeypatch: pytest.MonkeyPatch) -> None:
    func = pytest.importorskip("azure.functions")
    function_app = pytest.importorskip("function_app")
    monkeypatch.setattr(function_app, "storage", lambda: site.storage)

    def get(site_id: str, params: dict[str, str] | None = None) -> Any:
        request = func.HttpRequest(
            "GET", f"/api/sites/{site_id}/report", params=params or {}, route_params={"site_id": site_id}, body=b""
        )
        return function_app.get_site_report(request)

    response = get(SITE)
    assert response.status_code == 200 and response.mimetype == "text/html" and response.charset == "utf-8"
    assert response.headers["Content-Security-Policy"] == htmlreport.CONTENT_SECURITY_POLICY
    assert response.get_body().decode("utf-8").startswith("<!DOCTYPE html>")
    missing = get("nope")
    assert missing.status_code == 404 and "not registered" in json.loads(missing.get_body())["error"]
    assert get("../x").status_code == 400 and get(SITE, {"year": "2021"}).status_code == 400


# --- the vendored map library -----------------------------------------------------------------------


def test_vendored_leaflet_is_the_pinned_npm_package_unchanged() -> None:
    lock = json.loads((ROOT / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/leaflet"]
    assert (pinned["version"], pinned["license"]) == (LEAFLET_VERSION, LEAFLET_LICENSE)
    assert json.loads((ROOT / "package.json").read_text())["dependencies"]["leaflet"] == LEAFLET_VERSION  # exact
    vendor = ROOT / "shared" / "rtsmonitor" / "vendor"
    readme = (vendor / "README.md").read_text()
    assert f"Leaflet {LEAFLET_VERSION} ({LEAFLET_LICENSE}" in readme and pinned["integrity"] in readme
    files = sorted(p.relative_to(vendor / "leaflet").as_posix() for p in (vendor / "leaflet").rglob("*") if p.is_file())
    assert "LICENSE" in files and "leaflet.js" in files and "leaflet.css" in files
    npm = ROOT / "node_modules" / "leaflet"
    if not (npm / "package.json").is_file():
        pytest.skip("node_modules/leaflet is not installed (npm ci): cannot compare the vendored copies")
    sources = {"LICENSE": npm / "LICENSE"} | {
        f: npm / "dist" / f for f in files if f != "LICENSE"
    }  # leaflet.js, leaflet.css, images/*.png
    for name, source in sources.items():
        digest = hashlib.sha256((vendor / "leaflet" / name).read_bytes()).hexdigest()
        assert digest == hashlib.sha256(source.read_bytes()).hexdigest(), f"{name} differs: run scripts/vendor_js.sh"
