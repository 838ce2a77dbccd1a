"""The Functions app end to end: real trigger objects, Azurite, the local STAC server, the demo model.

The Functions host cannot run here (Core Tools download it at install time), so the tests play the
host: they call each decorated function with the trigger object the host would build, and deliver
queue messages with :func:`rtsmonitor.jobs.run_queue` (retries, then the poison queue, as
``host.json`` configures the host).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import function_app as fa
import pytest
from azure.functions.queue import QueueMessage as FuncQueueMessage
from azure.functions.timer import TimerRequest

from rtsmonitor import handlers
from rtsmonitor.demo import demo_slumps
from rtsmonitor.errors import StorageError
from rtsmonitor.jobs import POISON_QUEUE, SITE_YEARS_QUEUE, SiteYearJob, run_queue
from rtsmonitor.modelstore import DEMO_BUNDLE, publish_model
from rtsmonitor.objects import find_objects, total_area_m2
from rtsmonitor.offline.azurite import running_azurite
from rtsmonitor.offline.corpus import CorpusSummary, build_corpus
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.records import RECORDS_TABLE, RESULTS_CONTAINER, SiteYearRecord, read_record, read_records, write_record
from rtsmonitor.redaction import RedactedError
from rtsmonitor.registry import SITE_ERRORS_CONTAINER, SITES_CONTAINER, SITES_PARTITION, SITES_TABLE
from rtsmonitor.sites import paper_site
from rtsmonitor.storage import QueueMessage, Storage
from rtsmonitor.storage.azure import AzureStorage
from rtsmonitor.storage.local import LocalStorage

REPO = Path(__file__).resolve().parents[2]
REAL_LABELS = REPO.parent / "shared" / "data" / "labels"
SITE = "horton01"
CORPUS_YEARS = [2018, 2020, 2021]
"""Summers in the offline corpus; 2019 has no acquisition at all (a no-scene year)."""
BROKEN_YEAR = 2018
"""Its band files are deleted from the corpus after the build: processing it must fail."""
AREA_TOLERANCE = 0.15
"""Relative tolerance of detected vs true RTS area: the +-15 % area error of Rustemeyer et al. 2022,
which the records carry as their area uncertainty; the demo model (precision 0.58, recall 0.87 at
pixel level on the synthetic corpus) stays within it on the clear summers of this site."""

pytestmark = pytest.mark.azurite


@dataclass
class App:
    storage: Storage
    corpus: CorpusSummary
    stac_url: str


@pytest.fixture(scope="module")
def app_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """Azurite of its own, the offline corpus behind a local STAC API, and the app's settings."""
    root = tmp_path_factory.mktemp("function-app")
    site = paper_site(SITE)
    corpus = build_corpus(
        root / "stac",
        [(site.id, site.grid())],
        CORPUS_YEARS,
        scenes_per_year=2,
        seed=0,
        slumps={site.id: demo_slumps(site, REAL_LABELS)},
        progress=False,
    )
    for scene in corpus.scenes_for(site.id, BROKEN_YEAR):
        for band in (root / "stac" / "files" / "sentinel-2-l2a").rglob(f"*{scene.spec.datetime:%Y%m%d}*_B0*_10m.tif"):
            band.unlink()
    with (
        running_azurite(root / "azurite") as connection,
        LocalStacServer(corpus.root) as server,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("AzureWebJobsStorage", connection)
        mp.setenv("RTS_STORAGE", "azure:")
        mp.setenv("RTS_STAC_URL", server.url)
        mp.setenv("RTS_MODEL_CACHE", str(root / "models"))
        mp.setenv("RTS_CODE_VERSION", "test")
        fa.storage.cache_clear()
        fa.live_services.cache_clear()
        storage = AzureStorage.from_connection_string(connection)
        publish_model(storage, DEMO_BUNDLE)
        yield App(storage, corpus, server.url)
        fa.storage.cache_clear()
        fa.live_services.cache_clear()


def upload(app: App, name: str, data: bytes) -> None:
    """What a user does (put a blob in sites/) and what the host does next (call the blob trigger)."""
    app.storage.blobs.write_bytes(SITES_CONTAINER, name, data)
    fa.register_site(func.blob.InputStream(data=data, name=f"{SITES_CONTAINER}/{name}", length=len(data)))


def site_config(site_id: str = SITE, **changes: Any) -> dict[str, Any]:
    config = json.loads(paper_site(SITE).model_copy(update={"labels": []}).model_dump_json())
    config.update(id=site_id, **changes)
    return config


def as_trigger(message: QueueMessage) -> FuncQueueMessage:
    return FuncQueueMessage(
        id=message.id,
        body=message.content.encode(),
        dequeue_count=message.dequeue_count,
        pop_receipt=message.pop_receipt,
    )


def run_host(app: App, max_dequeue_count: int = 2) -> list[str]:
    """Deliver site-years to the queue trigger until the queue is empty; then the poison trigger."""
    run = run_queue(
        app.storage,
        lambda m: fa.process_site_year(as_trigger(m)),
        lambda m, e: None,
        max_dequeue_count=max_dequeue_count,
        retry_delay_s=1,
    )
    while messages := app.storage.queues.receive(POISON_QUEUE, 32, visibility_timeout_s=30):
        for message in messages:
            fa.record_poison(as_trigger(message))
            app.storage.queues.delete(POISON_QUEUE, message)
    return run.poisoned


def clear_queue(app: App) -> None:
    while messages := app.storage.queues.receive(SITE_YEARS_QUEUE, 32, visibility_timeout_s=30):
        for message in messages:
            app.storage.queues.delete(SITE_YEARS_QUEUE, message)


def queued_jobs(app: App) -> list[SiteYearJob]:
    jobs = []
    while messages := app.storage.queues.receive(SITE_YEARS_QUEUE, 32, visibility_timeout_s=30):
        for message in messages:
            jobs.append(SiteYearJob.from_message(message.content))
            app.storage.queues.delete(SITE_YEARS_QUEUE, message)
    return sorted(jobs)


def snapshot(app: App) -> dict[str, Any]:
    """Every site row, record row and result blob: what bad input must leave alone."""
    return {
        "sites": app.storage.tables.query(SITES_TABLE),
        "records": app.storage.tables.query(RECORDS_TABLE),
        "results": app.storage.blobs.list(RESULTS_CONTAINER),
    }


# --- function metadata ----------------------------------------------------------------------------


def test_function_metadata_binds_every_trigger() -> None:
    functions = {f.get_function_name(): json.loads(f.get_function_json()) for f in fa.app.get_functions()}
    bindings = {name: data["bindings"] for name, data in functions.items()}
    assert bindings["register_site"] == [
        {
            "direction": "IN",
            "type": "blobTrigger",
            "name": "blob",
            "path": "sites/{name}",
            "connection": "AzureWebJobsStorage",
        }
    ]
    timer = bindings["yearly_run"][0]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%RTS_YEARLY_SCHEDULE%"
    assert timer["runOnStartup"] is False
    queue = bindings["process_site_year"][0]
    assert (queue["type"], queue["queueName"], queue["connection"]) == (
        "queueTrigger",
        "site-years",
        "AzureWebJobsStorage",
    )
    poison = bindings["record_poison"][0]
    assert (poison["type"], poison["queueName"]) == ("queueTrigger", "site-years-poison")
    routes = {
        name: (b[0]["route"], b[0]["methods"], b[0]["authLevel"])
        for name, b in bindings.items()
        if b[0]["type"] == "httpTrigger"
    }
    assert routes == {
        "get_sites": ("sites", ["GET"], "FUNCTION"),
        "get_site": ("sites/{site_id}", ["GET"], "FUNCTION"),
        "get_records": ("records", ["GET"], "FUNCTION"),
        "get_site_records": ("sites/{site_id}/records", ["GET"], "FUNCTION"),
        "get_site_report": ("sites/{site_id}/report", ["GET"], "FUNCTION"),
    }


def test_settings_files_match_the_bindings() -> None:
    host = json.loads((REPO / "functions" / "host.json").read_text())
    queues = host["extensions"]["queues"]
    assert queues["maxDequeueCount"] == 5 and queues["messageEncoding"] == "base64"
    settings = json.loads((REPO / "functions" / "local.settings.example.json").read_text())["Values"]
    assert settings["RTS_YEARLY_SCHEDULE"] == "0 0 6 1 10 *"  # 1 October, 06:00 UTC
    assert settings["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = set(project["dependencies"]) | set(project["optional-dependencies"]["functions"])
    lines = (REPO / "functions" / "requirements.txt").read_text().splitlines()
    assert {line for line in lines if line and not line.startswith("#")} == pinned


# --- registration -> backfill -> records ------------------------------------------------------------


def test_upload_registers_site_and_backfill_yields_records_matching_truth(app_env: App) -> None:
    clear_queue(app_env)
    upload(app_env, f"{SITE}.json", json.dumps(site_config(first_year=2019, last_year=2021)).encode())
    row = app_env.storage.tables.get(SITES_TABLE, SITES_PARTITION, SITE)
    assert row["status"] == "active" and json.loads(str(row["config"]))["first_year"] == 2019
    assert app_env.storage.queues.peek_count(SITE_YEARS_QUEUE) == 3

    assert run_host(app_env) == []
    records = {r.year: r for r in read_records(app_env.storage, SITE)}
    assert sorted(records) == [2019, 2020, 2021]
    assert records[2019].status == "no-scene" and "no" in records[2019].reason.lower()
    grid = paper_site(SITE).grid()
    world = app_env.corpus.worlds[SITE]
    for year in (2020, 2021):
        record = records[year]
        assert record.status == "ok", record.reason
        truth = total_area_m2(find_objects(world.slump_mask(grid, year), None, grid))
        assert record.rts_area_m2 == pytest.approx(truth, rel=AREA_TOLERANCE)
        assert record.rts_area_err_m2 == pytest.approx(0.15 * record.rts_area_m2, rel=1e-3)
        assert record.co2_t_per_yr == pytest.approx(record.carbon_t_c_per_yr * 44 / 12, rel=1e-3)
        assert record.valid_fraction is not None and record.valid_fraction >= 0.5
        assert record.model_version == "demo-1" and record.code_version == "test"
        blobs = app_env.storage.blobs.list(RESULTS_CONTAINER, f"{SITE}/{year:04d}/")
        assert sorted(b.rsplit("/", 1)[1] for b in blobs) == sorted(
            ["probability.tif", "mask.tif", "rts.geojson", "quicklook.png", "scene.json"]
        )
        assert all(b.startswith(str(record.results_prefix)) for b in blobs)
        polygons = json.loads(
            app_env.storage.blobs.read_bytes(RESULTS_CONTAINER, f"{record.results_prefix}rts.geojson")
        )
        assert len(polygons["features"]) == record.rts_count
        scene = json.loads(app_env.storage.blobs.read_bytes(RESULTS_CONTAINER, f"{record.results_prefix}scene.json"))
        assert scene["items"][0]["id"] in str(record.scene_id)


def test_rerun_of_a_site_year_leaves_one_row_and_one_set_of_blobs(app_env: App) -> None:
    clear_queue(app_env)
    upload(app_env, f"{SITE}.json", json.dumps(site_config(first_year=2019, last_year=2021)).encode())
    first = read_record(app_env.storage, SITE, 2021)
    if first is None:  # this test alone: process 2021 once
        app_env.storage.queues.send(SITE_YEARS_QUEUE, SiteYearJob(SITE, 2021).to_message())
        run_host(app_env)
        first = read_record(app_env.storage, SITE, 2021)
    assert first is not None and first.status == "ok"
    clear_queue(app_env)
    app_env.storage.queues.send(SITE_YEARS_QUEUE, SiteYearJob(SITE, 2021).to_message())
    run_host(app_env)
    rows = [r for r in app_env.storage.tables.query(RECORDS_TABLE, SITE) if r["RowKey"] == "2021"]
    assert len(rows) == 1
    second = read_record(app_env.storage, SITE, 2021)
    assert second is not None and second.run_id != first.run_id
    assert second.rts_area_m2 == first.rts_area_m2  # same scene, same model: same answer
    blobs = app_env.storage.blobs.list(RESULTS_CONTAINER, f"{SITE}/2021/")
    assert len(blobs) == 5 and all(b.startswith(str(second.results_prefix)) for b in blobs)


def test_a_newly_published_model_is_used_by_the_next_job(app_env: App, tmp_path: Path) -> None:
    upload(app_env, f"{SITE}.json", json.dumps(site_config(first_year=2019, last_year=2021)).encode())
    clear_queue(app_env)
    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, bundle)
    meta = json.loads((bundle / "model.json").read_text())
    (bundle / "model.json").write_text(json.dumps({**meta, "version": "demo-2"}))
    publish_model(app_env.storage, bundle)
    try:
        app_env.storage.queues.send(SITE_YEARS_QUEUE, SiteYearJob(SITE, 2020).to_message())
        run_host(app_env)
        record = read_record(app_env.storage, SITE, 2020)
        assert record is not None and record.model_version == "demo-2"
    finally:
        publish_model(app_env.storage, DEMO_BUNDLE)


def test_failing_site_year_ends_in_poison_queue_with_failure_record(app_env: App) -> None:
    clear_queue(app_env)
    upload(app_env, f"{SITE}.json", json.dumps(site_config(first_year=2019, last_year=2021)).encode())
    clear_queue(app_env)
    app_env.storage.queues.send(SITE_YEARS_QUEUE, SiteYearJob(SITE, BROKEN_YEAR).to_message())
    poisoned = run_queue(
        app_env.storage,
        lambda m: fa.process_site_year(as_trigger(m)),
        lambda m, e: None,
        max_dequeue_count=2,
        retry_delay_s=1,
    ).poisoned
    assert [SiteYearJob.from_message(p) for p in poisoned] == [SiteYearJob(SITE, BROKEN_YEAR)]
    assert app_env.storage.queues.peek_count(POISON_QUEUE) == 1
    assert app_env.storage.queues.peek_count(SITE_YEARS_QUEUE) == 0
    (message,) = app_env.storage.queues.receive(POISON_QUEUE, 1)
    fa.record_poison(as_trigger(message))
    app_env.storage.queues.delete(POISON_QUEUE, message)
    record = read_record(app_env.storage, SITE, BROKEN_YEAR)
    assert record is not None and record.status == "failed"
    assert "failed after 2 deliveries" in record.reason and record.attempts == 2
    assert app_env.storage.blobs.list(RESULTS_CONTAINER, f"{SITE}/{BROKEN_YEAR}/") == []


def test_queue_trigger_raises_so_the_host_retries(app_env: App) -> None:
    upload(app_env, f"{SITE}.json", json.dumps(site_config(first_year=2019, last_year=2021)).encode())
    message = FuncQueueMessage(id="m1", body=SiteYearJob(SITE, BROKEN_YEAR).to_message().encode(), dequeue_count=1)
    with pytest.raises(Exception, match="404"):
        fa.process_site_year(message)
    note = json.loads(app_env.storage.blobs.read_bytes(handlers.FAILURES_CONTAINER, f"{SITE}/{BROKEN_YEAR}.json"))
    assert note["delivery"] == 1 and note["error"]


def test_message_that_is_not_a_job_goes_to_poison_without_retries(app_env: App) -> None:
    before = app_env.storage.queues.peek_count(POISON_QUEUE)
    fa.process_site_year(FuncQueueMessage(id="m2", body=b"not json", dequeue_count=1))
    assert app_env.storage.queues.peek_count(POISON_QUEUE) == before + 1
    (message,) = app_env.storage.queues.receive(POISON_QUEUE, 1)
    fa.record_poison(as_trigger(message))  # logged and dropped: there is no site-year to record
    app_env.storage.queues.delete(POISON_QUEUE, message)


# --- bad configs ------------------------------------------------------------------------------------

BOWTIE = {
    "type": "Polygon",
    "coordinates": [[[-126.8, 69.7], [-126.7, 69.8], [-126.7, 69.7], [-126.8, 69.8], [-126.8, 69.7]]],
}
BAD_CONFIGS: dict[str, tuple[str, bytes, str]] = {
    "malformed-json": ("broken.json", b'{"id": "broken", "name": ', "(file)"),
    "yaml-tag": ("tagged.yaml", b'id: tagged\nname: !!python/object/apply:os.system ["echo pwned"]\n', "(file)"),
    "missing-id": ("noid.json", json.dumps({k: v for k, v in site_config("noid").items() if k != "id"}).encode(), "id"),
    "id-with-slash": ("slash.json", json.dumps(site_config("a/b")).encode(), "id"),
    "id-with-dotdot": ("dots.json", json.dumps(site_config("..")).encode(), "id"),
    "wrong-types": (
        "types.json",
        json.dumps(site_config("types", first_year="soon", max_cloud_pct=[1])).encode(),
        "first_year",
    ),
    "self-intersecting": (
        "bowtie.json",
        json.dumps({**{k: v for k, v in site_config("bowtie").items() if k != "centre"}, "geometry": BOWTIE}).encode(),
        "geometry",
    ),
    "oversized": (
        "huge.json",
        json.dumps(site_config("huge", centre={"lon": -126.75, "lat": 69.75, "size_km": 80})).encode(),
        "area",
    ),
    "unknown-field": ("extra.json", json.dumps(site_config("extra", colour="red")).encode(), "colour"),
    "id-not-blob-name": ("other.json", json.dumps(site_config("another")).encode(), "id"),
    "oversized-file": ("bulky.json", b'{"id": "bulky", "pad": "' + b"x" * (2 << 20) + b'"}', "byte limit"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_upload_gets_error_record_and_changes_nothing_else(app_env: App, case: str) -> None:
    upload(app_env, f"{SITE}.json", json.dumps(site_config(first_year=2019, last_year=2021)).encode())
    clear_queue(app_env)
    before = snapshot(app_env)
    name, data, field = BAD_CONFIGS[case]
    upload(app_env, name, data)  # must not raise: a raising blob trigger is retried forever
    key = name.rsplit(".", 1)[0]
    error = json.loads(app_env.storage.blobs.read_bytes(SITE_ERRORS_CONTAINER, f"{key}.json"))
    assert error["status"] == "invalid" and error["problems"]
    assert any(field in p["field"] or field in p["message"] for p in error["problems"]), error["problems"]
    row = app_env.storage.tables.get(SITES_TABLE, SITES_PARTITION, key)
    assert row["status"] == "invalid" and json.loads(str(row["problems"])) == error["problems"]
    after = snapshot(app_env)
    assert [r for r in after["sites"] if r["RowKey"] != key] == [r for r in before["sites"] if r["RowKey"] != key]
    assert after["records"] == before["records"] and after["results"] == before["results"]
    assert app_env.storage.queues.peek_count(SITE_YEARS_QUEUE) == 0


def test_invalid_update_of_a_registered_site_keeps_its_config(app_env: App) -> None:
    upload(app_env, f"{SITE}.json", json.dumps(site_config(first_year=2019, last_year=2021)).encode())
    clear_queue(app_env)
    good = app_env.storage.tables.get(SITES_TABLE, SITES_PARTITION, SITE)
    upload(app_env, f"{SITE}.json", json.dumps(site_config(max_cloud_pct=250)).encode())
    row = app_env.storage.tables.get(SITES_TABLE, SITES_PARTITION, SITE)
    assert row["status"] == "active" and row["config"] == good["config"]
    assert row["last_upload_status"] == "invalid" and "max_cloud_pct" in str(row["last_upload_problems"])
    assert app_env.storage.queues.peek_count(SITE_YEARS_QUEUE) == 0
    # a valid upload afterwards clears the error blob
    upload(app_env, f"{SITE}.json", json.dumps(site_config(first_year=2019, last_year=2021)).encode())
    assert not app_env.storage.blobs.exists(SITE_ERRORS_CONTAINER, f"{SITE}.json")


def test_same_config_uploaded_twice_queues_its_backfill_once(app_env: App) -> None:
    data = json.dumps(site_config("twice", first_year=2019, last_year=2020)).encode()
    clear_queue(app_env)
    upload(app_env, "twice.json", data)
    upload(app_env, "twice.json", data)
    assert queued_jobs(app_env) == [SiteYearJob("twice", 2019), SiteYearJob("twice", 2020)]


# --- timer ----------------------------------------------------------------------------------------


def test_timer_queues_exactly_this_years_active_sites(app_env: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "utc_today", lambda: dt.date(2026, 10, 1))
    for row in app_env.storage.tables.query(SITES_TABLE):  # start from a known set of sites
        app_env.storage.tables.delete(SITES_TABLE, str(row["PartitionKey"]), str(row["RowKey"]))
    today = dt.date(2026, 10, 1)
    configs = {
        "yearly-a": site_config("yearly-a", last_year=None),
        "yearly-b": site_config("yearly-b", first_year=2020, last_year=None),
        "ended": site_config("ended", last_year=2024),
        "paused": site_config("paused", last_year=None, active=False),
        "late-season": site_config("late-season", last_year=None, season={"start": "09-01", "end": "10-15"}),
    }
    for site_id, config in configs.items():
        handlers.on_site_blob(app_env.storage, f"{site_id}.json", json.dumps(config).encode(), today=today)
    clear_queue(app_env)
    fa.yearly_run(TimerRequest(past_due=False))
    assert queued_jobs(app_env) == [SiteYearJob("yearly-a", 2026), SiteYearJob("yearly-b", 2026)]


# --- HTTP -----------------------------------------------------------------------------------------


def test_http_endpoints_serve_sites_and_records(app_env: App) -> None:
    upload(app_env, f"{SITE}.json", json.dumps(site_config(first_year=2019, last_year=2021)).encode())
    if read_record(app_env.storage, SITE, 2019) is None:
        clear_queue(app_env)
        app_env.storage.queues.send(SITE_YEARS_QUEUE, SiteYearJob(SITE, 2019).to_message())
        run_host(app_env)
    sites = json.loads(fa.get_sites(func.HttpRequest("GET", "/api/sites", body=b"")).get_body())
    assert SITE in {s["site_id"] for s in sites}
    one = fa.get_site(func.HttpRequest("GET", f"/api/sites/{SITE}", route_params={"site_id": SITE}, body=b""))
    assert one.status_code == 200 and json.loads(one.get_body())["config"]["id"] == SITE
    missing = fa.get_site(func.HttpRequest("GET", "/api/sites/nope", route_params={"site_id": "nope"}, body=b""))
    assert missing.status_code == 404
    records = fa.get_site_records(func.HttpRequest("GET", "/x", route_params={"site_id": SITE}, body=b""))
    rows = json.loads(records.get_body())
    assert records.mimetype == "application/json" and 2019 in {r["year"] for r in rows}
    csv_response = fa.get_records(func.HttpRequest("GET", "/x", params={"format": "csv"}, body=b""))
    lines = csv_response.get_body().decode().splitlines()
    assert csv_response.mimetype == "text/csv" and lines[0].startswith("site_id,year,status")
    assert any(line.startswith(f"{SITE},2019,no-scene") for line in lines[1:])
    bad = fa.get_records(func.HttpRequest("GET", "/x", params={"format": "xml"}, body=b""))
    assert bad.status_code == 400 and "xml" in bad.get_body().decode()
    for site_id in ("../x", "UPPER", "a" * 70, "x'; DROP"):  # refused before storage is touched
        for function in (fa.get_site, fa.get_site_records):
            response = function(func.HttpRequest("GET", "/x", route_params={"site_id": site_id}, body=b""))
            assert response.status_code == 400 and "is not a site id" in response.get_body().decode()


# --- HTTP: checked before storage, paged, errors that echo nothing secret -----------------------------


class Untouchable:
    """A storage that fails the test on any use: requests refused as malformed must not reach it."""

    touched = 0

    def __getattr__(self, name: str) -> Any:
        Untouchable.touched += 1
        raise AssertionError(f"storage touched ({name}) by a request that is not well-formed")


def get(function: Any, params: dict[str, str] | None = None, site_id: str | None = None) -> func.HttpResponse:
    route = {} if site_id is None else {"site_id": site_id}
    response: func.HttpResponse = function(
        func.HttpRequest("GET", "/api/x", params=params or {}, route_params=route, body=b"")
    )
    return response


MALFORMED: dict[str, tuple[dict[str, str], str]] = {
    "letters": ({"year": "20x1"}, "year='20x1' is not a year"),
    "before-sentinel-2": ({"year": "2014"}, "year='2014' is not a year"),
    "after-2100": ({"to": "2101"}, "to='2101' is not a year"),
    "two-digits": ({"from": "21"}, "from='21' is not a year"),
    "five-digits": ({"year": "02021"}, "year='02021' is not a year"),
    "unicode-digits": ({"year": "\uff12\uff10\uff12\uff11"}, "is not a year"),  # full-width 2021
    "signed": ({"year": "+2021"}, "is not a year"),
    "spaces": ({"year": " 2021"}, "is not a year"),
    "from-after-to": ({"from": "2022", "to": "2020"}, "from=2022 is after to=2020"),
    "year-and-range": ({"year": "2021", "from": "2020"}, "not both"),
    "unknown": ({"yaer": "2021"}, "unknown query parameter 'yaer'"),
    "format": ({"format": "xml"}, "format='xml'"),
    "after": ({"after": "horton01"}, "after='horton01' is not a continuation"),
    "long": ({"year": "9" * 5000}, "year='" + "9" * 80 + "'... is not a year"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_years_and_parameters_get_400_before_storage_is_touched(
    monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setattr(fa, "storage", Untouchable)
    Untouchable.touched = 0
    params, message = MALFORMED[case]
    for function, site_id in ((fa.get_records, None), (fa.get_site_records, SITE)):
        response = get(function, params, site_id)
        body = json.loads(response.get_body())
        assert response.status_code == 400 and message in body["error"], body
        assert len(body["error"]) <= fa.MAX_ERROR_CHARS
    for function, bad in ((fa.get_sites, {"after": "../x"}), (fa.get_sites, {"site": "x"}), (fa.get_site, {"q": "1"})):
        assert get(function, bad, SITE).status_code == 400
    assert get(fa.get_site_records, {"year": "2021"}, "UPPER").status_code == 400
    assert Untouchable.touched == 0


def local_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sites: int, years: list[int]) -> Storage:
    """A local store with ``sites`` x ``years`` no-scene records and registered sites, served by the app."""
    storage = LocalStorage(tmp_path / "store")
    for n in range(sites):
        site_id = f"site-{n:02d}"
        handlers.on_site_blob(storage, f"{site_id}.json", json.dumps(site_config(site_id, last_year=2021)).encode())
        for year in years:
            write_record(
                storage, SiteYearRecord(site_id, year, "no-scene", "no clear scene", dt.datetime.now(dt.UTC), "t")
            )
    monkeypatch.setattr(fa, "storage", lambda: storage)
    return storage


def all_pages(function: Any, params: dict[str, str], site_id: str | None = None) -> list[func.HttpResponse]:
    pages = [get(function, params, site_id)]
    while after := pages[-1].headers.get(handlers.CONTINUATION_HEADER):
        pages.append(get(function, {**params, "after": after}, site_id))
        assert len(pages) < 100
    return pages


def test_responses_are_capped_in_rows_and_bytes_and_continue_in_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_records(tmp_path, monkeypatch, sites=3, years=[2018, 2019, 2020, 2021])
    assert (handlers.MAX_RESPONSE_ROWS, handlers.MAX_RESPONSE_BYTES) == (1000, 4 * 1024 * 1024)
    everything = json.loads(get(fa.get_records, {}).get_body())
    assert len(everything) == 12 and get(fa.get_records, {}).headers.get(handlers.CONTINUATION_HEADER) is None

    monkeypatch.setattr(handlers, "MAX_RESPONSE_ROWS", 5)
    pages = all_pages(fa.get_records, {})
    assert [len(json.loads(p.get_body())) for p in pages] == [5, 5, 2]
    assert [r for p in pages for r in json.loads(p.get_body())] == everything
    assert pages[0].headers[handlers.CONTINUATION_HEADER] == "site-01/2018"
    csv_pages = all_pages(fa.get_records, {"format": "csv"})
    lines = [p.get_body().decode().splitlines() for p in csv_pages]
    assert [len(page) for page in lines] == [6, 6, 3] and all(page[0].startswith("site_id,year") for page in lines)
    filtered = all_pages(fa.get_site_records, {"from": "2019", "to": "2020"}, "site-02")
    assert [(r["site_id"], r["year"]) for p in filtered for r in json.loads(p.get_body())] == [
        ("site-02", 2019),
        ("site-02", 2020),
    ]
    assert [r["year"] for r in json.loads(get(fa.get_records, {"year": "2021"}).get_body())] == [2021] * 3

    monkeypatch.setattr(handlers, "MAX_RESPONSE_ROWS", 1000)
    monkeypatch.setattr(handlers, "MAX_RESPONSE_BYTES", 2000)  # one JSON record is about 1 KB
    pages = all_pages(fa.get_records, {})
    assert all(len(p.get_body()) <= 2000 for p in pages) and len(pages) >= 6
    assert [r for p in pages for r in json.loads(p.get_body())] == everything
    monkeypatch.setattr(handlers, "MAX_RESPONSE_BYTES", 10)  # smaller than any row: one row per page
    assert [len(json.loads(p.get_body())) for p in all_pages(fa.get_records, {})] == [1] * 12
    sites = all_pages(fa.get_sites, {})
    assert [s["site_id"] for p in sites for s in json.loads(p.get_body())] == ["site-00", "site-01", "site-02"]


SECRET_KEY = "c2VjcmV0LWFjY291bnQta2V5LW9mLXRoZS10ZXN0LWRvLW5vdC1sb2c="
SECRET_SIG = "SECRETSIG0123456789abcdef%3D"


class Failing:
    """A storage whose table reads fail with an error that names a key and a signed URL."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @property
    def tables(self) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (StorageError(f"query table 'sites': AccountName=rts;AccountKey={SECRET_KEY}; sig={SECRET_SIG}"), 503),
        (RuntimeError(f"GET https://rts.table.core.windows.net/sites()?sv=2024-05-04&sig={SECRET_SIG} failed"), 500),
    ],
    ids=["storage-error", "internal-error"],
)
def test_storage_and_internal_errors_answer_generically_and_log_redacted(
    monkeypatch: pytest.MonkeyPatch, error: Exception, status: int
) -> None:
    monkeypatch.setattr(fa, "storage", lambda: Failing(error))
    lines = LogLines()
    with lines.capturing():
        responses = [get(fa.get_sites, {}), get(fa.get_site, {}, SITE), get(fa.get_records, {"code": SECRET_KEY})]
    for response in responses:
        body = response.get_body().decode()
        assert response.status_code == status and "error" in json.loads(body)
        assert SECRET_KEY not in body and "SECRETSIG" not in body and "AccountKey" not in body and "sig=" not in body
    text = "\n".join(lines.lines)
    assert "Traceback" in text and "REDACTED" in text  # the details are logged, redacted
    assert SECRET_KEY not in text and "SECRETSIG" not in text


def test_request_values_that_look_like_secrets_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fa, "storage", Untouchable)
    cases = [
        (fa.get_records, {"year": f"x?sv=1&sig={SECRET_SIG}"}, None),
        (fa.get_records, {"format": f"AccountKey={SECRET_KEY}"}, None),
        (fa.get_site, {}, f"a&sig={SECRET_SIG}"),
        (fa.get_records, {f"sig={SECRET_SIG}": "1"}, None),
        (fa.get_records, {"code": SECRET_KEY, "yaer": "2021"}, None),  # the function key is never repeated
    ]
    for function, params, site_id in cases:
        response = get(function, params, site_id)
        body = response.get_body().decode()
        assert response.status_code == 400, body
        assert "SECRETSIG" not in body and SECRET_KEY not in body and SECRET_KEY[:20] not in body


# --- logs of a run whose asset hrefs are signed ------------------------------------------------------

FAKE_SIG = "SECRETTOKEN123xyzAbC%2Bdef%3D"
"""The made-up SAS signature of the signed hrefs: it must appear in no log line and no stored note."""
FAKE_SAS = (
    "st=2026-11-24T10%3A00%3A00Z&se=2026-11-25T10%3A00%3A00Z&sp=rl&sv=2024-05-04&sr=c"
    "&skoid=00000000-1111-2222-3333-444444444444&sktid=55555555-6666-7777-8888-999999999999"
    f"&skt=2026-11-24T09%3A14%3A43Z&ske=2026-12-01T09%3A14%3A43Z&sks=b&skv=2024-05-04&sig={FAKE_SIG}"
)
"""A query in the shape of Planetary Computer's signed hrefs; the local STAC server ignores it."""
SIGNED_BROKEN_YEAR = 2020
"""Its red band points at a file that is not a GeoTIFF: GDAL's error names the signed URL."""
NOT_A_COG = "files/not-a-cog/B04_10m.tif"


class LogLines(logging.Handler):
    """Every record that reaches the root logger, formatted, at DEBUG (GDAL, rasterio, urllib3, azure)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @contextmanager
    def capturing(self) -> Iterator[LogLines]:
        root = logging.getLogger()
        level = root.level
        root.addHandler(self)  # added after function_app installed the redaction, as the worker's is
        root.setLevel(logging.DEBUG)
        try:
            yield self
        finally:
            root.removeHandler(self)
            root.setLevel(level)


@pytest.fixture(scope="module")
def signed_stac_url(app_env: App, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The corpus of ``app_env`` behind a second STAC server whose asset hrefs carry :data:`FAKE_SAS`.

    The files are hard links (no copy); the red band of :data:`SIGNED_BROKEN_YEAR` is a text file.
    """
    root = tmp_path_factory.mktemp("signed-stac")
    shutil.copytree(app_env.corpus.root / "files", root / "files", copy_function=os.link)
    (root / NOT_A_COG).parent.mkdir()
    (root / NOT_A_COG).write_bytes(b"this is not a GeoTIFF\n" * 64)
    for path in (app_env.corpus.root / "collections").rglob("*.json"):
        data = json.loads(path.read_text())
        for name, asset in data.get("assets", {}).items():
            broken = name == "B04" and str(data.get("properties", {}).get("datetime", "")).startswith("2020")
            asset["href"] = f"{NOT_A_COG if broken else asset['href']}?{FAKE_SAS}"
        (root / path.relative_to(app_env.corpus.root)).parent.mkdir(parents=True, exist_ok=True)
        (root / path.relative_to(app_env.corpus.root)).write_text(json.dumps(data))
    with LocalStacServer(root) as server:
        yield server.url


@pytest.fixture
def signed_app(app_env: App, signed_stac_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The app reading the signed catalogue (its services rebuilt before and after)."""
    monkeypatch.setenv("RTS_STAC_URL", signed_stac_url)
    monkeypatch.setenv("CPL_DEBUG", "ON")  # GDAL's debug messages (they name the files it reads) reach the log
    fa.live_services.cache_clear()
    upload(app_env, f"{SITE}.json", json.dumps(site_config(first_year=2019, last_year=2021)).encode())
    clear_queue(app_env)
    try:
        yield app_env
    finally:
        fa.live_services.cache_clear()


def job(year: int, delivery: int = 1) -> FuncQueueMessage:
    return FuncQueueMessage(
        id=f"signed-{year}", body=SiteYearJob(SITE, year).to_message().encode(), dequeue_count=delivery
    )


def test_no_sas_token_in_the_logs_of_a_run_with_signed_hrefs(signed_app: App) -> None:
    lines = LogLines()
    with lines.capturing():
        with pytest.raises(RedactedError, match="RasterioIOError") as raised:  # the red band is no GeoTIFF
            fa.process_site_year(job(SIGNED_BROKEN_YEAR))
        fa.process_site_year(job(2021))  # every read of a signed href succeeds
    text = "\n".join(lines.lines)
    assert "not-a-cog/B04_10m.tif?st=REDACTED" in text and "sig=REDACTED" in text  # signed hrefs were logged
    assert FAKE_SIG not in text and "SECRETTOKEN" not in text
    assert "SECRETTOKEN" not in str(raised.value)  # the message the worker sends the host, which logs it
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    record = read_record(signed_app.storage, SITE, 2021)
    assert record is not None and record.status == "ok" and record.scene_id


def test_no_sas_token_in_the_failure_note_and_the_failed_record(signed_app: App) -> None:
    signed_app.storage.tables.delete(RECORDS_TABLE, SITE, f"{SIGNED_BROKEN_YEAR}")  # an ok row would be kept
    with pytest.raises(RedactedError):
        fa.process_site_year(job(SIGNED_BROKEN_YEAR))
    note = signed_app.storage.blobs.read_bytes(handlers.FAILURES_CONTAINER, f"{SITE}/{SIGNED_BROKEN_YEAR}.json")
    assert "not-a-cog/B04_10m.tif?st=REDACTED" in note.decode()  # the error is kept, its signature not
    assert "SECRETTOKEN" not in note.decode(), "failures/<site>/<year>.json holds the SAS token"
    fa.record_poison(job(SIGNED_BROKEN_YEAR, delivery=2))
    record = read_record(signed_app.storage, SITE, SIGNED_BROKEN_YEAR)
    assert record is not None and record.status == "failed" and "not-a-cog" in record.reason
    assert "SECRETTOKEN" not in record.reason, "the failed record's reason holds the SAS token"


def test_no_sas_token_in_the_scene_document_of_the_products(signed_app: App) -> None:
    fa.process_site_year(job(2021))
    record = read_record(signed_app.storage, SITE, 2021)
    assert record is not None and record.status == "ok" and record.results_prefix
    scene = signed_app.storage.blobs.read_bytes(RESULTS_CONTAINER, f"{record.results_prefix}scene.json").decode()
    assert json.loads(scene)["items"] and "SECRETTOKEN" not in scene, "scene.json holds the SAS token"
