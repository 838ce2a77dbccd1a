"""Tests of rtsmonitor.storage: every behaviour against both backends (local folder and Azurite)."""

from __future__ import annotations

import contextlib
import json
import random
import re
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from rtsmonitor.errors import ConflictError, NotFoundError, StorageError
from rtsmonitor.storage import LocalStorage, QueueMessage, Storage, open_storage


@pytest.fixture(params=["local", pytest.param("azure", marks=pytest.mark.azurite)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    result: Storage = request.getfixturevalue("azure_storage")
    return result


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


# --- blobs ---------------------------------------------------------------------------------------


def test_blob_round_trip_binary_and_large(storage: Storage) -> None:
    small = bytes(range(256)) * 3
    large = random.Random(0).randbytes(3 * 1024 * 1024 + 17)
    storage.blobs.write_bytes("results", "site-a/2024/small.bin", small)
    storage.blobs.write_bytes("results", "site-a/2024/probability.tif", large, content_type="image/tiff")
    storage.blobs.write_bytes("results", "empty", b"")
    assert storage.blobs.read_bytes("results", "site-a/2024/small.bin") == small
    assert storage.blobs.read_bytes("results", "site-a/2024/probability.tif") == large
    assert storage.blobs.read_bytes("results", "empty") == b""


def test_blob_overwrite(storage: Storage) -> None:
    storage.blobs.write_bytes("sites", "a.json", b'{"version": 1, "long": "xxxxxxxxxxxxxxxx"}')
    storage.blobs.write_bytes("sites", "a.json", b'{"version": 2}')
    assert storage.blobs.read_bytes("sites", "a.json") == b'{"version": 2}'
    assert storage.blobs.list("sites") == ["a.json"]


def test_blob_list_with_prefix(storage: Storage) -> None:
    names = ["results/a/2.tif", "results/a/1.tif", "results/b/1.tif", "results/a1/x.png", "top.json"]
    for name in names:
        storage.blobs.write_bytes("models", name, name.encode())
    assert storage.blobs.list("models") == sorted(names)
    assert storage.blobs.list("models", "results/a") == ["results/a/1.tif", "results/a/2.tif", "results/a1/x.png"]
    assert storage.blobs.list("models", "results/a/") == ["results/a/1.tif", "results/a/2.tif"]
    assert storage.blobs.list("models", "results/a/1") == ["results/a/1.tif"]
    assert storage.blobs.list("models", "nothing/") == []
    assert storage.blobs.list("models", "../") == []
    assert storage.blobs.list("nosuchcontainer") == []


def test_blob_exists_and_delete(storage: Storage) -> None:
    storage.blobs.write_bytes("results", "s/2024/mask.tif", b"mask")
    storage.blobs.write_bytes("results", "s/2024/rts.geojson", b"{}")
    assert storage.blobs.exists("results", "s/2024/mask.tif")
    assert not storage.blobs.exists("results", "s/2024")  # a virtual folder is not a blob
    assert not storage.blobs.exists("nosuchcontainer", "x")
    storage.blobs.delete("results", "s/2024/mask.tif")
    assert not storage.blobs.exists("results", "s/2024/mask.tif")
    assert storage.blobs.list("results") == ["s/2024/rts.geojson"]
    storage.blobs.delete("results", "s/2024/mask.tif")  # absent: no error
    storage.blobs.delete("nosuchcontainer", "x")


def test_missing_blob_raises_not_found_naming_it(storage: Storage) -> None:
    storage.blobs.write_bytes("results", "other", b"x")
    with pytest.raises(NotFoundError, match=re.escape("results/site-a/2024/mask.tif")):
        storage.blobs.read_bytes("results", "site-a/2024/mask.tif")
    with pytest.raises(NotFoundError, match="nosuchcontainer/x"):
        storage.blobs.read_bytes("nosuchcontainer", "x")


def test_write_file_and_read_to_file(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(random.Random(1).randbytes(5 * 1024 * 1024))
    storage.blobs.write_file("models", "unet/1/model.onnx", source, content_type="application/octet-stream")
    target = tmp_path / "out.bin"
    storage.blobs.read_to_file("models", "unet/1/model.onnx", target)
    assert target.read_bytes() == source.read_bytes()
    missing = tmp_path / "missing.bin"
    with pytest.raises(NotFoundError, match=re.escape("models/unet/2/model.onnx")):
        storage.blobs.read_to_file("models", "unet/2/model.onnx", missing)
    assert not missing.exists()
    assert list(tmp_path.glob("*.partial")) == []
    with pytest.raises(StorageError, match=r"models/x\.onnx.*nope\.bin"):
        storage.blobs.write_file("models", "x.onnx", tmp_path / "nope.bin")
    assert not storage.blobs.exists("models", "x.onnx")


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/absolute", "a\\b", "a//b", "./a", "a/", ""])
def test_bad_blob_names_are_rejected(storage: Storage, name: str) -> None:
    with pytest.raises(StorageError, match="invalid blob name") as info:
        storage.blobs.write_bytes("results", name, b"x")
    assert repr(name) in str(info.value)
    with pytest.raises(StorageError, match="invalid blob name"):
        storage.blobs.read_bytes("results", name)


@pytest.mark.parametrize("container", ["Results", "re", "a--b", "-ab", "under_score", "x" * 64])
def test_bad_container_names_are_rejected(storage: Storage, container: str) -> None:
    with pytest.raises(StorageError, match="invalid container name"):
        storage.blobs.write_bytes(container, "x", b"x")


def test_local_blob_files_layout(local: LocalStorage) -> None:
    local.blobs.write_bytes("results", "s/2024/mask.tif", b"mask")
    assert (local.root / "blobs" / "results" / "s" / "2024" / "mask.tif").read_bytes() == b"mask"
    local.blobs.delete("results", "s/2024/mask.tif")
    assert list((local.root / "blobs" / "results").iterdir()) == []  # empty folders pruned


def test_local_blob_cannot_be_both_file_and_folder(local: LocalStorage) -> None:
    local.blobs.write_bytes("results", "a/b", b"1")
    with pytest.raises(StorageError, match=r"results/a: .*'a/\.\.\.'"):
        local.blobs.write_bytes("results", "a", b"2")
    local.blobs.delete("results", "a/b")
    local.blobs.write_bytes("results", "a", b"2")  # possible once the folder is gone
    with pytest.raises(StorageError, match="a/b"):
        local.blobs.write_bytes("results", "a/b", b"3")
    assert local.blobs.list("results") == ["a"]


def test_local_blob_writes_are_atomic_for_concurrent_readers(local: LocalStorage) -> None:
    versions = [bytes([i]) * (1_000 + 37_000 * ((i * 7) % 50)) for i in range(50)]
    by_length = {len(version): version for version in versions}
    assert len(by_length) == len(versions)
    local.blobs.write_bytes("results", "s/probability.tif", versions[0])
    done = threading.Event()
    seen: list[int] = []
    torn: list[int] = []

    def reader() -> None:
        while not done.is_set():
            data = local.blobs.read_bytes("results", "s/probability.tif")
            seen.append(len(data))
            if by_length.get(len(data)) != data:
                torn.append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version in versions[1:] + versions[:1]:
            local.blobs.write_bytes("results", "s/probability.tif", version)
    finally:
        done.set()
        thread.join()
    assert torn == []
    assert len(seen) > 0
    assert local.blobs.list("results") == ["s/probability.tif"]  # no temporary files left


# --- tables --------------------------------------------------------------------------------------


def test_upsert_replaces_the_whole_row(storage: Storage) -> None:
    storage.tables.upsert("sites", {"PartitionKey": "site", "RowKey": "a", "status": "new", "note": "x"})
    storage.tables.upsert("sites", {"PartitionKey": "site", "RowKey": "a", "status": "ok"})
    assert storage.tables.get("sites", "site", "a") == {"PartitionKey": "site", "RowKey": "a", "status": "ok"}


def test_table_values_round_trip_with_their_types(storage: Storage) -> None:
    when = datetime(2024, 7, 15, 10, 30, 5, 123456, tzinfo=UTC)
    entity = {
        "PartitionKey": "peel-plateau",
        "RowKey": "2024",
        "rts_count": 17,
        "big": 2**40,
        "negative": -(2**35),
        "area_m2": 12345.678,
        "whole_float": 2.0,
        "cloud_pct": 0.1,
        "ok": True,
        "failed": False,
        "reason": "Schmelz – ‘Ψ’ 🧊",
        "scene_date": when,
        "registered": datetime(2024, 7, 15, 12, 30, 5, tzinfo=timezone(timedelta(hours=2))),
        "missing": None,
    }
    storage.tables.upsert("rtsrecords", entity)
    got = storage.tables.get("rtsrecords", "peel-plateau", "2024")
    expected = {k: v for k, v in entity.items() if v is not None}  # None is not stored
    expected["registered"] = datetime(2024, 7, 15, 10, 30, 5, tzinfo=UTC)
    assert got == expected
    assert "missing" not in got
    for name, value in expected.items():
        assert type(got[name]) is type(value), name
    for name in ("scene_date", "registered"):
        assert got[name].utcoffset() == timedelta(0)  # type: ignore[union-attr]


def test_query_by_partition_sorted(storage: Storage) -> None:
    rows = [("b", "2019"), ("a", "2021"), ("a", "2019"), ("b", "2017"), ("a", "2020"), ("c", "2018")]
    for pk, rk in rows:
        storage.tables.upsert("rtsrecords", {"PartitionKey": pk, "RowKey": rk, "n": int(rk)})
    in_a = storage.tables.query("rtsrecords", "a")
    assert [(r["PartitionKey"], r["RowKey"]) for r in in_a] == [("a", "2019"), ("a", "2020"), ("a", "2021")]
    assert in_a[0]["n"] == 2019
    everything = storage.tables.query("rtsrecords")
    assert [(r["PartitionKey"], r["RowKey"]) for r in everything] == sorted(rows)
    assert storage.tables.query("rtsrecords", "zzz") == []
    assert storage.tables.query("nosuchtable") == []


def test_get_missing_row_raises_not_found(storage: Storage) -> None:
    storage.tables.upsert("sites", {"PartitionKey": "site", "RowKey": "a"})
    with pytest.raises(NotFoundError, match=r"sites.*'site'.*'b'"):
        storage.tables.get("sites", "site", "b")
    with pytest.raises(NotFoundError, match="nosuchtable"):
        storage.tables.get("nosuchtable", "site", "a")


def test_table_delete(storage: Storage) -> None:
    storage.tables.upsert("sites", {"PartitionKey": "site", "RowKey": "a"})
    storage.tables.upsert("sites", {"PartitionKey": "site", "RowKey": "b"})
    storage.tables.delete("sites", "site", "a")
    storage.tables.delete("sites", "site", "a")  # absent: no error
    storage.tables.delete("nosuchtable", "site", "a")
    assert [r["RowKey"] for r in storage.tables.query("sites")] == ["b"]


def test_conditional_insert_and_replace_follow_the_etag(storage: Storage) -> None:
    row = {"PartitionKey": "site", "RowKey": "2021", "run": "a"}
    first = storage.tables.put_if("records", row, None)
    with pytest.raises(ConflictError, match="exists already"):
        storage.tables.put_if("records", {**row, "run": "b"}, None)
    entity, etag = storage.tables.get_versioned("records", "site", "2021")
    assert entity["run"] == "a" and etag == first
    second = storage.tables.put_if("records", {**row, "run": "c"}, etag)
    assert second != first
    with pytest.raises(ConflictError, match="changed since it was read"):
        storage.tables.put_if("records", {**row, "run": "d"}, first)  # stale ETag
    storage.tables.upsert("records", {**row, "run": "e"})  # an unconditional write changes the ETag too
    with pytest.raises(ConflictError):
        storage.tables.put_if("records", {**row, "run": "f"}, second)
    storage.tables.delete("records", "site", "2021")
    with pytest.raises(ConflictError):
        storage.tables.put_if("records", {**row, "run": "g"}, second)  # deleted since read
    assert storage.tables.query("records") == []
    with pytest.raises(NotFoundError):
        storage.tables.get_versioned("records", "site", "2021")


def test_concurrent_conditional_writes_from_one_read_have_one_winner(storage: Storage) -> None:
    storage.tables.upsert("records", {"PartitionKey": "site", "RowKey": "2021", "run": "old"})
    _, etag = storage.tables.get_versioned("records", "site", "2021")
    barrier = threading.Barrier(4)
    won: list[str] = []

    def writer(run: str) -> None:
        barrier.wait()
        with contextlib.suppress(ConflictError):
            storage.tables.put_if("records", {"PartitionKey": "site", "RowKey": "2021", "run": run}, etag)
            won.append(run)

    threads = [threading.Thread(target=writer, args=(f"run{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert storage.tables.get("records", "site", "2021")["run"] == won[0]


def test_local_table_file_from_before_etags_gets_its_column(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    with contextlib.closing(sqlite3.connect(root / "tables.sqlite")) as old:
        old.execute(
            "CREATE TABLE entities (tbl TEXT NOT NULL, pk TEXT NOT NULL, rk TEXT NOT NULL, "
            "props TEXT NOT NULL, PRIMARY KEY (tbl, pk, rk)) WITHOUT ROWID"
        )
        old.execute("INSERT INTO entities VALUES ('records', 'site', '2021', '{\"run\": [\"s\", \"a\"]}')")
        old.commit()
    storage = LocalStorage(root)
    entity, etag = storage.tables.get_versioned("records", "site", "2021")
    assert entity["run"] == "a"
    storage.tables.put_if("records", {"PartitionKey": "site", "RowKey": "2021", "run": "b"}, etag)
    assert storage.tables.get("records", "site", "2021")["run"] == "b"


@pytest.mark.parametrize(
    ("entity", "message"),
    [
        ({"PartitionKey": "p"}, "RowKey"),
        ({"PartitionKey": "p", "RowKey": 1}, "RowKey must be a str"),
        ({"PartitionKey": "a/b", "RowKey": "r"}, "invalid PartitionKey"),
        ({"PartitionKey": "p", "RowKey": "r", "when": datetime(2024, 1, 1)}, "naive datetime"),
        ({"PartitionKey": "p", "RowKey": "r", "values": [1, 2]}, "unsupported type list"),
        ({"PartitionKey": "p", "RowKey": "r", "huge": 2**64}, "64 bits"),
        ({"PartitionKey": "p", "RowKey": "r", "bad name": 1}, "invalid property name"),
        ({"PartitionKey": "p", "RowKey": "r", "Timestamp": 1}, "invalid property name"),
    ],
)
def test_bad_entities_are_rejected(storage: Storage, entity: dict[str, object], message: str) -> None:
    with pytest.raises(StorageError, match=message):
        storage.tables.upsert("sites", entity)


def test_bad_table_name_is_rejected(storage: Storage) -> None:
    with pytest.raises(StorageError, match="invalid table name 'site-years'"):
        storage.tables.upsert("site-years", {"PartitionKey": "p", "RowKey": "r"})


def test_local_tables_live_in_one_sqlite_file(local: LocalStorage) -> None:
    local.tables.upsert("sites", {"PartitionKey": "site", "RowKey": "a"})
    local.queues.send("site-years", "x")
    assert [p.name for p in local.root.iterdir()] == ["tables.sqlite"]
    with contextlib.closing(sqlite3.connect(local.root / "tables.sqlite")) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other = LocalStorage(local.root)  # another process would see the same rows
    assert other.tables.get("sites", "site", "a") == {"PartitionKey": "site", "RowKey": "a"}
    assert other.queues.peek_count("site-years") == 1


def test_local_store_shared_by_concurrent_writers(local: LocalStorage) -> None:
    def work(worker: int) -> None:
        mine = LocalStorage(local.root)
        for i in range(25):
            mine.tables.upsert("rtsrecords", {"PartitionKey": f"w{worker}", "RowKey": f"{i:03d}", "i": i})
            mine.queues.send("site-years", f"{worker}-{i}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(local.tables.query("rtsrecords")) == 100
    received: list[QueueMessage] = []

    def drain() -> None:
        while batch := local.queues.receive("site-years", max_messages=7):
            received.extend(batch)

    drainers = [threading.Thread(target=drain) for _ in range(4)]
    for thread in drainers:
        thread.start()
    for thread in drainers:
        thread.join()
    assert sorted(m.content for m in received) == sorted(f"{w}-{i}" for w in range(4) for i in range(25))
    assert all(m.dequeue_count == 1 for m in received)  # each delivered once


# --- queues --------------------------------------------------------------------------------------


def test_queue_send_receive_delete(storage: Storage) -> None:
    for text in ("one", "two", "three"):
        storage.queues.send("site-years", text)
    assert storage.queues.peek_count("site-years") == 3
    messages = storage.queues.receive("site-years", max_messages=10)
    assert sorted(m.content for m in messages) == ["one", "three", "two"]
    assert all(m.dequeue_count == 1 for m in messages)
    assert storage.queues.receive("site-years") == []  # all hidden now
    for message in messages:
        storage.queues.delete("site-years", message)
    assert storage.queues.peek_count("site-years") == 0
    assert storage.queues.receive("site-years") == []


def test_queue_message_reappears_after_visibility_timeout(storage: Storage) -> None:
    storage.queues.send("site-years", "peel-plateau/2024")
    (first,) = storage.queues.receive("site-years", visibility_timeout_s=1)
    assert first.dequeue_count == 1
    assert storage.queues.receive("site-years", visibility_timeout_s=1) == []
    deadline = time.monotonic() + 10
    again: list[QueueMessage] = []
    while not again and time.monotonic() < deadline:
        time.sleep(0.25)
        again = storage.queues.receive("site-years", visibility_timeout_s=30)
    (second,) = again
    assert (second.id, second.content, second.dequeue_count) == (first.id, first.content, 2)
    assert second.pop_receipt != first.pop_receipt
    with pytest.raises(StorageError, match="pop receipt") as info:
        storage.queues.delete("site-years", first)  # stale receipt
    assert not isinstance(info.value, NotFoundError)
    storage.queues.delete("site-years", second)
    with pytest.raises(NotFoundError, match="site-years"):
        storage.queues.delete("site-years", second)


def test_queue_content_round_trips_non_ascii_and_json(storage: Storage) -> None:
    payload = json.dumps(
        {"site_id": "peel-plateau", "year": 2024, "name": "Péel – Плато ψ 🧊", "nested": {"a": [1, 2.5, None]}},
        ensure_ascii=False,
    )
    texts = [payload, 'line one\nline two\t"quoted" <xml/> &amp;', "=" * 3]
    for text in texts:
        storage.queues.send("site-years", text)
    received = storage.queues.receive("site-years", max_messages=32)
    assert sorted(m.content for m in received) == sorted(texts)
    assert json.loads(next(m.content for m in received if m.content.startswith("{"))) == json.loads(payload)


def test_queue_missing_and_bad_arguments(storage: Storage) -> None:
    assert storage.queues.receive("nosuchqueue") == []
    assert storage.queues.peek_count("nosuchqueue") == 0
    with pytest.raises(StorageError, match="max_messages"):
        storage.queues.receive("site-years", max_messages=0)
    with pytest.raises(StorageError, match="visibility_timeout_s"):
        storage.queues.receive("site-years", visibility_timeout_s=0)
    with pytest.raises(StorageError, match="invalid queue name"):
        storage.queues.send("Site_Years", "x")
    with pytest.raises(StorageError, match="put large payloads in a blob"):
        storage.queues.send("site-years", "x" * 70_000)


# --- open_storage --------------------------------------------------------------------------------


def test_open_storage_local_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = open_storage(str(tmp_path / "a"))
    assert isinstance(plain, LocalStorage)
    assert plain.root == tmp_path / "a"
    prefixed = open_storage(f"local:{tmp_path / 'b'}")
    assert isinstance(prefixed, LocalStorage)
    assert prefixed.root == tmp_path / "b"
    monkeypatch.chdir(tmp_path)
    relative = open_storage("rts-data")
    assert isinstance(relative, LocalStorage)
    assert relative.root == tmp_path / "rts-data"
    assert not (tmp_path / "rts-data").exists()  # nothing created before the first write
    relative.blobs.write_bytes("sites", "a.json", b"{}")
    assert open_storage("local:rts-data").blobs.read_bytes("sites", "a.json") == b"{}"


@pytest.mark.azurite
def test_open_storage_azure_from_environment(azurite_connection_string: str) -> None:
    from rtsmonitor.storage.azure import AzureStorage

    container = f"c{uuid.uuid4().hex[:12]}"
    for var in ("RTS_STORAGE_CONNECTION_STRING", "AzureWebJobsStorage"):
        storage = open_storage("azure:", environ={var: azurite_connection_string})
        assert isinstance(storage, AzureStorage)
        storage.blobs.write_bytes(container, f"{var}.txt", var.encode())
    assert storage.blobs.list(container) == ["AzureWebJobsStorage.txt", "RTS_STORAGE_CONNECTION_STRING.txt"]


def test_open_storage_azure_account() -> None:
    from rtsmonitor.storage.azure import AzureStorage

    storage = open_storage("azure://rtsmonitordev")  # builds clients only: no request is made
    assert isinstance(storage, AzureStorage)


def test_open_storage_azure_without_connection_string() -> None:
    with pytest.raises(StorageError, match=r"RTS_STORAGE_CONNECTION_STRING.*AzureWebJobsStorage"):
        open_storage("azure:", environ={})


@pytest.mark.parametrize("spec", ["", "   ", "s3://bucket/x", "azure:foo", "azure://", "azure://Bad_Name", "local:"])
def test_open_storage_bad_spec(spec: str) -> None:
    with pytest.raises(StorageError) as info:
        open_storage(spec)
    assert repr(spec) in str(info.value)
    if spec.strip() and not spec.startswith("azure://"):
        assert "azure://ACCOUNT" in str(info.value) and "local:PATH" in str(info.value)


def test_bad_connection_string_does_not_leak_it() -> None:
    from rtsmonitor.storage.azure import AzureStorage

    secret = "AccountName=x;AccountKey=c2VjcmV0c2VjcmV0;NotAnEndpoint"
    with pytest.raises(StorageError, match="connection string") as info:
        AzureStorage.from_connection_string(secret)
    assert "c2VjcmV0c2VjcmV0" not in str(info.value)


def test_missing_azurite_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rtsmonitor.offline import azurite

    monkeypatch.setattr(azurite, "AZURITE_BIN", tmp_path / "node_modules" / ".bin" / "azurite")
    with pytest.raises(azurite.AzuriteError, match="npm ci"), azurite.running_azurite(tmp_path / "data"):
        pass


def test_queue_release_redelivers_after_its_delay(storage: Storage) -> None:
    storage.queues.send("site-years", "job")
    (first,) = storage.queues.receive("site-years", visibility_timeout_s=600)
    storage.queues.release("site-years", first, 0)  # retry now
    (second,) = storage.queues.receive("site-years", visibility_timeout_s=600)
    assert second.content == "job" and second.dequeue_count == 2
    with pytest.raises(StorageError, match="pop receipt"):
        storage.queues.release("site-years", first, 0)  # a stale copy cannot release it
    storage.queues.release("site-years", second, 2)
    assert storage.queues.receive("site-years") == []  # hidden for the delay
    time.sleep(2.5)
    (third,) = storage.queues.receive("site-years")
    assert third.dequeue_count == 3
    with pytest.raises(StorageError, match="release delay"):
        storage.queues.release("site-years", third, -1)
    storage.queues.delete("site-years", third)
    with pytest.raises(NotFoundError):
        storage.queues.release("site-years", third, 0)
