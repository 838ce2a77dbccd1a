"""The yearly record of one site: RTS area, count and carbon, as a row of the records table.

One row per site-year (table :data:`RECORDS_TABLE`, PartitionKey = site id, RowKey = year). A row
is written only after the blobs it points to (``results_prefix``), and a re-run replaces it, so a
reader always finds one row per site-year and every blob that row names.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from rtsmonitor.errors import NotFoundError, RtsError
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
    ``*_err`` is the +- uncertainty of the value before it.
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
    site_area_m2: float | None = None
    observed_area_m2: float | None = None
    rts_count: int | None = None
    rts_area_m2: float | None = None
    rts_area_err_m2: float | None = None
    carbon_t_c_per_yr: float | None = None
    carbon_t_c_err_per_yr: float | None = None
    co2_t_per_yr: float | None = None
    co2_t_err_per_yr: float | None = None
    carbon_factors: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    threshold: float | None = None
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


def write_record(storage: Storage, record: SiteYearRecord) -> None:
    """Insert or replace the site-year's row."""
    storage.tables.upsert(RECORDS_TABLE, record.to_entity())


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


def prune_runs(storage: Storage, site_id: str, year: int, keep_run_id: str | None) -> list[str]:
    """Delete the blobs of the site-year's runs other than ``keep_run_id``; return the deleted names.

    Called after the row names its new run, so every blob a row names stays until no row names it.
    """
    prefix = f"{site_id}/{year_key(year)}/"
    stale = [
        name
        for name in storage.blobs.list(RESULTS_CONTAINER, prefix)
        if keep_run_id is None or not name.startswith(results_prefix(site_id, year, keep_run_id))
    ]
    for name in stale:
        storage.blobs.delete(RESULTS_CONTAINER, name)
    return stale
