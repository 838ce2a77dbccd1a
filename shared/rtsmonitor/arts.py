"""The ARTS community metadata format for RTS polygons: its fields, its UID rule and a validator.

Source: the ARTS data set (Arctic Retrogressive Thaw Slumps, github.com/whrc/ARTS, snapshot
``8477d61``, CC0 1.0): its field list ``Metadata_Format_Summary.csv`` (copied to
``shared/data/arts/``), its format checks and UID rule in ``src/ARTS/dataformatting.py``
(``run_formatting_checks``, ``check_uids``, ``seed_gen``) and its relationship rules in
``Tutorial/data_formatting.ipynb``. Cite: Yang, Y., Rodenhizer, H., Rogers, B. M. et al. (2025). A
collaborative and scalable geospatial data set for Arctic retrogressive thaw slumps with data
standards. Scientific Data 12, 18.

UID
---
ARTS ``seed_gen`` (``src/ARTS/dataformatting.py`` at commit 8477d61) rounds ``CentroidLat`` and
``CentroidLon`` with ``np.round(..., 5)``, writes ``BaseMapResolution`` without a decimal point when
it is a whole number (``10.0`` -> ``"10"``, else ``str(float)``), and joins the nine required fields,
each as ``str``, with nothing between them in the order ``CentroidLat, CentroidLon, RegionName,
CreatorLab, BaseMapDate, BaseMapSource, BaseMapResolution, TrainClass, LabelType``. The UID is
``str(uuid.uuid5(uuid.NAMESPACE_DNS, seed))`` (``Tutorial/data_formatting.ipynb``, cell "Generate
UIDs"). :func:`arts_uid` reproduces the UIDs that notebook prints, e.g. seed
``70.0165568.33926Yamal-GydanRodenhizer2023-05-01,2023-09-30WorldView-24PositivePolygon`` ->
``697680a4-9707-59fb-aabb-540308cf0705``.

Relationships from our tracking
-------------------------------
ARTS records how a polygon relates to the earlier polygons it intersects: each intersecting UID goes
into exactly one relationship field of the polygon's row, several UIDs joined by ``","`` with no
spaces (:data:`UID_SEPARATOR`). Its rules (tutorial notebook) and what they are in our slump
tracking (:mod:`rtsmonitor.tracking`), for the polygon of slump ``s`` in year ``Y``:

- ``RepeatRTS`` (same RTS, delineated at another time; used by the ARTS code though not in the field
  summary, so an extra column here): ``s``'s own previous polygon, when ``s`` continued without a
  merge or a split.
- ``MergedRTS`` (several RTS merged to form this one): when ``s`` absorbed slumps this year
  (``merged_from``), the previous polygons of ``s`` and of every absorbed slump.
- ``SplitRTS`` (a single RTS split into this and others): for a piece that split off (``split_from``
  = ``p``) and for ``p`` itself (the largest piece keeps the id), ``p``'s previous polygon.
- ``StabilizedRTS`` (the intersecting polygon is a stabilized scar as of this polygon's imagery): for
  a ``new`` slump, the last polygon of each slump that ``vanished`` in a year up to ``Y`` and whose
  last outline it overlaps. A slump the classifier no longer sees on an observed footprint is the
  closest we have to a stabilized (revegetated) scar; our ``stable`` status only means "not growing
  beyond the noise" and the slump is still mapped, so it is not a stabilized scar.
- ``NewRTS`` (the intersecting polygon is a new RTS that formed on top of this one): the mirror of
  ``StabilizedRTS`` on the last polygon of a slump that vanished later: the polygons of the ``new``
  slumps of the vanishing year or later that overlap it. So when ``A`` is in ``B``'s
  ``StabilizedRTS``, ``B`` is in ``A``'s ``NewRTS``, and an export of an earlier year gains
  ``NewRTS`` entries as later years are processed.
- ``UnknownRelationship``: any other polygon of the previous tracked year that this polygon overlaps
  (tracking found the overlap too small, under :data:`rtsmonitor.tracking.MATCH_MIN_OVERLAP` of the
  smaller object, to call them one slump).

"Overlaps" means an intersection of at least half a pixel
(:data:`rtsmonitor.inventory.RELATION_MIN_OVERLAP_PX`): outlines on pixel edges that only touch
leave slivers of a few m^2 after the WGS84 round trip, while a real overlap is at least one pixel.

Other fields
------------
``RegionName``: the region of the paper sites (:data:`PAPER_REGIONS`, the ``region`` of their
Nitze et al. 2021 labels in ARTS), else the site's name. ``CreatorLab``: :data:`SYSTEM_CREATOR`,
followed by the operator in parentheses when one is given (:func:`creator_lab`); it enters the UID,
so one operator's exports keep their UIDs. ``BaseMapSource`` is :data:`BASEMAP_SOURCE`,
``BaseMapResolution`` the site grid's pixel size (10 m), ``TrainClass`` ``Positive`` and
``LabelType`` ``Polygon`` (every mapped slump is a positive polygon).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ARTS_SOURCE = "github.com/whrc/ARTS, snapshot 8477d61 (CC0 1.0)"
"""Where the format comes from."""
ARTS_CITATION = (
    "Yang, Y., Rodenhizer, H., Rogers, B. M. et al. (2025). A collaborative and scalable geospatial data set for "
    "Arctic retrogressive thaw slumps with data standards. Scientific Data 12, 18."
)
"""How to cite the ARTS data set and its format."""

UID_NAMESPACE = uuid.NAMESPACE_DNS
"""The uuid5 namespace ARTS uses (``uuid.uuid5(uuid.NAMESPACE_DNS, name=seed)``)."""
UID_SEPARATOR = ","
"""Between the UIDs of one relationship field (ARTS: "separated by a comma (no spaces)")."""
CENTROID_DECIMALS = 5
"""Decimal places of CentroidLat/CentroidLon in degrees (ARTS: "round off to 5 decimal places"; about 1 m)."""

BASEMAP_SOURCE = "Sentinel-2 L2A"
"""BaseMapSource of our polygons: the Sentinel-2 Level-2A surface reflectance they were mapped on."""
TRAIN_CLASSES = ("Positive", "Negative")
"""Allowed TrainClass values: "'Positive' for genuine RTS and 'Negative' for background"."""
LABEL_TYPES = ("Polygon", "BoundingBox")
"""Allowed LabelType values: the two kinds of digitisation the ARTS field summary names."""
POSITIVE = "Positive"
"""TrainClass of a mapped slump."""
POLYGON = "Polygon"
"""LabelType of a mapped slump."""

SYSTEM_CREATOR = "rtsmonitor"
"""CreatorLab of our polygons: the system that mapped them (an operator is added by :func:`creator_lab`)."""

PAPER_REGIONS: dict[str, str] = {
    "herschel": "Herschel",
    "horton01": "Horton",
    "horton02": "Horton",
    "kolguev01": "Kolguev",
    "kolguev02": "Kolguev",
    "lena": "Lena",
}
"""RegionName of the paper sites (Rustemeyer et al. 2022), by site id: the ``region`` of their Nitze
et al. 2021 labels as ARTS holds them (``shared/data/labels``)."""

Required = Literal["True", "Generated", "False"]
Kind = Literal["latitude", "longitude", "text", "dates", "resolution", "choice", "uid_list", "date", "uid", "area"]


@dataclass(frozen=True)
class ArtsField:
    """One field of the ARTS format: the published summary row and the rule :func:`arts_problems` checks.

    Attributes
    ----------
    name, format, required, description : as in ``Metadata_Format_Summary.csv`` (``required``:
        ``"True"`` the user supplies it, ``"Generated"`` the formatting makes it, ``"False"`` optional).
    kind : which check applies (:func:`arts_problems`).
    allowed : the allowed values of a ``choice`` field.

    """

    name: str
    format: str
    required: Required
    description: str
    kind: Kind
    allowed: tuple[str, ...] = ()


ARTS_FIELDS: tuple[ArtsField, ...] = (
    ArtsField(
        "CentroidLat",
        "Decimal Degrees",
        "True",
        "Polygon centroid latitude in EPSG:4326, round off to 5 decimal places",
        "latitude",
    ),
    ArtsField(
        "CentroidLon",
        "Decimal Degrees",
        "True",
        "Polygon centroid longitude in EPSG:4326, round off to 5 decimal places",
        "longitude",
    ),
    ArtsField("RegionName", "String", "True", "Name of the geographical region", "text"),
    ArtsField("CreatorLab", "String", "True", "Data creator and associated organization", "text"),
    ArtsField(
        "BaseMapDate",
        "String",
        "True",
        "Date of base map used for RTS delineation in YYYY-MM-DD for a single date, range of dates should be "
        "separated by a comma",
        "dates",
    ),
    ArtsField("BaseMapSource", "String", "True", "Name of the satellite sensor used for RTS delineation", "text"),
    ArtsField(
        "BaseMapResolution",
        "Number",
        "True",
        "Resolution of the imagery used for RTS delineation (meters)",
        "resolution",
    ),
    ArtsField(
        "TrainClass",
        "String",
        "True",
        "'Positive\u2019 for genuine RTS and \u2018Negative\u2019 for background",
        "choice",
        TRAIN_CLASSES,
    ),
    ArtsField(
        "LabelType",
        "String",
        "True",
        "Type of digitisation, e.g. \u2018Polygon\u2019, \u2018BoundingBox\u2019",
        "choice",
        LABEL_TYPES,
    ),
    ArtsField("MergedRTS", "String", "Generated", "UIDs of intersecting RTS that merged into one RTS", "uid_list"),
    ArtsField("SplitRTS", "String", "Generated", "UID of RTS that split into multiple RTS", "uid_list"),
    ArtsField(
        "NewRTS",
        "String",
        "Generated",
        "UIDs of intersecting RTS that formed on top of a stabilized RTS scar",
        "uid_list",
    ),
    ArtsField("StabilizedRTS", "String", "Generated", "UIDs of intersecting stabilized RTS scars", "uid_list"),
    ArtsField(
        "UnknownRelationship",
        "String",
        "Generated",
        "UIDs of intersecting RTS with unknown relationship",
        "uid_list",
    ),
    ArtsField(
        "ContributionDate",
        "String",
        "Generated",
        "Date of the contribution to the ARTS main file in YYYY-MM-DD",
        "date",
    ),
    ArtsField(
        "UID",
        "36-character alphanumeric string",
        "Generated",
        "Unique identifier generated using uuid5 by concatenating all \u2018Required-True\u2019 fields as a single "
        "string",
        "uid",
    ),
    ArtsField("BaseMapID", "String", "False", "Image ID if a single image was used in polygon delineation", "text"),
    ArtsField("Area", "Number", "False", "Area of the RTS polygon (m2)", "area"),
    ArtsField("Notes", "String", "False", "Notes from the CreatorLab", "text"),
)
"""The ARTS fields in the order of the published summary, with the rule each must satisfy."""

FIELDS_BY_NAME: dict[str, ArtsField] = {f.name: f for f in ARTS_FIELDS}
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in ARTS_FIELDS if f.required == "True")
"""The nine fields a contributor supplies, in the order ``seed_gen`` joins them into the UID seed."""
GENERATED_FIELDS: tuple[str, ...] = tuple(f.name for f in ARTS_FIELDS if f.required == "Generated")
OPTIONAL_FIELDS: tuple[str, ...] = tuple(f.name for f in ARTS_FIELDS if f.required == "False")
RELATIONSHIP_FIELDS: tuple[str, ...] = ("MergedRTS", "SplitRTS", "NewRTS", "StabilizedRTS", "UnknownRelationship")
"""The generated relationship fields of the summary (module docstring: what each holds here)."""
REPEAT_FIELD = "RepeatRTS"
"""The ARTS code's relationship of repeat delineations of one RTS (not in the summary; an extra column here)."""
REPEAT_RULE = ArtsField(REPEAT_FIELD, "String", "False", "UIDs of earlier delineations of the same RTS", "uid_list")
"""The rule of :data:`REPEAT_FIELD`, checked when a row has it."""

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def region_name(site_id: str, site_name: str) -> str:
    """RegionName of a site: its paper region (:data:`PAPER_REGIONS`), else its name."""
    return PAPER_REGIONS.get(site_id, site_name)


def creator_lab(operator: str | None = None) -> str:
    """CreatorLab: :data:`SYSTEM_CREATOR`, with the operator (person or organisation) in parentheses if given."""
    who = (operator or "").strip()
    return f"{SYSTEM_CREATOR} ({who})" if who else SYSTEM_CREATOR


def _seed_number(value: float) -> str:
    """A centroid as ``seed_gen`` writes it: ``np.round(value, 5)`` as ``str`` (``69.1``, ``-139.00012``)."""
    return str(float(np.round(np.float64(value), CENTROID_DECIMALS)))


def _seed_resolution(value: float) -> str:
    """BaseMapResolution as ``seed_gen`` writes it: without decimal point when whole (``10``), else ``str``."""
    number = float(value)
    return str(int(number)) if number == int(number) else str(number)


def uid_seed(fields: Mapping[str, Any]) -> str:
    """The string ARTS hashes into the UID: the nine required fields joined, formatted as ``seed_gen`` does."""
    parts = []
    for name in REQUIRED_FIELDS:
        value = fields[name]
        if name in ("CentroidLat", "CentroidLon"):
            parts.append(_seed_number(value))
        elif name == "BaseMapResolution":
            parts.append(_seed_resolution(value))
        else:
            parts.append(str(value))
    return "".join(parts)


def arts_uid(fields: Mapping[str, Any]) -> str:
    """The ARTS UID of a polygon: ``uuid5(NAMESPACE_DNS, uid_seed(fields))`` as a 36-character string.

    ``fields`` needs the nine :data:`REQUIRED_FIELDS`; the rule is ``seed_gen`` of
    ``src/ARTS/dataformatting.py`` (whrc/ARTS, commit 8477d61) and is spelled out in the module docstring.
    """
    return str(uuid.uuid5(UID_NAMESPACE, uid_seed(fields)))


def join_uids(uids: Iterable[str]) -> str:
    """A relationship field: the UIDs in order, without repeats, joined by :data:`UID_SEPARATOR` ("" if none)."""
    return UID_SEPARATOR.join(dict.fromkeys(uids))


# --- validation ---------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _is_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _uid_problem(text: str) -> str | None:
    """Why ``text`` is not a UID of the ARTS form (36 characters, 8-4-4-4-12 lowercase hex, uuid5), or None."""
    if len(text) != 36 or not _UID.fullmatch(text):
        return "is not a 36-character 8-4-4-4-12 lowercase hexadecimal UUID"
    if uuid.UUID(text).version != 5:
        return "is not a version-5 (uuid5) UUID"
    return None


def _field_problem(rule: ArtsField, value: Any) -> str | None:
    """Why ``value`` breaks the rule of its field, or None (the UID's agreement is checked separately)."""
    if rule.required == "False" and _is_missing(value):
        return None
    if rule.kind in ("latitude", "longitude"):
        limit = 90.0 if rule.kind == "latitude" else 180.0
        if not _is_number(value) or not math.isfinite(float(value)):
            return "is not a finite number in decimal degrees"
        if not isinstance(value, float | np.floating):
            return "is not a float (ARTS checks for float64)"
        if not -limit <= float(value) <= limit:
            return f"is outside [-{limit:g}, {limit:g}] degrees"
        if float(np.round(np.float64(value), CENTROID_DECIMALS)) != float(value):
            return f"has more than {CENTROID_DECIMALS} decimal places"
        return None
    if rule.kind in ("resolution", "area"):
        if not _is_number(value) or not math.isfinite(float(value)):
            return "is not a finite number"
        if rule.kind == "resolution" and not isinstance(value, float | np.floating):
            return "is not a float (ARTS checks for float64)"
        if float(value) < 0 or (rule.kind == "resolution" and float(value) == 0):
            return "is not positive" if rule.kind == "resolution" else "is negative"
        return None
    if not isinstance(value, str):
        return "is not a string"
    if rule.kind == "uid_list":
        if value == "":
            return None
        parts = value.split(UID_SEPARATOR)
        for part in parts:
            problem = _uid_problem(part)
            if problem:
                return f"holds {part!r}, which {problem} (UIDs joined by ',' without spaces)"
        if len(set(parts)) != len(parts):
            return "lists a UID twice"
        return None
    if value.strip() == "":
        return "is empty" if rule.required != "False" else None
    if value != value.strip():
        return "has leading or trailing spaces"
    if rule.kind == "choice" and value not in rule.allowed:
        return f"is not one of {', '.join(rule.allowed)}"
    if rule.kind == "date" and not _is_date(value):
        return "is not a date YYYY-MM-DD"
    if rule.kind == "dates":
        dates = value.split(",")
        if len(dates) > 2 or not all(_is_date(d) for d in dates):
            return "is not one date YYYY-MM-DD or a range of two joined by a comma"
        if len(dates) == 2 and dates[0] > dates[1]:
            return "is a range that ends before it starts"
    if rule.kind == "uid":
        return _uid_problem(value)
    return None


def _rows_and_columns(frame_or_rows: Any) -> tuple[list[Mapping[str, Any]], list[str] | None]:
    """The rows as mappings, and the frame's columns (None for plain rows: checked row by row)."""
    if hasattr(frame_or_rows, "columns") and hasattr(frame_or_rows, "to_dict"):
        columns = [str(c) for c in frame_or_rows.columns]
        return list(frame_or_rows.to_dict("records")), columns
    return [dict(row) for row in frame_or_rows], None


def arts_problems(frame_or_rows: Any, *, fields: Sequence[ArtsField] = ARTS_FIELDS) -> list[str]:
    """Every way the rows break the ARTS format rules, one line each (empty: the rows conform).

    Checks, per :data:`ARTS_FIELDS`: the required and generated fields are present and not empty
    (optional ones may be missing or NaN); CentroidLat/CentroidLon are floats within +-90 / +-180
    with at most 5 decimals; BaseMapDate is one date YYYY-MM-DD or a range of two joined by a comma;
    BaseMapResolution is a positive float; TrainClass and LabelType take allowed values; the
    relationship fields are "" or UIDs joined by "," (no spaces, no repeats, not the row's own UID);
    ContributionDate is a date; UID is a 36-character uuid5 equal to :func:`arts_uid` of the row's
    required fields and unique among the rows; Area is a non-negative number. Dates must be
    zero-padded YYYY-MM-DD as the summary says (upstream's ``check_basemap_date`` parses with
    ``strptime``, which also lets ``2022-9-30`` through).

    Parameters
    ----------
    frame_or_rows : a (Geo)DataFrame, or an iterable of mappings (field name -> value). Columns
        beyond the ARTS fields are ignored.
    fields : the rules (default: all of the ARTS format).

    """
    rows, columns = _rows_and_columns(frame_or_rows)
    problems: list[str] = []
    absent: set[str] = set()
    if columns is not None:
        for rule in fields:
            if rule.required != "False" and rule.name not in columns:
                kind = "required" if rule.required == "True" else "generated"
                problems.append(f"column {rule.name} is missing (a {kind} field)")
                absent.add(rule.name)
    seen_uids: dict[str, int] = {}
    for number, row in enumerate(rows):
        for rule in fields:
            if rule.name in absent:
                continue
            if rule.name not in row:
                if rule.required != "False":
                    problems.append(f"row {number}: {rule.name} is missing")
                continue
            problem = _field_problem(rule, row[rule.name])
            if problem:
                problems.append(f"row {number}: {rule.name}: {row[rule.name]!r} {problem}")
        if REPEAT_FIELD in row:
            problem = _field_problem(REPEAT_RULE, row[REPEAT_FIELD])
            if problem:
                problems.append(f"row {number}: {REPEAT_FIELD}: {row[REPEAT_FIELD]!r} {problem}")
        uid = row.get("UID")
        if isinstance(uid, str) and "UID" in {f.name for f in fields}:
            if all(name in row and _field_problem(FIELDS_BY_NAME[name], row[name]) is None for name in REQUIRED_FIELDS):
                expected = arts_uid(row)
                if uid != expected:
                    problems.append(f"row {number}: UID: {uid!r} is not uuid5 of the required fields ({expected!r})")
            if uid in seen_uids:
                problems.append(f"row {number}: UID: {uid!r} repeats row {seen_uids[uid]}")
            seen_uids.setdefault(uid, number)
            for name in (*RELATIONSHIP_FIELDS, REPEAT_FIELD):
                related = row.get(name)
                if isinstance(related, str) and uid in related.split(UID_SEPARATOR):
                    problems.append(f"row {number}: {name} lists the row's own UID")
    return problems
