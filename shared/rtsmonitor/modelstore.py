"""Model bundles in storage: ``models/<name>/<version>/model.onnx`` + ``model.json``, and ``current.json``.

A bundle is the ONNX file and the metadata that made it (layer order, normalisation, tile size,
threshold, metrics, training-manifest hash, sha256 of the ONNX file). ``current.json`` names the live
bundle and is written last, so a reader never sees a pointer to a half-published model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rtsmonitor.errors import ModelError, NotFoundError
from rtsmonitor.storage import Storage

MODELS_CONTAINER = "models"
"""Blob container of the model bundles."""
CURRENT_BLOB = "current.json"
"""Blob in :data:`MODELS_CONTAINER` naming the live bundle: ``{"name", "version", "onnx_sha256", ...}``."""
ONNX_NAME = "model.onnx"
META_NAME = "model.json"
DEMO_BUNDLE = Path(__file__).parent / "models" / "demo"
"""The bundled demo model (trained by ``scripts/train_demo_model.sh`` on the synthetic paper corpus)."""


@dataclass(frozen=True)
class PublishedModel:
    """Where a bundle went."""

    name: str
    version: str
    onnx_blob: str
    meta_blob: str
    onnx_sha256: str
    current: bool


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_prefix(name: str, version: str) -> str:
    """Blob-name prefix of one bundle: ``<name>/<version>/``."""
    for field, value in (("name", name), ("version", version)):
        if not value or "/" in value or value in (".", "..") or value != value.strip():
            raise ModelError(f"model {field} {value!r} must be a non-empty name without '/'")
    return f"{name}/{version}/"


def read_bundle_meta(bundle_dir: Path) -> dict[str, Any]:
    """``model.json`` of a local bundle, after checking that ``model.onnx`` matches its sha256."""
    meta_path, onnx_path = Path(bundle_dir) / META_NAME, Path(bundle_dir) / ONNX_NAME
    if not meta_path.is_file() or not onnx_path.is_file():
        raise ModelError(f"{bundle_dir} is not a model bundle: it needs {ONNX_NAME} and {META_NAME}")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    expected = meta.get("onnx", {}).get("sha256")
    actual = file_sha256(onnx_path)
    if expected != actual:
        raise ModelError(f"{onnx_path}: sha256 {actual} does not match model.json ({expected}); re-export the bundle")
    return meta


def publish_model(storage: Storage, bundle_dir: Path, *, make_current: bool = True) -> PublishedModel:
    """Upload a checked local bundle under its name/version and (by default) point ``current.json`` at it.

    The ONNX file goes first, then ``model.json``, then ``current.json``: every pointer a reader can
    see leads to a complete bundle.
    """
    meta = read_bundle_meta(bundle_dir)
    name, version = str(meta.get("name", "")), str(meta.get("version", ""))
    prefix = bundle_prefix(name, version)
    onnx_blob, meta_blob = prefix + ONNX_NAME, prefix + META_NAME
    storage.blobs.write_file(
        MODELS_CONTAINER, onnx_blob, Path(bundle_dir) / ONNX_NAME, content_type="application/octet-stream"
    )
    storage.blobs.write_bytes(
        MODELS_CONTAINER, meta_blob, (Path(bundle_dir) / META_NAME).read_bytes(), content_type="application/json"
    )
    if make_current:
        pointer = {
            "name": name,
            "version": version,
            "onnx_sha256": meta["onnx"]["sha256"],
            "published": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        storage.blobs.write_bytes(
            MODELS_CONTAINER, CURRENT_BLOB, json.dumps(pointer, indent=2).encode(), content_type="application/json"
        )
    return PublishedModel(name, version, onnx_blob, meta_blob, str(meta["onnx"]["sha256"]), make_current)


def current_model(storage: Storage) -> dict[str, Any]:
    """The ``current.json`` pointer; :class:`ModelError` if no model has been published."""
    where = f"{MODELS_CONTAINER}/{CURRENT_BLOB}"
    try:
        pointer = json.loads(storage.blobs.read_bytes(MODELS_CONTAINER, CURRENT_BLOB))
    except NotFoundError:
        raise ModelError(f"no model published: blob {where} is missing (run 'rts publish-model')") from None
    except ValueError as exc:
        raise ModelError(f"blob {where} is not JSON ({exc}); publish the model again") from None
    if not isinstance(pointer, dict):
        raise ModelError(f"blob {where} must hold a JSON object, got {type(pointer).__name__}")
    return pointer


def fetch_current_bundle(storage: Storage, cache_dir: Path) -> Path:
    """Download the live bundle into ``cache_dir/<name>/<version>/`` (once) and return that folder.

    A cached copy is used when its ONNX file matches the pointer's sha256; a download goes to a
    temporary folder first, so a half-downloaded bundle never sits in the cache.
    """
    pointer = current_model(storage)
    name, version = str(pointer.get("name", "")), str(pointer.get("version", ""))
    prefix = bundle_prefix(name, version)
    target = Path(cache_dir) / name / version
    if (target / ONNX_NAME).is_file() and file_sha256(target / ONNX_NAME) == pointer.get("onnx_sha256"):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{version}-") as tmp:
        for blob in (ONNX_NAME, META_NAME):
            try:
                storage.blobs.read_to_file(MODELS_CONTAINER, prefix + blob, Path(tmp) / blob)
            except NotFoundError:
                raise ModelError(
                    f"{MODELS_CONTAINER}/{CURRENT_BLOB} names {name} {version}, but blob "
                    f"{MODELS_CONTAINER}/{prefix}{blob} is missing; publish that model again"
                ) from None
        meta = read_bundle_meta(Path(tmp))  # checks the ONNX file against model.json
        if meta["onnx"]["sha256"] != pointer.get("onnx_sha256"):
            raise ModelError(f"{MODELS_CONTAINER}/{prefix}: model.json does not match {CURRENT_BLOB} (sha256 differs)")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        Path(tmp).mkdir()  # TemporaryDirectory removes it on exit
    return target
