"""What each trigger of the Functions app does, free of the Functions runtime.

``functions/function_app.py`` only adapts trigger objects to these calls, and the local runner
(``rts monitor``, ``rts demo``) calls the same ones, so both run one orchestration:

- :func:`on_site_blob` (blob trigger on ``sites/``): register a site, queue its backfill;
- :func:`on_timer` (yearly timer): queue the finished summer of every active site;
- :func:`on_job` (queue trigger): process one site-year; on error note it and re-raise (retry);
- :func:`on_poison` (poison-queue trigger): record a site-year that failed for good;
- :func:`sites_page`, :func:`sites_json`, :func:`records_page` (HTTP GET; requests checked first:
  :class:`RecordsQuery`, :func:`check_site_id`, :func:`check_year`, :func:`check_params`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from rtsmonitor.errors import NotFoundError, RtsError, error_chain
from rtsmonitor.inference import Model
from rtsmonitor.jobs import POISON_QUEUE, JobError, SiteYearJob, enqueue, yearly_jobs
from rtsmonitor.modelstore import current_model, fetch_current_bundle
from rtsmonitor.records import SiteYearRecord, read_records, records_csv, year_key
from rtsmonitor.redaction import redact
from rtsmonitor.registry import Registration, active_sites, list_sites, register_site, site_row_json
from rtsmonitor.retry import is_permanent
from rtsmonitor.sites import is_site_id
from rtsmonitor.siteyear import CODE_VERSION, Outcome, Services, process_site_year, record_failure
from rtsmonitor.stac import PLANETARY_COMPUTER_STAC_URL, STAC_URL_ENV, open_catalog
from rtsmonitor.storage import Storage, open_storage
from rtsmonitor.terrain import StacDem

log = logging.getLogger(__name__)

FAILURES_CONTAINER = "failures"
"""Blob container of the last error of each failing site-year (``<site_id>/<year>.json``)."""
STORAGE_ENV = "RTS_STORAGE"
"""App setting: storage spec (default ``azure:``, the Functions' own ``AzureWebJobsStorage`` account)."""
MODEL_CACHE_ENV = "RTS_MODEL_CACHE"
"""App setting: where downloaded model bundles are kept (default the system temp folder)."""
CODE_VERSION_ENV = "RTS_CODE_VERSION"
"""App setting: code version stored in records (the image build sets the git commit)."""


def storage_from_env(environ: Mapping[str, str] | None = None) -> Storage:
    """The storage named by ``RTS_STORAGE`` (default ``azure:``)."""
    env = os.environ if environ is None else environ
    return open_storage(env.get(STORAGE_ENV, "azure:"), environ=env)


def services_from_env(storage: Storage, environ: Mapping[str, str] | None = None) -> Services:
    """Catalogue, DEM and the live model (``models/current.json``) from the app settings."""
    env = os.environ if environ is None else environ
    stac_url = env.get(STAC_URL_ENV, PLANETARY_COMPUTER_STAC_URL)
    cache = Path(env.get(MODEL_CACHE_ENV, "") or Path(os.environ.get("TMPDIR", "/tmp")) / "rts-models")
    model = Model.load(fetch_current_bundle(storage, cache))
    code_version = env.get(CODE_VERSION_ENV, "") or CODE_VERSION
    return Services(open_catalog(stac_url), StacDem(stac_url), model, code_version)


class LiveServices:
    """:class:`Services` built on first use and rebuilt when ``models/current.json`` names another model.

    Call it for the services of the next job: a model published while a worker runs is picked up
    by that worker's next job (one small blob read per job).
    """

    def __init__(self, storage: Storage, environ: Mapping[str, str] | None = None) -> None:
        self._storage = storage
        self._environ = environ
        self._key: str | None = None
        self._services: Services | None = None

    def __call__(self) -> Services:
        """The services for the live model."""
        pointer = current_model(self._storage)
        key = f"{pointer.get('name')}/{pointer.get('version')}/{pointer.get('onnx_sha256')}"
        if self._services is None or key != self._key:
            self._services = services_from_env(self._storage, self._environ)
            self._key = key
        return self._services


def on_site_blob(storage: Storage, blob_name: str, data: bytes, today: dt.date | None = None) -> Registration:
    """Register the uploaded config (never raises on bad content: see :mod:`rtsmonitor.registry`)."""
    registration = register_site(storage, blob_name, data, today=today)
    if registration.status == "invalid":
        log.warning("site config %s rejected: %s", blob_name, registration.problems)
    else:
        log.info("site %s %s, %d site-years queued", registration.key, registration.status, len(registration.queued))
    return registration


def utc_today() -> dt.date:
    """Today's date in UTC (the yearly run's clock)."""
    return datetime.now(UTC).date()


def on_timer(storage: Storage, today: dt.date | None = None) -> list[SiteYearJob]:
    """Queue this year's summer for every active site whose season has ended by ``today`` (default today)."""
    today = today or utc_today()
    sites = [site for site in active_sites(storage) if site.season_bounds(today.year)[1] < today]
    jobs = yearly_jobs(sites, today.year)
    enqueue(storage, jobs)
    log.info("yearly run %d: %d site-years queued", today.year, len(jobs))
    return jobs


def on_job(storage: Storage, services: Callable[[], Services], content: str, dequeue_count: int) -> Outcome | None:
    """Process the site-year of a queue message.

    A message that is not a job goes straight to the poison queue (retrying cannot fix it). Any
    error of processing is noted in :data:`FAILURES_CONTAINER`. A permanent error
    (:func:`~rtsmonitor.retry.is_permanent`: an invalid site config, a missing or corrupt model)
    is recorded as ``failed`` at once and the message is done; any other error is re-raised, so the
    host retries the job and, after its last retry, moves it to the poison queue.
    """
    try:
        job = SiteYearJob.from_message(content)
    except JobError as exc:
        log.error("not a site-year job, moved to %s: %s", POISON_QUEUE, exc)
        storage.queues.send(POISON_QUEUE, content)
        return None
    try:
        outcome = process_site_year(storage, job, services(), attempts=dequeue_count)
    except Exception as exc:
        note = {
            "site_id": job.site_id,
            "year": job.year,
            "delivery": dequeue_count,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "error": redact(error_chain(exc)),
            "traceback": redact(traceback.format_exc(limit=8)),
        }
        storage.blobs.write_bytes(FAILURES_CONTAINER, _failure_blob(job), json.dumps(note, indent=2).encode())
        if not is_permanent(exc):
            raise
        reason = f"failed permanently (not retried): {note['error']}"
        log.error("%s %d: %s", job.site_id, job.year, reason)
        return Outcome(record_failure(storage, job, reason, attempts=dequeue_count), {})
    if storage.blobs.exists(FAILURES_CONTAINER, _failure_blob(job)):
        storage.blobs.delete(FAILURES_CONTAINER, _failure_blob(job))
    return outcome


def _failure_blob(job: SiteYearJob) -> str:
    return f"{job.site_id}/{year_key(job.year)}.json"


def on_poison(storage: Storage, content: str, dequeue_count: int) -> SiteYearRecord | None:
    """Record a site-year the retries did not save (reason: its last noted error)."""
    try:
        job = SiteYearJob.from_message(content)
    except JobError as exc:
        log.error("poison message is not a site-year job, dropped: %s", exc)
        return None
    try:
        note = json.loads(storage.blobs.read_bytes(FAILURES_CONTAINER, _failure_blob(job)))
        reason = f"failed after {note.get('delivery', '?')} deliveries: {note.get('error', 'unknown error')}"
        attempts = int(note.get("delivery", dequeue_count))
    except (NotFoundError, ValueError):
        reason, attempts = "failed after the host's retries (no error was noted)", dequeue_count
    record = record_failure(storage, job, reason, attempts=attempts)
    log.error("%s %d: %s", job.site_id, job.year, reason)
    return record


# --- HTTP API: every request is checked by these (no storage call) before storage is read ----------

MIN_YEAR = 2015
"""Earliest year an HTTP request may name: the first Sentinel-2 summer (Sentinel-2A was launched on
23 June 2015; Planetary Computer's ``sentinel-2-l2a`` collection starts in 2015), so no record is older."""
MAX_YEAR = 2100
"""Latest year an HTTP request may name: a bound on well-formed input, not a forecast."""
MAX_RESPONSE_ROWS = 1000
"""Most rows (sites or site-year records) in one HTTP response; the rest come in further pages."""
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""Most bytes of rows in one HTTP response body (4 MiB, UTF-8). A page holds at least one row, and
one row is small (a table string property is at most 64 KiB)."""
CONTINUATION_HEADER = "X-Continuation"
"""Response header sent when more rows match than one page holds: its value is the ``after``
parameter of the next page (``site_id`` for sites, ``site_id/year`` for records)."""
MAX_ECHO_CHARS = 80
"""Longest part of a request value that an error message repeats."""
FUNCTION_KEY_PARAM = "code"
"""The query parameter the Functions host reads a function key from; every endpoint accepts it,
no error message repeats it."""
SITES_PARAMS: frozenset[str] = frozenset({"after"})
"""Query parameters of ``GET /api/sites``: ``after`` (paging)."""
SITE_PARAMS: frozenset[str] = frozenset()
"""Query parameters of ``GET /api/sites/{site_id}``: none."""
RECORDS_PARAMS: frozenset[str] = frozenset({"format", "year", "from", "to", "after"})
"""Query parameters of the records endpoints: ``format`` (json, csv), ``year`` or ``from``/``to``
(inclusive, four digits), ``after`` (paging)."""


class RequestError(RtsError):
    """An HTTP request that is not well-formed (answered 400); the message names the parameter and value."""


def _echo(value: str) -> str:
    """``value`` as an error message may repeat it: quoted, at most :data:`MAX_ECHO_CHARS` characters."""
    return repr(value[:MAX_ECHO_CHARS]) + ("..." if len(value) > MAX_ECHO_CHARS else "")


def check_site_id(site_id: str) -> str:
    """``site_id`` if it is well-formed (:func:`~rtsmonitor.sites.is_site_id`); else :class:`RequestError`.

    HTTP requests are checked with it before they touch storage.
    """
    if not is_site_id(site_id):
        raise RequestError(f"{_echo(site_id)} is not a site id: 1-63 lowercase letters, digits and hyphens")
    return site_id


def check_year(value: str, parameter: str = "year") -> int:
    """The year ``value`` names: four ASCII digits, :data:`MIN_YEAR` to :data:`MAX_YEAR`; else :class:`RequestError`.

    ``parameter`` names the query parameter in the error message.
    """
    if not (len(value) == 4 and value.isascii() and value.isdigit() and MIN_YEAR <= int(value) <= MAX_YEAR):
        raise RequestError(f"{parameter}={_echo(value)} is not a year: four digits, {MIN_YEAR}-{MAX_YEAR}")
    return int(value)


def check_params(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    """:class:`RequestError` naming a query parameter the endpoint does not take (the function key aside).

    A misspelt filter (``?yaer=2021``) would otherwise answer every row as if there were no filter.
    """
    unknown = sorted(set(params) - allowed - {FUNCTION_KEY_PARAM})
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        takes = ", ".join(sorted(allowed)) or "none"
        raise RequestError(f"unknown query parameter {_echo(unknown[0])}{more}; this endpoint takes: {takes}")


def sites_after(params: Mapping[str, str]) -> str | None:
    """The ``after`` parameter of a sites request (a site id), checked; ``None`` if absent."""
    after = params.get("after")
    return None if after is None else check_site_id(after)


@dataclass(frozen=True)
class RecordsQuery:
    """A checked request for records: whose, which years, which format, from where on."""

    site_id: str | None
    fmt: Literal["json", "csv"]
    first_year: int = MIN_YEAR
    last_year: int = MAX_YEAR
    after: tuple[str, int] | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str], site_id: str | None = None) -> RecordsQuery:
        """Check a records request's route site id and query parameters (:class:`RequestError` if bad).

        ``year=Y`` is ``from=Y&to=Y``; ``from`` and ``to`` are inclusive and may come alone.
        """
        check_params(params, RECORDS_PARAMS)
        if site_id is not None:
            check_site_id(site_id)
        fmt = params.get("format", "json").lower()
        if fmt not in ("json", "csv"):
            raise RequestError(f"format={_echo(fmt)}: use json or csv")
        if "year" in params:
            if "from" in params or "to" in params:
                raise RequestError("give year=, or from= and/or to=, not both")
            first = last = check_year(params["year"], "year")
        else:
            first = check_year(params["from"], "from") if "from" in params else MIN_YEAR
            last = check_year(params["to"], "to") if "to" in params else MAX_YEAR
            if first > last:
                raise RequestError(f"from={first} is after to={last}")
        after = None
        if "after" in params:
            site, _, year = params["after"].partition("/")
            if not is_site_id(site) or not (len(year) == 4 and year.isascii() and year.isdigit()):
                raise RequestError(f"after={_echo(params['after'])} is not a continuation: site_id/year")
            after = (site, int(year))
        return cls(site_id, "csv" if fmt == "csv" else "json", first, last, after)


@dataclass(frozen=True)
class Page:
    """One HTTP response's rows: the body, its MIME type, and the ``after`` of the next page (or ``None``)."""

    body: str
    mimetype: str
    continuation: str | None = None


def _page_size(sizes: list[int]) -> int:
    """How many leading rows of these sizes (bytes) fit in one page (at least one, if there is one)."""
    total = count = 0
    for size in sizes:
        if count == MAX_RESPONSE_ROWS or (count and total + size > MAX_RESPONSE_BYTES):
            break
        total += size
        count += 1
    return count


def _json_page(rows: list[dict[str, object]], keys: list[str]) -> Page:
    """The rows as an indented JSON list, cut at the page limits; ``keys[i]`` continues after row ``i``."""
    pieces = ["  " + json.dumps(row, indent=2).replace("\n", "\n  ") for row in rows]
    n = _page_size([len(piece.encode()) + 2 for piece in pieces])
    body = "[\n" + ",\n".join(pieces[:n]) + "\n]" if n else "[]"
    return Page(body, "application/json", keys[n - 1] if n < len(rows) else None)


def sites_json(storage: Storage, site_id: str | None = None) -> list[dict[str, object]]:
    """The sites table as JSON rows (one site if ``site_id``; :class:`NotFoundError` if unknown)."""
    if site_id is not None:
        check_site_id(site_id)
    rows = [site_row_json(row) for row in list_sites(storage)]
    if site_id is None:
        return rows
    found = [row for row in rows if row["site_id"] == site_id]
    if not found:
        raise NotFoundError(f"no site {site_id!r}")
    return found


def sites_page(storage: Storage, after: str | None = None) -> Page:
    """The sites by id, after the site ``after`` if given, as one page of JSON (see :data:`MAX_RESPONSE_ROWS`)."""
    rows = sorted(sites_json(storage), key=lambda row: str(row["site_id"]))
    rows = [row for row in rows if after is None or str(row["site_id"]) > after]
    return _json_page(rows, [str(row["site_id"]) for row in rows])


def records_page(storage: Storage, query: RecordsQuery) -> Page:
    """The records a checked query asks for, by site and year, as one page of JSON or CSV."""
    records = [
        record
        for record in read_records(storage, query.site_id)
        if query.first_year <= record.year <= query.last_year
        and (query.after is None or (record.site_id, record.year) > query.after)
    ]
    keys = [f"{record.site_id}/{year_key(record.year)}" for record in records]
    if query.fmt == "json":
        return _json_page([record.as_row() for record in records], keys)
    header = records_csv([])
    lines = [records_csv([record])[len(header) :] for record in records]
    n = _page_size([len(line.encode()) for line in lines])
    return Page(header + "".join(lines[:n]), "text/csv", keys[n - 1] if n < len(records) else None)
