"""Tests of the fault-injecting proxy, in front of the local STAC server and of Azurite."""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from rasterio.transform import from_origin
from rasterio.windows import Window

from rtsmonitor.offline.faults import FaultKind, FaultPlan, FaultProxy, Injection
from rtsmonitor.offline.stacserver import LocalStacServer

GDAL_HTTP = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif"}
COG = "/files/noise.tif"


@pytest.fixture(scope="module")
def cog_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one seeded 512 x 512 uint16 COG (about 0.5 MB, so bodies span several pieces)."""
    root = tmp_path_factory.mktemp("faults")
    (root / "files").mkdir()
    pixels = np.random.default_rng(3).integers(1, 60000, (512, 512), dtype="uint16")
    with rasterio.open(
        root / "files" / "noise.tif",
        "w",
        driver="COG",
        width=512,
        height=512,
        count=1,
        dtype="uint16",
        crs="EPSG:32609",
        transform=from_origin(500000, 7700000, 10, 10),
        nodata=0,
        blocksize=256,
    ) as ds:
        ds.write(pixels, 1)
    return root


@pytest.fixture(scope="module")
def stac(cog_root: Path) -> Iterator[LocalStacServer]:
    with LocalStacServer(cog_root) as server:
        yield server


@pytest.fixture
def proxy(stac: LocalStacServer) -> Iterator[FaultProxy]:
    with FaultProxy(stac.url, FaultPlan()) as fault_proxy:
        yield fault_proxy


# --- Pass-through -------------------------------------------------------------------------------


def test_pass_through_range_reads_head_and_rasterio(proxy: FaultProxy, stac: LocalStacServer, cog_root: Path) -> None:
    content = (cog_root / "files" / "noise.tif").read_bytes()
    assert len(content) > 200_000
    ranged = requests.get(proxy.url + COG, headers={"Range": "bytes=1000-70999"}, timeout=10)
    assert ranged.status_code == 206
    assert ranged.content == content[1000:71000]
    assert ranged.content == requests.get(stac.url + COG, headers={"Range": "bytes=1000-70999"}, timeout=10).content
    assert ranged.headers["Content-Range"] == f"bytes 1000-70999/{len(content)}"
    assert requests.get(proxy.url + COG, timeout=10).content == content
    head = requests.head(proxy.url + COG, timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(content)
    assert requests.get(proxy.url + "/files/missing.tif", timeout=10).status_code == 404
    with rasterio.Env(**GDAL_HTTP), rasterio.open(proxy.url + COG) as ds:
        window = ds.read(1, window=Window(100, 300, 50, 40))
    with rasterio.open(cog_root / "files" / "noise.tif") as local:
        np.testing.assert_array_equal(window, local.read(1, window=Window(100, 300, 50, 40)))
    stats = proxy.stats()
    assert stats.seen == stats.forwarded >= 6 and stats.total_faults == 0 and stats.upstream_errors == 0


def test_host_is_forwarded_and_chunked_request_bodies_relayed(proxy: FaultProxy, stac: LocalStacServer) -> None:
    landing = requests.get(proxy.url + "/", timeout=10).json()
    self_link = next(link["href"] for link in landing["links"] if link["rel"] == "self")
    assert self_link.startswith(proxy.url)  # links made from the Host header point back at the proxy
    body = b'{"collections": ["nope"], "limit": 5}'
    direct = requests.post(stac.url + "/search", data=body, timeout=10).json()
    chunked = requests.post(proxy.url + "/search", data=iter([body[:10], body[10:]]), timeout=10)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert chunked.status_code == 200 and chunked.json()["features"] == direct["features"] == []
    bad = requests.post(proxy.url + "/search", data=iter([b'{"limit": 0}']), timeout=10)
    assert bad.status_code == 400 and bad.json()["parameter"] == "limit"


# --- Each fault kind ----------------------------------------------------------------------------


def test_status_faults_are_answered_without_reaching_the_upstream(proxy: FaultProxy, stac: LocalStacServer) -> None:
    proxy.set_plan(
        FaultPlan(script=(FaultKind.STATUS_500, FaultKind.STATUS_503, FaultKind.STATUS_429, None), retry_after_s=3)
    )
    stac.reset_stats()
    with requests.Session() as session:  # one kept-alive connection: faults do not break it
        responses = [session.get(proxy.url + COG, headers={"Range": "bytes=0-99"}, timeout=10) for _ in range(4)]
    assert [r.status_code for r in responses] == [500, 503, 429, 206]
    assert responses[2].headers["Retry-After"] == "3"
    assert "Retry-After" not in responses[1].headers
    assert stac.stats().requests_by_path[COG] == 1
    stats = proxy.stats()
    assert (stats.seen, stats.forwarded, stats.total_faults) == (4, 1, 3)


def test_hang_times_the_client_out_and_ends_when_the_proxy_stops(stac: LocalStacServer) -> None:
    with FaultProxy(stac.url, FaultPlan(script=(FaultKind.HANG,), hang_s=3)) as proxy:
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            requests.get(proxy.url + COG, timeout=1)
        assert 1.0 <= time.monotonic() - started < 2.5
        assert requests.get(proxy.url + COG, headers={"Range": "bytes=0-9"}, timeout=5).status_code == 206
    errors: list[Exception] = []
    proxy = FaultProxy(stac.url, FaultPlan(script=(FaultKind.HANG,), hang_s=30))
    proxy.start()
    url = proxy.url + COG
    client = threading.Thread(target=lambda: _get_expecting_error(url, errors), daemon=True)
    client.start()
    time.sleep(0.3)
    started = time.monotonic()
    proxy.stop()
    client.join(5)
    assert time.monotonic() - started < 2.0 and not client.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], requests.ConnectionError)
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


def _get_expecting_error(url: str, errors: list[Exception]) -> None:
    try:
        requests.get(url, timeout=20)
    except requests.RequestException as exc:
        errors.append(exc)


def test_short_announces_the_full_length_but_sends_part(proxy: FaultProxy, cog_root: Path) -> None:
    size = (cog_root / "files" / "noise.tif").stat().st_size
    proxy.set_plan(FaultPlan(script=(FaultKind.SHORT, FaultKind.SHORT, None), short_fraction=0.25))
    # requests reads the whole body: urllib3 raises ProtocolError (IncompleteRead), requests wraps it
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        requests.get(proxy.url + COG, timeout=10)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        connection.request("GET", COG)
        response = connection.getresponse()
        assert response.status == 200 and int(response.headers["Content-Length"]) == size
        with pytest.raises(http.client.IncompleteRead) as incomplete:
            response.read()
    finally:
        connection.close()
    assert len(incomplete.value.partial) == int(size * 0.25)
    assert incomplete.value.expected == size - int(size * 0.25)
    assert len(requests.get(proxy.url + COG, timeout=10).content) == size
    assert proxy.stats().faults == {FaultKind.SHORT: 2}


def test_corrupt_keeps_the_length_and_flips_seeded_bytes(proxy: FaultProxy, cog_root: Path) -> None:
    content = (cog_root / "files" / "noise.tif").read_bytes()
    proxy.set_plan(FaultPlan(script=(FaultKind.CORRUPT,), seed=5, corrupt_bytes=12))
    first = requests.get(proxy.url + COG, timeout=10)
    assert first.status_code == 200 and len(first.content) == len(content)
    flipped = _differences(first.content, content)
    assert len(flipped) == 12 and flipped[-1] - flipped[0] > 64 * 1024  # spread over the whole body
    assert all(first.content[i] == content[i] ^ 0xFF for i in flipped)
    proxy.set_plan(FaultPlan(script=(FaultKind.CORRUPT,), seed=5, corrupt_bytes=12))
    assert requests.get(proxy.url + COG, timeout=10).content == first.content
    proxy.set_plan(FaultPlan(script=(FaultKind.CORRUPT,), seed=6, corrupt_bytes=12))
    assert _differences(requests.get(proxy.url + COG, timeout=10).content, content) != flipped
    proxy.set_plan(FaultPlan(script=(FaultKind.CORRUPT,)))
    ranged = requests.get(proxy.url + COG, headers={"Range": "bytes=500-599"}, timeout=10)
    assert ranged.status_code == 206 and len(ranged.content) == 100 and ranged.content != content[500:600]


def _differences(a: bytes, b: bytes) -> list[int]:
    return np.flatnonzero(np.frombuffer(a, "uint8") != np.frombuffer(b, "uint8")).tolist()


class _ChunkedUpstream(BaseHTTPRequestHandler):
    """Answers every GET with a 3-piece chunked body (no Content-Length)."""

    protocol_version = "HTTP/1.1"
    body_pieces = (b"a" * 1000, b"b" * 2000, b"c" * 3000)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in self.body_pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_chunked_upstream_responses_relay_short_and_corrupt() -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _ChunkedUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    full = b"".join(_ChunkedUpstream.body_pieces)
    plan = FaultPlan(script=(None, FaultKind.CORRUPT, FaultKind.SHORT))
    try:
        with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", plan) as proxy:
            relayed = requests.get(proxy.url + "/x", timeout=5)
            assert relayed.headers["Transfer-Encoding"] == "chunked" and relayed.content == full
            corrupted = requests.get(proxy.url + "/x", timeout=5).content
            assert len(corrupted) == len(full) and len(_differences(corrupted, full)) == plan.corrupt_bytes
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                requests.get(proxy.url + "/x", timeout=5)
    finally:
        upstream.shutdown()
        upstream.server_close()


# --- Plans: scripts, eligibility, random rates, caps --------------------------------------------


def test_script_applies_to_eligible_requests_in_order(proxy: FaultProxy) -> None:
    proxy.set_plan(
        FaultPlan(
            script=(FaultKind.STATUS_503, None, FaultKind.STATUS_500),
            methods=frozenset({"get"}),
            path_regex=r"^/files/",
        )
    )
    calls = [
        ("HEAD", COG, 200),  # not eligible: method
        ("GET", "/conformance", 200),  # not eligible: path
        ("GET", COG, 503),  # eligible 0
        ("POST", "/search", 200),  # not eligible: method
        ("GET", COG + "?x=1", 200),  # eligible 1 (the query string is not part of the path)
        ("GET", COG, 500),  # eligible 2
        ("GET", COG, 200),  # eligible 3: beyond the script
    ]
    for method, path, expected in calls:
        assert (
            requests.request(method, proxy.url + path, json={} if method == "POST" else None, timeout=10).status_code
            == expected
        )
    stats = proxy.stats()
    assert (stats.seen, stats.eligible, stats.forwarded) == (7, 4, 5)
    assert stats.faults == {FaultKind.STATUS_503: 1, FaultKind.STATUS_500: 1}
    assert stats.injections == (
        Injection(0, "GET", COG, FaultKind.STATUS_503),
        Injection(2, "GET", COG, FaultKind.STATUS_500),
    )
    proxy.reset_stats()
    assert proxy.stats().seen == 0 and proxy.stats().faults == {}
    assert requests.get(proxy.url + COG, timeout=10).status_code == 200  # reset_stats keeps the plan's position
    proxy.set_plan(proxy.plan)  # set_plan starts the script over
    assert requests.get(proxy.url + COG, timeout=10).status_code == 503


def _statuses(proxy: FaultProxy, plan: FaultPlan, count: int) -> list[int]:
    proxy.set_plan(plan)
    with requests.Session() as session:
        return [session.get(proxy.url + "/conformance", timeout=10).status_code for _ in range(count)]


def test_random_plan_is_seeded_and_honours_rate_and_cap(proxy: FaultProxy) -> None:
    plan = FaultPlan(rate=0.3, seed=7, kinds=(FaultKind.STATUS_500, FaultKind.STATUS_503))
    first = _statuses(proxy, plan, 200)
    assert _statuses(proxy, plan, 200) == first
    assert _statuses(proxy, FaultPlan(rate=0.3, seed=8, kinds=plan.kinds), 200) != first
    faults = sum(status != 200 for status in first)
    assert 40 <= faults <= 80  # 60 expected; binomial sd 6.5
    assert {500, 503} <= set(first) <= {200, 500, 503}
    capped = _statuses(proxy, FaultPlan(rate=1.0, kinds=(FaultKind.STATUS_503,), max_faults=3), 10)
    assert capped == [503] * 3 + [200] * 7


def test_bad_arguments_are_refused(stac: LocalStacServer) -> None:
    for host in ("0.0.0.0", "192.168.1.10", "example.org", "::1", ""):
        with pytest.raises(ValueError, match="loopback only"):
            FaultProxy(stac.url, FaultPlan(), host=host)
    with pytest.raises(ValueError, match="upstream"):
        FaultProxy("https://127.0.0.1:1", FaultPlan())
    with pytest.raises(ValueError, match="rate"):
        FaultPlan(rate=1.5)
    with pytest.raises(ValueError, match="short_fraction"):
        FaultPlan(short_fraction=1.0)
    with pytest.raises(ValueError):
        FaultPlan(script=("no_such_fault",))  # type: ignore[arg-type]


def test_an_unreachable_upstream_answers_502() -> None:
    with FaultProxy("http://127.0.0.1:9", FaultPlan()) as proxy:  # the discard port: nothing listens
        response = requests.get(proxy.url + "/x", timeout=10)
        assert response.status_code == 502
        assert proxy.stats().upstream_errors == 1 and proxy.stats().forwarded == 0


# --- Azurite through the proxy ------------------------------------------------------------------


@pytest.mark.azurite
def test_blob_sdk_retries_a_503_through_the_proxy(azurite_proxies: tuple[str, dict[str, FaultProxy]]) -> None:
    from azure.storage.blob import BlobServiceClient, LinearRetry

    connection_string, proxies = azurite_proxies
    proxy = proxies["Blob"]
    assert proxy.url.endswith("/devstoreaccount1")
    # The SDK's own policy, without its default 15 s back-off
    service = BlobServiceClient.from_connection_string(
        connection_string, retry_policy=LinearRetry(backoff=0, random_jitter_range=0)
    )
    container = service.create_container(f"faults{uuid.uuid4().hex[:8]}")
    payload = bytes(range(256)) * 1000
    proxy.set_plan(FaultPlan(script=(FaultKind.STATUS_503,), methods=frozenset({"PUT"})))
    container.upload_blob("a/b.bin", payload)
    assert proxy.stats().faults == {FaultKind.STATUS_503: 1}
    assert container.download_blob("a/b.bin").readall() == payload
    proxy.set_plan(FaultPlan(script=(FaultKind.STATUS_500, FaultKind.SHORT), methods=frozenset({"GET"})))
    assert container.download_blob("a/b.bin").readall() == payload  # 500: retried
    assert container.download_blob("a/b.bin").readall() == payload  # short body: "Incomplete download", retried
    stats = proxy.stats()
    assert stats.faults == {FaultKind.STATUS_503: 1, FaultKind.STATUS_500: 1, FaultKind.SHORT: 1}
    assert stats.upstream_errors == 0


@pytest.mark.azurite
def test_table_and_queue_sdks_retry_a_503_through_the_proxy(
    azurite_proxies: tuple[str, dict[str, FaultProxy]],
) -> None:
    from azure.data.tables import TableClient
    from azure.storage.queue import LinearRetry, QueueClient

    connection_string, proxies = azurite_proxies
    name = f"faults{uuid.uuid4().hex[:8]}"
    table = TableClient.from_connection_string(connection_string, name)
    table.create_table()
    proxies["Table"].set_plan(FaultPlan(script=(FaultKind.STATUS_503,)))
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "value": 3})
    assert table.get_entity("p", "r")["value"] == 3
    [injection] = proxies["Table"].stats().injections
    assert injection.kind is FaultKind.STATUS_503 and injection.method == "PATCH"  # upsert (merge) is a PATCH

    queue = QueueClient.from_connection_string(
        connection_string, name, retry_policy=LinearRetry(backoff=0, random_jitter_range=0)
    )
    queue.create_queue()
    proxies["Queue"].set_plan(FaultPlan(script=(FaultKind.STATUS_503,), methods=frozenset({"POST"})))
    queue.send_message("hello")
    assert [m.content for m in queue.receive_messages()] == ["hello"]
    assert proxies["Queue"].stats().faults == {FaultKind.STATUS_503: 1}
