"""Model bundles in storage: ``models/<name>/<version>/model.onnx`` + ``model.json``, and ``current.json``.

A bundle is the ONNX file and the metadata that made it (layer order, normalisation, tile size,
threshold, metrics, training-manifest hash, sha256 of the ONNX file). ``current.json`` names the live
bundle and is written last, so a reader never sees a pointer to a half-published model.

**Ensembles.** ``model.json`` may instead list several ONNX files under ``members`` (e.g. the same
U-Net trained with different seeds); inference averages their probabilities
(:meth:`rtsmonitor.inference.Model.predict_normalised`). Schema of an ensemble's ``model.json``::

    {
      "name": ..., "version": ..., "input_layers": [...], "normalisation": {...},
      "input_multiple_px": 32, "threshold": 0.95,          # shared: applied to the mean probability
      "onnx": {"input_name": ..., "output_name": ..., "layout": "NHWC", "opset": 17},
                                                            # shared by every member; no "file"/"sha256"
      "members": [
        {"file": "member1.onnx",                            # required: a plain file name in the bundle
         "sha256": "<64 hex>",                              # required: sha256 of that file
         "name": "seed-1",                                  # optional, default: the file's stem
         "version": "demo-1",                               # optional, default: the bundle's version
         "seed": 1,                                         # optional: training seed (int)
         "input_layers": [...], "normalisation": {...},     # optional: must equal the shared ones
         "input_multiple_px": 32,                           # optional: must equal the shared one
         "metrics": {...}},                                 # optional: the member's own validation
        ...
      ]
    }

Members must read the same layers with the same normalisation (one input tensor is fed to all):
a member that says otherwise, or whose ONNX input differs in shape, is refused with a
:class:`~rtsmonitor.errors.ModelError` naming it. An ensemble's identity (``onnx_sha256`` in
``current.json``, :meth:`~rtsmonitor.inference.Model.summary` and the records' ``model_sha256``) is
:func:`bundle_digest`: the sha256 of its members' sha256s in listed order; a single-file bundle's is
the ONNX file's sha256, as before.
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
"""The ONNX file of a single-file bundle."""
META_NAME = "model.json"
"""The bundle's metadata."""
MEMBERS_KEY = "members"
"""``model.json`` key listing an ensemble's ONNX files (see the module docstring)."""
MEMBER_KEYS: frozenset[str] = frozenset(
    {"file", "sha256", "name", "version", "seed", "input_layers", "normalisation", "input_multiple_px", "metrics"}
)
"""Keys a member entry may hold; any other key is refused (a typo must not pass silently)."""
SHARED_MEMBER_KEYS: tuple[str, ...] = ("input_layers", "normalisation", "input_multiple_px")
"""Member keys that, when given, must equal the bundle's own: every member reads the same input tensor."""
DEMO_BUNDLE = Path(__file__).parent / "models" / "demo"
"""The bundled demo model (trained by ``scripts/train_demo_model.sh`` on the synthetic paper corpus)."""


@dataclass(frozen=True)
class PublishedModel:
    """Where a bundle went.

    ``onnx_blob`` is the (first) ONNX file's blob, ``onnx_blobs`` every ONNX file's (one per
    ensemble member); ``onnx_sha256`` is the bundle's identity, :func:`bundle_digest`.
    """

    name: str
    version: str
    onnx_blob: str
    meta_blob: str
    onnx_sha256: str
    current: bool
    onnx_blobs: tuple[str, ...] = ()


@dataclass(frozen=True)
class BundleMember:
    """One ONNX file of a bundle: the only one of a single-file bundle, or one ensemble member.

    Attributes
    ----------
    file : its file name inside the bundle folder (and blob name under the bundle's prefix).
    sha256 : the hex sha256 ``model.json`` gives for it.
    name : the member's name (the bundle's name for a single-file bundle).
    version : the member's version (the bundle's version unless the member names its own).
    seed : the training seed, if ``model.json`` gives one.

    """

    file: str
    sha256: str
    name: str
    version: str
    seed: int | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready identity: name, version, sha256, file (and seed when known)."""
        out: dict[str, Any] = {"name": self.name, "version": self.version, "sha256": self.sha256, "file": self.file}
        if self.seed is not None:
            out["seed"] = self.seed
        return out


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


def is_ensemble(meta: dict[str, Any]) -> bool:
    """Whether ``model.json`` lists ensemble ``members``."""
    return MEMBERS_KEY in meta


def bundle_members(meta: dict[str, Any], source: str = META_NAME) -> tuple[BundleMember, ...]:
    """The ONNX files ``meta`` (a ``model.json``) names, checked for form; ``source`` names it in errors.

    A single-file bundle has one member, :data:`ONNX_NAME` with ``onnx.sha256``. An ensemble's members
    come from ``members`` (see the module docstring); :class:`ModelError` names the first bad entry.
    """
    bundle_name, bundle_version = str(meta.get("name", "")), str(meta.get("version", ""))
    onnx = meta.get("onnx", {})
    if not isinstance(onnx, dict):
        raise ModelError(f"{source}: 'onnx' must be an object, got {type(onnx).__name__}")
    if not is_ensemble(meta):
        return (BundleMember(ONNX_NAME, str(onnx.get("sha256", "")), bundle_name, bundle_version),)
    entries = meta[MEMBERS_KEY]
    if not isinstance(entries, list) or not entries:
        raise ModelError(f"{source}: '{MEMBERS_KEY}' must be a non-empty list of member objects")
    if "file" in onnx or "sha256" in onnx:
        raise ModelError(
            f"{source}: an ensemble lists its ONNX files under '{MEMBERS_KEY}'; remove onnx.file and onnx.sha256"
        )
    members: list[BundleMember] = []
    for index, entry in enumerate(entries):
        where = f"{source}: {MEMBERS_KEY}[{index}]"
        if not isinstance(entry, dict):
            raise ModelError(f"{where} must be an object, got {type(entry).__name__}")
        file = entry.get("file")
        where = f"{where} ({file!r})"
        unknown = sorted(set(entry) - MEMBER_KEYS)
        if unknown:
            raise ModelError(f"{where}: unknown keys {unknown}; allowed: {sorted(MEMBER_KEYS)}")
        if (
            not isinstance(file, str)
            or not file.endswith(".onnx")
            or file != Path(file).name
            or "\\" in file
            or file in (META_NAME, ".onnx")
        ):
            raise ModelError(f"{where}: 'file' must be a plain file name ending in .onnx inside the bundle")
        sha = entry.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ModelError(f"{where}: 'sha256' must be 64 lower-case hex digits, got {sha!r}")
        for key in SHARED_MEMBER_KEYS:
            if key in entry and entry[key] != meta.get(key):
                raise ModelError(
                    f"{where}: its {key} {entry[key]!r} differs from the bundle's {meta.get(key)!r}; every member "
                    "must read the same input (one tensor is fed to all)"
                )
        seed = entry.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ModelError(f"{where}: 'seed' must be an integer, got {seed!r}")
        name = entry.get("name", Path(file).stem)
        version = entry.get("version", bundle_version)
        if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
            raise ModelError(f"{where}: 'name' and 'version' must be non-empty strings")
        members.append(BundleMember(file, sha, name, version, seed))
    files = [m.file for m in members]
    names = [m.name for m in members]
    for label, values in (("file", files), ("name", names)):
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ModelError(f"{source}: members share the {label} {duplicates}; each member needs its own")
    return tuple(members)


def bundle_digest(meta: dict[str, Any]) -> str:
    """The bundle's identity, recorded as ``onnx_sha256``/``model_sha256``.

    A single-file bundle's is ``onnx.sha256``; an ensemble's is the hex sha256 of its members' sha256s
    joined by newlines in listed order, so it changes when any member does.
    """
    members = bundle_members(meta)
    if not is_ensemble(meta):
        return members[0].sha256
    return hashlib.sha256("\n".join(m.sha256 for m in members).encode()).hexdigest()


def read_bundle_meta(bundle_dir: Path) -> dict[str, Any]:
    """``model.json`` of a local bundle, after checking every ONNX file it names against its sha256.

    Raises :class:`ModelError` naming the missing or mismatching file (and, in an ensemble, the member).
    """
    meta_path = Path(bundle_dir) / META_NAME
    if not meta_path.is_file():
        raise ModelError(f"{bundle_dir} is not a model bundle: it needs {META_NAME} (and {ONNX_NAME} or members)")
    try:
        meta: Any = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise ModelError(f"{meta_path} is not JSON ({exc}); re-export the bundle") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path} must hold a JSON object, got {type(meta).__name__}")
    ensemble = is_ensemble(meta)
    for member in bundle_members(meta, str(meta_path)):
        path = Path(bundle_dir) / member.file
        label = f"member {member.name!r} ({member.file})" if ensemble else member.file
        if not path.is_file():
            raise ModelError(f"{bundle_dir} is not a complete model bundle: {label} is missing")
        actual = file_sha256(path)
        if actual != member.sha256:
            raise ModelError(
                f"{path}: sha256 {actual} of {label} does not match model.json ({member.sha256 or None}); "
                "re-export the bundle"
            )
    return meta


def publish_model(storage: Storage, bundle_dir: Path, *, make_current: bool = True) -> PublishedModel:
    """Upload a checked local bundle under its name/version and (by default) point ``current.json`` at it.

    The ONNX files go first (every ensemble member), then ``model.json``, then ``current.json``:
    every pointer a reader can see leads to a complete bundle. The pointer's ``onnx_sha256`` is
    :func:`bundle_digest`; an ensemble's pointer also lists its ``members`` (name, version, sha256).
    """
    meta = read_bundle_meta(bundle_dir)
    name, version = str(meta.get("name", "")), str(meta.get("version", ""))
    prefix = bundle_prefix(name, version)
    members = bundle_members(meta)
    digest = bundle_digest(meta)
    onnx_blobs = tuple(prefix + member.file for member in members)
    meta_blob = prefix + META_NAME
    for member, blob in zip(members, onnx_blobs, strict=True):
        storage.blobs.write_file(
            MODELS_CONTAINER, blob, Path(bundle_dir) / member.file, content_type="application/octet-stream"
        )
    storage.blobs.write_bytes(
        MODELS_CONTAINER, meta_blob, (Path(bundle_dir) / META_NAME).read_bytes(), content_type="application/json"
    )
    if make_current:
        pointer: dict[str, Any] = {
            "name": name,
            "version": version,
            "onnx_sha256": digest,
            "published": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if is_ensemble(meta):
            pointer["members"] = [member.summary() for member in members]
        storage.blobs.write_bytes(
            MODELS_CONTAINER, CURRENT_BLOB, json.dumps(pointer, indent=2).encode(), content_type="application/json"
        )
    return PublishedModel(name, version, onnx_blobs[0], meta_blob, digest, make_current, onnx_blobs)


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


def _cached_bundle_matches(folder: Path, digest: object) -> bool:
    """Whether ``folder`` holds a complete, checked bundle whose :func:`bundle_digest` is ``digest``."""
    if not (folder / META_NAME).is_file():
        return False
    try:
        return bundle_digest(read_bundle_meta(folder)) == digest
    except ModelError:
        return False


def fetch_current_bundle(storage: Storage, cache_dir: Path) -> Path:
    """Download the live bundle into ``cache_dir/<name>/<version>/`` (once) and return that folder.

    A cached copy is used when every ONNX file in it matches its ``model.json`` and the bundle's
    :func:`bundle_digest` is the pointer's ``onnx_sha256``. A download fetches ``model.json`` first,
    then every ONNX file it names (all members of an ensemble), into a temporary folder, so a
    half-downloaded bundle never sits in the cache.
    """
    pointer = current_model(storage)
    name, version = str(pointer.get("name", "")), str(pointer.get("version", ""))
    prefix = bundle_prefix(name, version)
    target = Path(cache_dir) / name / version
    if _cached_bundle_matches(target, pointer.get("onnx_sha256")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{version}-") as tmp:

        def download(blob: str) -> None:
            try:
                storage.blobs.read_to_file(MODELS_CONTAINER, prefix + blob, Path(tmp) / blob)
            except NotFoundError:
                raise ModelError(
                    f"{MODELS_CONTAINER}/{CURRENT_BLOB} names {name} {version}, but blob "
                    f"{MODELS_CONTAINER}/{prefix}{blob} is missing; publish that model again"
                ) from None

        download(META_NAME)
        try:
            listed: Any = json.loads((Path(tmp) / META_NAME).read_text())
        except ValueError as exc:
            raise ModelError(
                f"blob {MODELS_CONTAINER}/{prefix}{META_NAME} is not JSON ({exc}); publish it again"
            ) from None
        if not isinstance(listed, dict):
            raise ModelError(f"blob {MODELS_CONTAINER}/{prefix}{META_NAME} must hold a JSON object")
        for member in bundle_members(listed, f"{MODELS_CONTAINER}/{prefix}{META_NAME}"):
            download(member.file)
        meta = read_bundle_meta(Path(tmp))  # checks every ONNX file against model.json
        if bundle_digest(meta) != pointer.get("onnx_sha256"):
            raise ModelError(f"{MODELS_CONTAINER}/{prefix}: model.json does not match {CURRENT_BLOB} (sha256 differs)")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        Path(tmp).mkdir()  # TemporaryDirectory removes it on exit
    return target
