"""The yearly record of one site: RTS area, count and carbon, as a row of the records table.

One row per site-year (table :data:`RECORDS_TABLE`, PartitionKey = site id, RowKey = year). A row
is written only after the blobs it points to (``results_prefix``), and a re-run replaces it, so a
reader always finds one row per site-year and every blob that row names.

Several runs of one site-year may overlap (the queue delivers at least once). Each run reads the
row's ETag before it starts (:func:`read_record_versioned`) and writes its row only if the ETag is
unchanged (:func:`commit_record`): the first run to finish wins, a later one finds it changed,
deletes its own blobs and keeps the winner's row. A run id starts with the run's start time, and
after its commit a run deletes only the runs that started *before* it (:func:`prune_runs`): those
read the ETag before the commit changed it, so none of them can commit any more.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from rtsmonitor.errors import ConflictError, NotFoundError, RtsError
from rtsmonitor.storage import Entity, Storage

RECORDS_TABLE = "rtsrecords"
"""Table of the site-year records (DESIGN.md)."""
RESULTS_CONTAINER = "results"
"""Blob container of the per-site-year products: ``<site_id>/<year>/<run_id>/...``."""

Status = Literal["ok", "no-scene", "failed"]
STATUSES: tuple[str, ...] = get_args(Status)
"""``ok``: processed; ``no-scene``: no usable summer scene (``reason`` says why); ``failed``: an error
the retries did not overcome (``reason`` holds it)."""


@dataclass(frozen=True)
class SiteYearRecord:
    """What the monitor found for one site in one summer.

    Areas are in m^2 on the site's UTM grid; carbon is the net loss to the atmosphere (positive =
    source) in t C/yr and t CO2/yr after Turetsky et al. 2020 (see :mod:`rtsmonitor.carbon`); every
    ``*_err`` is the +- uncertainty of the value before it. ``model_note`` says when other years of
    the site were processed with another model (:func:`model_mix_note`). ``rts_new``,
    ``rts_vanished`` and ``rts_growing`` count the year's slumps by their tracked fate; slump
    tracking (:mod:`rtsmonitor.tracking`) sets them after the commit (:func:`set_tracking_counts`),
    so they are ``None`` until it has run, and for a year whose objects it could not read.

    ``rts_area_high_m2``, ``rts_area_medium_m2`` and ``rts_area_low_m2`` split ``rts_area_m2`` by the
    objects' confidence tiers (:mod:`rtsmonitor.tiers`; they add up to it). ``rts_filtered`` (JSON)
    counts the objects the site's false-positive filters removed, per enabled filter and in all
    (``removed``; :func:`rtsmonitor.filters.removal_counts`); the tier and filter fields are ``None``
    in records made before they existed.

    ``stable_reflectance``, ``drift`` and ``suspect`` are the radiometric drift check
    (:mod:`rtsmonitor.drift`): this year's stable-terrain median reflectance (JSON), its comparison
    with the site's earlier years (JSON: reference, ratios, tolerances, reason) and whether a shift
    exceeded the tolerance; a suspect record keeps status ``ok`` and its numbers, and ``suspect`` is
    ``None`` where no check ran. ``model_members`` lists every member (name, version, sha256; JSON) of
    an ensemble model (:meth:`rtsmonitor.inference.Model.members_summary`); ``model_sha256`` is then
    the ensemble's digest.
    """

    site_id: str
    year: int
    status: Status
    reason: str
    processed: datetime
    code_version: str
    scene_id: str | None = None
    scene_datetime: str | None = None
    processing_baseline: str | None = None
    cloud_pct: float | None = None
    valid_fraction: float | None = None
    stable_reflectance: str | None = None
    drift: str | None = None
    suspect: bool | None = None
    site_area_m2: float | None = None
    observed_area_m2: float | None = None
    rts_count: int | None = None
    rts_area_m2: float | None = None
    rts_area_err_m2: float | None = None
    rts_area_high_m2: float | None = None
    rts_area_medium_m2: float | None = None
    rts_area_low_m2: float | None = None
    rts_filtered: str | None = None
    rts_new: int | None = None
    rts_vanished: int | None = None
    rts_growing: int | None = None
    carbon_t_c_per_yr: float | None = None
    carbon_t_c_err_per_yr: float | None = None
    co2_t_per_yr: float | None = None
    co2_t_err_per_yr: float | None = None
    carbon_factors: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    threshold: float | None = None
    model_sha256: str | None = None
    model_members: str | None = None
    model_note: str | None = None
    run_id: str | None = None
    results_prefix: str | None = None
    seconds: float | None = None
    attempts: int | None = None

    def __post_init__(self) -> None:
        """Check the status and that an ``ok`` record carries its numbers."""
        if self.status not in STATUSES:
            raise RtsError(f"record {self.site_id}/{self.year}: status {self.status!r} is not one of {STATUSES}")
        if self.status == "ok":
            missing = [
                name
                for name in ("rts_count", "rts_area_m2", "scene_id", "results_prefix")
                if getattr(self, name) is None
            ]
            if missing:
                raise RtsError(f"record {self.site_id}/{self.year}: an ok record needs {missing}")

    def to_entity(self) -> Entity:
        """The table row (``None`` values are left out)."""
        values: dict[str, Any] = {k: v for k, v in asdict(self).items() if k not in ("site_id", "year")}
        return {"PartitionKey": self.site_id, "RowKey": year_key(self.year), **values}

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> SiteYearRecord:
        """Inverse of :meth:`to_entity`: unknown properties are ignored, absent ones are ``None``."""
        names = {f.name for f in fields(cls)} - {"site_id", "year"}
        values = {k: v for k, v in entity.items() if k in names}
        return cls(site_id=str(entity["PartitionKey"]), year=int(str(entity["RowKey"])), **values)

    def as_row(self) -> dict[str, Any]:
        """Flat dict in :data:`CSV_COLUMNS` order (datetimes as ISO 8601 text)."""
        row = asdict(self)
        row["processed"] = self.processed.astimezone(UTC).isoformat(timespec="seconds")
        return {name: row[name] for name in CSV_COLUMNS}


CSV_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(SiteYearRecord))
"""Columns of the records CSV, in the record's field order."""


def year_key(year: int) -> str:
    """The RowKey of a year: four digits, so rows sort by year."""
    return f"{int(year):04d}"


def results_prefix(site_id: str, year: int, run_id: str) -> str:
    """Blob prefix (in :data:`RESULTS_CONTAINER`) of one processing run of a site-year."""
    return f"{site_id}/{year_key(year)}/{run_id}/"


def read_result_blob(storage: Storage, name: str) -> bytes:
    """The bytes of blob ``name`` of :data:`RESULTS_CONTAINER`; a missing one is an RtsError naming it."""
    try:
        return storage.blobs.read_bytes(RESULTS_CONTAINER, name)
    except NotFoundError as exc:
        raise RtsError(f"{RESULTS_CONTAINER}/{name} is missing") from exc


def new_run_id(now: datetime | None = None) -> str:
    """A unique run id that sorts by start time: UTC to the microsecond, then 8 random hex digits."""
    started = (now or datetime.now(UTC)).astimezone(UTC)
    return started.strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]


def write_record(storage: Storage, record: SiteYearRecord) -> None:
    """Insert or replace the site-year's row unconditionally (runs use :func:`commit_record`)."""
    storage.tables.upsert(RECORDS_TABLE, record.to_entity())


def read_record_versioned(storage: Storage, site_id: str, year: int) -> tuple[SiteYearRecord | None, str | None]:
    """The site-year's row and its ETag, or ``(None, None)`` if it has none."""
    try:
        entity, etag = storage.tables.get_versioned(RECORDS_TABLE, site_id, year_key(year))
    except NotFoundError:
        return None, None
    return SiteYearRecord.from_entity(entity), etag


def commit_record(storage: Storage, record: SiteYearRecord, etag: str | None) -> bool:
    """Write the row if nobody wrote it since ``etag`` was read (``None``: if it had no row).

    Returns ``False``, writing nothing, when another run committed first.
    """
    try:
        storage.tables.put_if(RECORDS_TABLE, record.to_entity(), etag)
    except ConflictError:
        return False
    return True


TRACKING_COUNT_ATTEMPTS = 5
"""How often :func:`set_tracking_counts` re-reads and rewrites a row that another writer changed meanwhile."""


def set_tracking_counts(
    storage: Storage,
    site_id: str,
    year: int,
    run_id: str,
    counts: tuple[int, int, int] | None,
    *,
    attempts: int = TRACKING_COUNT_ATTEMPTS,
) -> bool:
    """Set ``(rts_new, rts_vanished, rts_growing)`` on the site-year's ok row of run ``run_id``.

    The row is rewritten on condition of its ETag (nothing else in it changes); when another writer
    changed it meanwhile it is read again and, if it still names ``run_id``, written again. A row
    that already holds ``counts`` is not written (so repeated tracking leaves ETags alone).

    Returns
    -------
    ``False``, writing nothing, when the row no longer is an ok row of ``run_id`` (a new run
    committed: the counts of ``run_id`` no longer apply), ``True`` otherwise.

    Raises
    ------
    ConflictError
        If the row changed under every one of ``attempts`` writes.

    """
    new, vanished, growing = counts if counts is not None else (None, None, None)
    for _ in range(attempts):
        record, etag = read_record_versioned(storage, site_id, year)
        if record is None or record.status != "ok" or record.run_id != run_id:
            return False
        if (record.rts_new, record.rts_vanished, record.rts_growing) == (new, vanished, growing):
            return True
        if commit_record(storage, replace(record, rts_new=new, rts_vanished=vanished, rts_growing=growing), etag):
            return True
    raise ConflictError(
        f"record {site_id}/{year}: changed under each of {attempts} writes of its tracking counts; run tracking again"
    )


def model_mix_note(records: Iterable[SiteYearRecord], record: SiteYearRecord) -> str | None:
    """Which other years of the site have ``ok`` records from another model than ``record``, if any.

    Years processed with different models are not one consistent series (a new model finds other
    slumps); the note makes that visible in the record instead of leaving a silent jump.
    """
    others: dict[str, list[int]] = {}
    for other in records:
        same = (other.model_name, other.model_version, other.model_sha256) == (
            record.model_name,
            record.model_version,
            record.model_sha256,
        )
        if other.status == "ok" and other.year != record.year and not same:
            others.setdefault(f"{other.model_name}/{other.model_version}", []).append(other.year)
    if not others:
        return None
    listed = "; ".join(f"{label}: {', '.join(map(str, sorted(years)))}" for label, years in sorted(others.items()))
    this = f"{record.model_name}/{record.model_version}"
    return f"other years of {record.site_id} used other models ({listed}); this year used {this}"


def read_record(storage: Storage, site_id: str, year: int) -> SiteYearRecord | None:
    """The site-year's row, or ``None`` if it has none."""
    try:
        return SiteYearRecord.from_entity(storage.tables.get(RECORDS_TABLE, site_id, year_key(year)))
    except NotFoundError:
        return None


def read_records(storage: Storage, site_id: str | None = None) -> list[SiteYearRecord]:
    """All rows (of one site if given), ordered by site and year."""
    rows = storage.tables.query(RECORDS_TABLE, site_id)
    records = [SiteYearRecord.from_entity(row) for row in rows]
    return sorted(records, key=lambda r: (r.site_id, r.year))


def records_csv(records: Iterable[SiteYearRecord]) -> str:
    """The records as CSV text with a header of :data:`CSV_COLUMNS`."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(record.as_row())
    return out.getvalue()


def prune_runs(
    storage: Storage, site_id: str, year: int, keep_run_id: str | None, *, started_before: str | None = None
) -> list[str]:
    """Delete the blobs of the site-year's runs other than ``keep_run_id``; return the deleted names.

    Called after the row names its new run, so every blob a row names stays until no row names it.
    With ``started_before`` (a run id) only runs whose id sorts before it are deleted: a run that
    started later may still be writing, and may still commit.
    """
    prefix = f"{site_id}/{year_key(year)}/"
    stale = []
    for name in storage.blobs.list(RESULTS_CONTAINER, prefix):
        run_id = name[len(prefix) :].split("/", 1)[0]
        if run_id != keep_run_id and (started_before is None or run_id < started_before):
            stale.append(name)
    for name in stale:
        storage.blobs.delete(RESULTS_CONTAINER, name)
    return stale


def delete_run(storage: Storage, site_id: str, year: int, run_id: str) -> list[str]:
    """Delete the blobs of one run of a site-year (a run that lost its commit or failed); return their names."""
    names = storage.blobs.list(RESULTS_CONTAINER, results_prefix(site_id, year, run_id))
    for name in names:
        storage.blobs.delete(RESULTS_CONTAINER, name)
    return names
