"""Per-slump tracking: a site's RTS objects linked from year to year, with stable ids, growth and fate.

Every ``ok`` site-year holds its RTS objects (``rts.geojson`` of its run, :mod:`rtsmonitor.objects`)
and its classified mask (``mask.tif``). Tracking follows each slump through the years of its site:
which object of this year continues which slump of the earlier years, which slumps are new, which
merged, split or vanished, and how fast each grows. It writes one row per slump and observed year
(table :data:`OBJECTS_TABLE`), the outlines as one GeoJSON (:func:`slumps_blob_name`) and three
counts on each site-year record (:func:`rtsmonitor.records.set_tracking_counts`).

Matching
--------
All geometry is in the site's UTM CRS. The *live* slumps are the slumps not yet vanished or merged,
each with its last observed outline. A live slump and an object of this year *overlap* when their
intersection covers at least :data:`MATCH_MIN_OVERLAP` of the smaller of the two (intersection over
the smaller object, not IoU). Slumps grow by headwall retreat (Lacelle et al. 2015), so a growing
slump's later outline contains most of its earlier one: the intersection over the smaller object
stays near 1 while the IoU falls to ``A_before / A_after`` (0.5 for a slump that doubled), and the
smaller partner of a merge overlaps the merged object by nearly 1 of itself but little of the
whole. 0.3 accepts a whole-object shift of one pixel even for the smallest object (the 0.1 ha
mapping unit, e.g. 2 x 5 pixels, keeps 5 of 10 pixels after a one-pixel shift across its short
side: 0.5; diagonally, 0.4), while an object that only grazes a slump, covering less than 30 % of the
smaller of the two, is not taken for its continuation.

The overlaps form a bipartite graph; its edges are paired greedily, largest intersection area
first (ties: smaller slump id, then object order), each slump and object at most once:

- a paired slump continues as its object (status ``active`` or ``stable``, see below);
- a live slump left unpaired whose overlaps all go to paired objects is ``merged`` into the slump
  of the object it overlaps most (``merged_into``; the survivor's row lists it in
  ``merged_from``). In a plain n:1 merge the survivor is the earlier slump with the largest
  intersection, i.e. the largest one when the merged object covers them all;
- an object left unpaired that overlaps a slump is a piece that split off: it gets a new id, status
  ``new`` and ``split_from`` = the slump it overlaps most (the largest piece keeps the old id);
- an object overlapping no live slump is ``new``;
- a live slump overlapping no object is ``vanished`` if this year's mask observed at least
  :data:`MIN_OBSERVED_FRACTION` of its last footprint (mask value other than 255); otherwise it was
  hidden (cloud, no data), gets no row this year and stays live. Vanished and merged are final: a
  slump seen again at the same place later is a new slump with a new id.

Years without a usable scene (``no-scene``) or whose processing ``failed`` have no rows and change
nothing. A year whose ``rts.geojson`` cannot be read (missing, not JSON, not a FeatureCollection of
polygons, or naming another site or year) is skipped the same way and reported in
:attr:`SiteTracking.broken_years`; its record's counts are cleared (``None``). A year whose
``mask.tif`` cannot be read makes no slump vanish (:attr:`SiteTracking.mask_problems`).

Growth and detection noise
--------------------------
Growth is the area change against the slump's previous observation divided by the years between
them (``growth_m2_per_yr``; a no-scene year in between makes the interval 2 years). A merged
slump's change is counted against the summed previous areas of the slumps it absorbed, and a slump
that split is counted together with its pieces, so merging and splitting alone are not growth.

The outline of a 10 m object is uncertain by about a pixel (:data:`EDGE_SHIFT_PX`): moving every
edge of a pixel outline out by one pixel of ``res_m`` adds ``perimeter_m * res_m`` plus ``res_m^2``
at each of its four net convex corners (exact for a simple outline on pixel edges). That area,
summed over the previous outlines of the comparison, is the noise threshold ``noise_m2``
(:func:`edge_shift_area_m2`); a slump is ``active`` (growing) when its area grew by more than it,
``stable`` otherwise. A slump that shrank by more than the noise is also ``stable`` (not growing),
its negative growth kept: a mapped scar shrinks when it stabilises and revegetates, or when the
classifier misses part of it, and neither is growth. A ``new`` row's noise is that of its own
outline (its area uncertainty).

What 10 m imagery can call growing: a headwall of width ``W`` retreating ``r`` m/yr adds about
``r * W`` m^2/yr, against a noise of about ``P * 10 m + 400 m^2`` with a perimeter ``P >= 2 W``. Lacelle
et al. (2015) measured headwall retreat of 7.2-26.7 m/yr. A slump 100 m wide and 100 m long (P =
400 m, noise 4400 m^2) adds 720-2670 m^2/yr: not growing from one year to the next at any of those
rates (it is after two years at the top rate). A slump 400 m wide and 50 m long (P = 900 m, noise
9400 m^2) retreating 26.7 m/yr adds 10 680 m^2/yr: growing. So year-to-year ``active`` marks only
fast slumps with long headwalls, roughly ``r > 20 m/yr * P / (2 W)``; the growth values of the others
are kept in the rows, where sums over several years show slower growth.

Rows and counts
---------------
One row per slump and observed year in which it is present, vanished or merged (none while hidden).
The record's ``rts_new`` counts the year's ``new`` slumps that did not split off a tracked one (so
the first observed year counts the whole inventory), ``rts_vanished`` the ``vanished`` ones and
``rts_growing`` the ``active`` ones. :func:`slumps_blob_name` holds the WGS84 outline of every row
of a present slump (not of vanished or merged rows, which have no outline of their own).

Ids
---
Slump ids (``s0001``, ``s0002``, ...) are numbered in the order slumps are first seen: by year, and
within a year from north to south, then west to east (centroid). They depend only on the site's
records and their blobs, so tracking again gives the same ids, and re-running one year changes only
the rows of that year and the later ones.

Concurrency
-----------
:func:`track_site` re-derives the whole site from its records (a few dozen polygons per year).
Workers that finish different years of one site at the same time each track the site after their
commit. Each computation starts from a snapshot of the site's records (year, status, run id), writes
rows, blob and counts, then reads the records again: if they changed meanwhile, it computes and
writes again (at most :data:`MAX_ROUNDS` times). A computation's output depends only on its
snapshot, so the rows two workers write from the same snapshot are the same, and a worker whose
snapshot went stale while it wrote always writes again from the newer one. Hence once every worker
has returned, the stored rows are those of the final records. Counts are written on condition of
the record's ETag and only onto the run they were computed for
(:func:`rtsmonitor.records.set_tracking_counts`). Writing counts changes a record's ETag: a run of
that site-year which read the ETag before must not take the change for another run's commit (its
conflict is only counts if the row still names the run it read at its start).

References
----------
Lacelle, D., Brooker, A., Fraser, R. H. and Kokelj, S. V. (2015). Distribution and growth of thaw
slumps in the Richardson Mountains-Peel Plateau region, northwestern Canada. Geomorphology 235,
40-51.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

import numpy as np
import rasterio
import rasterio.features
import shapely
from pyproj import CRS, Transformer
from rasterio.io import DatasetReader, MemoryFile
from rasterio.windows import Window
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from rtsmonitor.errors import ConflictError, NotFoundError, RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.inference import MASK_UNOBSERVED
from rtsmonitor.records import (
    RESULTS_CONTAINER,
    SiteYearRecord,
    read_records,
    read_result_blob,
    set_tracking_counts,
)
from rtsmonitor.registry import read_site
from rtsmonitor.storage import Entity, Storage

log = logging.getLogger(__name__)

OBJECTS_TABLE = "rtsobjects"
"""Table of the tracked slumps: PartitionKey = site id, RowKey = ``<slump_id>-<yyyy>``."""
SLUMPS_BLOB = "_tracking/{site_id}/slumps.geojson"
"""Name (in :data:`~rtsmonitor.records.RESULTS_CONTAINER`) of a site's slump outlines, see :func:`slumps_blob_name`."""

MATCH_MIN_OVERLAP = 0.3
"""Least intersection over the smaller object (a fraction) for a slump and an object to overlap."""
EDGE_SHIFT_PX = 1.0
"""Edge shift of an outline, in pixels, that is detection noise and not growth."""
MIN_OBSERVED_FRACTION = 0.5
"""Least fraction of a slump's last footprint a year's mask must observe for a missing slump to vanish."""
HEADWALL_RETREAT_M_PER_YR = (7.2, 26.7)
"""Range of measured RTS headwall retreat rates in m/yr (Lacelle et al. 2015), for scale."""
MAX_ROUNDS = 10
"""Most computations :func:`track_site` makes while the site's records keep changing under it."""
LONLAT_DECIMALS = 5
"""Decimal places of the centroid lon/lat in the rows (1e-5 deg is about 1 m)."""

SlumpStatus = Literal["new", "active", "stable", "vanished", "merged"]
SLUMP_STATUSES: tuple[str, ...] = get_args(SlumpStatus)
"""``new``: first seen (or split off); ``active``: grew by more than the noise; ``stable``: did not;
``vanished``: gone from an observed footprint; ``merged``: absorbed into another slump."""

FootprintCheck = Callable[[Sequence[BaseGeometry]], list[float]]
"""``observed(footprints)``: the fraction of each UTM footprint a year's mask observed; raises
:class:`~rtsmonitor.errors.RtsError` if the mask cannot be read."""


def slumps_blob_name(site_id: str) -> str:
    """The blob (in :data:`~rtsmonitor.records.RESULTS_CONTAINER`) of the site's slump outlines."""
    return SLUMPS_BLOB.format(site_id=site_id)


def edge_shift_area_m2(perimeter_m: float, res_m: float, parts: int = 1) -> float:
    """Area in m^2 that moving a pixel outline out by :data:`EDGE_SHIFT_PX` pixels adds.

    ``perimeter_m * d`` along the edges plus ``d^2`` at each of the four net convex corners of each
    of the ``parts`` outlines, with ``d = EDGE_SHIFT_PX * res_m`` (exact for simple outlines on pixel
    edges; an upper bound where dilated parts would touch).
    """
    d = EDGE_SHIFT_PX * res_m
    return perimeter_m * d + 4 * d * d * max(parts, 1)


@dataclass(frozen=True)
class TrackedObject:
    """One RTS object of one year as tracking sees it.

    Attributes
    ----------
    geometry : outline in the site's UTM CRS (metres).
    area_m2, perimeter_m : of the object (the ``rts.geojson`` properties, else of ``geometry``).
    parts : number of polygons of the outline.
    lonlat : centroid in WGS84 degrees.
    geometry_wgs84 : the GeoJSON geometry as read.

    """

    geometry: BaseGeometry
    area_m2: float
    perimeter_m: float
    parts: int
    lonlat: tuple[float, float]
    geometry_wgs84: Mapping[str, Any]


@dataclass(frozen=True)
class YearObjects:
    """The objects of one observed (ok, readable) year and a way to ask its mask what it observed."""

    year: int
    run_id: str
    objects: tuple[TrackedObject, ...]
    observed: FootprintCheck | None = None


@dataclass(frozen=True)
class SlumpYear:
    """One slump in one observed year: a row of :data:`OBJECTS_TABLE`.

    Areas in m^2 on the UTM grid, growth in m^2/yr against ``previous_year``; ``noise_m2`` is the
    edge-shift area the growth was compared with (module docstring); ``lon``/``lat`` the centroid
    (for vanished and merged slumps, that of the last outline). ``merged_from`` lists the slump ids
    absorbed this year, comma-separated.
    """

    site_id: str
    slump_id: str
    year: int
    status: SlumpStatus
    area_m2: float
    first_year: int
    last_year: int
    noise_m2: float
    lon: float
    lat: float
    growth_m2_per_yr: float | None = None
    previous_year: int | None = None
    merged_into: str | None = None
    merged_from: str | None = None
    split_from: str | None = None

    def __post_init__(self) -> None:
        """Check the status."""
        if self.status not in SLUMP_STATUSES:
            where = f"slump {self.site_id}/{self.slump_id} {self.year}"
            raise RtsError(f"{where}: status {self.status!r} is not one of {SLUMP_STATUSES}")

    @property
    def row_key(self) -> str:
        """``<slump_id>-<yyyy>``."""
        return slump_row_key(self.slump_id, self.year)

    def to_entity(self) -> Entity:
        """The table row (``None`` values are left out)."""
        values = {k: v for k, v in asdict(self).items() if k != "site_id" and v is not None}
        return {"PartitionKey": self.site_id, "RowKey": self.row_key, **values}

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> SlumpYear:
        """Inverse of :meth:`to_entity`: unknown properties are ignored, absent ones are ``None``."""
        names = {f.name for f in fields(cls)} - {"site_id"}
        values = {k: v for k, v in entity.items() if k in names}
        return cls(site_id=str(entity["PartitionKey"]), **values)


def slump_row_key(slump_id: str, year: int) -> str:
    """The RowKey of a slump in a year: ``<slump_id>-<yyyy>``."""
    return f"{slump_id}-{int(year):04d}"


@dataclass(frozen=True)
class TrackingCounts:
    """The year's new slumps (not split pieces), vanished slumps and growing (``active``) slumps."""

    new: int
    vanished: int
    growing: int

    def as_tuple(self) -> tuple[int, int, int]:
        """``(new, vanished, growing)``."""
        return self.new, self.vanished, self.growing


@dataclass(frozen=True)
class Tracks:
    """What :func:`track_years` derives: rows, the outlines of present slumps, counts per year."""

    rows: list[SlumpYear]
    outlines: dict[str, Mapping[str, Any]]
    counts: dict[int, TrackingCounts]
    mask_problems: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteTracking:
    """The result of :func:`track_site`.

    Attributes
    ----------
    rows : all rows of the site, by slump id and year.
    counts : per tracked year (ok and readable).
    broken_years : ok years whose ``rts.geojson`` could not be read, with the reason.
    mask_problems : years whose ``mask.tif`` could not be read (no slump vanished in them).
    rounds : computations made (more than 1 when the records changed meanwhile).

    """

    site_id: str
    rows: list[SlumpYear]
    counts: dict[int, TrackingCounts]
    broken_years: dict[int, str]
    mask_problems: dict[int, str]
    rounds: int


@dataclass
class _Live:
    """A slump not vanished or merged, and its last observation."""

    slump_id: str
    first_year: int
    last_year: int
    obj: TrackedObject


def _order_key(obj: TrackedObject) -> tuple[float, float, float]:
    """North to south, then west to east, then larger first (centroid in UTM, to the centimetre)."""
    centroid = obj.geometry.centroid
    return -round(centroid.y, 2), round(centroid.x, 2), -obj.area_m2


def _round(value: float, digits: int = 2) -> float:
    return float(round(value, digits))


def track_years(site_id: str, years: Sequence[YearObjects], res_m: float) -> Tracks:
    """Link the objects of a site's observed years into slumps (rules: module docstring).

    Parameters
    ----------
    site_id : for the rows.
    years : the ok years with readable objects, in any order (years without a usable scene left out).
    res_m : pixel size in metres, for the noise threshold.

    Returns
    -------
    The rows ordered by slump id and year, the WGS84 outline of each present row (by row key) and
    the counts of each year.

    """
    live: dict[str, _Live] = {}
    rows: list[SlumpYear] = []
    outlines: dict[str, Mapping[str, Any]] = {}
    counts: dict[int, TrackingCounts] = {}
    mask_problems: dict[int, str] = {}
    next_number = 1

    def noise(obj: TrackedObject) -> float:
        return edge_shift_area_m2(obj.perimeter_m, res_m, obj.parts)

    for observation in sorted(years, key=lambda y: y.year):
        year = observation.year
        objects = sorted(observation.objects, key=_order_key)
        slumps = [live[key] for key in sorted(live)]
        edges = _overlaps(slumps, objects)
        slump_of: dict[int, int] = {}  # object index -> slump index
        object_of: dict[int, int] = {}  # slump index -> object index
        for _, i, j in sorted(edges, key=lambda e: (-e[0], slumps[e[1]].slump_id, e[2])):
            if i not in object_of and j not in slump_of:
                object_of[i], slump_of[j] = j, i
        strongest_slump: dict[int, tuple[float, int]] = {}  # object -> (area, slump) of its largest overlap
        strongest_object: dict[int, tuple[float, int]] = {}
        for area, i, j in edges:
            if j not in strongest_slump or (area, -i) > (strongest_slump[j][0], -strongest_slump[j][1]):
                strongest_slump[j] = (area, i)
            if i not in strongest_object or (area, -j) > (strongest_object[i][0], -strongest_object[i][1]):
                strongest_object[i] = (area, j)
        merged_into: dict[int, int] = {}  # absorbed slump -> surviving slump
        for i in range(len(slumps)):
            if i not in object_of and i in strongest_object:
                merged_into[i] = slump_of[strongest_object[i][1]]
        split_from: dict[int, int] = {}  # object piece -> slump it split from
        for j in range(len(objects)):
            if j not in slump_of and j in strongest_slump:
                split_from[j] = strongest_slump[j][1]

        year_rows: list[SlumpYear] = []
        new_ids: dict[int, str] = {}
        for j, obj in enumerate(objects):
            if j in slump_of:
                continue
            slump_id = f"s{next_number:04d}"
            next_number += 1
            new_ids[j] = slump_id
            parent = slumps[split_from[j]].slump_id if j in split_from else None
            year_rows.append(_row(site_id, slump_id, year, "new", obj, year, noise(obj), split_from=parent))
            outlines[slump_row_key(slump_id, year)] = obj.geometry_wgs84
        for i, slump in enumerate(slumps):
            if i in object_of:
                obj = objects[object_of[i]]
                absorbed = sorted((slumps[k] for k, s in merged_into.items() if s == i), key=lambda s: s.slump_id)
                pieces = [objects[j] for j, s in split_from.items() if s == i]
                before = slump.obj.area_m2 + sum(s.obj.area_m2 for s in absorbed)
                after = obj.area_m2 + sum(p.area_m2 for p in pieces)
                threshold = noise(slump.obj) + sum(noise(s.obj) for s in absorbed)
                change = after - before
                status: SlumpStatus = "active" if change > threshold else "stable"
                year_rows.append(
                    _row(
                        site_id,
                        slump.slump_id,
                        year,
                        status,
                        obj,
                        slump.first_year,
                        threshold,
                        growth=change / (year - slump.last_year),
                        previous_year=slump.last_year,
                        merged_from=",".join(s.slump_id for s in absorbed) or None,
                    )
                )
                outlines[slump_row_key(slump.slump_id, year)] = obj.geometry_wgs84
        for i, survivor in sorted(merged_into.items()):
            into = slumps[survivor].slump_id
            year_rows.append(_gone(site_id, slumps[i], year, "merged", noise(slumps[i].obj), into))
        missing = [i for i in range(len(slumps)) if i not in object_of and i not in merged_into]
        vanished: list[int] = []
        if missing:
            if observation.observed is None:
                mask_problems[year] = "no mask to tell whether the missing slumps were observed"
            else:
                try:
                    fractions = observation.observed([slumps[i].obj.geometry for i in missing])
                except RtsError as exc:
                    mask_problems[year] = str(exc)
                else:
                    vanished = [i for i, f in zip(missing, fractions, strict=True) if f >= MIN_OBSERVED_FRACTION]
            if year in mask_problems:
                log.warning("%s %d: %s; no slump vanishes this year", site_id, year, mask_problems[year])
        for i in vanished:
            year_rows.append(_gone(site_id, slumps[i], year, "vanished", noise(slumps[i].obj)))

        # the new state: continued slumps move on, absorbed and vanished ones leave, new ones join
        for i, j in object_of.items():
            slump = slumps[i]
            live[slump.slump_id] = _Live(slump.slump_id, slump.first_year, year, objects[j])
        for i in (*merged_into, *vanished):
            del live[slumps[i].slump_id]
        for j, slump_id in new_ids.items():
            live[slump_id] = _Live(slump_id, year, year, objects[j])

        rows.extend(year_rows)
        counts[year] = TrackingCounts(
            new=sum(r.status == "new" and r.split_from is None for r in year_rows),
            vanished=sum(r.status == "vanished" for r in year_rows),
            growing=sum(r.status == "active" for r in year_rows),
        )
    rows.sort(key=lambda r: r.row_key)
    return Tracks(rows, outlines, counts, mask_problems)


def _overlaps(slumps: Sequence[_Live], objects: Sequence[TrackedObject]) -> list[tuple[float, int, int]]:
    """``(intersection area, slump index, object index)`` of the pairs that overlap (:data:`MATCH_MIN_OVERLAP`)."""
    if not slumps or not objects:
        return []
    tree = shapely.STRtree([o.geometry for o in objects])
    edges = []
    for i, slump in enumerate(slumps):
        before = slump.obj.geometry
        for j in sorted(int(k) for k in tree.query(before, predicate="intersects")):
            now = objects[j].geometry
            smaller = min(before.area, now.area)
            area = float(before.intersection(now).area)
            if smaller > 0 and area >= MATCH_MIN_OVERLAP * smaller:
                edges.append((area, i, j))
    return edges


def _row(
    site_id: str,
    slump_id: str,
    year: int,
    status: SlumpStatus,
    obj: TrackedObject,
    first_year: int,
    noise_m2: float,
    *,
    growth: float | None = None,
    previous_year: int | None = None,
    merged_from: str | None = None,
    split_from: str | None = None,
) -> SlumpYear:
    """The row of a slump present this year as ``obj``."""
    return SlumpYear(
        site_id=site_id,
        slump_id=slump_id,
        year=year,
        status=status,
        area_m2=_round(obj.area_m2),
        first_year=first_year,
        last_year=year,
        noise_m2=_round(noise_m2),
        lon=_round(obj.lonlat[0], LONLAT_DECIMALS),
        lat=_round(obj.lonlat[1], LONLAT_DECIMALS),
        growth_m2_per_yr=None if growth is None else _round(growth),
        previous_year=previous_year,
        merged_from=merged_from,
        split_from=split_from,
    )


def _gone(
    site_id: str, slump: _Live, year: int, status: SlumpStatus, noise_m2: float, merged_into: str | None = None
) -> SlumpYear:
    """The row of a slump that vanished or merged this year (area 0, at its last outline)."""
    return SlumpYear(
        site_id=site_id,
        slump_id=slump.slump_id,
        year=year,
        status=status,
        area_m2=0.0,
        first_year=slump.first_year,
        last_year=slump.last_year,
        noise_m2=_round(noise_m2),
        lon=_round(slump.obj.lonlat[0], LONLAT_DECIMALS),
        lat=_round(slump.obj.lonlat[1], LONLAT_DECIMALS),
        previous_year=slump.last_year,
        merged_into=merged_into,
    )


# --- reading a year ----------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    """A finite, non-negative number, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def read_year_objects(storage: Storage, record: SiteYearRecord, grid: SiteGrid) -> YearObjects:
    """The objects of an ok site-year from its ``rts.geojson``, projected to the site's UTM CRS.

    Raises
    ------
    RtsError
        If the blob is missing or is not a FeatureCollection of polygons of this site-year (the
        message names the blob and the problem).

    """
    if record.status != "ok" or record.results_prefix is None or record.run_id is None:
        raise RtsError(f"record {record.site_id}/{record.year} is not an ok record with a run")
    name = record.results_prefix + "rts.geojson"
    where = f"{RESULTS_CONTAINER}/{name}"
    data = read_result_blob(storage, name)
    try:
        collection = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RtsError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
        raise RtsError(f"{where} is not a GeoJSON FeatureCollection")
    features = collection.get("features")
    if not isinstance(features, list):
        raise RtsError(f"{where} has no 'features' list")
    extra = collection.get("properties")
    if isinstance(extra, dict):
        named = (extra.get("site_id", record.site_id), extra.get("year", record.year))
        if named != (record.site_id, record.year):
            raise RtsError(f"{where} holds the objects of {named[0]} {named[1]}, not {record.site_id} {record.year}")
    to_utm = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_epsg(grid.epsg), always_xy=True)
    to_wgs84 = Transformer.from_crs(CRS.from_epsg(grid.epsg), CRS.from_epsg(4326), always_xy=True)
    objects = []
    for number, feature in enumerate(features, start=1):
        try:
            geometry_wgs84 = feature["geometry"]
            lonlat_geometry = shape(geometry_wgs84)
        except (TypeError, KeyError, IndexError, ValueError, AttributeError, shapely.errors.GEOSException) as exc:
            raise RtsError(f"{where}: feature {number} has no readable geometry ({exc})") from exc
        if not isinstance(lonlat_geometry, Polygon | MultiPolygon) or lonlat_geometry.is_empty:
            raise RtsError(f"{where}: feature {number} is a {lonlat_geometry.geom_type}, not a (Multi)Polygon")
        utm = shapely.transform(lonlat_geometry, to_utm.transform, interleaved=False)
        if not math.isfinite(utm.area):
            raise RtsError(f"{where}: feature {number} has coordinates outside the site's UTM zone")
        if not utm.is_valid:
            utm = shapely.make_valid(utm)  # coordinates rounded in degrees can make touching parts cross
        properties = feature.get("properties")
        if not isinstance(properties, dict):
            properties = {}
        area = _number(properties.get("area_m2"))
        perimeter = _number(properties.get("perimeter_m"))
        centroid = utm.centroid
        lon, lat = to_wgs84.transform(centroid.x, centroid.y)
        objects.append(
            TrackedObject(
                geometry=utm,
                area_m2=float(utm.area) if area is None else area,
                perimeter_m=float(utm.length) if perimeter is None else perimeter,
                parts=len(lonlat_geometry.geoms) if isinstance(lonlat_geometry, MultiPolygon) else 1,
                lonlat=(float(lon), float(lat)),
                geometry_wgs84=geometry_wgs84,
            )
        )
    mask_name = record.results_prefix + "mask.tif"
    return YearObjects(record.year, record.run_id, tuple(objects), _mask_check(storage, mask_name, grid))


def _mask_check(storage: Storage, name: str, grid: SiteGrid) -> FootprintCheck:
    """A :data:`FootprintCheck` reading the mask blob ``name`` (read only when asked)."""

    def observed(footprints: Sequence[BaseGeometry]) -> list[float]:
        where = f"{RESULTS_CONTAINER}/{name}"
        data = read_result_blob(storage, name)
        try:
            with MemoryFile(data) as memory, memory.open() as src:
                if src.crs is None or src.crs.to_epsg() != grid.epsg:
                    raise RtsError(f"{where} is in {src.crs}, not in the site's EPSG:{grid.epsg}")
                return [_observed_fraction(src, footprint) for footprint in footprints]
        except rasterio.errors.RasterioError as exc:
            raise RtsError(f"{where} cannot be read: {exc}") from exc

    return observed


def _observed_fraction(src: DatasetReader, footprint: BaseGeometry) -> float:
    """Fraction of the footprint's pixels (centres inside; all touched for a sliver) not unobserved."""
    transform = src.transform
    x_min, y_min, x_max, y_max = footprint.bounds
    col0 = math.floor((x_min - transform.c) / transform.a)
    col1 = math.ceil((x_max - transform.c) / transform.a)
    row0 = math.floor((transform.f - y_max) / -transform.e)
    row1 = math.ceil((transform.f - y_min) / -transform.e)
    shape_ = (max(row1 - row0, 1), max(col1 - col0, 1))
    window = Window(col0, row0, shape_[1], shape_[0])
    values = np.full(shape_, MASK_UNOBSERVED, dtype=np.uint8)  # outside the mask: unobserved
    r0, r1 = max(row0, 0), min(row0 + shape_[0], src.height)
    c0, c1 = max(col0, 0), min(col0 + shape_[1], src.width)
    if r0 < r1 and c0 < c1:
        part = Window(c0, r0, c1 - c0, r1 - r0)
        values[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = src.read(1, window=part)
    inside = rasterio.features.geometry_mask(
        [footprint], out_shape=shape_, transform=src.window_transform(window), invert=True
    )
    if not inside.any():
        inside = rasterio.features.geometry_mask(
            [footprint], out_shape=shape_, transform=src.window_transform(window), invert=True, all_touched=True
        )
    total = int(np.count_nonzero(inside))
    return int(np.count_nonzero(inside & (values != MASK_UNOBSERVED))) / total if total else 0.0


# --- the site in storage -----------------------------------------------------------------------------


def _snapshot(records: Sequence[SiteYearRecord]) -> tuple[tuple[int, str, str | None], ...]:
    """What the tracking of a site depends on: each record's year, status and run."""
    return tuple((r.year, r.status, r.run_id) for r in sorted(records, key=lambda r: r.year))


def track_site(storage: Storage, site_id: str, *, grid: SiteGrid | None = None) -> SiteTracking:
    """Track the site's slumps from its records and store the rows, the outlines and the counts.

    Re-derives every year from the site's ok records (idempotent: tracking again writes nothing
    new), upserts the rows of :data:`OBJECTS_TABLE` that changed and deletes those that no longer
    exist, writes :func:`slumps_blob_name` and sets ``rts_new`` / ``rts_vanished`` / ``rts_growing``
    on each ok record (``None`` on a year whose objects could not be read). Computes again while the
    records change under it (module docstring, Concurrency).

    Parameters
    ----------
    storage : where the records, products and rows are.
    site_id : the site.
    grid : the site's grid; by default that of its registered config.

    Raises
    ------
    ConflictError
        If the site's records changed during each of :data:`MAX_ROUNDS` computations.
    NotFoundError
        If no grid is given and the site is not registered.

    """
    grid = grid or read_site(storage, site_id).config.grid()
    for rounds in range(1, MAX_ROUNDS + 1):
        records = read_records(storage, site_id)
        snapshot = _snapshot(records)
        years: list[YearObjects] = []
        broken: dict[int, str] = {}
        for record in records:
            if record.status != "ok":
                continue
            try:
                years.append(read_year_objects(storage, record, grid))
            except RtsError as exc:
                broken[record.year] = str(exc)
                log.warning("%s %d: objects not tracked: %s", site_id, record.year, exc)
        tracks = track_years(site_id, years, grid.res_m)
        _write_rows(storage, site_id, tracks.rows)
        _write_outlines(storage, site_id, tracks)
        counts_current = all(
            set_tracking_counts(
                storage,
                site_id,
                record.year,
                str(record.run_id),
                None if record.year in broken else tracks.counts[record.year].as_tuple(),
            )
            for record in records
            if record.status == "ok"
        )
        if counts_current and _snapshot(read_records(storage, site_id)) == snapshot:
            return SiteTracking(site_id, tracks.rows, tracks.counts, broken, tracks.mask_problems, rounds)
        log.info("%s: records changed while tracking (round %d); tracking again", site_id, rounds)
    raise ConflictError(f"site {site_id}: records changed during each of {MAX_ROUNDS} trackings; track it again")


def _write_rows(storage: Storage, site_id: str, rows: Sequence[SlumpYear]) -> None:
    """Make the site's rows of :data:`OBJECTS_TABLE` exactly ``rows`` (writing only what differs)."""
    stored = {str(e["RowKey"]): e for e in storage.tables.query(OBJECTS_TABLE, site_id)}
    for row in rows:
        entity = row.to_entity()
        if stored.get(row.row_key) != entity:
            storage.tables.upsert(OBJECTS_TABLE, entity)
    wanted = {row.row_key for row in rows}
    for key in sorted(set(stored) - wanted):
        storage.tables.delete(OBJECTS_TABLE, site_id, key)


def slumps_geojson(tracks: Tracks) -> dict[str, Any]:
    """The outlines of the present (not vanished or merged) slumps as a WGS84 FeatureCollection."""
    features = [
        {
            "type": "Feature",
            "id": row.row_key,
            "geometry": tracks.outlines[row.row_key],
            "properties": {
                "slump_id": row.slump_id,
                "year": row.year,
                "status": row.status,
                "area_m2": row.area_m2,
                "growth_m2_per_yr": row.growth_m2_per_yr,
                "first_year": row.first_year,
            },
        }
        for row in tracks.rows
        if row.row_key in tracks.outlines
    ]
    return {"type": "FeatureCollection", "features": features}


def _write_outlines(storage: Storage, site_id: str, tracks: Tracks) -> None:
    """Write :func:`slumps_blob_name` if its content changed."""
    name = slumps_blob_name(site_id)
    data = json.dumps(slumps_geojson(tracks), separators=(",", ":")).encode()
    try:
        if storage.blobs.read_bytes(RESULTS_CONTAINER, name) == data:
            return
    except NotFoundError:
        pass
    storage.blobs.write_bytes(RESULTS_CONTAINER, name, data, content_type="application/geo+json")


def read_slump_rows(storage: Storage, site_id: str) -> list[SlumpYear]:
    """The site's rows of :data:`OBJECTS_TABLE`, by slump id and year."""
    return [SlumpYear.from_entity(entity) for entity in storage.tables.query(OBJECTS_TABLE, site_id)]
