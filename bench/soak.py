"""Soak run: a few hundred site-year messages, 2-4 queue workers, Azurite with injected faults; then an audit.

What runs is what ``rts monitor`` runs (the Functions' handlers :func:`rtsmonitor.handlers.on_job`
and :func:`~rtsmonitor.handlers.on_poison` under :func:`rtsmonitor.jobs.run_queue`, the local
stand-in for the Functions host), in W worker processes at once, against Azurite (its own data
folder) and the local STAC/COG server, each behind a :class:`~rtsmonitor.offline.faults.FaultProxy`
(one per Azurite service; two for the STAC server, one behind the other: the clients talk to the
first, which faults API requests, and COG reads pass through it to the second, which faults them;
the server makes asset hrefs absolute from the ``Host`` header, which both pass on).

The store afterwards must hold one record per site-year that was sent (``ok``, ``no-scene``, or
``failed`` with a reason), no duplicate row, no site-year with a second run folder, no blob that
no record names (orphan), and every product blob that an ``ok`` record names. The audit reads the
store directly from Azurite (not through the proxies) and prints one table; the command exits 1 when
any count that must be 0 is not.

The load (defaults; ``--quick``: 4 sites, 2 workers, 12 messages, a 15 s lease):

- ``--sites`` (80) overlapping sites of 2.5 km x 2.5 km on a lattice around Horton 01 (one synthetic
  corpus, one acquisition per summer 2019-2021; every fourth site also asks for 2018, which has no
  scene, and a summer drawn cloudy has none either: ``no-scene`` records). Three or four years a
  site, not more: each ok site-year re-tracks its site's slumps and rewrites its catalog from all
  its years (:mod:`rtsmonitor.tracking`, :mod:`rtsmonitor.catalog`), so a job's requests, and
  with them the faults it meets, grow with the site's years;
- duplicate messages (at-least-once delivery): some site-years sent once more at the end, some
  twice more back to back (two workers then run them at the same time: the ETag commit decides);
- permanent faults: a site whose scene COGs were deleted (404 on every read), a site-year of an
  unregistered site, one of a site whose config upload was rejected (all three are retried to the
  last delivery and end ``failed`` with the last error as reason), and malformed messages (not a
  job: moved to the poison queue by ``on_job`` and dropped there; counted as accounted for when the
  poison queue holds them);
- transient faults at ``--fault-rate`` (10 %) of the requests of every proxy, seeded (:data:`FAULT_MIX`):
  500 and 503 everywhere, 429 on the table, STAC API and COG requests, a few hangs (about 1 fault
  in 25), and a few bodies cut short on blob, table, STAC API and COG responses. Not injected: 429
  on blob and queue (Azure Storage throttles with 503 and those SDKs do not retry 429), ``short`` on
  queue responses (a lost answer to a receive hides its message for a whole lease), and
  ``corrupt`` (a flipped byte in a COG tile or an entity can pass unnoticed: the soak audits
  consistency, not pixel values);
- one worker is killed with SIGKILL mid-job once about a third of the messages are done and a
  replacement starts; the message it held comes back after the lease (:data:`LEASE_S`, 60 s).

Time runs compressed, the policy itself unchanged: a job meets a dozen faults (about 150 requests),
and production's waits would make the run hours. Each worker sets ``rtsmonitor.retry.READ_TIMEOUT_S``
(3 s, production 60 s) and ``BACKOFF_FACTOR_S`` (0.05 s, production 0.5 s), read by the Azure and
STAC clients when they are built, and the same in ``GDAL_HTTP_TIMEOUT`` and ``GDAL_HTTP_RETRY_DELAY``
of ``rtsmonitor.stac.GDAL_REMOTE_READ_OPTIONS``, before building its clients; a hang holds its
connection for :data:`HANG_S` (5 s, past the timeout), a 429 says ``Retry-After: 0``, the queue
host's retry delay is 1 s (``host.json``: 2 minutes) and the lease 60 s (30 minutes); a job is
poison after 5 deliveries (as ``host.json``).

    .venv/bin/python -m bench.soak [--sites 80] [--workers 4] [--fault-rate 0.1] [--seed 0] [--no-kill]
        [--quick] [--markdown FILE] [--workdir DIR]

``--workdir`` keeps the corpus, Azurite's data and each worker's journal (one JSON line per
delivery) and log for a look after the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import posixpath
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CHILD_ENV, REPO_ROOT, Row, format_value, median, print_table

BENCH = "soak"
CENTRE_LONLAT = (-126.75, 69.75)
"""Centre of the site lattice (Horton 01 of Rustemeyer et al. 2022)."""
SITE_KM = 2.5
"""Side of each soak site in km."""
LATTICE_STEP_DEG = (0.012, 0.005)
"""Lattice spacing of the site centres in degrees (lon, lat): about 460 m x 555 m, so the sites
overlap and share one small synthetic region."""
LATTICE_COLUMNS = 11
GONE_LON_OFFSET_DEG = -1.05
"""The site whose COGs are deleted lies this far west (about 40 km): its own acquisitions, none shared."""
CORPUS_YEARS = (2019, 2020, 2021)
"""Summers with imagery; a site that also asks for the summer before gets a ``no-scene`` record."""
QUICK_CORPUS_YEARS = (2021,)
SITES = 80
QUICK_SITES = 4
WORKERS = 4
QUICK_WORKERS = 2
FAULT_RATE = 0.10
DUPLICATES = (12, 6)
"""(site-years sent once more at the end, site-years sent twice more back to back)."""
QUICK_DUPLICATES = (1, 1)
MALFORMED = ("this is not a job", '{"site_id": "soak-nonexistent"}')
"""Messages that are not site-year jobs (the second lacks its year)."""
READ_TIMEOUT_S = 3
"""Read timeout of every client in the workers, in seconds (production: 60)."""
BACKOFF_S = 0.05
"""Backoff base of every client in the workers, in seconds (production: 0.5)."""
HANG_S = 5.0
"""How long a ``hang`` fault holds its connection, in seconds (longer than :data:`READ_TIMEOUT_S`)."""
RETRY_DELAY_S = 1
"""Seconds a failed job waits before its next delivery (``host.json``: 120)."""
MAX_DEQUEUE_COUNT = 5
LEASE_S = 60
"""Seconds a delivered message stays hidden (``host.json`` functionTimeout: 1800); a killed
worker's message comes back after this."""
QUICK_LEASE_S = 15
KILL_AFTER_FRACTION = 0.33
"""One worker is killed once this fraction of the messages has been handled."""
TIMEOUT_S = 900.0
"""The workers are stopped after this many seconds (the audit then fails: messages are left)."""
QUICK_TIMEOUT_S = 240.0
GONE_SITE, GHOST_SITE, BAD_SITE = "soak-gone", "soak-ghost", "soak-bad"

# Transient fault kinds per service and their weights among the injected faults.
FaultMix = Mapping[str, tuple[tuple[str, int], ...]]
FAULT_MIX: FaultMix = {
    "blob": (("status_500", 12), ("status_503", 12), ("hang", 1), ("short", 2)),
    "queue": (("status_500", 12), ("status_503", 12), ("hang", 1)),
    "table": (("status_500", 8), ("status_503", 8), ("status_429", 8), ("hang", 1), ("short", 2)),
    "stac": (("status_500", 8), ("status_503", 8), ("status_429", 8), ("hang", 1), ("short", 2)),
    "cog": (("status_500", 8), ("status_503", 8), ("status_429", 8), ("hang", 1), ("short", 2)),
}
FAULT_PATHS = {"stac": r"^(?!/files/)", "cog": r"^/files/"}
"""Which requests of the STAC server each of its two proxies (one behind the other) may fault."""


@dataclass(frozen=True)
class SoakConfig:
    """The size and settings of one soak run."""

    sites: int = SITES
    workers: int = WORKERS
    fault_rate: float = FAULT_RATE
    seed: int = 0
    years: tuple[int, ...] = CORPUS_YEARS
    duplicates: tuple[int, int] = DUPLICATES
    malformed: tuple[str, ...] = MALFORMED
    kill: bool = True
    lease_s: int = LEASE_S
    timeout_s: float = TIMEOUT_S
    fault_mix: FaultMix = field(default_factory=lambda: FAULT_MIX)

    def mix(self) -> FaultMix:
        """The fault mix in force."""
        return self.fault_mix

    @classmethod
    def quick(cls, **changes: Any) -> SoakConfig:
        """The smoke-test size: a dozen messages, 2 workers, a short lease."""
        values: dict[str, Any] = {
            "sites": QUICK_SITES,
            "workers": QUICK_WORKERS,
            "years": QUICK_CORPUS_YEARS,
            "duplicates": QUICK_DUPLICATES,
            "malformed": MALFORMED[:1],
            "lease_s": QUICK_LEASE_S,
            "timeout_s": QUICK_TIMEOUT_S,
        }
        return cls(**{**values, **changes})


# --- the sites and their messages ----------------------------------------------------------------


def site_configs(config: SoakConfig) -> list[dict[str, Any]]:
    """The regular sites: overlapping squares on a lattice; every fourth also asks for a summer without imagery."""
    first, last = config.years[0], config.years[-1]
    sites = []
    for i in range(config.sites):
        lon = CENTRE_LONLAT[0] + (i % LATTICE_COLUMNS) * LATTICE_STEP_DEG[0]
        lat = CENTRE_LONLAT[1] + (i // LATTICE_COLUMNS) * LATTICE_STEP_DEG[1]
        sites.append(
            {
                "id": f"soak-{i:03d}",
                "name": f"soak site {i}",
                "centre": {"lon": round(lon, 6), "lat": round(lat, 6), "size_km": SITE_KM},
                "first_year": first - 1 if i % 4 == 0 else first,
                "last_year": last,
            }
        )
    return sites


def gone_config(config: SoakConfig) -> dict[str, Any]:
    """The site whose scene COGs are deleted: its last (up to) two summers."""
    return {
        "id": GONE_SITE,
        "name": "soak site without its COGs",
        "centre": {"lon": CENTRE_LONLAT[0] + GONE_LON_OFFSET_DEG, "lat": CENTRE_LONLAT[1], "size_km": SITE_KM},
        "first_year": config.years[max(0, len(config.years) - 2)],
        "last_year": config.years[-1],
    }


def bad_config(config: SoakConfig) -> dict[str, Any]:
    """An upload the registration rejects (negative size)."""
    return {
        "id": BAD_SITE,
        "name": "soak site with an invalid config",
        "centre": {"lon": CENTRE_LONLAT[0], "lat": CENTRE_LONLAT[1], "size_km": -1.0},
        "first_year": config.years[-1],
        "last_year": config.years[-1],
    }


def site_years(site: dict[str, Any]) -> list[tuple[str, int]]:
    """The (site id, year) pairs a registration of ``site`` queues."""
    return [(str(site["id"]), year) for year in range(int(site["first_year"]), int(site["last_year"]) + 1)]


@dataclass
class Sent:
    """The messages sent, by kind."""

    backfill: list[tuple[str, int]] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    permanent: list[tuple[str, int]] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """All messages sent."""
        return len(self.backfill) + len(self.duplicates) + len(self.permanent) + len(self.malformed)

    @property
    def site_years(self) -> set[tuple[str, int]]:
        """The distinct site-years of the job messages."""
        return set(self.backfill) | set(self.duplicates) | set(self.permanent)


# --- the corpus ------------------------------------------------------------------------------------


def build_soak_corpus(root: Path, config: SoakConfig) -> int:
    """Render the synthetic corpus of every site, then delete the gone site's scene files; return how many."""
    from rtsmonitor.offline.corpus import build_corpus
    from rtsmonitor.sites import SiteConfig

    sites = [*site_configs(config), gone_config(config)]
    grids = [(str(s["id"]), SiteConfig.model_validate(s).grid()) for s in sites]
    corpus = build_corpus(root, grids, list(config.years), scenes_per_year=1, seed=config.seed, progress=False)
    deleted = 0
    for scene in corpus.scenes_for(GONE_SITE):
        if scene.site_ids != (GONE_SITE,):
            raise RuntimeError(f"the gone site shares acquisitions with {scene.site_ids}: move it further away")
        for item_id in scene.item_ids:
            item = json.loads((root / "collections" / "sentinel-2-l2a" / "items" / f"{item_id}.json").read_text())
            for asset in item["assets"].values():
                path = root / asset["href"]
                if path.exists():
                    path.unlink()
                    deleted += 1
    if not deleted:
        raise RuntimeError("no scene file of the gone site was found to delete")
    return deleted


# --- setup: registrations and messages -------------------------------------------------------------


def send_messages(storage: Any, config: SoakConfig) -> Sent:
    """Register the sites and send every message, permanent faults first, duplicates last."""
    from rtsmonitor.jobs import SITE_YEARS_QUEUE, SiteYearJob
    from rtsmonitor.monitor import upload_configs

    sent = Sent()
    gone = gone_config(config)
    upload_configs(storage, [(f"{GONE_SITE}.json", json.dumps(gone).encode())])
    sent.permanent += site_years(gone)
    [rejected] = upload_configs(storage, [(f"{BAD_SITE}.json", json.dumps(bad_config(config)).encode())])
    if rejected.status != "invalid":
        raise RuntimeError(f"the invalid config of {BAD_SITE} was accepted")
    for site_id in (BAD_SITE, GHOST_SITE):
        storage.queues.send(SITE_YEARS_QUEUE, SiteYearJob(site_id, config.years[-1]).to_message())
        sent.permanent.append((site_id, config.years[-1]))
    for text in config.malformed:
        storage.queues.send(SITE_YEARS_QUEUE, text)
        sent.malformed.append(text)
    sites = site_configs(config)
    registrations = upload_configs(storage, [(f"{s['id']}.json", json.dumps(s).encode()) for s in sites])
    for site, registration in zip(sites, registrations, strict=True):
        queued = [(job.site_id, job.year) for job in registration.queued]
        if registration.status != "active" or queued != site_years(site):
            raise RuntimeError(f"site {site['id']}: registered {registration.status}, queued {queued}")
        sent.backfill += queued
    rng = random.Random(config.seed)
    late, pairs = config.duplicates
    chosen = rng.sample(sent.backfill, min(len(sent.backfill), late + pairs))
    for site_id, year in chosen[late:]:  # two more, back to back: two workers take them at once
        for _ in range(2):
            storage.queues.send(SITE_YEARS_QUEUE, SiteYearJob(site_id, year).to_message())
            sent.duplicates.append((site_id, year))
    for site_id, year in chosen[:late]:  # one more at the end: a re-run of a finished site-year
        storage.queues.send(SITE_YEARS_QUEUE, SiteYearJob(site_id, year).to_message())
        sent.duplicates.append((site_id, year))
    queued = storage.queues.peek_count(SITE_YEARS_QUEUE)
    if queued != sent.total:
        raise RuntimeError(f"sent {sent.total} messages but the queue holds {queued}")
    return sent


# --- fault proxies ---------------------------------------------------------------------------------


def fault_plan(service: str, rate: float, seed: int, mix: FaultMix = FAULT_MIX) -> Any:
    """The seeded random plan of one service's proxy (see :data:`FAULT_MIX`, :data:`FAULT_PATHS`)."""
    from rtsmonitor.offline.faults import FaultKind, FaultPlan

    kinds = tuple(FaultKind(kind) for kind, weight in mix[service] for _ in range(weight))
    offset = sorted(mix).index(service)
    return FaultPlan(
        rate=rate,
        kinds=kinds,
        seed=seed * 10 + offset,
        path_regex=FAULT_PATHS.get(service),
        hang_s=HANG_S,
        retry_after_s=0,
    )


def connection_settings(connection_string: str) -> dict[str, str]:
    """A connection string's settings."""
    return dict(part.split("=", 1) for part in connection_string.split(";") if part)


@contextlib.contextmanager
def fault_proxies(
    connection_string: str, stac_url: str, config: SoakConfig
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Proxies before Azurite's three services and the STAC server; yield (connection string, STAC URL, proxies)."""
    from rtsmonitor.offline.faults import FaultProxy

    def proxy(service: str, upstream: str) -> Any:
        return stack.enter_context(
            FaultProxy(upstream, fault_plan(service, config.fault_rate, config.seed, config.mix()))
        )

    settings = connection_settings(connection_string)
    with contextlib.ExitStack() as stack:
        proxies = {
            service: proxy(service, settings[f"{service.title()}Endpoint"]) for service in ("blob", "queue", "table")
        }
        proxies["cog"] = proxy("cog", stac_url)  # the COG reads, behind the API's proxy
        proxies["stac"] = proxy("stac", proxies["cog"].url)  # the client's: API requests and (passed on) COG reads
        settings.update({f"{service.title()}Endpoint": proxies[service].url for service in ("blob", "queue", "table")})
        yield ";".join(f"{k}={v}" for k, v in settings.items()) + ";", proxies["stac"].url, proxies


# --- workers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs (written as JSON for it)."""

    connection_string: str
    stac_url: str
    lease_s: int
    retry_delay_s: int = RETRY_DELAY_S
    max_dequeue_count: int = MAX_DEQUEUE_COUNT
    read_timeout_s: int = READ_TIMEOUT_S
    backoff_s: float = BACKOFF_S


class Journal:
    """A worker's log of deliveries, one JSON object a line, flushed at once (the parent reads it live)."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", buffering=1)

    def note(self, event: str, **values: Any) -> None:
        """Append one event."""
        self._file.write(json.dumps({"t": round(time.time(), 3), "event": event, **values}) + "\n")
        self._file.flush()


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The complete events of a journal (a line cut by a kill is skipped)."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(json.loads(line))
    return events


def worker(spec: WorkerSpec, journal_path: Path) -> None:
    """Drain the queue with the Functions' handlers, noting every delivery in the journal.

    The timeouts and backoffs are shortened before any client is built (see the module docstring). A queue
    operation of the host loop itself that still fails after the client's retries (receive, delete,
    release) ends :func:`~rtsmonitor.jobs.run_queue`; the loop is then started again, as the
    Functions host goes on after logging it, and the journal notes it.
    """
    import rtsmonitor.retry
    import rtsmonitor.stac

    rtsmonitor.retry.READ_TIMEOUT_S = spec.read_timeout_s
    rtsmonitor.retry.BACKOFF_FACTOR_S = spec.backoff_s
    rtsmonitor.stac.GDAL_REMOTE_READ_OPTIONS["GDAL_HTTP_TIMEOUT"] = str(spec.read_timeout_s)
    rtsmonitor.stac.GDAL_REMOTE_READ_OPTIONS["GDAL_HTTP_RETRY_DELAY"] = str(spec.backoff_s)

    from rtsmonitor.handlers import on_job, on_poison
    from rtsmonitor.inference import Model
    from rtsmonitor.jobs import run_queue
    from rtsmonitor.modelstore import DEMO_BUNDLE
    from rtsmonitor.siteyear import Services
    from rtsmonitor.stac import open_catalog
    from rtsmonitor.storage import QueueMessage
    from rtsmonitor.storage.azure import AzureStorage
    from rtsmonitor.terrain import StacDem

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    journal = Journal(journal_path)
    storage = AzureStorage.from_connection_string(spec.connection_string)
    services = Services(open_catalog(spec.stac_url), StacDem(spec.stac_url), Model.load(DEMO_BUNDLE, threads=1))
    journal.note("ready", pid=os.getpid())

    def handle(message: QueueMessage) -> None:
        where = {"id": message.id, "content": message.content, "delivery": message.dequeue_count}
        journal.note("start", **where)
        try:
            outcome = on_job(storage, lambda: services, message.content, message.dequeue_count)
        except Exception as exc:
            journal.note("error", **where, error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        if outcome is None:
            journal.note("done", **where, status="not a job")
        else:
            seconds = {stage: round(value, 3) for stage, value in outcome.stage_seconds.items()}
            journal.note("done", **where, status=outcome.record.status, superseded=outcome.superseded, seconds=seconds)

    def poison(message: QueueMessage, error: BaseException) -> None:
        record = on_poison(storage, message.content, message.dequeue_count)
        journal.note("poison", id=message.id, content=message.content, status=record.status if record else None)

    while True:
        try:
            run_queue(
                storage,
                handle,
                poison,
                max_dequeue_count=spec.max_dequeue_count,
                retry_delay_s=spec.retry_delay_s,
                lease_s=spec.lease_s,
            )
            break
        except Exception as exc:  # a queue call of the host loop failed for good: log it and go on
            journal.note("host-error", error=f"{type(exc).__name__}: {exc}"[:500])
            time.sleep(spec.retry_delay_s)
    journal.note("exit")


@dataclass
class WorkerProcess:
    """A started worker: its process, journal and log."""

    number: int
    process: subprocess.Popen[bytes]
    journal: Path
    log: Path

    def last_event(self) -> dict[str, Any] | None:
        """The journal's latest complete event."""
        events = read_journal(self.journal)
        return events[-1] if events else None


def start_worker(number: int, spec_path: Path, folder: Path) -> WorkerProcess:
    """Start worker ``number`` (``python bench/soak.py --worker SPEC --journal FILE``)."""
    journal, log = folder / f"worker-{number}.jsonl", folder / f"worker-{number}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path), "--journal", str(journal)]
    env = {**os.environ, **CHILD_ENV, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return WorkerProcess(number, process, journal, log)


@dataclass
class Drain:
    """What happened while the workers drained the queue."""

    seconds: float
    workers_started: int
    killed: list[dict[str, Any]]
    exit_codes: list[int]
    timed_out: bool
    events: list[dict[str, Any]]


def drain(spec: WorkerSpec, config: SoakConfig, total_messages: int, folder: Path, say: Any) -> Drain:
    """Run the workers until the queue is empty; kill one mid-job once and start a replacement."""
    spec_path = folder / "worker-spec.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    started = time.perf_counter()
    workers = [start_worker(n, spec_path, folder) for n in range(config.workers)]
    killed: list[dict[str, Any]] = []
    kill_after = max(1, int(total_messages * KILL_AFTER_FRACTION))
    timed_out = False
    try:
        while any(w.process.poll() is None for w in workers):
            if time.perf_counter() - started > config.timeout_s:
                timed_out = True
                break
            if config.kill and not killed:
                handled = sum(
                    1 for w in workers for e in read_journal(w.journal) if e["event"] in ("done", "error", "poison")
                )
                busy = [(w, e) for w in workers if (e := w.last_event()) is not None and e["event"] == "start"]
                if handled >= kill_after and busy:
                    victim, last = busy[0]
                    victim.process.send_signal(signal.SIGKILL)
                    victim.process.wait()
                    killed.append(
                        {"worker": victim.number, "held": last["content"], "after_s": time.perf_counter() - started}
                    )
                    say(f"killed worker {victim.number} (pid {victim.process.pid}) holding {last['content']}")
                    workers.append(start_worker(len(workers), spec_path, folder))
            time.sleep(0.1)
    finally:
        for w in workers:
            if w.process.poll() is None:
                w.process.kill()
                w.process.wait()
    events = [{**e, "worker": w.number} for w in workers for e in read_journal(w.journal)]
    for event in events:
        if event["event"] == "host-error":
            say(f"worker {event['worker']}: the host loop failed and was restarted: {event['error']}")
    exit_codes = [int(w.process.returncode) for w in workers]
    for w, code in zip(workers, exit_codes, strict=True):
        if code != 0 and not any(k["worker"] == w.number for k in killed):
            tail = "\n".join(w.log.read_text(errors="replace").splitlines()[-20:])
            say(f"worker {w.number} exited {code}:\n{tail}")
    return Drain(time.perf_counter() - started, len(workers), killed, exit_codes, timed_out, events)


# --- the audit -------------------------------------------------------------------------------------


@dataclass
class Audit:
    """What the store holds after the run, and what must be 0 in it."""

    records_by_status: Counter[str]
    must_be_zero: dict[str, int]
    notes: dict[str, str]
    info: dict[str, int]

    @property
    def clean(self) -> bool:
        """Whether every count that must be 0 is."""
        return not any(self.must_be_zero.values())


def audit_store(storage: Any, sent: Sent) -> Audit:
    """Read the records, blobs and queues directly and check them against what was sent."""
    from rtsmonitor.handlers import FAILURES_CONTAINER
    from rtsmonitor.jobs import POISON_QUEUE, SITE_YEARS_QUEUE, JobError, SiteYearJob
    from rtsmonitor.records import RECORDS_TABLE, RESULTS_CONTAINER, read_records
    from rtsmonitor.siteyear import PRODUCT_TYPES

    rows = storage.tables.query(RECORDS_TABLE)
    keys = [(str(r["PartitionKey"]), int(str(r["RowKey"]))) for r in rows]
    records = {(r.site_id, r.year): r for r in read_records(storage)}
    expected = sent.site_years
    missing = sorted(expected - set(records))
    unexpected = sorted(set(records) - expected)
    failed_without_reason = [k for k, r in records.items() if r.status == "failed" and not r.reason.strip()]
    permanent_not_failed = sorted(k for k in set(sent.permanent) if k in records and records[k].status != "failed")

    names = storage.blobs.list(RESULTS_CONTAINER, "")
    runs, orphans, items = classify_results(names, records)
    present = set(names)
    missing_blobs = [
        (key, product)
        for key, record in records.items()
        if record.status == "ok"
        for product in PRODUCT_TYPES
        if f"{record.results_prefix}{product}" not in present
    ]
    ok_without_blobs = [k for k, r in records.items() if r.status == "ok" and k not in runs]
    broken_items = [name for name in items.values() if item_problems(storage, name, present)]
    ok_without_item = sorted(k for k, r in records.items() if r.status == "ok" and items.get(k) is None)
    stray_rows = tracking_rows_without_ok_record(storage, records)

    poisoned: list[str] = []
    while batch := storage.queues.receive(POISON_QUEUE, 32, visibility_timeout_s=300):
        poisoned += [m.content for m in batch]
    malformed_in_poison, poisoned_site_years = 0, set()
    for text in poisoned:
        try:
            job = SiteYearJob.from_message(text)
        except JobError:
            malformed_in_poison += 1
            continue
        poisoned_site_years.add((job.site_id, job.year))
    left = storage.queues.peek_count(SITE_YEARS_QUEUE)
    notes = storage.blobs.list(FAILURES_CONTAINER, "")
    stale_notes = []  # a note of an earlier failed delivery beside the ok record of a later one
    for note in notes:
        site_id, _, year = note.partition("/")
        record = records.get((site_id, int(year.removesuffix(".json")))) if year[:4].isdigit() else None
        if record is not None and record.status == "ok":
            stale_notes.append(note)
    transient = expected - set(sent.permanent)
    transient_failed = sorted(k for k in transient if k in records and records[k].status == "failed")
    unaccounted = sum(1 for k in [*sent.backfill, *sent.duplicates, *sent.permanent] if k not in records)
    unaccounted += max(0, len(sent.malformed) - malformed_in_poison)

    must_be_zero = {
        "unaccounted messages": unaccounted,
        "site-years without a record": len(missing),
        "records without a message": len(unexpected),
        "failed records without a reason": len(failed_without_reason),
        "permanent-fault site-years not failed": len(permanent_not_failed),
        "duplicate rows": len(keys) - len(set(keys)),
        "site-years with >1 run folder": sum(1 for r in runs.values() if len(r) > 1),
        "orphaned blobs": len(orphans),
        "records pointing at missing blobs": len(missing_blobs) + len(ok_without_blobs),
        "catalog items pointing at missing blobs": len(broken_items),
        "ok records without a catalog item": len(ok_without_item),
        "tracking rows without an ok record": len(stray_rows),
        "messages left in the queue": left,
    }
    details = {
        "unaccounted messages": (
            f"{unaccounted - max(0, len(sent.malformed) - malformed_in_poison)} site-year messages without a record, "
            f"{max(0, len(sent.malformed) - malformed_in_poison)} malformed not in the poison queue"
        ),
        "site-years without a record": ", ".join(f"{s}/{y}" for s, y in missing[:5]),
        "records without a message": ", ".join(f"{s}/{y}" for s, y in unexpected[:5]),
        "failed records without a reason": ", ".join(f"{s}/{y}" for s, y in failed_without_reason[:5]),
        "permanent-fault site-years not failed": ", ".join(f"{s}/{y}" for s, y in permanent_not_failed[:5]),
        "site-years with >1 run folder": ", ".join([f"{s}/{y}" for (s, y), r in runs.items() if len(r) > 1][:5]),
        "orphaned blobs": ", ".join(orphans[:3]),
        "records pointing at missing blobs": ", ".join(f"{s}/{y} {p}" for (s, y), p in missing_blobs[:3]),
        "catalog items pointing at missing blobs": ", ".join(broken_items[:3]),
        "ok records without a catalog item": ", ".join(f"{s}/{y}" for s, y in ok_without_item[:5]),
        "tracking rows without an ok record": ", ".join(stray_rows[:5]),
    }
    info = {
        "result blobs": len(names),
        "malformed messages in the poison queue": malformed_in_poison,
        "site-year messages in the poison queue": len(poisoned) - malformed_in_poison,
        "failed site-years with only transient faults": len(transient_failed),
        "failure notes left": len(notes),
        "failure notes beside an ok record": len(stale_notes),
    }
    details["failed site-years with only transient faults"] = "; ".join(
        f"{s}/{y}: {records[s, y].reason[:90]}" for s, y in transient_failed[:2]
    )
    details["failure notes left"] = "the last error of each failed site-year (failures/)"
    return Audit(Counter(r.status for r in records.values()), must_be_zero, details, info)


def classify_results(
    names: Sequence[str], records: Mapping[tuple[str, int], Any]
) -> tuple[dict[tuple[str, int], set[str]], list[str], dict[tuple[str, int], str]]:
    """Sort the blobs of the results container: (run ids by site-year, orphans, catalog items by site-year).

    A site-year run's products are ``<site>/<yyyy>/<run_id>/<file>``: an orphan unless the site-year's
    ``ok`` record names that run. Derived blobs are the site's slump outlines
    (:func:`rtsmonitor.tracking.slumps_blob_name`: an orphan if the site has no record) and the STAC
    catalog (:mod:`rtsmonitor.catalog`: its root; a site's Collection, an orphan without an ``ok``
    record of the site; a site-year's Item, an orphan without an ``ok`` record of that site-year).
    Anything else is an orphan.
    """
    from rtsmonitor.catalog import CATALOG_BLOB, STAC_PREFIX, collection_blob, item_blob
    from rtsmonitor.tracking import slumps_blob_name

    sites_with_records = {site for site, _ in records}
    sites_with_ok = {site for (site, _), record in records.items() if record.status == "ok"}
    runs: dict[tuple[str, int], set[str]] = {}
    orphans: list[str] = []
    items: dict[tuple[str, int], str] = {}
    for name in names:
        parts = name.split("/")
        if name == CATALOG_BLOB:
            continue
        if name.startswith(STAC_PREFIX) and len(parts) > 2:
            site = parts[1]
            if name == collection_blob(site) and site in sites_with_ok:
                continue
            if len(parts) == 4 and parts[2].isdigit() and name == item_blob(site, int(parts[2])):
                record = records.get((site, int(parts[2])))
                if record is not None and record.status == "ok":
                    items[site, int(parts[2])] = name
                    continue
            orphans.append(name)
        elif len(parts) == 3 and name == slumps_blob_name(parts[1]):
            if parts[1] not in sites_with_records:
                orphans.append(name)
        elif len(parts) == 4 and len(parts[1]) == 4 and parts[1].isdigit():
            key = (parts[0], int(parts[1]))
            runs.setdefault(key, set()).add(parts[2])
            record = records.get(key)
            if record is None or record.status != "ok" or not name.startswith(str(record.results_prefix)):
                orphans.append(name)
        else:
            orphans.append(name)
    return runs, orphans, items


def item_problems(storage: Any, name: str, present: set[str]) -> list[str]:
    """What is wrong with a catalog Item: asset hrefs to blobs that are not there, a ``rts:broken`` mark."""
    from rtsmonitor.records import RESULTS_CONTAINER

    item = json.loads(storage.blobs.read_bytes(RESULTS_CONTAINER, name))
    problems = [f"rts:broken {item['properties']['rts:broken']}"] if "rts:broken" in item.get("properties", {}) else []
    folder = posixpath.dirname(f"{RESULTS_CONTAINER}/{name}")
    for key, asset in item.get("assets", {}).items():
        target = posixpath.normpath(posixpath.join(folder, asset["href"]))
        if not target.startswith(f"{RESULTS_CONTAINER}/") or target[len(RESULTS_CONTAINER) + 1 :] not in present:
            problems.append(f"asset {key}: {asset['href']} is missing")
    return problems


def tracking_rows_without_ok_record(storage: Any, records: Mapping[tuple[str, int], Any]) -> list[str]:
    """Rows of the slump table (:data:`rtsmonitor.tracking.OBJECTS_TABLE`) whose site-year has no ``ok`` record."""
    from rtsmonitor.tracking import OBJECTS_TABLE

    stray = []
    for row in storage.tables.query(OBJECTS_TABLE):
        site, key = str(row["PartitionKey"]), str(row["RowKey"])
        year = key.rsplit("-", 1)[-1]
        record = records.get((site, int(year))) if year.isdigit() else None
        if record is None or record.status != "ok":
            stray.append(f"{site}/{key}")
    return stray


def held_record_status(storage: Any, content: str) -> str:
    """The status of the record of a message's site-year (``none`` if it has none, ``not a job``)."""
    from rtsmonitor.jobs import JobError, SiteYearJob
    from rtsmonitor.records import read_record

    try:
        job = SiteYearJob.from_message(content)
    except JobError:
        return "not a job"
    record = read_record(storage, job.site_id, job.year)
    return record.status if record is not None else "none"


# --- the run ---------------------------------------------------------------------------------------


def rows_of(
    config: SoakConfig, sent: Sent, drain_: Drain, audit: Audit, proxies: dict[str, Any], seconds: dict[str, float]
) -> list[Row]:
    """The audit table."""
    rows = [
        Row(BENCH, "messages", "in", float(sent.total), "count", "all messages sent to the queue"),
        Row(BENCH, "messages", "site-years", float(len(sent.site_years)), "count", "distinct site-years among them"),
        Row(BENCH, "messages", "backfill", float(len(sent.backfill)), "count", f"{config.sites} registered sites"),
        Row(BENCH, "messages", "duplicates", float(len(sent.duplicates)), "count", "extra copies of site-years"),
        Row(
            BENCH,
            "messages",
            "permanent faults",
            float(len(sent.permanent)),
            "count",
            "COGs deleted, unregistered site, rejected config",
        ),
        Row(BENCH, "messages", "malformed", float(len(sent.malformed)), "count", "not a job: poison queue"),
    ]
    for status in ("ok", "no-scene", "failed"):
        rows.append(Row(BENCH, "records", status, float(audit.records_by_status.get(status, 0)), "count"))
    for name, value in audit.must_be_zero.items():
        detail = audit.notes.get(name, "") if value else ""
        verdict = "must be 0: " + ("PASS" if value == 0 else "FAIL")
        rows.append(Row(BENCH, "audit", name, float(value), "count", f"{verdict} {detail}".strip()))
    for name, value in audit.info.items():
        rows.append(Row(BENCH, "audit", name, float(value), "count", audit.notes.get(name, "") if value else ""))
    events = Counter(e["event"] for e in drain_.events)
    superseded = sum(1 for e in drain_.events if e["event"] == "done" and e.get("superseded"))
    held = f"{drain_.killed[0]['held']}, its record: {drain_.killed[0].get('record')}" if drain_.killed else ""
    rows += [
        Row(BENCH, "delivery", "deliveries", float(events["start"]), "count", "handler calls, all workers"),
        Row(
            BENCH, "delivery", "failed deliveries", float(events["error"]), "count", "released for a retry or poisoned"
        ),
        Row(BENCH, "delivery", "poisoned", float(events["poison"]), "count", f"after {MAX_DEQUEUE_COUNT} deliveries"),
        Row(BENCH, "delivery", "superseded runs", float(superseded), "count", "another run committed first"),
        Row(
            BENCH,
            "delivery",
            "host-loop errors",
            float(events["host-error"]),
            "count",
            "queue call failed, loop restarted",
        ),
        Row(BENCH, "delivery", "workers", float(config.workers), "count", f"{drain_.workers_started} started in all"),
        Row(
            BENCH, "delivery", "workers killed", float(len(drain_.killed)), "count", f"SIGKILL mid-job: {held}".strip()
        ),
    ]
    total_requests = total_faults = 0
    for service, proxy in proxies.items():
        stats = proxy.stats()
        total_requests += stats.eligible
        total_faults += stats.total_faults
        kinds = ", ".join(f"{k.value} {n}" for k, n in sorted(stats.faults.items(), key=lambda kv: kv[0].value))
        what = {"stac": "STAC API requests", "cog": "COG reads"}.get(service, f"{service} service requests")
        rows.append(Row(BENCH, f"faults {service}", "requests", float(stats.eligible), "count", what))
        rows.append(Row(BENCH, f"faults {service}", "injected", float(stats.total_faults), "count", kinds))
    rate = 100.0 * total_faults / max(total_requests, 1)
    rows.append(
        Row(BENCH, "faults all", "injected", float(total_faults), "count", f"{rate:.1f} % of {total_requests} requests")
    )
    ok_runs = [e for e in drain_.events if e["event"] == "done" and e.get("status") == "ok" and e.get("seconds")]
    stages = sorted({stage for e in ok_runs for stage in e["seconds"]}, key=lambda s: (s == "total", s))
    for stage in stages:
        values = [e["seconds"][stage] for e in ok_runs if stage in e["seconds"]]
        note = f"median of {len(values)} ok runs" + ("; up to the commit" if stage == "total" else "")
        rows.append(Row(BENCH, "time", f"site-year {stage}", round(median(values), 2), "s", note))
    rows += [
        Row(BENCH, "time", "setup", round(seconds["setup"], 1), "s", "Azurite, corpus, registrations, messages"),
        Row(
            BENCH,
            "time",
            "drain",
            round(drain_.seconds, 1),
            "s",
            f"{config.workers} workers, from start to empty queue",
        ),
        Row(BENCH, "time", "audit", round(seconds["audit"], 1), "s"),
        Row(BENCH, "time", "wall", round(seconds["wall"], 1), "s", "the whole soak run"),
    ]
    return rows


def soak(config: SoakConfig, say: Any = print, workdir: Path | None = None) -> tuple[list[Row], Audit]:
    """Set up, drain with faults and a kill, audit; return the table's rows and the audit.

    Everything (corpus, Azurite's data, the workers' journals and logs) goes to a temporary
    folder, or to ``workdir`` (which must be empty or absent), which is then kept.
    """
    from rtsmonitor.offline.azurite import running_azurite
    from rtsmonitor.offline.stacserver import LocalStacServer
    from rtsmonitor.storage.azure import AzureStorage

    if not 2 <= config.workers <= 4:
        raise ValueError(f"workers must be 2-4, got {config.workers}")
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        folder = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rts-soak-")))
        if workdir is not None and workdir.exists() and any(workdir.iterdir()):
            raise ValueError(f"--workdir {workdir} is not empty")
        deleted = build_soak_corpus(folder / "corpus", config)
        say(f"corpus: {config.sites + 1} sites, summers {config.years[0]}-{config.years[-1]}, {deleted} COGs deleted")
        with (
            running_azurite(folder / "azurite") as direct,
            LocalStacServer(folder / "corpus") as stac,
            fault_proxies(direct, stac.url, config) as (proxied, stac_url, proxies),
        ):
            storage = AzureStorage.from_connection_string(direct)
            sent = send_messages(storage, config)
            seconds["setup"] = time.perf_counter() - started
            say(f"{sent.total} messages queued ({len(sent.site_years)} site-years); {config.workers} workers start")
            for proxy in proxies.values():
                proxy.reset_stats()
            spec = WorkerSpec(proxied, stac_url, config.lease_s)
            drained = drain(spec, config, sent.total, folder, say)
            say(f"queue drained in {drained.seconds:.0f} s; auditing")
            begun = time.perf_counter()
            audit = audit_store(storage, sent)
            seconds["audit"] = time.perf_counter() - begun
            for kill in drained.killed:
                kill["record"] = held_record_status(storage, kill["held"])
            if drained.timed_out:
                audit.must_be_zero["messages left in the queue"] = max(
                    1, audit.must_be_zero["messages left in the queue"]
                )
            seconds["wall"] = time.perf_counter() - started
            return rows_of(config, sent, drained, audit, proxies, seconds), audit


def run(quick: bool = False) -> list[Row]:
    """The default soak (or the quick one); the rows of its audit table."""
    rows, _ = soak(SoakConfig.quick() if quick else SoakConfig())
    return rows


def markdown(rows: Sequence[Row], command: str) -> str:
    """The audit table as Markdown, with the command that made it."""
    lines = [f"`{command}`", "", "| case | metric | value | unit | note |", "|---|---|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r.case} | {r.metric} | {format_value(r.value)} | {r.unit} | {r.note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line: the soak run, or (``--worker``) one queue worker."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, help=f"regular sites (default {SITES}; quick {QUICK_SITES})")
    parser.add_argument("--workers", type=int, help=f"worker processes, 2-4 (default {WORKERS}; quick {QUICK_WORKERS})")
    parser.add_argument("--fault-rate", type=float, default=FAULT_RATE, help="share of requests given a fault")
    parser.add_argument("--seed", type=int, default=0, help="seeds the corpus, the faults and the duplicates")
    parser.add_argument("--no-kill", action="store_true", help="do not kill a worker mid-run")
    parser.add_argument("--quick", action="store_true", help="a dozen messages (the smoke test)")
    parser.add_argument("--markdown", type=Path, help="also write the audit table as Markdown to this file")
    parser.add_argument("--workdir", type=Path, help="keep the corpus, store, journals and logs in this empty folder")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(WorkerSpec(**json.loads(args.worker.read_text())), args.journal)
        return
    changes: dict[str, Any] = {
        "fault_rate": args.fault_rate,
        "seed": args.seed,
        "kill": not args.no_kill,
    }
    if args.sites is not None:
        changes["sites"] = args.sites
    if args.workers is not None:
        changes["workers"] = args.workers
    config = SoakConfig.quick(**changes) if args.quick else SoakConfig(**changes)
    rows, audit = soak(config, workdir=args.workdir)
    print()
    print_table(rows)
    if args.markdown:
        command = "python -m bench.soak " + " ".join(sys.argv[1:])
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        args.markdown.write_text(f"Soak run {stamp}, {os.cpu_count()} cores\n\n" + markdown(rows, command.strip()))
        print(f"\nwrote {args.markdown}")
    if not audit.clean:
        print("\nAUDIT FAILED: " + ", ".join(f"{k} {v}" for k, v in audit.must_be_zero.items() if v))
        sys.exit(1)


if __name__ == "__main__":
    main()
