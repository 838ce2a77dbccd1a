"""Fetching the live model bundle from storage into a local cache (``fetch_current_bundle``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtsmonitor.errors import ModelError
from rtsmonitor.modelstore import (
    CURRENT_BLOB,
    DEMO_BUNDLE,
    META_NAME,
    MODELS_CONTAINER,
    ONNX_NAME,
    current_model,
    fetch_current_bundle,
    file_sha256,
    publish_model,
    read_bundle_meta,
)
from rtsmonitor.storage import LocalStorage

DEMO_META = json.loads((DEMO_BUNDLE / META_NAME).read_text())
NAME, VERSION = DEMO_META["name"], DEMO_META["version"]


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


@pytest.fixture
def published(storage: LocalStorage) -> LocalStorage:
    publish_model(storage, DEMO_BUNDLE)
    return storage


def leftovers(cache: Path) -> list[str]:
    """Everything in the cache except complete bundle folders' own files."""
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.name.startswith("."))


def test_fetch_downloads_the_current_bundle_into_the_cache(published: LocalStorage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch_current_bundle(published, cache)
    assert folder == cache / NAME / VERSION
    assert sorted(p.name for p in folder.iterdir()) == [META_NAME, ONNX_NAME]
    assert (folder / ONNX_NAME).read_bytes() == (DEMO_BUNDLE / ONNX_NAME).read_bytes()
    assert read_bundle_meta(folder) == DEMO_META
    assert leftovers(cache) == []


def test_second_fetch_reuses_the_cached_bundle(
    published: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    folder = fetch_current_bundle(published, cache)
    mtime = (folder / ONNX_NAME).stat().st_mtime_ns

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached bundle should have been used")

    monkeypatch.setattr(published.blobs, "read_to_file", no_download)
    assert fetch_current_bundle(published, cache) == folder
    assert (folder / ONNX_NAME).stat().st_mtime_ns == mtime


def test_corrupted_cached_model_is_downloaded_again(published: LocalStorage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch_current_bundle(published, cache)
    (folder / ONNX_NAME).write_bytes(b"not a model")
    assert fetch_current_bundle(published, cache) == folder
    assert file_sha256(folder / ONNX_NAME) == DEMO_META["onnx"]["sha256"]
    assert read_bundle_meta(folder)["version"] == VERSION
    assert leftovers(cache) == []


def test_cached_folder_without_the_model_file_is_downloaded_again(published: LocalStorage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch_current_bundle(published, cache)
    (folder / ONNX_NAME).unlink()
    (folder / "stray.txt").write_text("left from something else")
    assert fetch_current_bundle(published, cache) == folder
    assert sorted(p.name for p in folder.iterdir()) == [META_NAME, ONNX_NAME]


def test_no_current_pointer_is_a_model_error_naming_the_blob(storage: LocalStorage, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=f"{MODELS_CONTAINER}/{CURRENT_BLOB}"):
        current_model(storage)
    with pytest.raises(ModelError, match=f"{MODELS_CONTAINER}/{CURRENT_BLOB}"):
        fetch_current_bundle(storage, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").rglob("*")) == []


def test_bundle_published_without_making_it_current_is_not_fetched(storage: LocalStorage, tmp_path: Path) -> None:
    publish_model(storage, DEMO_BUNDLE, make_current=False)
    with pytest.raises(ModelError, match="no model published"):
        fetch_current_bundle(storage, tmp_path / "cache")


def write_pointer(storage: LocalStorage, **changes: object) -> None:
    pointer = {**current_model(storage), **changes}
    storage.blobs.write_bytes(MODELS_CONTAINER, CURRENT_BLOB, json.dumps(pointer).encode())


def test_pointer_whose_sha_differs_from_the_bundle_is_refused_and_caches_nothing(
    published: LocalStorage, tmp_path: Path
) -> None:
    write_pointer(published, onnx_sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="sha256"):
        fetch_current_bundle(published, cache)
    assert not (cache / NAME / VERSION).exists()
    assert leftovers(cache) == []


def test_bundle_whose_model_file_is_corrupt_in_storage_is_refused(published: LocalStorage, tmp_path: Path) -> None:
    published.blobs.write_bytes(MODELS_CONTAINER, f"{NAME}/{VERSION}/{ONNX_NAME}", b"truncated")
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="sha256"):
        fetch_current_bundle(published, cache)
    assert not (cache / NAME / VERSION).exists()
    assert leftovers(cache) == []


def test_refused_download_leaves_a_good_cached_copy_alone(published: LocalStorage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch_current_bundle(published, cache)
    write_pointer(published, onnx_sha256="f" * 64)
    with pytest.raises(ModelError):
        fetch_current_bundle(published, cache)
    assert read_bundle_meta(folder) == DEMO_META
    assert leftovers(cache) == []


def test_pointer_to_a_missing_bundle_fails_without_caching_anything(published: LocalStorage, tmp_path: Path) -> None:
    write_pointer(published, version="no-such-version")
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match=r"no-such-version/model\.json is missing"):
        fetch_current_bundle(published, cache)
    assert not (cache / NAME / "no-such-version").exists()
    assert leftovers(cache) == []


@pytest.mark.parametrize("version", ["..", "a/b", "", " v1"])
def test_pointer_with_an_unsafe_name_is_refused(published: LocalStorage, tmp_path: Path, version: str) -> None:
    write_pointer(published, version=version)
    with pytest.raises(ModelError, match="version"):
        fetch_current_bundle(published, tmp_path / "cache" / "inner")
    assert not (tmp_path / "cache").exists()


def test_publishing_a_new_current_bundle_is_fetched_next(published: LocalStorage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = fetch_current_bundle(published, cache)
    other = tmp_path / "bundle-v2"
    other.mkdir()
    (other / ONNX_NAME).write_bytes((DEMO_BUNDLE / ONNX_NAME).read_bytes())
    (other / META_NAME).write_text(json.dumps({**DEMO_META, "version": "demo-2"}))
    publish_model(published, other)
    second = fetch_current_bundle(published, cache)
    assert second == cache / NAME / "demo-2" and second != first
    assert read_bundle_meta(second)["version"] == "demo-2"
    assert read_bundle_meta(first)["version"] == VERSION  # the older copy stays usable
