"""Site registration: a config blob in, a row of the sites table and the site's backfill out.

A user registers (or updates) a site by uploading ``sites/<site_id>.json`` (or ``.yaml``). A valid
config is stored in the sites table and one queue message per year is sent; an invalid one gets an
error blob ``sites-errors/<name>.json`` and a row that lists every problem, and nothing else
changes: an invalid upload over a registered site leaves its stored config in force and only notes
the rejected upload on its row. Registration never raises on bad user input, so the blob trigger
that calls it is never retried on it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Literal

from rtsmonitor.errors import ConfigError, NotFoundError
from rtsmonitor.jobs import SiteYearJob, completed_years, enqueue
from rtsmonitor.sites import FILE_FIELD, ServiceLimits, SiteConfig, parse_site_config
from rtsmonitor.storage import Entity, Storage

SITES_CONTAINER = "sites"
"""Blob container users upload site configs to (``<site_id>.json`` / ``.yaml`` / ``.yml``)."""
SITE_ERRORS_CONTAINER = "sites-errors"
"""Blob container of the problems of rejected uploads (``<name>.json``)."""
SITES_TABLE = "sites"
"""Table of registered sites (PartitionKey :data:`SITES_PARTITION`, RowKey = site id)."""
SITES_PARTITION = "site"
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
MAX_CONFIG_BYTES = 1024 * 1024
"""Largest config blob accepted, in bytes (1 MiB: room for a detailed outline of a 2,500 km^2 site;
a config is a few KB). Larger uploads are rejected without being parsed."""

SiteStatus = Literal["active", "inactive", "invalid"]

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class Registration:
    """The outcome of one upload.

    Attributes
    ----------
    blob_name : the uploaded blob's name inside :data:`SITES_CONTAINER`.
    key : the sites-table row written (the site id, or a safe form of the blob name).
    status : ``active``/``inactive`` for a valid config, ``invalid`` otherwise.
    problems : (field, message) pairs of an invalid upload.
    queued : the site-years sent to the queue.
    error_blob : the error blob written for an invalid upload.
    unchanged : a valid config identical to the stored one (nothing queued again).
    """

    blob_name: str
    key: str
    status: SiteStatus
    problems: list[tuple[str, str]] = field(default_factory=list)
    queued: list[SiteYearJob] = field(default_factory=list)
    error_blob: str | None = None
    unchanged: bool = False


@dataclass(frozen=True)
class RegisteredSite:
    """A site as the sites table holds it."""

    config: SiteConfig
    status: SiteStatus
    registered: datetime
    updated: datetime


def blob_key(blob_name: str) -> str:
    """A table-safe key for an uploaded blob: its stem, with unsafe characters replaced by '_'."""
    stem = PurePosixPath(blob_name).name
    for suffix in CONFIG_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    safe = _UNSAFE_KEY_CHARS.sub("_", stem)[:_MAX_KEY_CHARS].strip(".")
    return safe or "_"


def _name_problems(blob_name: str, config: SiteConfig | None) -> list[tuple[str, str]]:
    """Problems of the blob's name itself, and of its agreement with the config's id."""
    problems: list[tuple[str, str]] = []
    if "/" in blob_name:
        problems.append((FILE_FIELD, f"blob {blob_name!r} is in a folder; upload configs as sites/<site_id>.json"))
    if not blob_name.lower().endswith(CONFIG_SUFFIXES):
        problems.append((FILE_FIELD, f"blob {blob_name!r} must end in one of {', '.join(CONFIG_SUFFIXES)}"))
    if config is not None and not problems and blob_key(blob_name) != config.id:
        problems.append(
            ("id", f"{config.id!r} does not match the blob name {blob_name!r}: upload it as sites/{config.id}.json")
        )
    return problems


def register_site(
    storage: Storage,
    blob_name: str,
    data: bytes,
    *,
    limits: ServiceLimits | None = None,
    today: dt.date | None = None,
) -> Registration:
    """Validate an uploaded config and register the site, or record why it was rejected."""
    now = datetime.now(UTC)
    config: SiteConfig | None = None
    problems: list[tuple[str, str]] = []
    if len(data) > MAX_CONFIG_BYTES:
        too_big = f"{len(data)} bytes or more is larger than the {MAX_CONFIG_BYTES} byte limit of a config"
        problems = [(FILE_FIELD, too_big)]
    else:
        try:
            config = parse_site_config(data, f"{SITES_CONTAINER}/{blob_name}", limits=limits, today=today)
        except ConfigError as exc:
            problems = list(exc.problems)
    problems += _name_problems(blob_name, config)
    key = blob_key(blob_name)
    existing = _get_row(storage, key)
    if problems or config is None:
        return _reject(storage, blob_name, key, problems, existing, now)

    stored_config = str(existing.get("config", "")) if existing else ""
    new_config = config.model_dump_json()
    status: SiteStatus = "active" if config.active else "inactive"
    row: Entity = {
        "PartitionKey": SITES_PARTITION,
        "RowKey": config.id,
        "name": config.name,
        "status": status,
        "config": new_config,
        "blob": blob_name,
        "area_km2": round(config.area_km2(), 4),
        "registered": existing.get("registered", now) if existing and stored_config else now,
        "updated": now,
    }
    storage.tables.upsert(SITES_TABLE, row)
    if storage.blobs.exists(SITE_ERRORS_CONTAINER, f"{key}.json"):
        storage.blobs.delete(SITE_ERRORS_CONTAINER, f"{key}.json")
    unchanged = stored_config == new_config
    jobs = [] if unchanged or not config.active else [SiteYearJob(config.id, y) for y in completed_years(config, today)]
    enqueue(storage, jobs)
    return Registration(blob_name, config.id, status, queued=jobs, unchanged=unchanged)


def _get_row(storage: Storage, key: str) -> Entity | None:
    try:
        return storage.tables.get(SITES_TABLE, SITES_PARTITION, key)
    except NotFoundError:
        return None


def _reject(
    storage: Storage,
    blob_name: str,
    key: str,
    problems: Sequence[tuple[str, str]],
    existing: Entity | None,
    now: datetime,
) -> Registration:
    """Write the error blob and note the rejection; a registered site keeps its config and status."""
    listed = [{"field": f, "message": m} for f, m in problems]
    report = {
        "blob": f"{SITES_CONTAINER}/{blob_name}",
        "status": "invalid",
        "checked": now.isoformat(),
        "problems": listed,
    }
    error_blob = f"{key}.json"
    storage.blobs.write_bytes(
        SITE_ERRORS_CONTAINER, error_blob, json.dumps(report, indent=2).encode(), content_type="application/json"
    )
    summary = json.dumps(listed)
    if existing is not None and existing.get("status") in ("active", "inactive"):
        row: Entity = {
            **existing,
            "last_upload": blob_name,
            "last_upload_status": "invalid",
            "last_upload_problems": summary,
            "last_upload_time": now,
        }
    else:
        row = {
            "PartitionKey": SITES_PARTITION,
            "RowKey": key,
            "status": "invalid",
            "blob": blob_name,
            "problems": summary,
            "error_blob": f"{SITE_ERRORS_CONTAINER}/{error_blob}",
            "registered": existing.get("registered", now) if existing else now,
            "updated": now,
        }
    storage.tables.upsert(SITES_TABLE, row)
    return Registration(blob_name, key, "invalid", list(problems), error_blob=error_blob)


def read_site(storage: Storage, site_id: str) -> RegisteredSite:
    """The registered site ``site_id``; :class:`NotFoundError` if it has no valid registration."""
    row = storage.tables.get(SITES_TABLE, SITES_PARTITION, site_id)
    return _site_from_row(row, site_id)


def _site_from_row(row: Entity, key: str) -> RegisteredSite:
    config, registered, updated = row.get("config"), row.get("registered"), row.get("updated")
    status: SiteStatus
    if row.get("status") == "active":
        status = "active"
    elif row.get("status") == "inactive":
        status = "inactive"
    else:
        raise NotFoundError(f"site {key!r} has no valid registration (status {row.get('status')!r})")
    if not isinstance(config, str) or not isinstance(registered, datetime) or not isinstance(updated, datetime):
        raise NotFoundError(f"site {key!r}: its row lacks config or times")
    return RegisteredSite(SiteConfig.model_validate_json(config), status, registered, updated)


def list_sites(storage: Storage) -> list[Entity]:
    """Every row of the sites table (valid and invalid), by key."""
    return storage.tables.query(SITES_TABLE, SITES_PARTITION)


def active_sites(storage: Storage) -> list[SiteConfig]:
    """The configs of the sites the yearly run processes."""
    sites = []
    for row in list_sites(storage):
        if row.get("status") == "active":
            sites.append(_site_from_row(row, str(row["RowKey"])).config)
    return sites


def site_row_json(row: Entity) -> dict[str, Any]:
    """A sites-table row as JSON for the HTTP API (config and problems parsed, times as ISO text)."""
    out: dict[str, Any] = {"site_id": row["RowKey"]}
    for name, value in row.items():
        if name in ("PartitionKey", "RowKey"):
            continue
        if name in ("config", "problems", "last_upload_problems") and isinstance(value, str):
            out[name] = json.loads(value)
        elif isinstance(value, datetime):
            out[name] = value.isoformat()
        else:
            out[name] = value
    return out
