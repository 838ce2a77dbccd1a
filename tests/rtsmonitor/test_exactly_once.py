"""One complete result per site-year under at-least-once delivery: concurrent workers, crashes, lost answers.

A small site (3 km x 3 km) is processed for real (local STAC server, demo model); the storage is
wrapped so a test can hold a worker at a write, kill it there, or lose the answer of a write.
After every scenario the store is audited as a reader sees it: one record, every blob it names
present, and no blob of any other run left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hooked_blobs import Hook, HookedBlobs

from rtsmonitor.errors import ConflictError, StorageError
from rtsmonitor.handlers import LiveServices, on_job
from rtsmonitor.inference import Model
from rtsmonitor.jobs import SiteYearJob
from rtsmonitor.modelstore import DEMO_BUNDLE, MODELS_CONTAINER, publish_model
from rtsmonitor.offline.corpus import build_corpus
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.records import RECORDS_TABLE, RESULTS_CONTAINER, read_record, read_record_versioned
from rtsmonitor.registry import register_site
from rtsmonitor.sites import SiteConfig
from rtsmonitor.siteyear import PRODUCT_TYPES, Services, process_site_year
from rtsmonitor.stac import open_catalog
from rtsmonitor.storage import LocalStorage, Storage, TableStore
from rtsmonitor.terrain import StacDem

SITE = "tiny01"
YEARS = (2020, 2021)
CONFIG = {
    "id": SITE,
    "name": "Tiny test site",
    "centre": {"lon": -126.75, "lat": 69.75, "size_km": 3.0},
    "first_year": YEARS[0],
    "last_year": YEARS[-1],
}


@dataclass(frozen=True)
class Env:
    stac_url: str
    services: Services


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("exactly-once")
    grid = SiteConfig.model_validate(CONFIG).grid()
    corpus = build_corpus(root / "stac", [(SITE, grid)], list(YEARS), scenes_per_year=1, seed=3, progress=False)
    with LocalStacServer(corpus.root) as server:
        yield Env(server.url, Services(open_catalog(server.url), StacDem(server.url), Model.load(DEMO_BUNDLE)))


@pytest.fixture(params=["local", pytest.param("azure", marks=pytest.mark.azurite)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    store: Storage = (
        LocalStorage(tmp_path / "store") if request.param == "local" else request.getfixturevalue("azure_storage")
    )
    register_site(store, f"{SITE}.json", json.dumps(CONFIG).encode())
    return store


def message(year: int = 2021) -> str:
    return SiteYearJob(SITE, year).to_message()


def audit(storage: Storage, year: int = 2021) -> set[str]:
    """Check what a reader sees of the site-year; return the run ids that have blobs."""
    names = storage.blobs.list(RESULTS_CONTAINER, f"{SITE}/{year:04d}/")
    runs = {name.split("/")[2] for name in names}
    record = read_record(storage, SITE, year)
    if record is not None and record.status == "ok":
        assert record.results_prefix is not None
        for product in PRODUCT_TYPES:
            assert storage.blobs.exists(RESULTS_CONTAINER, record.results_prefix + product), product
    return runs


def assert_one_complete_result(storage: Storage, year: int = 2021) -> None:
    record = read_record(storage, SITE, year)
    assert record is not None and record.status == "ok"
    assert audit(storage, year) == {record.run_id}, "blobs of another run are left"
    names = storage.blobs.list(RESULTS_CONTAINER, f"{SITE}/{year:04d}/")
    assert sorted(name.rsplit("/", 1)[1] for name in names) == sorted(PRODUCT_TYPES)


# --- a storage whose writes a test can intercept ---------------------------------------------------


class HookedTables(TableStore):
    """Tables of ``inner``; ``hook(operation, args)`` runs before every write; ``after_put_if`` after one."""

    def __init__(self, inner: TableStore, hook: Hook, after_put_if: Callable[[], None] | None = None) -> None:
        self.inner, self.hook, self.after_put_if = inner, hook, after_put_if

    def upsert(self, table: str, entity: Mapping[str, object]) -> None:
        self.hook("row write", (table,))
        self.inner.upsert(table, entity)

    def get(self, table: str, partition_key: str, row_key: str) -> dict[str, object]:
        return self.inner.get(table, partition_key, row_key)

    def get_versioned(self, table: str, partition_key: str, row_key: str) -> tuple[dict[str, object], str]:
        return self.inner.get_versioned(table, partition_key, row_key)

    def put_if(self, table: str, entity: Mapping[str, object], etag: str | None) -> str:
        self.hook("row write", (table,))
        written = self.inner.put_if(table, entity, etag)
        if self.after_put_if is not None:
            self.after_put_if()
        return written

    def query(self, table: str, partition_key: str | None = None) -> list[dict[str, object]]:
        return self.inner.query(table, partition_key)

    def delete(self, table: str, partition_key: str, row_key: str) -> None:
        self.hook("row delete", (table,))
        self.inner.delete(table, partition_key, row_key)


def Hooked(inner: Storage, hook: Hook, after_put_if: Callable[[], None] | None = None) -> Storage:
    """``inner`` with ``hook`` called before every blob and row write (see :class:`HookedTables`)."""
    return Storage(HookedBlobs(inner.blobs, hook), HookedTables(inner.tables, hook, after_put_if), inner.queues)


class Killed(BaseException):
    """The worker died here: no ``except Exception`` clean-up runs (as with a killed process)."""


# --- concurrent workers ----------------------------------------------------------------------------


def test_two_workers_on_one_message_leave_one_record_and_one_run(env: Env, storage: Storage) -> None:
    both_uploading = threading.Barrier(2, timeout=120)
    arrived: set[int] = set()

    def hold_until_both_upload(operation: str, args: tuple[object, ...]) -> None:
        if operation == "blob write" and args[0] == RESULTS_CONTAINER and threading.get_ident() not in arrived:
            arrived.add(threading.get_ident())
            both_uploading.wait()  # both runs have read the record and are writing products

    hooked = Hooked(storage, hold_until_both_upload)
    outcomes: list[object] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            outcomes.append(on_job(hooked, lambda: env.services, message(), 1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    superseded = sorted(outcome.superseded for outcome in outcomes)
    assert superseded == [False, True]
    assert_one_complete_result(storage)
    winner = next(o for o in outcomes if not o.superseded)
    assert read_record(storage, SITE, 2021) == winner.record


def test_a_rerun_replaces_the_result_and_leaves_no_old_run(env: Env, storage: Storage) -> None:
    first = process_site_year(storage, SiteYearJob(SITE, 2021), env.services).record
    second = process_site_year(storage, SiteYearJob(SITE, 2021), env.services).record
    assert second.run_id != first.run_id and second.rts_area_m2 == first.rts_area_m2
    assert_one_complete_result(storage)


# --- crashes ---------------------------------------------------------------------------------------


def test_a_crash_between_any_two_writes_leaves_a_consistent_store_and_a_rerun_completes_it(
    env: Env, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())
    on_job(storage, lambda: env.services, message(), 1)  # an earlier ok result the crashes must not harm
    crash_at = 1
    while True:

        def die_at_write(
            operation: str,
            args: tuple[object, ...],
            crash_at: int = crash_at,
            calls: list[str] = [],  # noqa: B006
        ) -> None:
            calls.append(operation)
            if len(calls) == crash_at:
                raise Killed(f"killed before {operation} {args}")

        before = read_record(storage, SITE, 2021)
        try:
            on_job(Hooked(storage, die_at_write), lambda: env.services, message(), 1)
        except Killed:
            after = read_record(storage, SITE, 2021)
            assert before is not None and after is not None and after.status == "ok"
            if after.run_id != before.run_id:  # killed after the commit: the new result is complete
                assert after.processed > before.processed
            audit(storage)  # every blob the visible record names is there
            on_job(storage, lambda: env.services, message(), 2)  # the redelivery
            assert_one_complete_result(storage)
            crash_at += 1
            continue
        assert_one_complete_result(storage)  # the run had fewer writes than crash_at: all points covered
        break
    assert crash_at > len(PRODUCT_TYPES) + 1, "the crash points should include every product write and the commit"


KILL_SCRIPT = """
import os, sys
from rtsmonitor.handlers import on_job
from rtsmonitor.inference import Model
from rtsmonitor.modelstore import DEMO_BUNDLE
from rtsmonitor.siteyear import Services
from rtsmonitor.stac import open_catalog
from rtsmonitor.storage import LocalStorage
from rtsmonitor.terrain import StacDem
sys.path.insert(0, os.environ["TEST_DIR"])
from test_exactly_once import Hooked, message

store, url, kill_at = LocalStorage(sys.argv[1]), sys.argv[2], int(sys.argv[3])
writes = []

def kill(operation, args):
    writes.append(operation)
    if len(writes) == kill_at:
        os.kill(os.getpid(), 9)

services = Services(open_catalog(url), StacDem(url), Model.load(DEMO_BUNDLE))
on_job(Hooked(store, kill), lambda: services, message(), 1)
"""


def test_a_worker_process_killed_mid_upload_leaves_no_trace_after_the_redelivery(env: Env, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    killed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store"), env.stac_url, "3"],
        env={**os.environ, "TEST_DIR": str(Path(__file__).parent)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert read_record(storage, SITE, 2021) is None  # nothing visible: no record was written
    assert len(audit(storage)) == 1  # the killed run's two products are left behind...
    on_job(storage, lambda: env.services, message(), 2)
    assert_one_complete_result(storage)  # ...and the redelivery removed them


# --- lost answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lost_answer", [StorageError("connection reset"), ConflictError("changed since read")])
def test_a_commit_whose_answer_is_lost_is_recognised_as_landed(
    env: Env, tmp_path: Path, lost_answer: StorageError
) -> None:
    """The row was written, but the client saw an error (or its retry saw the changed ETag)."""
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())

    lost: list[bool] = []

    def lose_answer() -> None:
        if not lost:  # the commit's answer; later conditional writes (tracking counts) get theirs
            lost.append(True)
            raise lost_answer

    outcome = process_site_year(Hooked(storage, lambda *_: None, lose_answer), SiteYearJob(SITE, 2021), env.services)
    assert not outcome.superseded
    assert outcome.record == read_record(storage, SITE, 2021)
    assert_one_complete_result(storage)


def test_a_commit_that_fails_deletes_its_run_and_raises(env: Env, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())

    def refuse(operation: str, args: tuple[object, ...]) -> None:
        if operation == "row write" and args[0] == "rtsrecords":
            raise StorageError("table service unavailable")

    with pytest.raises(StorageError, match="unavailable"):
        process_site_year(Hooked(storage, refuse), SiteYearJob(SITE, 2021), env.services)
    assert read_record(storage, SITE, 2021) is None
    assert audit(storage) == set()


# --- model integrity -------------------------------------------------------------------------------


def test_a_corrupt_model_fails_the_site_year_at_once_with_a_clear_record(env: Env, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())
    published = publish_model(storage, DEMO_BUNDLE)
    storage.blobs.write_bytes(MODELS_CONTAINER, published.onnx_blob, b"not a model")
    live = LiveServices(storage, {"RTS_STAC_URL": env.stac_url, "RTS_MODEL_CACHE": str(tmp_path / "cache")})
    outcome = on_job(storage, live, message(), 1)  # returns: the message is done, no redelivery
    assert outcome is not None and outcome.record.status == "failed"
    record = read_record(storage, SITE, 2021)
    assert record is not None and record.status == "failed"
    assert "not retried" in record.reason and "sha256" in record.reason
    assert audit(storage) == set()


def test_no_published_model_fails_the_site_year_at_once(env: Env, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())
    live = LiveServices(storage, {"RTS_STAC_URL": env.stac_url, "RTS_MODEL_CACHE": str(tmp_path / "cache")})
    outcome = on_job(storage, live, message(), 1)
    assert outcome is not None
    record = read_record(storage, SITE, 2021)
    assert record is not None and record.status == "failed" and "no model published" in record.reason


def test_a_series_processed_with_two_models_says_so(env: Env, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())
    first = process_site_year(storage, SiteYearJob(SITE, 2020), env.services).record
    assert first.model_note is None
    bundle = tmp_path / "bundle-v2"
    shutil.copytree(DEMO_BUNDLE, bundle)
    meta = json.loads((bundle / "model.json").read_text())
    meta["version"] = meta["version"] + "-retrained"
    (bundle / "model.json").write_text(json.dumps(meta))
    retrained = Services(env.services.catalog, env.services.dem, Model.load(bundle))
    second = process_site_year(storage, SiteYearJob(SITE, 2021), retrained).record
    assert second.model_version == meta["version"]
    assert second.model_note is not None
    assert "2020" in second.model_note and first.model_version is not None
    assert f"{first.model_name}/{first.model_version}" in second.model_note
    same = process_site_year(storage, SiteYearJob(SITE, 2021), env.services).record  # back to one model
    assert same.model_note is None


def test_a_rerun_commits_when_only_derived_fields_of_the_old_row_changed_meanwhile(env: Env, tmp_path: Path) -> None:
    """Tracking another year rewrites this year's counts on the old row: that is no competing run."""
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())
    first = process_site_year(storage, SiteYearJob(SITE, 2021), env.services).record
    touched: list[bool] = []

    def touch_counts(operation: str, args: tuple[object, ...]) -> None:
        if operation == "blob write" and args[0] == RESULTS_CONTAINER and not touched:
            touched.append(True)
            old, etag = read_record_versioned(storage, SITE, 2021)
            assert old is not None and old.run_id == first.run_id
            storage.tables.put_if(RECORDS_TABLE, replace(old, rts_new=99).to_entity(), etag)

    outcome = process_site_year(Hooked(storage, touch_counts), SiteYearJob(SITE, 2021), env.services)
    assert touched and not outcome.superseded
    assert outcome.record.run_id != first.run_id
    assert_one_complete_result(storage)
    record = read_record(storage, SITE, 2021)
    assert record is not None and record.run_id == outcome.record.run_id and record.rts_new != 99
