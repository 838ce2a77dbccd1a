"""One site's report as a single self-contained HTML page: chart, map with a year slider, slump table.

The page shows

- the RTS area/count chart with the CO2 panel (Rustemeyer et al. 2022, IGARSS, Figure 3; drawn by
  :func:`rtsmonitor.report.site_years_figure`) as an inline PNG;
- a map of the site: the quick-look of the selected year (``quicklook.png`` of its run, warped from
  the site's UTM grid to Web Mercator so it lies exactly under the outlines) with that year's slumps
  outlined and coloured by status (:data:`STATUS_COLOURS`), and a year slider;
- a sortable table of the slumps (:data:`~rtsmonitor.tracking.OBJECTS_TABLE`, written by :mod:`rtsmonitor.tracking`):
  first and last year seen, status, area and growth;
- a sortable table of the site-year records (area and CO2 with their errors, counts, cloud, model).

Everything is in the one file: CSS, JavaScript, the chart and the quick-looks as ``data:`` URIs, and
the map library, Leaflet (https://leafletjs.com, BSD-2-Clause licence, (c) 2010-2023 Volodymyr
Agafonkin, 2010-2011 CloudMade), vendored unchanged from its npm package into ``rtsmonitor/vendor/``
by ``scripts/vendor_js.sh`` and inlined with its licence text. The page makes no network request: it
works offline from a ``file://`` path, and its Content-Security-Policy
(:data:`CONTENT_SECURITY_POLICY`) forbids any fetch. Text from storage (site names, reasons, slump
ids) is escaped for HTML, and the page's JavaScript only ever sets it as text.

A year whose result blobs cannot be read (``rts.geojson`` or ``quicklook.png`` missing or corrupt)
is marked "broken: <reason>" on the slider, in the records table and in the notes at the top; what
could be read of it is still shown, and the other years are unaffected. Without tracking (no
:data:`~rtsmonitor.tracking.OBJECTS_TABLE` rows or no :func:`~rtsmonitor.tracking.slumps_blob_name`
blob for the site) the map shows each year's detected RTS from its ``rts.geojson`` and the page
says that tracking is not available.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.warp import Resampling, calculate_default_transform, reproject

from rtsmonitor import __version__
from rtsmonitor.errors import NotFoundError, RtsError
from rtsmonitor.files import write_text_atomically
from rtsmonitor.grid import SiteGrid
from rtsmonitor.quicklook import QUICKLOOK_MAX_PX, TITLE_STRIP_PX
from rtsmonitor.records import RESULTS_CONTAINER, SiteYearRecord, read_records
from rtsmonitor.registry import read_site
from rtsmonitor.report import CHART_DPI, HOW_TO_READ, M2_PER_KM2, site_years_figure
from rtsmonitor.storage import Entity, Storage
from rtsmonitor.tracking import OBJECTS_TABLE, slumps_blob_name

LEAFLET_VERSION = "1.9.4"
"""Version of the vendored Leaflet (``rtsmonitor/vendor/leaflet``; pinned in ``package-lock.json``)."""
LEAFLET_LICENSE = "BSD-2-Clause"
"""SPDX id of Leaflet's licence; its text is ``rtsmonitor/vendor/leaflet/LICENSE``, repeated in the page."""
STATUS_COLOURS: dict[str, str] = {
    "new": "#00e5ff",
    "active": "#ff3d00",
    "stable": "#ffd600",
    "merged": "#b0bec5",
    "detected": "#ffffff",
}
"""Outline colour of a slump on the map by its status in the shown year. ``new``: first seen;
``active``: grew by more than the noise threshold; ``stable``: changed within it; ``merged``: absorbed
into another slump; ``detected``: an RTS of a year tracking has not seen (no identity, no status).
None of them is the quick-look's magenta (:data:`rtsmonitor.quicklook.RTS_RGB`)."""
STATUS_LABELS: dict[str, str] = {
    "new": "new (first seen)",
    "active": "active (growing)",
    "stable": "stable (within noise)",
    "merged": "merged into another slump",
    "detected": "detected (not tracked)",
}
"""Legend text of each status of :data:`STATUS_COLOURS`."""
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
"""The page's Content-Security-Policy (a ``<meta>`` element, and a header when served over HTTP):
inline code and ``data:`` images only, no request to anywhere."""
REPORT_PARAMS: frozenset[str] = frozenset()
"""Query parameters of the report endpoint ``GET /api/sites/{site_id}/report``: none."""
MAP_EPSG = 3857
"""CRS of the map (Web Mercator, Leaflet's default); quick-looks are warped to it."""
MISSING = "–"
"""Shown in a table cell that has no value."""

_LEAFLET_DIR = ("vendor", "leaflet")
_CSS_IMAGE_URL = re.compile(r"url\((['\"]?)images/([A-Za-z0-9_.-]+\.png)\1\)")
_SOURCE_MAP = re.compile(r"^\s*//# sourceMappingURL=.*$", re.MULTILINE)
_POLYGON_TYPES = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class YearView:
    """What the map shows for one year of the site.

    Attributes
    ----------
    year : the summer.
    status : the record's status: ``ok``, ``no-scene`` or ``failed``.
    reason : the record's reason (scene choice, or why there is no result).
    broken : why the year's result blobs could not be read, ``None`` if they could (or it has none).
    quicklook : the quick-look warped to Web Mercator as a ``data:image/png`` URI, ``None`` if none.
    quicklook_bounds : (west, south, east, north) in degrees of ``quicklook``.
    slumps : the year's outlines as GeoJSON features (WGS84) with properties ``slump_id``, ``status``,
        ``area_m2``, ``growth_m2_per_yr``, ``first_year``.
    source : where ``slumps`` come from: ``"tracking"``, ``"rts.geojson"`` or ``None`` (nothing).
    """

    year: int
    status: str
    reason: str
    broken: str | None = None
    quicklook: str | None = None
    quicklook_bounds: tuple[float, float, float, float] | None = None
    slumps: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None


@dataclass(frozen=True)
class SlumpSummary:
    """One tracked slump over the years (from its :data:`~rtsmonitor.tracking.OBJECTS_TABLE` rows).

    Attributes
    ----------
    slump_id : stable id within the site (e.g. ``s0001``).
    first_year, last_year : first and last year it was seen.
    status : its status in the last year it has a row for (``vanished`` or ``merged`` included).
    area_m2 : its area in ``last_year``, in m^2 (UTM).
    growth_m2_per_yr : its growth into ``last_year`` from its previous observation, in m^2/yr.
    mean_growth_m2_per_yr : (area in ``last_year`` - area in ``first_year``) / years between, in m^2/yr.
    statuses : its status in each year it has a row for.
    merged_into : the slump that absorbed it, if it merged.
    """

    slump_id: str
    first_year: int
    last_year: int
    status: str
    area_m2: float | None
    growth_m2_per_yr: float | None
    mean_growth_m2_per_yr: float | None
    statuses: dict[int, str]
    merged_into: str | None = None


@dataclass(frozen=True)
class SiteReport:
    """Everything the page shows, read from storage by :func:`collect_site_report`."""

    site_id: str
    site_name: str
    bbox_wgs84: tuple[float, float, float, float]
    records: list[SiteYearRecord]
    years: list[YearView]
    slumps: list[SlumpSummary]
    tracking_note: str | None
    chart_png: bytes
    generated: datetime

    @property
    def broken_years(self) -> dict[int, str]:
        """Why each year with unreadable results is broken, by year."""
        return {view.year: view.broken for view in self.years if view.broken}


class _BrokenBlob(RtsError):
    """A result blob is missing or cannot be decoded; the message says which and why."""


def collect_site_report(storage: Storage, site_id: str, *, generated: datetime | None = None) -> SiteReport:
    """Read what the report of ``site_id`` shows: records, slump rows and outlines, quick-looks, chart.

    Parameters
    ----------
    storage : the monitor's storage.
    site_id : a registered site with at least one record.
    generated : the time stamped on the page (default now).

    Raises
    ------
    NotFoundError
        If the site is not registered or has no records; the message says what to do.
    StorageError
        If the storage fails (a missing or corrupt result blob only marks its year broken).

    """
    try:
        site = read_site(storage, site_id)
    except NotFoundError:
        raise NotFoundError(
            f"site {site_id!r} is not registered in this store: upload its config (rts monitor --register CONFIG)"
        ) from None
    records = read_records(storage, site_id)
    if not records:
        raise NotFoundError(
            f"site {site_id!r} has no records yet: process a summer first (rts monitor), then ask for its report"
        )
    grid = site.config.grid()
    rows = storage.tables.query(OBJECTS_TABLE, site_id)
    tracked, tracking_note = _tracked_outlines(storage, site_id, rows)
    years = [_year_view(storage, record, grid, tracked) for record in records]
    untracked = [v.year for v in years if v.source == "rts.geojson"]
    if tracked is not None and untracked:
        years_text = ", ".join(map(str, untracked))
        tracking_note = f"Tracking has not seen {years_text} yet: the map shows those years' detected RTS untracked."
    buffer = io.BytesIO()
    site_years_figure(records).savefig(buffer, format="png", dpi=CHART_DPI)
    return SiteReport(
        site_id=site_id,
        site_name=site.config.name,
        bbox_wgs84=grid.bbox_wgs84(),
        records=records,
        years=years,
        slumps=_slump_summaries(rows),
        tracking_note=tracking_note,
        chart_png=buffer.getvalue(),
        generated=generated or datetime.now(UTC),
    )


def report_html(storage: Storage, site_id: str) -> str:
    """The report page of ``site_id`` (:func:`collect_site_report`, then :func:`render_html`).

    Raises
    ------
    NotFoundError
        If the site is not registered or has no records.

    """
    return render_html(collect_site_report(storage, site_id))


def write_site_report(storage: Storage, site_id: str, path: Path) -> SiteReport:
    """Write the report page of ``site_id`` to ``path``, atomically; return what it shows.

    Everything is read before anything is written: an unknown site, or one without records, raises
    :class:`~rtsmonitor.errors.NotFoundError` and no file is written.
    """
    report = collect_site_report(storage, site_id)
    text = render_html(report)
    write_text_atomically(path, text)
    return report


# --- reading -------------------------------------------------------------------------------------


def _tracked_outlines(
    storage: Storage, site_id: str, rows: Sequence[Entity]
) -> tuple[dict[int, list[dict[str, Any]]] | None, str | None]:
    """The tracked outlines by year (every tracked year present, maybe empty) and a note, or ``None``."""
    blob = slumps_blob_name(site_id)
    if not rows:
        return None, (
            f"Slump tracking is not available for this site (no rows in table {OBJECTS_TABLE}): the map shows "
            "each year's detected RTS (rts.geojson) without identities or growth, and there is no slump table."
        )
    try:
        features = _read_polygons(storage, blob, "slumps.geojson")
    except _BrokenBlob as exc:
        return None, f"Slump tracking is incomplete ({exc}): the map shows each year's detected RTS untracked."
    by_year: dict[int, list[dict[str, Any]]] = {year: [] for year in {_int(row.get("year")) for row in rows} if year}
    for feature in features:
        props = _properties(feature)
        year = _int(props.get("year"))
        if year is None:
            continue
        by_year.setdefault(year, []).append(
            _feature(
                feature["geometry"],
                slump_id=str(props.get("slump_id", "")),
                status=str(props.get("status", "detected")),
                area_m2=_float(props.get("area_m2")),
                growth_m2_per_yr=_float(props.get("growth_m2_per_yr")),
                first_year=_int(props.get("first_year")),
            )
        )
    return by_year, None


def _year_view(
    storage: Storage, record: SiteYearRecord, grid: SiteGrid, tracked: Mapping[int, list[dict[str, Any]]] | None
) -> YearView:
    """The map layers of one record's year; unreadable blobs mark it broken."""
    if record.status != "ok" or not record.results_prefix:
        return YearView(record.year, record.status, record.reason)
    prefix = record.results_prefix
    problems: list[str] = []
    detected: list[dict[str, Any]] | None = None
    try:
        detected = [
            _feature(
                f["geometry"],
                slump_id=f"#{_properties(f).get('id', i + 1)}",
                status="detected",
                area_m2=_float(_properties(f).get("area_m2")),
                growth_m2_per_yr=None,
                first_year=None,
            )
            for i, f in enumerate(_read_polygons(storage, prefix + "rts.geojson", "rts.geojson"))
        ]
    except _BrokenBlob as exc:
        problems.append(str(exc))
    quicklook: tuple[str, tuple[float, float, float, float]] | None = None
    try:
        quicklook = _quicklook_layer(_read_blob(storage, prefix + "quicklook.png", "quicklook.png"), grid)
    except _BrokenBlob as exc:
        problems.append(str(exc))
    if tracked is not None and record.year in tracked:
        slumps, source = tracked[record.year], "tracking"
    elif detected is not None:
        slumps, source = detected, "rts.geojson"
    else:
        slumps, source = [], None
    return YearView(
        year=record.year,
        status=record.status,
        reason=record.reason,
        broken="; ".join(problems) or None,
        quicklook=quicklook[0] if quicklook else None,
        quicklook_bounds=quicklook[1] if quicklook else None,
        slumps=slumps,
        source=source,
    )


def _read_blob(storage: Storage, name: str, label: str) -> bytes:
    """The blob's bytes; :class:`_BrokenBlob` if it does not exist (other storage errors propagate)."""
    try:
        return storage.blobs.read_bytes(RESULTS_CONTAINER, name)
    except NotFoundError:
        raise _BrokenBlob(f"{label} is missing ({RESULTS_CONTAINER}/{name})") from None


def _read_polygons(storage: Storage, name: str, label: str) -> list[dict[str, Any]]:
    """The features of a GeoJSON FeatureCollection blob, each with a (Multi)Polygon geometry."""
    data = _read_blob(storage, name, label)
    try:
        collection = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _BrokenBlob(f"{label} is not valid JSON ({exc})") from None
    features = collection.get("features") if isinstance(collection, dict) else None
    if (
        not isinstance(collection, dict)
        or collection.get("type") != "FeatureCollection"
        or not isinstance(features, list)
    ):
        raise _BrokenBlob(f"{label} is not a GeoJSON FeatureCollection")
    for i, feature in enumerate(features):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(geometry, dict) or geometry.get("type") not in _POLYGON_TYPES:
            raise _BrokenBlob(f"{label}: feature {i} has no Polygon or MultiPolygon geometry")
        if not isinstance(geometry.get("coordinates"), list):
            raise _BrokenBlob(f"{label}: feature {i} has no coordinates")
    return features


def _properties(feature: Mapping[str, Any]) -> Mapping[str, Any]:
    """A feature's properties; empty if it has none (or they are not an object)."""
    properties = feature.get("properties")
    return properties if isinstance(properties, dict) else {}


def _feature(geometry: dict[str, Any], **properties: Any) -> dict[str, Any]:
    """A GeoJSON feature with only the given geometry and properties."""
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def _quicklook_layer(png: bytes, grid: SiteGrid) -> tuple[str, tuple[float, float, float, float]]:
    """The quick-look warped from the site grid to Web Mercator: a PNG ``data:`` URI and its bounds.

    The quick-look's title strip (:data:`~rtsmonitor.quicklook.TITLE_STRIP_PX` rows above the image,
    present when the PNG has a ``Title``) is cut off. An image of the reduced grid
    :func:`~rtsmonitor.quicklook.write_quicklook` draws is placed on that grid; one of another size is
    stretched over the site grid. Pixels outside the site are transparent.
    """
    try:
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            titled = "Title" in image.info
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise _BrokenBlob(f"quicklook.png cannot be read as an image ({type(exc).__name__}: {exc})") from None
    if titled and rgb.shape[0] > TITLE_STRIP_PX:
        rgb = rgb[TITLE_STRIP_PX:]
    height, width = rgb.shape[:2]
    coarse = grid.coarsened(max(1, math.ceil(max(grid.shape) / QUICKLOOK_MAX_PX)))
    if (height, width) == coarse.shape:
        src_transform = coarse.transform
    else:
        x_min, y_min, x_max, y_max = grid.bounds
        src_transform = Affine((x_max - x_min) / width, 0.0, x_min, 0.0, -(y_max - y_min) / height, y_max)
    left, top = src_transform.c, src_transform.f
    right, bottom = left + src_transform.a * width, top + src_transform.e * height
    dst_crs = f"EPSG:{MAP_EPSG}"
    dst_transform, dst_width, dst_height = calculate_default_transform(
        grid.crs, dst_crs, width, height, left=left, bottom=bottom, right=right, top=top
    )
    source = np.concatenate([rgb.transpose(2, 0, 1), np.full((1, height, width), 255, dtype=np.uint8)])
    warped = np.zeros((4, dst_height, dst_width), dtype=np.uint8)
    reproject(
        source,
        warped,
        src_transform=src_transform,
        src_crs=grid.crs,
        dst_transform=dst_transform,
        dst_crs=dst_crs,
        resampling=Resampling.nearest,
    )
    to_lonlat = Transformer.from_crs(MAP_EPSG, 4326, always_xy=True)
    west, north = to_lonlat.transform(dst_transform.c, dst_transform.f)
    east, south = to_lonlat.transform(
        dst_transform.c + dst_transform.a * dst_width, dst_transform.f + dst_transform.e * dst_height
    )
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(warped.transpose(1, 2, 0))).save(out, format="PNG")  # 4 bands: RGBA
    return _data_uri("image/png", out.getvalue()), (float(west), float(south), float(east), float(north))


def _slump_summaries(rows: Sequence[Entity]) -> list[SlumpSummary]:
    """One summary per slump id of the rows, by id."""
    by_slump: dict[str, list[Entity]] = {}
    for row in rows:
        slump_id, year = row.get("slump_id"), _int(row.get("year"))
        if isinstance(slump_id, str) and slump_id and year is not None:
            by_slump.setdefault(slump_id, []).append(row)
    summaries = []
    for slump_id, slump_rows in sorted(by_slump.items()):
        slump_rows.sort(key=lambda r: _int(r.get("year")) or 0)
        present = [r for r in slump_rows if r.get("status") != "vanished"] or slump_rows
        first, last, latest = present[0], present[-1], slump_rows[-1]
        first_year = _int(first.get("first_year")) or _int(first.get("year")) or 0
        last_year = _int(last.get("year")) or 0
        area_first, area_last = _float(first.get("area_m2")), _float(last.get("area_m2"))
        span = last_year - (_int(first.get("year")) or last_year)
        mean = (
            (area_last - area_first) / span if span > 0 and area_first is not None and area_last is not None else None
        )
        merged_into = latest.get("merged_into")
        summaries.append(
            SlumpSummary(
                slump_id=slump_id,
                first_year=first_year,
                last_year=last_year,
                status=str(latest.get("status", "")),
                area_m2=area_last,
                growth_m2_per_yr=_float(last.get("growth_m2_per_yr")),
                mean_growth_m2_per_yr=mean,
                statuses={_int(r.get("year")) or 0: str(r.get("status", "")) for r in slump_rows},
                merged_into=merged_into if isinstance(merged_into, str) else None,
            )
        )
    return summaries


def _int(value: object) -> int | None:
    """``value`` as an int if it is one (or integral text), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _float(value: object) -> float | None:
    """``value`` as a finite float if it is a number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# --- rendering -----------------------------------------------------------------------------------


def render_html(report: SiteReport) -> str:
    """The report as one HTML document (UTF-8 text) that needs nothing else to display."""
    leaflet_js, leaflet_css, leaflet_license = _leaflet()
    initial = _initial_year(report.years)
    data = {
        "site_id": report.site_id,
        "bbox": list(report.bbox_wgs84),
        "colours": STATUS_COLOURS,
        "initial": initial,
        "years": [_year_json(view) for view in report.years],
        "slumps": [
            {"id": s.slump_id, "statuses": {str(y): status for y, status in s.statuses.items()}} for s in report.slumps
        ],
    }
    years = [r.year for r in report.records]
    title = f"RTS monitor report: {report.site_name} ({report.site_id})"
    return _PAGE.substitute(
        csp=_esc(CONTENT_SECURITY_POLICY),
        generator=_esc(f"rtsmonitor {__version__}"),
        title=_esc(title),
        leaflet_css=_inline(leaflet_css, "style"),
        page_css=_PAGE_CSS,
        heading=_esc(f"Retrogressive thaw slumps at {report.site_name}"),
        meta=_esc(
            f"Site {report.site_id}, {min(years)}–{max(years)}, {len(report.records)} site-year record(s); "
            f"generated {report.generated.astimezone(UTC).strftime('%Y-%m-%d %H:%M')} UTC by rtsmonitor {__version__}."
        ),
        notes=_notes_html(report),
        chart=_data_uri("image/png", report.chart_png),
        how_to_read=_esc(HOW_TO_READ.replace("`", "")),  # the paragraph is Markdown: no code marks here
        slider_max=str(max(len(report.years) - 1, 0)),
        slider_value=str(initial),
        legend=_legend_html(report),
        slumps_table=_slumps_html(report),
        records_table=_records_html(report),
        leaflet_version=_esc(LEAFLET_VERSION),
        leaflet_license_id=_esc(LEAFLET_LICENSE),
        leaflet_license=_esc(leaflet_license),
        data=_script_json(data),
        leaflet_js=_inline(leaflet_js, "script"),
        page_js=_PAGE_JS,
    )


def _initial_year(years: Sequence[YearView]) -> int:
    """Index of the year the map opens on: the last readable ``ok`` year, else the last year."""
    for index in range(len(years) - 1, -1, -1):
        if years[index].status == "ok" and not years[index].broken:
            return index
    return max(len(years) - 1, 0)


def _year_json(view: YearView) -> dict[str, Any]:
    """The map data of one year for the page's script."""
    n = len(view.slumps)
    if view.status != "ok":
        label = f"{view.year}: {'no scene' if view.status == 'no-scene' else view.status}"
        note = f"No map for {view.year} ({view.status}): {view.reason}"
    else:
        label = f"{view.year}: {n} slump{'' if n == 1 else 's'}"
        note = f"{view.year}: {n} outline(s)" + (
            " from tracking" if view.source == "tracking" else " of detected RTS (not tracked)"
        )
        if view.broken:
            label += " (broken)"
            note = f"{view.year} is broken: {view.broken}. Shown: what could be read ({n} outline(s))."
    return {
        "year": view.year,
        "status": view.status,
        "broken": view.broken,
        "label": label,
        "note": note,
        "quicklook": view.quicklook,
        "bounds": list(view.quicklook_bounds) if view.quicklook_bounds else None,
        "slumps": {"type": "FeatureCollection", "features": view.slumps},
    }


def _notes_html(report: SiteReport) -> str:
    """The notes under the heading: broken years, tracking, model changes."""
    items = [
        f'<li class="broken">{year} is broken: {_esc(reason)}</li>' for year, reason in report.broken_years.items()
    ]
    if report.tracking_note:
        items.append(f'<li class="tracking-note">{_esc(report.tracking_note)}</li>')
    models = sorted({f"{r.model_name or 'model'} {r.model_version}" for r in report.records if r.model_version})
    if models:
        items.append(f"<li>Model: {_esc(', '.join(models))}.</li>")
    items += [f"<li>{r.year}: {_esc(r.model_note)}</li>" for r in report.records if r.model_note]
    return f'<ul id="notes">{"".join(items)}</ul>' if items else ""


def _legend_html(report: SiteReport) -> str:
    """The map legend: the statuses drawn in any year."""
    shown = {f["properties"]["status"] for view in report.years for f in view.slumps}
    keys = [s for s in STATUS_COLOURS if s in shown] or list(STATUS_COLOURS)
    return "".join(
        f'<li><span class="swatch" style="border-color:{STATUS_COLOURS[s]}"></span>{_esc(STATUS_LABELS[s])}</li>'
        for s in keys
    )


def _slumps_html(report: SiteReport) -> str:
    """The sortable slump table, or why there is none."""
    if not report.slumps:
        text = report.tracking_note or "No slumps were tracked at this site."
        return f'<p class="tracking-note">{_esc(text)}</p>'
    head = [
        ("Slump", "text"),
        ("First seen", "number"),
        ("Last seen", "number"),
        ("Status (last)", "text"),
        ("Status in selected year", "text"),
        ("Area m² (last seen)", "number"),
        ("Growth m²/yr (last)", "number"),
        ("Mean growth m²/yr", "number"),
    ]
    rows = []
    for s in report.slumps:
        status = s.status + (f" → {s.merged_into}" if s.merged_into else "")
        rows.append(
            f'<tr data-slump-id="{_esc(s.slump_id)}">'
            + _cell(s.slump_id)
            + _cell(str(s.first_year), s.first_year)
            + _cell(str(s.last_year), s.last_year)
            + _cell(status)
            + '<td class="year-status"></td>'
            + _cell(_fmt_number(s.area_m2), s.area_m2)
            + _cell(_fmt_number(s.growth_m2_per_yr, signed=True), s.growth_m2_per_yr)
            + _cell(_fmt_number(s.mean_growth_m2_per_yr, signed=True), s.mean_growth_m2_per_yr)
            + "</tr>"
        )
    return _table("slumps", head, rows)


def _records_html(report: SiteReport) -> str:
    """The sortable table of the site-year records; broken years marked."""
    broken = report.broken_years
    head = [
        ("Year", "number"),
        ("Status", "text"),
        ("Scene date", "text"),
        ("Cloud %", "number"),
        ("Valid %", "number"),
        ("RTS count", "number"),
        ("RTS area km²", "number"),
        ("New", "number"),
        ("Vanished", "number"),
        ("Growing", "number"),
        ("t CO₂/yr", "number"),
        ("Model", "text"),
        ("Notes", "text"),
    ]
    rows = []
    for r in report.records:
        notes = [] if r.status == "ok" else [r.reason]
        status: str = r.status
        if r.year in broken:
            status = "broken"
            notes.insert(0, f"broken: {broken[r.year]}")
        if r.model_note:
            notes.append(r.model_note)
        model = f"{r.model_name or ''} {r.model_version or ''}".strip() or MISSING
        counts = (r.rts_new, r.rts_vanished, r.rts_growing)
        rows.append(
            f'<tr data-year="{r.year}" class="status-{_esc(status)}">'
            + _cell(str(r.year), r.year)
            + _cell(status)
            + _cell(r.scene_datetime[:10] if r.scene_datetime else MISSING)
            + _cell(_fmt_number(r.cloud_pct, decimals=1), r.cloud_pct)
            + _cell(_fmt_number(_pct(r.valid_fraction), decimals=1), _pct(r.valid_fraction))
            + _cell(_fmt_number(r.rts_count), r.rts_count)
            + _cell(_fmt_pm(r.rts_area_m2, r.rts_area_err_m2, M2_PER_KM2, 3), r.rts_area_m2)
            + "".join(_cell(_fmt_number(c), c) for c in counts)
            + _cell(_fmt_pm(r.co2_t_per_yr, r.co2_t_err_per_yr, 1.0, 0 if abs(r.co2_t_per_yr or 0) >= 100 else 1))
            + _cell(model)
            + _cell(" · ".join(" ".join(n.split()) for n in notes))
            + "</tr>"
        )
    return _table("records", head, rows)


def _table(name: str, head: Sequence[tuple[str, str]], rows: Sequence[str]) -> str:
    """A sortable table: clicking a header (or Enter on it) sorts by that column."""
    cells = "".join(f'<th scope="col" data-type="{kind}" tabindex="0">{_esc(text)}</th>' for text, kind in head)
    return (
        f'<table id="{name}-table" class="sortable"><thead><tr>{cells}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _cell(text: str, sort: float | int | None = None) -> str:
    """A table cell; ``sort`` is the value a numeric column sorts by (absent: sorts last)."""
    key = "" if sort is None else f' data-sort="{sort!r}"'
    return f"<td{key}>{_esc(text)}</td>"


def _pct(fraction: float | None) -> float | None:
    """A 0..1 fraction in percent."""
    return None if fraction is None else 100.0 * fraction


def _fmt_number(value: float | None, *, decimals: int = 0, signed: bool = False) -> str:
    """A number with thousands separators (``signed``: a ``+`` before a positive one), or :data:`MISSING`."""
    if value is None:
        return MISSING
    return f"{value:{'+' if signed and round(value, decimals) != 0 else ''},.{decimals}f}"


def _fmt_pm(value: float | None, error: float | None, scale: float, decimals: int) -> str:
    """``value ± error`` divided by ``scale``, or :data:`MISSING`."""
    if value is None:
        return MISSING
    text = f"{value / scale:.{decimals}f}"
    return text if error is None else f"{text} ± {error / scale:.{decimals}f}"


def _esc(text: str) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(text, quote=True)


def _data_uri(mime: str, data: bytes) -> str:
    """``data`` as a base64 ``data:`` URI."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _script_json(data: object) -> str:
    """JSON safe inside a ``<script>`` element (no ``<``, ``>`` or ``&`` that could end it)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _inline(code: str, element: str) -> str:
    """``code`` safe inside a ``<script>`` or ``<style>`` element: no closing tag inside it."""
    return re.sub(f"</({element})", r"<\\/\1", code, flags=re.IGNORECASE)


@functools.cache
def _leaflet() -> tuple[str, str, str]:
    """The vendored Leaflet: JavaScript (source-map comment dropped), CSS (images inlined), licence."""
    folder = resources.files("rtsmonitor").joinpath(*_LEAFLET_DIR)
    try:
        js = folder.joinpath("leaflet.js").read_text(encoding="utf-8")
        css = folder.joinpath("leaflet.css").read_text(encoding="utf-8")
        license_text = folder.joinpath("LICENSE").read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise RtsError(f"vendored Leaflet is missing ({exc.filename}): run scripts/vendor_js.sh") from None

    def image(match: re.Match[str]) -> str:
        data = folder.joinpath("images", match.group(2)).read_bytes()
        return f"url({_data_uri('image/png', data)})"

    return _SOURCE_MAP.sub("", js), _CSS_IMAGE_URL.sub(image, css), license_text


_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="$generator">
<title>$title</title>
<link rel="icon" href="data:,">
<style>$leaflet_css</style>
<style>$page_css</style>
</head>
<body>
<header>
<h1>$heading</h1>
<p class="meta">$meta</p>
$notes
</header>
<main>
<section id="chart-section">
<h2>RTS area, count and net CO₂ per year</h2>
<img id="chart" src="$chart" alt="Bar chart of the RTS area per year with the RTS count on each bar, and the net CO2 \
emission per year">
<p class="how-to-read">$how_to_read</p>
</section>
<section id="map-section">
<h2>Map</h2>
<div class="controls">
<label for="year-slider">Year</label>
<input type="range" id="year-slider" min="0" max="$slider_max" step="1" value="$slider_value">
<output id="year-label" for="year-slider"></output>
</div>
<p id="year-note" role="status"></p>
<div id="map" role="region" aria-label="Map of the slumps of the selected year"></div>
<ul class="legend">$legend</ul>
<p class="how-to-read">The image is the year's quick-look: the true-colour summer scene with the detected RTS in \
magenta, grey where unobserved. Outlines are the slumps of the selected year, coloured by their status; hover one \
for its id, area and growth. Use the slider (or the arrow keys on it) to change the year.</p>
</section>
<section id="slumps-section">
<h2>Slumps</h2>
$slumps_table
</section>
<section id="records-section">
<h2>Site-year records</h2>
$records_table
</section>
</main>
<footer>
<details>
<summary>Third-party software in this page</summary>
<p>Map: Leaflet $leaflet_version (https://leafletjs.com), licence $leaflet_license_id:</p>
<pre>$leaflet_license</pre>
</details>
</footer>
<script type="application/json" id="rts-data">$data</script>
<script>$leaflet_js</script>
<script>$page_js</script>
</body>
</html>
"""
)

_PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 1rem 2rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; margin-top: 0; }
#notes li.broken, tr.status-broken td:nth-child(2) { color: #b00020; font-weight: 600; }
#chart { max-width: 100%; height: auto; }
.how-to-read { color: #444; font-size: 0.9rem; max-width: 60rem; }
.controls { display: flex; align-items: center; gap: 0.75rem; }
#year-slider { flex: 1; max-width: 30rem; }
#year-label { font-weight: 600; min-width: 12rem; }
#year-note { min-height: 1.2em; color: #333; }
#map { height: 560px; background: #30343a; border: 1px solid #999; }
.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 1rem; font-size: 0.9rem; }
.legend .swatch { display: inline-block; width: 1rem; height: 0.8rem; border: 3px solid; margin-right: 0.35rem;
  background: #30343a; vertical-align: middle; }
table.sortable { border-collapse: collapse; font-size: 0.85rem; width: 100%; }
table.sortable th, table.sortable td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; }
table.sortable td[data-sort] { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { background: #f3f3f3; cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " ▲"; }
table.sortable th[aria-sort="descending"]::after { content: " ▼"; }
tr.selected td { background: #fff7d6; }
tr.absent td { color: #999; }
footer { margin-top: 2rem; font-size: 0.8rem; color: #555; }
footer pre { white-space: pre-wrap; }
"""

_PAGE_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("rts-data").textContent);
  var mapElement = document.getElementById("map");
  var slider = document.getElementById("year-slider");
  var label = document.getElementById("year-label");
  var note = document.getElementById("year-note");
  var b = data.bbox;
  var siteBounds = L.latLngBounds([[b[1], b[0]], [b[3], b[2]]]);
  var map = L.map(mapElement, { zoomSnap: 0.25 });
  map.attributionControl.addAttribution("quick-looks: Sentinel-2 L2A (Copernicus)");
  map.fitBounds(siteBounds);
  L.rectangle(siteBounds, { color: "#dddddd", weight: 1, dashArray: "4 4", fill: false, interactive: false,
    className: "rts-site-outline" }).addTo(map);
  var imageLayer = null;
  var slumpLayer = null;

  function number(value, signed) {
    if (value === null || value === undefined) { return "\\u2013"; }
    var text = Math.round(value).toLocaleString("en");
    return signed && value > 0 ? "+" + text : text;
  }

  function tooltip(p) {
    var element = document.createElement("span");
    var lines = [p.slump_id + " (" + p.status + ")", "area " + number(p.area_m2) + " m\\u00b2"];
    if (p.growth_m2_per_yr !== null && p.growth_m2_per_yr !== undefined) {
      lines.push("growth " + number(p.growth_m2_per_yr, true) + " m\\u00b2/yr");
    }
    if (p.first_year) { lines.push("first seen " + p.first_year); }
    lines.forEach(function (line, i) {
      if (i) { element.appendChild(document.createElement("br")); }
      element.appendChild(document.createTextNode(line));
    });
    return element;
  }

  function style(feature) {
    var status = feature.properties.status;
    return { color: data.colours[status] || data.colours.detected, weight: 2, opacity: 1, fillOpacity: 0.15,
      className: "rts-slump rts-status-" + status };
  }

  function updateTables(year) {
    document.querySelectorAll("#records-table tbody tr").forEach(function (row) {
      row.classList.toggle("selected", row.getAttribute("data-year") === String(year));
    });
    var statuses = {};
    data.slumps.forEach(function (s) { statuses[s.id] = s.statuses[String(year)]; });
    document.querySelectorAll("#slumps-table tbody tr").forEach(function (row) {
      var status = statuses[row.getAttribute("data-slump-id")];
      var cell = row.querySelector("td.year-status");
      cell.textContent = status || "\\u2013";
      row.classList.toggle("absent", !status || status === "vanished");
    });
    var head = document.querySelector("#slumps-table th:nth-child(5)");
    if (head) { head.textContent = "Status in " + year; }
  }

  function showYear(index) {
    var year = data.years[index];
    if (imageLayer) { map.removeLayer(imageLayer); imageLayer = null; }
    if (slumpLayer) { map.removeLayer(slumpLayer); slumpLayer = null; }
    if (year.quicklook) {
      var q = year.bounds;
      imageLayer = L.imageOverlay(year.quicklook, [[q[1], q[0]], [q[3], q[2]]], {
        className: "rts-quicklook", alt: "quick-look " + year.year }).addTo(map);
    }
    slumpLayer = L.geoJSON(year.slumps, { style: style }).addTo(map);
    slumpLayer.eachLayer(function (layer) {
      layer.bindTooltip(tooltip(layer.feature.properties), { sticky: true });
      var element = layer.getElement();
      if (element) {
        element.setAttribute("data-slump-id", layer.feature.properties.slump_id);
        element.setAttribute("data-year", String(year.year));
      }
    });
    mapElement.setAttribute("data-year", String(year.year));
    mapElement.setAttribute("data-slumps", String(slumpLayer.getLayers().length));
    mapElement.setAttribute("data-broken", year.broken ? "true" : "false");
    label.textContent = year.label;
    note.textContent = year.note;
    note.className = year.broken ? "broken" : "";
    slider.setAttribute("aria-valuetext", year.label);
    updateTables(year.year);
  }

  function cellValue(row, column, numeric) {
    var cell = row.cells[column];
    if (!numeric) { return cell.textContent.trim().toLowerCase(); }
    var sort = cell.getAttribute("data-sort");
    return sort === null ? null : parseFloat(sort);
  }

  function sortTable(table, column, header) {
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var numeric = header.getAttribute("data-type") === "number";
    Array.prototype.forEach.call(header.parentNode.cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, column, numeric);
      var y = cellValue(b, column, numeric);
      if (x === null || x === "\\u2013") { return (y === null || y === "\\u2013") ? 0 : 1; }
      if (y === null || y === "\\u2013") { return -1; }
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.addEventListener("click", function () { sortTable(table, column, header); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortTable(table, column, header); }
      });
    });
  });
  slider.addEventListener("input", function () { showYear(Number(slider.value)); });
  slider.addEventListener("change", function () { showYear(Number(slider.value)); });
  showYear(Number(slider.value));
  document.body.setAttribute("data-ready", "true");
})();
"""
