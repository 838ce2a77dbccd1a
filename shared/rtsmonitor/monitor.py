"""The monitoring job without the Functions host: register sites, run the queue, export the products.

``rts monitor`` and ``rts demo`` call these with any storage (a local folder, Azurite, Azure) and
any STAC API; each step is the Functions' own handler (:mod:`rtsmonitor.handlers`), so what runs
here is what runs in Azure.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rtsmonitor import handlers
from rtsmonitor.errors import NotFoundError
from rtsmonitor.htmlreport import write_site_report
from rtsmonitor.jobs import MAX_DEQUEUE_COUNT, QueueRun, run_queue
from rtsmonitor.records import RESULTS_CONTAINER, SiteYearRecord, read_records, records_csv
from rtsmonitor.registry import SITES_CONTAINER, Registration
from rtsmonitor.report import plot_site_years, write_markdown_report
from rtsmonitor.siteyear import Outcome, Services
from rtsmonitor.storage import QueueMessage, Storage

log = logging.getLogger(__name__)

LOCAL_RETRY_DELAY_S = 5
"""Seconds a failed job waits before its next local delivery (Azure: ``host.json``, 2 minutes)."""


def upload_configs(
    storage: Storage, configs: Sequence[tuple[str, bytes]], today: dt.date | None = None
) -> list[Registration]:
    """Upload each (blob name, content) to ``sites/`` and register it, as the blob trigger does."""
    registrations = []
    for name, data in configs:
        storage.blobs.write_bytes(SITES_CONTAINER, name, data)
        registrations.append(handlers.on_site_blob(storage, name, data, today=today))
    return registrations


@dataclass
class Drained:
    """What a queue run did: the host-like summary and each processed site-year's outcome."""

    queue: QueueRun
    outcomes: list[Outcome] = field(default_factory=list)


def drain_queue(
    storage: Storage,
    services: Callable[[], Services],
    *,
    retry_delay_s: int = LOCAL_RETRY_DELAY_S,
    max_dequeue_count: int = MAX_DEQUEUE_COUNT,
    say: Callable[[str], None] = print,
) -> Drained:
    """Process every queued site-year with the queue and poison handlers, like the Functions host."""
    outcomes: list[Outcome] = []

    def handle(message: QueueMessage) -> None:
        outcome = handlers.on_job(storage, services, message.content, message.dequeue_count)
        if outcome is not None:
            outcomes.append(outcome)
            r = outcome.record
            detail = f"{r.rts_count} RTS, {(r.rts_area_m2 or 0) / 1e6:.3f} km2" if r.status == "ok" else r.reason[:100]
            say(f"  {r.site_id} {r.year}: {r.status}, {detail} ({outcome.stage_seconds.get('total', 0.0):.1f} s)")

    def poison(message: QueueMessage, error: BaseException) -> None:
        record = handlers.on_poison(storage, message.content, message.dequeue_count)
        if record is not None:
            say(f"  {record.site_id} {record.year}: failed: {record.reason}")

    run = run_queue(storage, handle, poison, max_dequeue_count=max_dequeue_count, retry_delay_s=retry_delay_s)
    return Drained(run, outcomes)


@dataclass(frozen=True)
class Exported:
    """Files written by :func:`export_products`."""

    records_csv: Path
    chart: Path | None
    report: Path | None
    polygons: list[Path]
    site_reports: list[Path] = field(default_factory=list)


def export_products(
    storage: Storage, out: Path, *, title: str, notes: Sequence[str] = (), site_ids: Sequence[str] | None = None
) -> tuple[list[SiteYearRecord], Exported]:
    """Write the records CSV, each ok site-year's polygons, the Figure-3 chart and the reports into ``out``.

    The reports: one Markdown report of all sites, one HTML page per site (``reports/<site>.html``,
    :mod:`rtsmonitor.htmlreport`). With no records yet, only the (empty) CSV and JSON are written.
    """
    out.mkdir(parents=True, exist_ok=True)
    records = [r for r in read_records(storage) if site_ids is None or r.site_id in site_ids]
    csv_path = out / "records.csv"
    csv_path.write_text(records_csv(records))
    polygons = []
    for record in records:
        if record.status == "ok" and record.results_prefix:
            path = out / "polygons" / record.site_id / f"{record.year}.geojson"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = storage.blobs.read_bytes(RESULTS_CONTAINER, record.results_prefix + "rts.geojson")
            path.write_bytes(data)
            polygons.append(path)
    chart = report = None
    site_reports = []
    if records:
        chart = plot_site_years(records, out / "rts_area_per_year.png", title=title)
        report = write_markdown_report(records, out / "report.md", chart=chart, title=title, notes=notes)
        for site_id in sorted({r.site_id for r in records}):
            path = out / "reports" / f"{site_id}.html"
            try:
                write_site_report(storage, site_id, path)
            except NotFoundError as exc:  # e.g. records of a site that was never registered
                log.warning("no HTML report for %s: %s", site_id, exc)
                continue
            site_reports.append(path)
    (out / "records.json").write_text(json.dumps([r.as_row() for r in records], indent=2))
    return records, Exported(csv_path, chart, report, polygons, site_reports)
