"""RTS inventories in the ARTS community format: a site-year's slumps, or a year's across sites, as files.

An inventory has one row per slump present in a year: the polygon of the site-year's ``rts.geojson``
in WGS84 with the ARTS fields (:mod:`rtsmonitor.arts`), the slump's tracking (id, status, growth and
the ARTS relationship fields from its lineage) and the statistics of the RTS probability over its
pixels. It is built from what the pipeline stored, read-only:

- the site's ok records (:mod:`rtsmonitor.records`): scene id and date of each year;
- the year's ``rts.geojson`` and ``probability.tif`` (its run folder);
- the tracking rows of the site (:func:`rtsmonitor.tracking.read_slump_rows`) and its slump outlines
  (:func:`rtsmonitor.tracking.slumps_blob_name`), which also tie each polygon to its slump.

Geometry, centroid and area
---------------------------
The polygon is the ``rts.geojson`` geometry as stored (WGS84, EPSG:4326), not reprojected again.
``Area`` is in m^2 on the site's UTM grid (the ``area_m2`` the pipeline measured before writing WGS84,
i.e. pixel count times pixel area), never an area in degrees. ``CentroidLat``/``CentroidLon`` are the
centroid of the outline in the site's UTM CRS taken to WGS84 and rounded to 5 decimals: the ``lat``
and ``lon`` of the tracking row (ARTS takes the centroid in EPSG:3413; for polygons of a few hectares
the two differ by millimetres).

Probability statistics
----------------------
``ProbMin``, ``ProbMax``, ``ProbMean``, ``ProbMedian`` and ``ProbStd`` (population standard deviation,
``ddof=0``) of ``probability.tif`` over the pixels whose centres lie inside the polygon (reprojected
to the site grid; a pixel-edge outline selects exactly its pixels), rounded to :data:`PROB_DECIMALS`;
``PixelCount`` is the number of those pixels with a probability (NaN = unobserved is left out). With
no such pixel the statistics are NaN and the count 0.

Other columns
-------------
Besides the ARTS fields (:data:`rtsmonitor.arts.ARTS_FIELDS`, ``BaseMapID`` = the record's scene id,
``BaseMapDate`` = the scene's date, ``ContributionDate`` = the export date, ``Notes`` = the model):
``RepeatRTS`` (:mod:`rtsmonitor.arts`), ``site_id``, ``year``, ``slump_id``, ``status`` (tracking
status: new, active, stable), ``first_year``, ``growth_m2_per_yr`` (NaN for a new slump), and the
probability statistics. :data:`COLUMNS` lists them all with their dtypes.

Files
-----
:data:`FORMATS`: GeoPackage (layer :data:`GPKG_LAYER`), GeoParquet (GeoParquet 1.0 metadata, via
pyarrow) and GeoJSON, all in EPSG:4326. Polygons and MultiPolygons are written as they are (no
promotion to MultiPolygon), so GeoPackage and GeoParquet read back with identical geometry (WKB) and
attributes (dtypes included). GeoJSON has no field types: GDAL reads its YYYY-MM-DD texts
(BaseMapDate, ContributionDate) as dates unless opened with ``DATE_AS_STRING=YES``, and small
integers as int32. :func:`write_inventory` writes a file atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.errors
import rasterio.features
import shapely
from pyproj import CRS, Transformer
from rasterio.io import DatasetReader, MemoryFile
from rasterio.windows import Window
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from rtsmonitor.arts import (
    BASEMAP_SOURCE,
    POLYGON,
    POSITIVE,
    REPEAT_FIELD,
    arts_uid,
    creator_lab,
    join_uids,
    region_name,
)
from rtsmonitor.errors import NotFoundError, RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.records import RESULTS_CONTAINER, SiteYearRecord, read_records, read_result_blob
from rtsmonitor.registry import list_sites, read_site
from rtsmonitor.sites import is_site_id
from rtsmonitor.storage import Storage
from rtsmonitor.tracking import SlumpYear, TrackedObject, read_slump_rows, read_year_objects, slumps_blob_name

FORMATS: dict[str, tuple[str, str]] = {
    "gpkg": ("GPKG", ".gpkg"),
    "parquet": ("GeoParquet", ".parquet"),
    "geojson": ("GeoJSON", ".geojson"),
}
"""Export formats: name -> (driver or kind, file suffix)."""
GPKG_LAYER = "rts_inventory"
"""Layer name of the GeoPackage."""
CRS_WGS84 = "EPSG:4326"
"""CRS of every inventory (ARTS: centroids in EPSG:4326)."""
PROB_DECIMALS = 6
"""Decimal places of the probability statistics (float32 probabilities hold about 7 significant digits)."""
AREA_DECIMALS = 2
"""Decimal places of ``Area`` in m^2 (as the tracking rows)."""
RELATION_MIN_OVERLAP_PX = 0.5
"""Least intersection, in pixels of the site grid, for two polygons to be related (:mod:`rtsmonitor.arts`).

Outlines on pixel edges overlap by whole pixels or not at all; outlines that only share edges leave
slivers of a few m^2 after the 1e-7 degree rounding of the GeoJSON, far below half a pixel (50 m^2)."""

COLUMNS: dict[str, str] = {
    "CentroidLat": "float64",
    "CentroidLon": "float64",
    "RegionName": "str",
    "CreatorLab": "str",
    "BaseMapDate": "str",
    "BaseMapSource": "str",
    "BaseMapResolution": "float64",
    "TrainClass": "str",
    "LabelType": "str",
    "MergedRTS": "str",
    "SplitRTS": "str",
    "NewRTS": "str",
    "StabilizedRTS": "str",
    "UnknownRelationship": "str",
    "ContributionDate": "str",
    "UID": "str",
    "BaseMapID": "str",
    "Area": "float64",
    "Notes": "str",
    REPEAT_FIELD: "str",
    "site_id": "str",
    "year": "int64",
    "slump_id": "str",
    "status": "str",
    "first_year": "int64",
    "growth_m2_per_yr": "float64",
    "ProbMin": "float64",
    "ProbMax": "float64",
    "ProbMean": "float64",
    "ProbMedian": "float64",
    "ProbStd": "float64",
    "PixelCount": "int64",
}
"""Columns of an inventory (besides ``geometry``) and their pandas dtypes: the ARTS fields first."""

_SCENE_DATE = re.compile(r"_(\d{4})(\d{2})(\d{2})T\d{6}")
_PRESENT = ("new", "active", "stable")


class InventoryInputError(RtsError):
    """The sites or year asked for cannot be exported; ``parameter`` names the input, ``value`` its value."""

    def __init__(self, parameter: str, value: object, message: str) -> None:
        self.parameter = parameter
        self.value = value
        super().__init__(message)


def basemap_date(record: SiteYearRecord) -> str:
    """The scene date YYYY-MM-DD of an ok record: from ``scene_datetime``, else from the scene id.

    Raises
    ------
    RtsError
        If neither holds a date.

    """
    if record.scene_datetime:
        try:
            return dt.datetime.fromisoformat(record.scene_datetime).date().isoformat()
        except ValueError:
            pass
    match = _SCENE_DATE.search(record.scene_id or "")
    if match:
        try:
            return dt.date(*(int(part) for part in match.groups())).isoformat()
        except ValueError:
            pass
    raise RtsError(
        f"record {record.site_id}/{record.year}: no scene date in scene_datetime {record.scene_datetime!r} "
        f"or scene_id {record.scene_id!r}"
    )


def _notes(record: SiteYearRecord) -> str:
    """What a reader of the inventory should know about how the polygon was made."""
    model = " ".join(part for part in (record.model_name, record.model_version) if part) or "unrecorded model"
    threshold = "" if record.threshold is None else f", probability threshold {record.threshold:g}"
    return f"mapped automatically by rtsmonitor: {model}{threshold}"


def _geometry_key(geometry: Mapping[str, Any]) -> str:
    """A GeoJSON geometry as canonical text (the slump outlines hold the ``rts.geojson`` geometries as read)."""
    return json.dumps(geometry, sort_keys=True, separators=(",", ":"))


# --- the site's context: records, tracking rows, outlines --------------------------------------------


@dataclass
class _Site:
    """What the inventory of any year of one site needs, read once."""

    site_id: str
    grid: SiteGrid
    region: str
    creator: str
    records: dict[int, SiteYearRecord]
    rows: list[SlumpYear]
    outlines_wgs84: dict[tuple[str, int], Mapping[str, Any]]
    present: dict[tuple[str, int], SlumpYear] = field(init=False)
    _utm: dict[tuple[str, int], BaseGeometry] = field(init=False, default_factory=dict)
    _to_utm: Transformer = field(init=False)

    def __post_init__(self) -> None:
        self.present = {(r.slump_id, r.year): r for r in self.rows if r.status in _PRESENT}
        self._to_utm = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_epsg(self.grid.epsg), always_xy=True)

    def where(self, year: int) -> str:
        return f"site {self.site_id} {year}"

    def uid(self, key: tuple[str, int]) -> str:
        """The UID of a slump's polygon in a year, from its tracking row and that year's record."""
        row = self.present.get(key)
        record = self.records.get(key[1])
        if row is None or record is None:
            raise RtsError(
                f"{self.where(key[1])}: slump {key[0]} has no tracked polygon with an ok record that year; "
                "the tracking rows are stale: track the site again (rtsmonitor.tracking.track_site)"
            )
        return arts_uid(
            {
                "CentroidLat": row.lat,
                "CentroidLon": row.lon,
                "RegionName": self.region,
                "CreatorLab": self.creator,
                "BaseMapDate": basemap_date(record),
                "BaseMapSource": BASEMAP_SOURCE,
                "BaseMapResolution": float(self.grid.res_m),
                "TrainClass": POSITIVE,
                "LabelType": POLYGON,
            }
        )

    def outline(self, key: tuple[str, int]) -> BaseGeometry:
        """A slump's outline in a year in the site's UTM CRS (from the tracking outlines)."""
        if key not in self._utm:
            geometry = self.outlines_wgs84.get(key)
            if geometry is None:
                raise RtsError(
                    f"{self.where(key[1])}: slump {key[0]} has no outline in {slumps_blob_name(self.site_id)}; "
                    "track the site again (rtsmonitor.tracking.track_site)"
                )
            utm = shapely.transform(shape(geometry), self._to_utm.transform, interleaved=False)
            self._utm[key] = utm if utm.is_valid else shapely.make_valid(utm)
        return self._utm[key]

    def overlap(self, a: tuple[str, int], b: tuple[str, int]) -> bool:
        """Whether two polygons overlap by at least :data:`RELATION_MIN_OVERLAP_PX` pixels."""
        one, other = self.outline(a), self.outline(b)
        if not one.intersects(other):
            return False
        return float(one.intersection(other).area) >= RELATION_MIN_OVERLAP_PX * self.grid.res_m**2


def _read_outlines(storage: Storage, site_id: str) -> dict[tuple[str, int], Mapping[str, Any]]:
    """The tracked slump outlines of a site by (slump id, year)."""
    name = slumps_blob_name(site_id)
    try:
        collection = json.loads(storage.blobs.read_bytes(RESULTS_CONTAINER, name))
    except NotFoundError as exc:
        raise RtsError(
            f"site {site_id}: {RESULTS_CONTAINER}/{name} is missing: track the site first "
            "(rtsmonitor.tracking.track_site)"
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RtsError(f"site {site_id}: {RESULTS_CONTAINER}/{name} is not JSON ({exc}): track the site again") from exc
    outlines: dict[tuple[str, int], Mapping[str, Any]] = {}
    for feature in collection.get("features", []) if isinstance(collection, dict) else []:
        properties = feature.get("properties") or {}
        try:
            outlines[(str(properties["slump_id"]), int(properties["year"]))] = feature["geometry"]
        except (KeyError, TypeError, ValueError) as exc:
            raise RtsError(f"site {site_id}: {RESULTS_CONTAINER}/{name} has a feature without slump_id/year") from exc
    return outlines


def _load_site(storage: Storage, site_id: str, creator: str) -> _Site:
    """Read a site's config, ok records, tracking rows and outlines."""
    config = read_site(storage, site_id).config
    records = {r.year: r for r in read_records(storage, site_id) if r.status == "ok"}
    return _Site(
        site_id=site_id,
        grid=config.grid(),
        region=region_name(site_id, config.name),
        creator=creator,
        records=records,
        rows=read_slump_rows(storage, site_id),
        outlines_wgs84=_read_outlines(storage, site_id),
    )


# --- relationships ------------------------------------------------------------------------------------


def _relations(site: _Site, row: SlumpYear) -> dict[str, str]:
    """The ARTS relationship fields of a present slump row (rules: :mod:`rtsmonitor.arts`)."""
    year, me = row.year, (row.slump_id, row.year)
    same_year = [r for r in site.rows if r.year == year]
    own_previous = (row.slump_id, row.previous_year) if row.previous_year is not None else None
    split_parent = any(r.split_from == row.slump_id for r in same_year)
    absorbed = row.merged_from.split(",") if row.merged_from else []

    merged: list[tuple[str, int]] = []
    if absorbed:
        merged = [own_previous] if own_previous else []
        for slump_id in absorbed:
            gone = next((r for r in same_year if r.slump_id == slump_id and r.status == "merged"), None)
            if gone is None or gone.previous_year is None:
                raise RtsError(f"{site.where(year)}: slump {slump_id} merged into {row.slump_id} has no merged row")
            merged.append((slump_id, gone.previous_year))
    split: list[tuple[str, int]] = []
    if row.split_from is not None:
        parent = site.present.get((row.split_from, year))
        if parent is None or parent.previous_year is None:
            raise RtsError(f"{site.where(year)}: slump {row.slump_id} split from {row.split_from}, which has no row")
        split = [(row.split_from, parent.previous_year)]
    elif split_parent and own_previous:
        split = [own_previous]
    repeat = [own_previous] if own_previous and not absorbed and not split_parent else []

    stabilized: list[tuple[str, int]] = []
    if row.status == "new":
        for scar in site.rows:
            if scar.status == "vanished" and scar.year <= year and scar.previous_year is not None:
                key = (scar.slump_id, scar.previous_year)
                if site.overlap(me, key):
                    stabilized.append(key)
    formed_on_top: list[tuple[str, int]] = []
    vanished = next((r for r in site.rows if r.slump_id == row.slump_id and r.status == "vanished"), None)
    if vanished is not None and vanished.previous_year == year:
        for later in site.rows:
            if later.status == "new" and later.year >= vanished.year and later.slump_id != row.slump_id:
                key = (later.slump_id, later.year)
                if site.overlap(me, key):
                    formed_on_top.append(key)

    listed = set(merged) | set(split) | set(repeat) | set(stabilized) | set(formed_on_top)
    unknown: list[tuple[str, int]] = []
    earlier_years = [y for (_, y) in site.present if y < year]
    if earlier_years:
        previous_year = max(earlier_years)
        for key in sorted(k for k in site.present if k[1] == previous_year):
            if key not in listed and site.overlap(me, key):
                unknown.append(key)

    def uids(keys: Sequence[tuple[str, int]]) -> str:
        return join_uids(site.uid(k) for k in sorted(keys, key=lambda k: (k[1], k[0])))

    return {
        "MergedRTS": uids(merged),
        "SplitRTS": uids(split),
        "NewRTS": uids(formed_on_top),
        "StabilizedRTS": uids(stabilized),
        "UnknownRelationship": uids(unknown),
        REPEAT_FIELD: uids(repeat),
    }


# --- probability statistics ---------------------------------------------------------------------------


def _probability_stats(src: DatasetReader, geometry: BaseGeometry) -> dict[str, Any]:
    """ProbMin/Max/Mean/Median/Std and PixelCount over the pixels whose centres lie inside ``geometry``."""
    transform = src.transform
    x_min, y_min, x_max, y_max = geometry.bounds
    col0 = max(math.floor((x_min - transform.c) / transform.a), 0)
    col1 = min(math.ceil((x_max - transform.c) / transform.a), src.width)
    row0 = max(math.floor((transform.f - y_max) / -transform.e), 0)
    row1 = min(math.ceil((transform.f - y_min) / -transform.e), src.height)
    values = np.empty(0, dtype=np.float64)
    if col0 < col1 and row0 < row1:
        window = Window(col0, row0, col1 - col0, row1 - row0)
        data = src.read(1, window=window, masked=True)
        inside = rasterio.features.geometry_mask(
            [geometry], out_shape=data.shape, transform=src.window_transform(window), invert=True
        )
        chosen = data[inside]
        values = np.asarray(chosen.compressed(), dtype=np.float64)
        values = values[np.isfinite(values)]
    if values.size == 0:
        return {name: math.nan for name in ("ProbMin", "ProbMax", "ProbMean", "ProbMedian", "ProbStd")} | {
            "PixelCount": 0
        }
    stats = {
        "ProbMin": values.min(),
        "ProbMax": values.max(),
        "ProbMean": values.mean(),
        "ProbMedian": np.median(values),
        "ProbStd": values.std(),
    }
    return {name: round(float(value), PROB_DECIMALS) for name, value in stats.items()} | {"PixelCount": values.size}


def _open_probability(storage: Storage, record: SiteYearRecord, grid: SiteGrid) -> MemoryFile:
    """The run's ``probability.tif`` as an open in-memory file (checked to be on the site's grid CRS)."""
    name = f"{record.results_prefix}probability.tif"
    where = f"{RESULTS_CONTAINER}/{name}"
    data = read_result_blob(storage, name)
    memory = MemoryFile(data)
    try:
        with memory.open() as src:
            if src.crs is None or src.crs.to_epsg() != grid.epsg:
                raise RtsError(f"{where} is in {src.crs}, not in the site's EPSG:{grid.epsg}")
    except rasterio.errors.RasterioError as exc:
        memory.close()
        raise RtsError(f"{where} cannot be read: {exc}") from exc
    except RtsError:
        memory.close()
        raise
    return memory


# --- the inventory ------------------------------------------------------------------------------------


def _match_rows(site: _Site, year: int, objects: Sequence[TrackedObject], source: str) -> list[SlumpYear]:
    """The tracking row of each object (by its outline), checking that rows and objects agree."""
    by_outline = {
        _geometry_key(site.outlines_wgs84[key]): row
        for key, row in site.present.items()
        if key[1] == year and key in site.outlines_wgs84
    }
    tracked = sum(1 for key in site.present if key[1] == year)
    matched = [by_outline.get(_geometry_key(obj.geometry_wgs84)) for obj in objects]
    if any(row is None for row in matched) or tracked != len(objects) or len(by_outline) != tracked:
        raise RtsError(
            f"{site.where(year)}: the tracking rows ({tracked} slumps) do not match {source} "
            f"({len(objects)} objects): track the site again (rtsmonitor.tracking.track_site)"
        )
    return [row for row in matched if row is not None]


def _site_year_rows(site: _Site, storage: Storage, year: int, contribution_date: str) -> list[dict[str, Any]]:
    """The inventory rows (column -> value, plus ``geometry``) of one site-year."""
    record = site.records.get(year)
    if record is None:
        raise InventoryInputError("year", year, f"site {site.site_id} has no ok record for {year}")
    objects = read_year_objects(storage, record, site.grid).objects
    rows = _match_rows(site, year, objects, f"{RESULTS_CONTAINER}/{record.results_prefix}rts.geojson")
    date = basemap_date(record)
    out: list[dict[str, Any]] = []
    memory = _open_probability(storage, record, site.grid)
    with memory, memory.open() as src:
        for obj, row in sorted(zip(objects, rows, strict=True), key=lambda pair: pair[1].slump_id):
            fields: dict[str, Any] = {
                "CentroidLat": float(row.lat),
                "CentroidLon": float(row.lon),
                "RegionName": site.region,
                "CreatorLab": site.creator,
                "BaseMapDate": date,
                "BaseMapSource": BASEMAP_SOURCE,
                "BaseMapResolution": float(site.grid.res_m),
                "TrainClass": POSITIVE,
                "LabelType": POLYGON,
            }
            fields["UID"] = arts_uid(fields)
            fields |= _relations(site, row)
            fields |= {
                "ContributionDate": contribution_date,
                "BaseMapID": record.scene_id or "",
                "Area": round(float(obj.area_m2), AREA_DECIMALS),
                "Notes": _notes(record),
                "site_id": site.site_id,
                "year": year,
                "slump_id": row.slump_id,
                "status": row.status,
                "first_year": row.first_year,
                "growth_m2_per_yr": math.nan if row.growth_m2_per_yr is None else float(row.growth_m2_per_yr),
            }
            fields |= _probability_stats(src, obj.geometry)
            fields["geometry"] = shape(obj.geometry_wgs84)
            out.append(fields)
    return out


def inventory_frame(rows: Sequence[Mapping[str, Any]]) -> Any:
    """A GeoDataFrame in EPSG:4326 of inventory rows, with the :data:`COLUMNS` in order and their dtypes."""
    data = {name: [row[name] for row in rows] for name in COLUMNS}
    geometry = gpd.GeoSeries([row["geometry"] for row in rows], crs=CRS_WGS84)
    frame = gpd.GeoDataFrame(data, geometry=geometry, crs=CRS_WGS84)
    return frame.astype(COLUMNS)


def _contribution(contribution_date: dt.date | None) -> str:
    return (contribution_date or dt.datetime.now(dt.UTC).date()).isoformat()


def site_year_inventory(
    storage: Storage,
    site_id: str,
    year: int,
    *,
    operator: str | None = None,
    contribution_date: dt.date | None = None,
) -> Any:
    """The ARTS inventory of one site-year as a GeoDataFrame (columns: :data:`COLUMNS` and ``geometry``).

    Parameters
    ----------
    storage : where the records, products and tracking rows are (:class:`rtsmonitor.storage.Storage`).
    site_id, year : the site-year; it needs an ok record.
    operator : added to CreatorLab (:func:`rtsmonitor.arts.creator_lab`); it changes the UIDs.
    contribution_date : ContributionDate (default: today, UTC).

    Raises
    ------
    NotFoundError
        If the site is not registered.
    InventoryInputError
        If the site-year has no ok record.
    RtsError
        If a product cannot be read, or the tracking rows are missing or stale (the message says
        what to run).

    """
    site = _load_site(storage, site_id, creator_lab(operator))
    return inventory_frame(_site_year_rows(site, storage, year, _contribution(contribution_date)))


def export_sites(storage: Storage, year: int, site_ids: Sequence[str] | None = None) -> list[str]:
    """The sites of a year's inventory: those given, or every site with an ok record that year.

    Each given site must be registered and have an ok record that year.

    Raises
    ------
    InventoryInputError
        Naming the input (``site_ids`` or ``year``) and the bad value.

    """
    ok_years: dict[str, set[int]] = {}
    for record in read_records(storage):
        if record.status == "ok":
            ok_years.setdefault(record.site_id, set()).add(record.year)
    if site_ids is None:
        chosen = sorted(site for site, years in ok_years.items() if year in years)
        if not chosen:
            known = sorted({y for years in ok_years.values() for y in years})
            listed = ", ".join(map(str, known)) if known else "none"
            raise InventoryInputError("year", year, f"no site has an ok record for {year} (years with one: {listed})")
        return chosen
    chosen = list(dict.fromkeys(site_ids))
    if not chosen:
        raise InventoryInputError("site_ids", "", "no site given")
    for site_id in chosen:
        if not is_site_id(site_id):
            raise InventoryInputError(
                "site_ids", site_id, f"{site_id!r} is not a site id: 1-63 lowercase letters, digits and hyphens"
            )
        try:
            read_site(storage, site_id)
        except NotFoundError:
            rows = list_sites(storage)
            valid = sorted(str(row["RowKey"]) for row in rows if row.get("status") in ("active", "inactive"))
            message = f"unknown site {site_id!r} (registered: {', '.join(valid) or 'none'})"
            raise InventoryInputError("site_ids", site_id, message) from None
        if year not in ok_years.get(site_id, set()):
            have = ", ".join(map(str, sorted(ok_years.get(site_id, set())))) or "none"
            raise InventoryInputError(
                "year", year, f"site {site_id} has no ok record for {year} (its years with one: {have})"
            )
    return chosen


def year_inventory(
    storage: Storage,
    year: int,
    site_ids: Sequence[str] | None = None,
    *,
    operator: str | None = None,
    contribution_date: dt.date | None = None,
) -> Any:
    """The merged ARTS inventory of a year across sites (:func:`export_sites`), by site and slump id.

    Raises as :func:`export_sites` and :func:`site_year_inventory`; a site-year that cannot be
    exported fails the whole inventory (no partial inventory).
    """
    creator = creator_lab(operator)
    contribution = _contribution(contribution_date)
    rows: list[dict[str, Any]] = []
    for site_id in export_sites(storage, year, site_ids):
        rows.extend(_site_year_rows(_load_site(storage, site_id, creator), storage, year, contribution))
    return inventory_frame(sorted(rows, key=lambda row: (row["site_id"], row["slump_id"])))


# --- files --------------------------------------------------------------------------------------------


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`; :class:`InventoryInputError` naming it otherwise."""
    if fmt not in FORMATS:
        raise InventoryInputError("format", fmt, f"{fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def _write(frame: Any, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "gpkg":
        frame.to_file(path, driver="GPKG", layer=GPKG_LAYER, engine="pyogrio", promote_to_multi=False, index=False)
    else:
        frame.to_file(path, driver="GeoJSON", engine="pyogrio", index=False)


def write_inventory(frame: Any, path: Path | str, fmt: str) -> Path:
    """Write an inventory to ``path`` as ``fmt`` (:data:`FORMATS`) atomically; return the path.

    The file is written beside ``path`` under a temporary name and renamed over it, so ``path`` is
    either the old file or the whole new one; nothing is left behind on failure.
    """
    check_format(fmt)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp{FORMATS[fmt][1]}")
    try:
        _write(frame, temporary, fmt)
        os.replace(temporary, target)
    finally:
        for leftover in (temporary, *(temporary.with_name(temporary.name + s) for s in ("-wal", "-shm", "-journal"))):
            leftover.unlink(missing_ok=True)
    return target


def inventory_bytes(frame: Any, fmt: str) -> bytes:
    """An inventory file's content as bytes (to store it as a blob next to ``rts.geojson``)."""
    check_format(fmt)
    with tempfile.TemporaryDirectory(prefix="rts-inventory-") as folder:
        path = write_inventory(frame, Path(folder) / f"inventory{FORMATS[fmt][1]}", fmt)
        return path.read_bytes()
