"""What each trigger of the Functions app does, free of the Functions runtime.

``functions/function_app.py`` only adapts trigger objects to these calls, and the local runner
(``rts monitor``, ``rts demo``) calls the same ones, so both run one orchestration:

- :func:`on_site_blob` (blob trigger on ``sites/``): register a site, queue its backfill;
- :func:`on_timer` (yearly timer): queue the finished summer of every active site;
- :func:`on_job` (queue trigger): process one site-year; on error note it and re-raise (retry);
- :func:`on_poison` (poison-queue trigger): record a site-year that failed for good;
- :func:`sites_json`, :func:`records_body` (HTTP GET).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from rtsmonitor.errors import NotFoundError, RtsError
from rtsmonitor.inference import Model
from rtsmonitor.jobs import POISON_QUEUE, JobError, SiteYearJob, enqueue, yearly_jobs
from rtsmonitor.modelstore import current_model, fetch_current_bundle
from rtsmonitor.records import SiteYearRecord, read_records, records_csv, year_key
from rtsmonitor.registry import Registration, active_sites, list_sites, register_site, site_row_json
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
    error of processing is noted in :data:`FAILURES_CONTAINER` and re-raised, so the host retries
    the job and, after its last retry, moves it to the poison queue.
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
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }
        storage.blobs.write_bytes(FAILURES_CONTAINER, _failure_blob(job), json.dumps(note, indent=2).encode())
        raise
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


def check_site_id(site_id: str) -> str:
    """``site_id`` if it is well-formed (:func:`~rtsmonitor.sites.is_site_id`); else :class:`RtsError`.

    HTTP requests are checked with it before they touch storage.
    """
    if not is_site_id(site_id):
        raise RtsError(f"{site_id[:80]!r} is not a site id: 1-63 lowercase letters, digits and hyphens")
    return site_id


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


def records_body(storage: Storage, site_id: str | None, fmt: Literal["json", "csv"]) -> tuple[str, str]:
    """The records (of one site if given) as (body, MIME type) in ``fmt``."""
    if fmt not in ("json", "csv"):
        raise RtsError(f"format {fmt!r} is not one of json, csv")
    if site_id is not None:
        check_site_id(site_id)
    records = read_records(storage, site_id)
    if fmt == "csv":
        return records_csv(records), "text/csv"
    return json.dumps([r.as_row() for r in records], indent=2), "application/json"
