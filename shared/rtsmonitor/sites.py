"""Site configs: the schema of a monitored site, its parser and validator, and the paper's six sites.

A site is registered by one YAML or JSON file (a blob uploaded to the service, or a file given to
``rts sites validate``). :func:`parse_site_config` turns its bytes into a :class:`SiteConfig` or
raises one :class:`~rtsmonitor.errors.ConfigError` that lists *every* problem found, each as a
``(field, message)`` pair whose message names the bad value and what is allowed.

The six bundled sites (``sites_data/*.yaml``, :func:`paper_sites`) are the study sites of
Rustemeyer et al. 2022, "Tracking rapid permafrost thaw through time: exploring the potential of
convolutional neural network based models", IGARSS 2022, pp. 3838-3841,
doi:10.1109/IGARSS46834.2022.9884869 (Table 1: 100 km^2 squares around a centre point), with the
RTS labels of Nitze et al. 2021 (ARTS data set, CC0 1.0).
"""

from __future__ import annotations

import calendar
import datetime as dt
import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pyproj.exceptions import ProjError
from shapely.errors import GEOSException
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.validation import explain_validity

from rtsmonitor.errors import ConfigError
from rtsmonitor.grid import DEFAULT_RES_M, SiteGrid, grid_for_centre, grid_for_geometry, project_geometry, utm_epsg

SCHEMA_VERSION: Literal[1] = 1
"""Version of the site config schema written by this code (``schema_version`` of a config)."""

SENTINEL2_FIRST_YEAR = 2015
"""First year of Sentinel-2 L2A imagery (Sentinel-2A launched 23 June 2015); years before it are refused."""

DEFAULT_FIRST_YEAR = 2016
"""Default first year of a site's records: the first full northern summer of Sentinel-2 imagery."""

MAX_SITE_AREA_KM2 = 2500.0
"""Default service limit on a site's area in km^2, measured in the site's UTM zone.

25 paper-sized sites: 25 million 10 m pixels per layer, read, inferred and vectorised by one queue
worker per site-year. Larger areas should be split into several sites; operators change the limit
through :class:`ServiceLimits`.
"""

SITE_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
"""A site id: 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit.

Safe as an Azure blob name segment and an Azure Table PartitionKey/RowKey (no ``/ \\ # ?``, no
control characters, no upper case that blob listings would sort apart).
"""

LABELS_DIR_PREFIX = "labels:"
"""Prefix of a label path resolved against the labels directory given when a dataset is built.

``labels:nitze2021_rts_Horton.geojson`` means ``<labels_dir>/nitze2021_rts_Horton.geojson``; such
paths are left as they are by :func:`load_site_config` (other relative paths are resolved against
the config file's folder).
"""

DEFAULT_LABELS_DIR = Path("../shared/data/labels")
"""Default labels directory for ``labels:`` paths (relative to the working directory: the repo root)."""

LABEL_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json")
"""File name endings accepted for a label file: GeoPackage, Shapefile, GeoJSON."""

PAPER_SITE_IDS = ("herschel", "horton01", "horton02", "kolguev01", "kolguev02", "lena")
"""Ids of the six sites of Rustemeyer et al. 2022 (Table 1), in the paper's order."""

FILE_FIELD = "(file)"
"""Field name of problems with the file as a whole (encoding, syntax, top level, empty)."""

_SITE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class _CrossFieldError(ValueError):
    """Problems that involve several fields of a site config, kept as ``(field, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))


def _today(context: object) -> dt.date:
    """The date that "now" means during validation: ``context["today"]`` if given, else today."""
    if isinstance(context, Mapping):
        today = context.get("today")
        if isinstance(today, dt.date):
            return today
    return dt.date.today()


def _parse_month_day(value: str) -> tuple[int, int]:
    """(month, day) of an ``MM-DD`` string; ValueError naming the value and the rule otherwise."""
    parts = value.split("-")
    if len(parts) != 2 or not all(len(p) == 2 and p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"{value!r} is not a day of the year: use 'MM-DD', e.g. '07-01'")
    month, day = int(parts[0]), int(parts[1])
    if not 1 <= month <= 12:
        raise ValueError(f"{value!r}: month {month} is not a month (allowed 01..12)")
    if month == 2 and day == 29:
        raise ValueError(f"{value!r}: 29 February does not exist in every year (use '02-28' or '03-01')")
    days = calendar.monthrange(2001, month)[1]  # 2001: not a leap year
    if not 1 <= day <= days:
        raise ValueError(f"{value!r}: {calendar.month_name[month]} has no day {day} (allowed 01..{days:02d})")
    return month, day


class SeasonWindow(BaseModel):
    """The part of each year in which scenes are searched (both days inclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(
        "07-01",
        description="First day of the window as 'MM-DD' (inclusive). The default July-August is the "
        "northern summer with the least snow, ice and cloud at 69 N.",
    )
    end: str = Field("08-31", description="Last day of the window as 'MM-DD' (inclusive), after start.")

    @field_validator("start", "end")
    @classmethod
    def _check_day(cls, value: str) -> str:
        _parse_month_day(value)
        return value

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if _parse_month_day(self.start) >= _parse_month_day(self.end):
            raise ValueError(
                f"start {self.start!r} is not before end {self.end!r}: the window must lie within one "
                "calendar year, start first"
            )
        return self

    def bounds(self, year: int) -> tuple[dt.date, dt.date]:
        """First and last day (both inclusive) of the window in ``year``."""
        (m0, d0), (m1, d1) = _parse_month_day(self.start), _parse_month_day(self.end)
        return dt.date(year, m0, d0), dt.date(year, m1, d1)


class CentreGeometry(BaseModel):
    """A square site given by its centre point and side (the form of the paper's sites)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    lon: float = Field(ge=-180.0, le=180.0, description="Longitude of the centre in degrees east (WGS84).")
    lat: float = Field(ge=-90.0, le=90.0, description="Latitude of the centre in degrees north (WGS84).")
    size_km: float = Field(
        gt=0.0,
        description="Side of the square in kilometres, in the UTM zone of the centre (10 = 100 km^2).",
    )


class LabelSource(BaseModel):
    """A file of RTS label polygons for the site (training data; not needed for monitoring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(
        min_length=1,
        description="Label file (GeoPackage .gpkg, Shapefile .shp, GeoJSON .geojson/.json; any CRS). "
        "A relative path is resolved against the config file's folder; 'labels:NAME' against the labels "
        f"directory given when a dataset is built (default {DEFAULT_LABELS_DIR}). The file need not exist "
        "to validate the config.",
    )
    date: dt.date | None = Field(
        None,
        description="Date (YYYY-MM-DD) of the image the labels were drawn on; null: read per polygon from date_field.",
    )
    date_field: str = Field(
        "image_date",
        min_length=1,
        description="Attribute holding each polygon's image date (YYYY-MM-DD) when date is null.",
    )
    site_field: str | None = Field(
        None,
        min_length=1,
        description="Attribute naming the site of each polygon in a multi-site file (e.g. 'site'); "
        "null: every polygon of the file belongs to this site.",
    )
    site_value: str | None = Field(
        None,
        min_length=1,
        description="Value of site_field that selects this site's polygons (e.g. 'Horton_01').",
    )

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        name = value.removeprefix(LABELS_DIR_PREFIX)
        if not name.strip():
            raise ValueError(f"{value!r} names no file")
        if not name.lower().endswith(LABEL_SUFFIXES):
            raise ValueError(
                f"{value!r} is not a label file this service reads (allowed endings: {', '.join(LABEL_SUFFIXES)})"
            )
        return value

    @model_validator(mode="after")
    def _check_site_selection(self) -> Self:
        if (self.site_field is None) != (self.site_value is None):
            given, missing = ("site_field", "site_value") if self.site_value is None else ("site_value", "site_field")
            raise ValueError(
                f"{given} is given but {missing} is not: give both to select one site's polygons, or neither"
            )
        return self

    def resolved_path(self, labels_dir: Path | str = DEFAULT_LABELS_DIR) -> Path:
        """The label file's path: a ``labels:NAME`` path joined to ``labels_dir``, any other path as is."""
        if self.path.startswith(LABELS_DIR_PREFIX):
            return Path(labels_dir) / self.path.removeprefix(LABELS_DIR_PREFIX)
        return Path(self.path)


class FilterSwitches(BaseModel):
    """Which false-positive filters (:mod:`rtsmonitor.filters`) remove objects of this site.

    Defaults follow their measured effect on the demo model's held-out images and on partly clouded
    views of them (``python -m rtstrain.filter_eval``, the table in the demo model's report.md):
    water, mmu and flat raised object precision without costing recall; edges removed mostly true
    slumps cut by clouds (pixel recall 0.88 -> 0.50 on the clouded views), so it is off by default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    water: bool = Field(
        True,
        strict=True,
        description="Remove objects of which at least half the pixels are open water (SCL class 6 or NDWI > 0, "
        "McFeeters 1996). Default on.",
    )
    edges: bool = Field(
        False,
        strict=True,
        description="Remove objects that touch a pixel without a clear observation (no data, cloud, shadow, snow). "
        "Default off: on partly clouded scenes it removed more true slumps than false objects.",
    )
    mmu: bool = Field(
        True,
        strict=True,
        description="Remove objects smaller than the minimum mapping unit of 1000 m^2 (0.1 ha, ten 10 m pixels). "
        "Default on (the behaviour before the switch existed).",
    )
    flat: bool = Field(
        True,
        strict=True,
        description="Remove objects on flat ground: the 95th percentile of the slope under the object is below "
        "2 degrees (RTS form on slopes). Default on.",
    )

    def enabled(self) -> tuple[str, ...]:
        """Names of the filters switched on, in the order water, edges, mmu, flat."""
        return tuple(name for name in ("water", "edges", "mmu", "flat") if getattr(self, name))


class ServiceLimits(BaseModel):
    """Limits that protect the service from sites too large to process; set by the operator."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_area_km2: float = Field(
        MAX_SITE_AREA_KM2,
        gt=0.0,
        description="Largest site area in km^2, measured in the site's UTM zone.",
    )


def _position_problem(position: object, where: str) -> str | None:
    """Why ``position`` is not a WGS84 [lon, lat] GeoJSON position, or None if it is one."""
    if not isinstance(position, list | tuple) or len(position) not in (2, 3):
        return f"{where}: {_show(position)} is not a position [lon, lat]"
    if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in position):
        return f"{where}: {_show(position)} is not a position of numbers [lon, lat]"
    lon, lat = float(position[0]), float(position[1])
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return f"{where}: {_show(position)} is not finite"
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        return (
            f"{where}: ({position[0]}, {position[1]}) is outside lon -180..180 / lat -90..90 "
            "(positions are [lon, lat] in WGS84 degrees)"
        )
    return None


def _ring_problems(ring: object, where: str) -> list[str]:
    """Problems of one GeoJSON linear ring (list of positions, closed, at least 4 positions)."""
    if not isinstance(ring, list | tuple):
        return [f"{where}: {_show(ring)} is not a list of positions"]
    problems = [p for i, pos in enumerate(ring) if (p := _position_problem(pos, f"{where} position {i}"))]
    if problems:
        more = f" (and {len(problems) - 1} more bad position(s) in this ring)" if len(problems) > 1 else ""
        return [problems[0] + more]
    if len(ring) < 4:
        return [f"{where} has {len(ring)} positions: a closed ring needs at least 4"]
    if list(ring[0][:2]) != list(ring[-1][:2]):
        return [f"{where} is not closed: its last position {_show(ring[-1])} must repeat the first {_show(ring[0])}"]
    return []


def _polygon_problems(rings: object, where: str) -> list[str]:
    """Problems of the coordinates of one GeoJSON polygon (a list of rings, the first the shell)."""
    if not isinstance(rings, list | tuple) or not rings:
        return [f"{where}: {_show(rings)} is not a non-empty list of rings"]
    return [p for i, ring in enumerate(rings) for p in _ring_problems(ring, f"{where} ring {i}")]


def _check_geojson_polygon(value: Mapping[str, Any]) -> Polygon | MultiPolygon:
    """The shapely form of a GeoJSON Polygon/MultiPolygon in WGS84; ValueError naming every problem."""
    kind = value.get("type")
    if kind in ("Feature", "FeatureCollection"):
        raise ValueError(f"a GeoJSON {kind} is not a geometry: give the 'geometry' member of the feature")
    if kind not in ("Polygon", "MultiPolygon"):
        raise ValueError(f"type {_show(kind)} is not supported (allowed: 'Polygon', 'MultiPolygon')")
    unknown = sorted(set(value) - {"type", "coordinates", "bbox"})
    if unknown:
        raise ValueError(
            f"unknown GeoJSON member(s) {', '.join(map(repr, unknown))} (allowed: type, coordinates, bbox)"
        )
    if "coordinates" not in value:
        raise ValueError(f"the {kind} has no 'coordinates'")
    coords = value["coordinates"]
    if kind == "Polygon":
        problems = _polygon_problems(coords, "polygon")
    elif not isinstance(coords, list | tuple) or not coords:
        problems = [f"coordinates {_show(coords)} are not a non-empty list of polygons"]
    else:
        problems = [p for i, rings in enumerate(coords) for p in _polygon_problems(rings, f"polygon {i}")]
    if problems:
        raise ValueError("; ".join(problems))
    try:
        geom = shape(value)
    except (ValueError, TypeError, GEOSException) as exc:
        raise ValueError(f"malformed {kind}: {exc}") from None
    if geom.is_empty or not geom.is_valid:
        reason = "empty" if geom.is_empty else explain_validity(geom)
        raise ValueError(f"invalid {kind}: {reason} (fix it, e.g. with QGIS 'Fix geometries' or shapely make_valid)")
    return geom


class SiteConfig(BaseModel):
    """One monitored site: where it is, which years and season to process, and optional labels."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_version: Literal[1] = Field(
        SCHEMA_VERSION, description="Version of this schema, so that stored configs can be upgraded."
    )
    id: str = Field(
        description="Site id: 1-63 lowercase letters, digits and hyphens, starting and ending with a letter "
        "or digit (used in blob names and as the Table row key), e.g. 'horton01'.",
    )
    name: str = Field(min_length=1, max_length=200, description="Human-readable site name (1-200 characters).")
    geometry: dict[str, Any] | None = Field(
        None,
        description="Site outline as a GeoJSON Polygon or MultiPolygon in WGS84 degrees [lon, lat]. "
        "Give exactly one of geometry and centre.",
    )
    centre: CentreGeometry | None = Field(
        None,
        description="Centre point (degrees) and side (km) of a square site. Give exactly one of geometry and centre.",
    )
    first_year: int = Field(
        DEFAULT_FIRST_YEAR,
        description=f"First year (calendar year) to process, from {SENTINEL2_FIRST_YEAR} (Sentinel-2 L2A).",
    )
    last_year: int | None = Field(
        None,
        description="Last year (calendar year) to process; null: the current year, resolved when used.",
    )
    season: SeasonWindow = Field(
        default_factory=SeasonWindow, description="Days of each year in which scenes are searched."
    )
    max_cloud_pct: float = Field(
        10.0,
        ge=0.0,
        le=100.0,
        description="Largest scene cloud cover in percent (eo:cloud_cover) accepted; the paper used < 10 %.",
    )
    min_valid_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Smallest fraction (0..1) of the site's pixels that must be clear (no cloud, shadow, "
        "snow or no-data) in a scene for it to be used.",
    )
    labels: list[LabelSource] = Field(
        default_factory=list, description="Label files with RTS polygons of this site (for training)."
    )
    active: bool = Field(True, description="Whether the yearly run processes this site.")
    filters: FilterSwitches = Field(
        default_factory=FilterSwitches,
        description="False-positive filters switched on (true) or off (false) for this site: water, edges, mmu, "
        "flat (see rtsmonitor.filters); fields left out take their defaults.",
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not is_site_id(value):
            bad = sorted({c for c in value if c not in _SITE_ID_CHARS})
            why = f" (not allowed: {', '.join(map(repr, bad))})" if bad else ""
            raise ValueError(
                f"{value!r} is not a site id{why}: use 1-63 lowercase letters, digits and hyphens, "
                "starting and ending with a letter or digit, e.g. 'horton01'"
            )
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"{value!r} is blank: give a name of 1-200 characters")
        return value

    @field_validator("geometry")
    @classmethod
    def _check_geometry(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            _check_geojson_polygon(value)
        return value

    @field_validator("first_year", "last_year")
    @classmethod
    def _check_year(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        this_year = _today(info.context).year
        allowed = f"allowed {SENTINEL2_FIRST_YEAR}..{this_year}"
        if value < SENTINEL2_FIRST_YEAR:
            raise ValueError(f"{value} is before the Sentinel-2 era ({allowed})")
        if value > this_year:
            raise ValueError(f"{value} is in the future ({allowed})")
        return value

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Self:
        problems = _cross_field_problems(
            self.geometry is not None, self.centre is not None, self.first_year, self.last_year
        )
        if problems:
            raise _CrossFieldError(problems)
        return self

    def geometry_wgs84(self) -> Polygon | MultiPolygon:
        """The site's outline in WGS84 (lon, lat); for a ``centre`` site, the footprint of its grid."""
        if self.geometry is not None:
            return _check_geojson_polygon(self.geometry)
        return self.grid().footprint_wgs84()

    def grid(self, res_m: float = DEFAULT_RES_M) -> SiteGrid:
        """The site's snapped UTM grid with ``res_m`` metre pixels."""
        if self.centre is not None:
            return grid_for_centre(self.centre.lon, self.centre.lat, self.centre.size_km, res_m)
        return grid_for_geometry(self.geometry_wgs84(), res_m)

    def area_km2(self) -> float:
        """The site's area in km^2 in its UTM zone (for a ``centre`` site, the area of its grid)."""
        return _area_km2(self.geometry, self.centre)

    def years(self, today: dt.date | None = None) -> list[int]:
        """The years to process: first_year up to last_year, or up to the year of ``today`` if it is null.

        The current year is included even while its season has not ended yet; callers that need a
        finished season compare :meth:`season_bounds` with the date.
        """
        last = self.last_year if self.last_year is not None else (today or dt.date.today()).year
        return list(range(self.first_year, last + 1))

    def season_bounds(self, year: int) -> tuple[dt.date, dt.date]:
        """First and last day (both inclusive) of the scene search window in ``year``."""
        return self.season.bounds(year)


def is_site_id(value: str) -> bool:
    """Whether ``value`` matches :data:`SITE_ID_PATTERN`."""
    return re.fullmatch(SITE_ID_PATTERN, value) is not None


def _cross_field_problems(
    geometry_given: bool, centre_given: bool, first_year: int | None, last_year: int | None
) -> list[tuple[str, str]]:
    """Problems between fields: exactly one of geometry and centre; first_year <= last_year."""
    problems: list[tuple[str, str]] = []
    if geometry_given and centre_given:
        problems.append(
            (
                "geometry",
                "both 'geometry' and 'centre' are given: give exactly one (a GeoJSON polygon, or a "
                "centre point with size_km)",
            )
        )
    elif not geometry_given and not centre_given:
        problems.append(
            (
                "geometry",
                "neither 'geometry' nor 'centre' is given: give exactly one (a GeoJSON polygon, or a "
                "centre point with size_km)",
            )
        )
    if first_year is not None and last_year is not None and first_year > last_year:
        problems.append(("first_year", f"{first_year} is after last_year {last_year} (first_year <= last_year)"))
    return problems


def _area_km2(geometry: Mapping[str, Any] | None, centre: CentreGeometry | None) -> float:
    """Area in km^2 in the UTM zone of the site: of the grid for a centre, of the polygon otherwise."""
    if centre is not None:
        return grid_for_centre(centre.lon, centre.lat, centre.size_km).area_m2 / 1e6
    if geometry is None:
        raise ValueError("a site needs a geometry or a centre")
    geom = _check_geojson_polygon(geometry)
    centroid = geom.centroid
    return float(project_geometry(geom, utm_epsg(centroid.x, centroid.y)).area) / 1e6


def _area_problems(
    geometry: Mapping[str, Any] | None, centre: CentreGeometry | None, limits: ServiceLimits
) -> list[tuple[str, str]]:
    """The area problem of a site's geometry against ``limits`` (empty list if none)."""
    field = "centre.size_km" if centre is not None else "geometry"
    try:
        area = _area_km2(geometry, centre)
    except (ValueError, ProjError, GEOSException) as exc:
        return [(field, f"the site's area cannot be computed in its UTM zone: {exc}")]
    if not math.isfinite(area):
        return [(field, "the site's area cannot be computed in its UTM zone (not finite)")]
    if area > limits.max_area_km2:
        hint = "a smaller size_km" if centre is not None else "split it into several sites"
        return [
            (
                field,
                f"the site's area {area:.1f} km^2 is over the service limit of {limits.max_area_km2:g} km^2 "
                f"(use {hint}, or ask the operator to raise max_area_km2)",
            )
        ]
    return []


def service_limit_problems(config: SiteConfig, limits: ServiceLimits | None = None) -> list[tuple[str, str]]:
    """``(field, message)`` pairs for each service limit ``config`` breaks (empty if none)."""
    return _area_problems(config.geometry, config.centre, limits or ServiceLimits())


# --- parsing ------------------------------------------------------------------------------------------

_MODELS_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): SiteConfig,
    ("centre",): CentreGeometry,
    ("season",): SeasonWindow,
    ("labels",): LabelSource,
    ("filters",): FilterSwitches,
}


def _show(value: object, limit: int = 60) -> str:
    """A short printable form of a bad value for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_help(loc: tuple[int | str, ...]) -> tuple[type[BaseModel] | None, str]:
    """The model holding the field at ``loc`` and the field's name."""
    parent = tuple(str(p) for p in loc[:-1] if not isinstance(p, int))
    return _MODELS_AT.get(parent), str(loc[-1]) if loc else ""


def _problems_from_validation_error(error: ValidationError) -> list[tuple[str, str]]:
    """One ``(dotted field, message)`` pair per pydantic error; messages name the bad value."""
    problems: list[tuple[str, str]] = []
    for detail in error.errors():
        loc = tuple(detail["loc"])
        field = ".".join(str(p) for p in loc) or "(config)"
        kind = detail["type"]
        ctx = detail.get("ctx") or {}
        model, name = _field_help(loc)
        if kind == "value_error":
            cause = ctx.get("error")
            if isinstance(cause, _CrossFieldError):
                prefix = f"{field}." if loc else ""
                problems.extend((prefix + f, m) for f, m in cause.problems)
                continue
            message = str(cause) if cause is not None else str(detail["msg"])
        elif kind == "extra_forbidden":
            allowed = list(model.model_fields) if model is not None else []
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown field {name!r} (allowed: {', '.join(allowed)}){hint}"
        elif kind == "missing":
            info = model.model_fields.get(name) if model is not None else None
            first_sentence = re.split(r"\.\s+(?=[A-Z])", info.description)[0] if info and info.description else ""
            described = f" ({first_sentence.rstrip('.')})" if first_sentence else ""
            message = f"required field is missing{described}"
        else:
            msg = str(detail["msg"])
            message = f"{_show(detail.get('input'))} is not allowed: {msg[:1].lower()}{msg[1:]}"
        problems.append((field, message))
    return problems


def _raw_extra_problems(raw: Mapping[str, Any], limits: ServiceLimits) -> list[tuple[str, str]]:
    """Cross-field and area problems found in the raw mapping when some fields failed validation.

    Pydantic runs the model-level checks only when every field is valid; these keep such problems
    in the same report as the field errors.
    """
    geometry, centre = raw.get("geometry"), raw.get("centre")

    def year(key: str, default: int | None) -> int | None:
        value = raw.get(key, default)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    problems = _cross_field_problems(
        geometry is not None, centre is not None, year("first_year", DEFAULT_FIRST_YEAR), year("last_year", None)
    )
    if (geometry is None) == (centre is None):
        return problems
    try:
        if centre is not None:
            return problems + _area_problems(None, CentreGeometry.model_validate(centre), limits)
        if isinstance(geometry, Mapping):
            _check_geojson_polygon(geometry)
            return problems + _area_problems(geometry, None, limits)
    except (ValidationError, ValueError):
        pass  # already reported as a field error
    return problems


def _detect_format(text: str, source: str, fmt: str | None) -> Literal["json", "yaml"]:
    """``json`` or ``yaml``: from ``fmt``, else the source's extension, else sniffed from the text."""
    if fmt is not None:
        if fmt.lower() == "json":
            return "json"
        if fmt.lower() in ("yaml", "yml"):
            return "yaml"
        raise ValueError(f"unknown config format {fmt!r} (allowed: 'json', 'yaml', 'yml')")
    suffix = Path(source).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return "json" if text.lstrip()[:1] in ("{", "[") else "yaml"


def _yaml_where(error: yaml.MarkedYAMLError, *, context: bool = False) -> str:
    """`` at line L, column C`` of a YAML error's problem (or context) mark, or an empty string."""
    mark = error.context_mark if context else (error.problem_mark or error.context_mark)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_first_alias(text: str) -> yaml.AliasEvent | None:
    """The first alias (``*name``) of a YAML text, if any; syntax errors are left to the loader."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                return event
    except yaml.YAMLError:
        return None
    return None


def _yaml_duplicate_keys(text: str) -> list[str]:
    """Messages for keys given twice in one YAML mapping (safe_load silently keeps the last)."""
    messages: list[str] = []
    root = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes only: no object is constructed
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                dotted = f"{path}.{name}" if path else name
                if isinstance(key, yaml.ScalarNode) and name != "<<":
                    if name in seen:
                        messages.append(
                            f"key {dotted!r} is given twice (again at line {key.start_mark.line + 1}): "
                            "remove one, the later would silently win"
                        )
                    seen.add(name)
                stack.append((value, dotted))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}.{i}") for i, item in enumerate(node.value))
    return messages


def _load_mapping(data: bytes | str, source: str, fmt: str | None) -> dict[str, Any]:
    """The top-level mapping of a JSON/YAML config; ConfigError on field ``(file)`` otherwise."""

    def fail(message: str) -> ConfigError:
        return ConfigError(source, [(FILE_FIELD, message)])

    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise fail(
                f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} "
                f"(offset {exc.start}) cannot be decoded "
                "(save the file as UTF-8)"
            ) from None
    else:
        text = data.removeprefix("\ufeff")
    if not text.strip():
        raise fail("the file is empty: expected a mapping of site fields (id, name, centre or geometry, ...)")
    kind = _detect_format(text, source, fmt)
    if kind == "json":
        duplicates: list[str] = []

        def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            keys = [k for k, _ in pairs]
            duplicates.extend(k for i, k in enumerate(keys) if k in keys[:i])
            return dict(pairs)

        try:
            raw = json.loads(text, object_pairs_hook=pairs_hook)
        except json.JSONDecodeError as exc:
            raise fail(f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        dup_messages = [
            f"key {k!r} is given twice in one object: remove one, the later would silently win"
            for k in dict.fromkeys(duplicates)
        ]
    else:
        alias = _yaml_first_alias(text)
        if alias is not None:
            at_line = f" at line {alias.start_mark.line + 1}" if alias.start_mark is not None else ""
            raise fail(
                f"YAML alias *{alias.anchor}{at_line} refused: a site config "
                "repeats no data, and nested aliases can expand without bound (write the values out)"
            )
        try:
            raw = yaml.safe_load(text)
        except yaml.constructor.ConstructorError as exc:
            raise fail(f"YAML tag refused{_yaml_where(exc)}: {exc.problem} (only plain YAML data is read)") from None
        except yaml.MarkedYAMLError as exc:
            context = f" ({exc.context}{_yaml_where(exc, context=True)})" if exc.context else ""
            raise fail(f"YAML syntax error{_yaml_where(exc)}: {exc.problem}{context}") from None
        except yaml.YAMLError as exc:
            raise fail(f"YAML syntax error: {exc}") from None
        dup_messages = _yaml_duplicate_keys(text) if isinstance(raw, dict) else []
    if raw is None:
        raise fail("the file holds no data: expected a mapping of site fields (id, name, centre or geometry, ...)")
    if not isinstance(raw, dict):
        raise fail(
            f"the top level is a {type(raw).__name__} ({_show(raw, 40)}), expected a mapping of site fields "
            "(id, name, centre or geometry, ...)"
        )
    if dup_messages:
        raise ConfigError(source, [(FILE_FIELD, m) for m in dup_messages])
    return raw


def parse_site_config(
    data: bytes | str,
    source: str,
    *,
    limits: ServiceLimits | None = None,
    fmt: str | None = None,
    today: dt.date | None = None,
) -> SiteConfig:
    """Parse and validate a site config from JSON or YAML.

    Parameters
    ----------
    data : the file's content (bytes must be UTF-8; a BOM is allowed).
    source : where it came from (a path or blob name), used in messages and for the format.
    limits : service limits; default :class:`ServiceLimits` (``MAX_SITE_AREA_KM2``).
    fmt : ``"json"`` or ``"yaml"``; default from ``source``'s extension (.json/.yaml/.yml), else
        sniffed (``{`` or ``[`` first: JSON).
    today : the date that "the current year" means (tests); default today.

    Returns
    -------
    The validated config. Relative label paths are returned as written (see :func:`load_site_config`).

    Raises
    ------
    ConfigError
        With every problem found as a ``(field, message)`` pair; field ``(file)`` for problems of
        the file as a whole. YAML is read with ``yaml.safe_load``: tags such as ``!!python/object``
        are syntax errors, never executed.
    """
    raw = _load_mapping(data, source, fmt)
    limits = limits or ServiceLimits()
    try:
        config = SiteConfig.model_validate(raw, context={"today": today})
    except ValidationError as exc:
        problems = _problems_from_validation_error(exc)
        problems += [p for p in _raw_extra_problems(raw, limits) if p not in problems]
        raise ConfigError(source, problems) from None
    problems = service_limit_problems(config, limits)
    if problems:
        raise ConfigError(source, problems)
    return config


def _resolve_label_path(path: str, folder: Path) -> str:
    """``path`` resolved against ``folder`` unless absolute or a ``labels:`` path."""
    if path.startswith(LABELS_DIR_PREFIX) or Path(path).is_absolute():
        return path
    return str((folder / path).resolve())


def load_site_config(path: Path, limits: ServiceLimits | None = None, *, today: dt.date | None = None) -> SiteConfig:
    """Read and validate a site config file; relative label paths are resolved against its folder.

    ``labels:NAME`` paths stay as they are (resolved against a labels directory at dataset build
    time). Raises ConfigError, also when the file cannot be read (field ``(file)``).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [(FILE_FIELD, f"cannot read the file: {exc.strerror or exc}")]) from None
    config = parse_site_config(data, str(path), limits=limits, today=today)
    if not config.labels:
        return config
    labels = [
        label.model_copy(update={"path": _resolve_label_path(label.path, path.parent)}) for label in config.labels
    ]
    return config.model_copy(update={"labels": labels})


def validate_paths(
    paths: Sequence[Path], *, limits: ServiceLimits | None = None, today: dt.date | None = None
) -> list[str]:
    """One line ``PATH: FIELD: MESSAGE`` per problem of the given config files; empty if all are valid.

    A missing or unreadable file is a problem line, not an exception; so is a site id used by two
    of the files.
    """
    lines: list[str] = []
    seen: dict[str, Path] = {}
    for path in paths:
        try:
            config = load_site_config(Path(path), limits, today=today)
        except ConfigError as exc:
            lines.extend(f"{path}: {field}: {message}" for field, message in exc.problems)
            continue
        if config.id in seen:
            lines.append(f"{path}: id: {config.id!r} is already the id of {seen[config.id]} (site ids must be unique)")
        else:
            seen[config.id] = Path(path)
    return lines


def paper_sites() -> list[SiteConfig]:
    """The six sites of Rustemeyer et al. 2022 (Table 1), from the bundled ``sites_data/*.yaml``.

    Their label paths are ``labels:`` paths: resolve them with :meth:`LabelSource.resolved_path`.
    """
    return [parse_site_config(p.read_bytes(), f"rtsmonitor/sites_data/{p.name}") for p in paper_site_paths()]


def paper_site_paths() -> list[Path]:
    """The bundled config files of the six paper sites (``rtsmonitor/sites_data/*.yaml``), by name."""
    folder = Path(str(resources.files("rtsmonitor").joinpath("sites_data")))
    return sorted(folder.glob("*.yaml"))


def paper_site(site_id: str) -> SiteConfig:
    """One of the six paper sites by id (see :data:`PAPER_SITE_IDS`); KeyError if unknown."""
    for site in paper_sites():
        if site.id == site_id:
            return site
    raise KeyError(f"{site_id!r} is not a paper site (known: {', '.join(PAPER_SITE_IDS)})")
