"""Site-year jobs on the Storage Queue, and a local stand-in for the Functions host that runs them.

A job is one queue message ``{"site_id": ..., "year": ...}`` on :data:`SITE_YEARS_QUEUE`. In Azure
the Functions host delivers it to the queue trigger, retries it after a failure (up to
:data:`MAX_DEQUEUE_COUNT` deliveries, ``host.json``) and then moves it to :data:`POISON_QUEUE`.
:func:`run_queue` does the same with the storage interface, so ``rts monitor`` and ``rts demo`` run
the Functions' orchestration on a laptop.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rtsmonitor.errors import RtsError
from rtsmonitor.sites import SiteConfig
from rtsmonitor.storage import QueueMessage, Storage

log = logging.getLogger(__name__)

SITE_YEARS_QUEUE = "site-years"
"""Queue of site-year jobs."""
POISON_QUEUE = f"{SITE_YEARS_QUEUE}-poison"
"""Where the Functions host moves a job after :data:`MAX_DEQUEUE_COUNT` failed deliveries."""
MAX_DEQUEUE_COUNT = 5
"""Deliveries of a job before it is poison (the Functions host default; ``host.json`` sets it)."""
RETRY_DELAY_S = 120
"""Seconds a failed job stays invisible before its next delivery (``host.json`` visibilityTimeout)."""
LEASE_S = 1800
"""Seconds a delivered job stays hidden from other workers while it runs: the ``host.json``
functionTimeout (30 min), after which the host gives up on a job anyway."""


class JobError(RtsError):
    """A queue message is not a site-year job."""


@dataclass(frozen=True, order=True)
class SiteYearJob:
    """Process ``site_id`` for the summer of ``year``."""

    site_id: str
    year: int

    def to_message(self) -> str:
        """The queue message text."""
        return json.dumps({"site_id": self.site_id, "year": self.year}, sort_keys=True)

    @classmethod
    def from_message(cls, text: str) -> SiteYearJob:
        """Parse a message; :class:`JobError` names what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise JobError(f"queue message is not JSON ({exc.msg}): {text[:200]!r}") from None
        if not isinstance(data, dict):
            raise JobError(f"queue message must be a JSON object, got {text[:200]!r}")
        site_id, year = data.get("site_id"), data.get("year")
        if not isinstance(site_id, str) or not site_id:
            raise JobError(f"queue message field site_id must be a non-empty string, got {site_id!r}")
        if not isinstance(year, int) or isinstance(year, bool):
            raise JobError(f"queue message field year must be an integer, got {year!r}")
        return cls(site_id, year)


def completed_years(config: SiteConfig, today: dt.date | None = None) -> list[int]:
    """The site's years whose season has ended by ``today`` (default today): what a backfill queues."""
    today = today or dt.date.today()
    return [year for year in config.years(today) if config.season_bounds(year)[1] < today]


def enqueue(storage: Storage, jobs: Iterable[SiteYearJob]) -> None:
    """Send one message per job."""
    for job in jobs:
        storage.queues.send(SITE_YEARS_QUEUE, job.to_message())


def yearly_jobs(sites: Iterable[SiteConfig], year: int) -> list[SiteYearJob]:
    """The jobs of the yearly run: ``year`` for every active site whose years include it."""
    jobs = []
    for site in sites:
        last = site.last_year if site.last_year is not None else year
        if site.active and site.first_year <= year <= last:
            jobs.append(SiteYearJob(site.id, year))
    return sorted(jobs)


@dataclass
class QueueRun:
    """What :func:`run_queue` did."""

    succeeded: list[str] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)
    failures: int = 0


def run_queue(
    storage: Storage,
    handle: Callable[[QueueMessage], None],
    on_poison: Callable[[QueueMessage, BaseException], None],
    *,
    max_dequeue_count: int = MAX_DEQUEUE_COUNT,
    retry_delay_s: int = RETRY_DELAY_S,
    queue: str = SITE_YEARS_QUEUE,
    idle_wait_s: float = 0.5,
    lease_s: int = LEASE_S,
) -> QueueRun:
    """Deliver the queue's messages to ``handle`` one by one until it is empty, as the Functions host would.

    A delivered message is hidden from other workers for ``lease_s``. One whose handling raises is
    released to become visible again after ``retry_delay_s``; at its ``max_dequeue_count``-th failed
    delivery ``on_poison`` records it and it moves to ``<queue>-poison`` (if recording fails, the
    message is released instead and tried again: a site-year is never left without a record). The run ends when the
    queue is empty (no message visible, running elsewhere or waiting for a retry).
    """
    run = QueueRun()
    while True:
        messages = storage.queues.receive(queue, 1, visibility_timeout_s=lease_s)
        if not messages:
            if storage.queues.peek_count(queue) == 0:
                break
            time.sleep(idle_wait_s)  # a failed job waits out its retry delay
            continue
        message = messages[0]
        try:
            handle(message)
        except Exception as exc:  # any failure is retried, then poisoned, as by the Functions host
            run.failures += 1
            log.warning("delivery %d of %s failed: %s", message.dequeue_count, message.content, exc)
            if message.dequeue_count >= max_dequeue_count:
                try:
                    on_poison(message, exc)  # first: if recording fails, the message is not lost
                except Exception as poison_exc:
                    log.error("recording the failure of %s failed: %s", message.content, poison_exc)
                    storage.queues.release(queue, message, retry_delay_s)
                    continue
                storage.queues.send(f"{queue}-poison", message.content)
                storage.queues.delete(queue, message)
                run.poisoned.append(message.content)
            else:
                storage.queues.release(queue, message, retry_delay_s)
            continue
        storage.queues.delete(queue, message)
        run.succeeded.append(message.content)
    return run
