"""Retries done once, in one place (:mod:`rtsmonitor.retry`), tested through the fault-injecting proxy.

Each remote client (pystac-client for searches, GDAL for COG reads, the Azure SDKs for storage)
is pointed at a :class:`~rtsmonitor.offline.faults.FaultProxy`; the tests check that transient
faults (5xx, 429 with ``Retry-After``, a hung connection) are retried by the client itself with
the project's policy, that permanent ones (404) are not, and that a whole site-year through a
faulty imagery service gives the same record as through a clean one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pystac_client.exceptions import APIError
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from rtsmonitor import retry
from rtsmonitor.errors import ConfigError, ModelError, NotFoundError, RtsError, SceneError, StorageError
from rtsmonitor.handlers import on_job, on_poison
from rtsmonitor.inference import Model
from rtsmonitor.jobs import SiteYearJob, run_queue
from rtsmonitor.modelstore import DEMO_BUNDLE
from rtsmonitor.offline.corpus import build_corpus
from rtsmonitor.offline.faults import FaultKind, FaultPlan, FaultProxy
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.records import RESULTS_CONTAINER, read_record
from rtsmonitor.registry import register_site
from rtsmonitor.sites import SiteConfig
from rtsmonitor.siteyear import Services, process_site_year
from rtsmonitor.stac import open_catalog, read_env
from rtsmonitor.storage import LocalStorage
from rtsmonitor.storage.azure import AzureStorage
from rtsmonitor.terrain import StacDem

SITE = "retry01"
YEAR = 2021
CONFIG = {
    "id": SITE,
    "name": "Retry test site",
    "centre": {"lon": -126.75, "lat": 69.75, "size_km": 3.0},
    "first_year": YEAR,
    "last_year": YEAR,
}


@dataclass(frozen=True)
class Stac:
    url: str
    root: Path


@pytest.fixture(scope="module")
def stac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stac]:
    root = tmp_path_factory.mktemp("retry")
    grid = SiteConfig.model_validate(CONFIG).grid()
    corpus = build_corpus(root / "stac", [(SITE, grid)], [YEAR], scenes_per_year=1, seed=5, progress=False)
    with LocalStacServer(corpus.root) as server:
        yield Stac(server.url, corpus.root)


@pytest.fixture
def proxy(stac: Stac) -> Iterator[FaultProxy]:
    with FaultProxy(stac.url) as fault_proxy:
        yield fault_proxy


def a_band_path(stac: Stac) -> str:
    """The path (under the server) of one band COG of the corpus."""
    band = next((stac.root / "files").rglob("*_B04_10m.tif"))
    return "/" + band.relative_to(stac.root).as_posix()


# --- the policy --------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: high)
    longest = [retry.backoff_s(n) for n in range(1, 10)]
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: low)
    shortest = [retry.backoff_s(n) for n in range(1, 10)]
    assert longest[:3] == [retry.BACKOFF_FACTOR_S, 2 * retry.BACKOFF_FACTOR_S, 4 * retry.BACKOFF_FACTOR_S]
    assert max(longest) == retry.MAX_BACKOFF_S
    assert shortest == [value * (1 - retry.JITTER_FRACTION) for value in longest]


def test_permanent_errors_are_the_ones_no_redelivery_can_fix() -> None:
    assert retry.is_permanent(ConfigError("site.json", [("id", "bad")]))
    assert retry.is_permanent(ModelError("sha256 differs"))
    wrapped = RtsError("site-year failed")
    wrapped.__cause__ = ModelError("corrupt")
    assert retry.is_permanent(wrapped)
    for transient in (RasterioIOError("HTTP 503"), TimeoutError(), NotFoundError("site not yet written")):
        assert not retry.is_permanent(transient)
    assert not retry.is_permanent(SceneError("a band could not be read"))


# --- STAC API searches (urllib3 Retry on the requests session) -----------------------------------


def search_ids(url: str) -> list[str]:
    grid = SiteConfig.model_validate(CONFIG).grid()
    search = open_catalog(url).search(collections=["sentinel-2-l2a"], bbox=grid.bbox_wgs84(), max_items=50)
    return sorted(item.id for item in search.items())


def test_stac_search_recovers_from_server_errors_and_honours_retry_after(stac: Stac, proxy: FaultProxy) -> None:
    expected = search_ids(stac.url)
    assert expected
    proxy.set_plan(
        FaultPlan(
            script=(FaultKind.STATUS_503, FaultKind.STATUS_429, FaultKind.STATUS_500),
            path_regex="/search",
            retry_after_s=2,
        )
    )
    started = time.monotonic()
    assert search_ids(proxy.url) == expected
    assert proxy.stats().total_faults == 3
    assert time.monotonic() - started >= 2.0  # the 429's Retry-After was waited out


def test_stac_client_error_is_not_retried(proxy: FaultProxy) -> None:
    with pytest.raises(APIError):
        retry.stac_io().read_text(proxy.url + "/collections/no-such-collection")
    assert proxy.stats().forwarded == 1


def test_stac_search_that_hangs_is_timed_out_and_retried(
    stac: Stac, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry, "READ_TIMEOUT_S", 1)
    expected = search_ids(stac.url)
    proxy.set_plan(FaultPlan(script=(FaultKind.HANG,), path_regex="/search", hang_s=20))
    started = time.monotonic()
    assert search_ids(proxy.url) == expected
    assert proxy.stats().faults == {FaultKind.HANG: 1}
    assert time.monotonic() - started < 10


# --- COG reads (GDAL_HTTP_MAX_RETRY, GDAL_HTTP_RETRY_CODES) --------------------------------------


def read_window(url: str) -> np.ndarray:
    with read_env(), rasterio.open(url) as src:
        return src.read(1, window=Window(0, 0, 128, 128))


def test_cog_reads_recover_from_server_errors_and_throttling(stac: Stac, proxy: FaultProxy) -> None:
    path = a_band_path(stac)
    expected = read_window(stac.url + path)
    proxy.set_plan(
        FaultPlan(
            script=(FaultKind.STATUS_503, None, FaultKind.STATUS_500, FaultKind.STATUS_429),
            methods=frozenset({"GET"}),
            path_regex="/files/",
        )
    )
    np.testing.assert_array_equal(read_window(proxy.url + path), expected)
    assert proxy.stats().total_faults == 3


def test_a_cog_response_cut_short_is_read_again_and_not_cached(stac: Stac, proxy: FaultProxy) -> None:
    """GDAL must not keep a truncated tile in its /vsicurl/ cache: later reads in the process re-fetch it."""
    path = a_band_path(stac)
    with read_env(), rasterio.open(stac.url + path) as src:
        expected = src.read(1)
    proxy.set_plan(FaultPlan(script=(None, None, FaultKind.SHORT), methods=frozenset({"GET"})))
    for _ in range(2):
        with read_env(), rasterio.open(proxy.url + path) as src:
            np.testing.assert_array_equal(src.read(1), expected)
    assert proxy.stats().faults == {FaultKind.SHORT: 1}


def test_cog_read_of_a_missing_file_is_not_retried(proxy: FaultProxy) -> None:
    with pytest.raises(RasterioIOError):
        read_window(proxy.url + "/files/no-such-band.tif")
    assert proxy.stats().forwarded <= 2  # a HEAD and at most one GET: no retries of a 404


# --- storage (the Azure SDKs' retry policies, configured by rtsmonitor.retry) --------------------


@pytest.mark.azurite
def test_storage_calls_recover_from_server_errors_and_throttling(
    azurite_proxies: tuple[str, dict[str, FaultProxy]],
) -> None:
    connection_string, proxies = azurite_proxies
    storage = AzureStorage.from_connection_string(connection_string, name_prefix=f"t{uuid.uuid4().hex[:10]}")
    proxies["Blob"].set_plan(FaultPlan(script=(FaultKind.STATUS_503, FaultKind.STATUS_500), methods=frozenset({"PUT"})))
    storage.blobs.write_bytes("results", "a/b.json", b"{}")
    proxies["Table"].set_plan(FaultPlan(script=(FaultKind.STATUS_429, FaultKind.STATUS_503), retry_after_s=1))
    storage.tables.upsert("rtsrecords", {"PartitionKey": "a", "RowKey": "2021", "n": 1})
    proxies["Queue"].set_plan(FaultPlan(script=(FaultKind.STATUS_503,), methods=frozenset({"POST"})))
    storage.queues.send("site-years", "hello")
    for service in ("Blob", "Table", "Queue"):
        proxies[service].set_plan(FaultPlan())
    assert storage.blobs.read_bytes("results", "a/b.json") == b"{}"
    assert storage.tables.get("rtsrecords", "a", "2021")["n"] == 1
    assert [m.content for m in storage.queues.receive("site-years")] == ["hello"]
    assert [proxies[s].stats().total_faults for s in ("Blob", "Table", "Queue")] == [2, 2, 1]


def test_the_tables_client_gets_the_retry_settings() -> None:
    """azure-data-tables ignores ``retry_policy=``: the settings must arrive as keyword arguments."""
    storage = AzureStorage.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    client = storage.tables._client("rtsrecords")  # type: ignore[attr-defined]
    policies = client._client._client._pipeline._impl_policies  # the SDK's pipeline, private but stable
    (policy,) = [p for p in policies if type(p).__name__ == "TablesRetryPolicy"]
    assert (policy.total_retries, policy.backoff_factor, policy.backoff_max) == (
        retry.RETRIES,
        retry.BACKOFF_FACTOR_S,
        retry.MAX_BACKOFF_S,
    )


@pytest.mark.azurite
def test_storage_read_that_hangs_is_timed_out_and_retried(
    azurite_proxies: tuple[str, dict[str, FaultProxy]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry, "READ_TIMEOUT_S", 1)
    connection_string, proxies = azurite_proxies
    storage = AzureStorage.from_connection_string(connection_string, name_prefix=f"t{uuid.uuid4().hex[:10]}")
    storage.blobs.write_bytes("results", "a/b.json", b"[1]")
    proxies["Blob"].set_plan(FaultPlan(script=(FaultKind.HANG,), methods=frozenset({"GET"}), hang_s=20))
    started = time.monotonic()
    assert storage.blobs.read_bytes("results", "a/b.json") == b"[1]"
    assert proxies["Blob"].stats().faults == {FaultKind.HANG: 1}
    assert time.monotonic() - started < 10


@pytest.mark.azurite
def test_a_table_answer_cut_short_is_a_storage_error(azurite_proxies: tuple[str, dict[str, FaultProxy]]) -> None:
    """azure-data-tables raises AttributeError on such an answer: it must reach the caller as StorageError."""
    connection_string, proxies = azurite_proxies
    storage = AzureStorage.from_connection_string(connection_string, name_prefix=f"t{uuid.uuid4().hex[:10]}")
    storage.tables.upsert("rtsrecords", {"PartitionKey": "a", "RowKey": "2020"})  # the table exists
    proxies["Table"].set_plan(FaultPlan(script=(FaultKind.SHORT,), methods=frozenset({"POST"})))
    with contextlib.suppress(StorageError):  # landed or not: the caller reads the row back (siteyear._commit)
        storage.tables.put_if("rtsrecords", {"PartitionKey": "a", "RowKey": "2021", "n": 1}, None)
    assert proxies["Table"].stats().faults == {FaultKind.SHORT: 1}


@pytest.mark.azurite
def test_storage_not_found_is_not_retried(azurite_proxies: tuple[str, dict[str, FaultProxy]]) -> None:
    connection_string, proxies = azurite_proxies
    storage = AzureStorage.from_connection_string(connection_string, name_prefix=f"t{uuid.uuid4().hex[:10]}")
    storage.blobs.write_bytes("results", "present.json", b"{}")
    before = proxies["Blob"].stats().forwarded
    with pytest.raises(NotFoundError):
        storage.blobs.read_bytes("results", "absent.json")
    assert proxies["Blob"].stats().forwarded == before + 1


# --- a whole site-year through a faulty imagery service ------------------------------------------


def test_a_site_year_through_a_faulty_stac_and_cog_service_gives_the_clean_result(
    stac: Stac, proxy: FaultProxy, tmp_path: Path
) -> None:
    model = Model.load(DEMO_BUNDLE)
    records = []
    for url in (stac.url, proxy.url):
        storage = LocalStorage(tmp_path / f"store-{len(records)}")
        register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())
        services = Services(open_catalog(url), StacDem(url), model)
        if url == proxy.url:
            proxy.set_plan(
                FaultPlan(
                    rate=0.15,
                    kinds=(FaultKind.STATUS_500, FaultKind.STATUS_503, FaultKind.STATUS_429),
                    seed=11,
                    retry_after_s=1,
                )
            )
        records.append(process_site_year(storage, SiteYearJob(SITE, YEAR), services).record)
    clean, faulty = records
    assert proxy.stats().total_faults >= 3
    assert faulty.status == clean.status == "ok"
    assert (faulty.rts_count, faulty.rts_area_m2, faulty.scene_id) == (
        clean.rts_count,
        clean.rts_area_m2,
        clean.scene_id,
    )


def test_a_corrupt_file_fails_the_site_year_after_the_hosts_retries_with_a_clear_record(
    stac: Stac, tmp_path: Path
) -> None:
    """A band COG damaged at rest cannot be read on any delivery: the poison handler records why."""
    root = tmp_path / "stac"
    shutil.copytree(stac.root, root)
    band = next((root / "files").rglob("*_B08_10m.tif"))
    data = bytearray(band.read_bytes())
    data[len(data) // 3 :] = bytes(len(data) - len(data) // 3)  # the tiles after the header are zeros
    band.write_bytes(bytes(data))
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())  # queues the site-year
    with LocalStacServer(root) as server:
        services = Services(open_catalog(server.url), StacDem(server.url), Model.load(DEMO_BUNDLE))
        run = run_queue(
            storage,
            lambda m: on_job(storage, lambda: services, m.content, m.dequeue_count),
            lambda m, e: on_poison(storage, m.content, m.dequeue_count),
            max_dequeue_count=2,
            retry_delay_s=0,
            idle_wait_s=0.05,
        )
    assert run.failures == 2 and len(run.poisoned) == 1
    record = read_record(storage, SITE, YEAR)
    assert record is not None and record.status == "failed" and record.attempts == 2
    assert "failed after 2 deliveries" in record.reason and band.name in record.reason
    assert storage.blobs.list(RESULTS_CONTAINER) == []  # the failed runs left no products behind
