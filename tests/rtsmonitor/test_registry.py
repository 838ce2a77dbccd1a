"""Site registration: uploads in, sites-table rows, error blobs and the backfill queue out."""

from __future__ import annotations

import datetime as dt
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtsmonitor.errors import NotFoundError
from rtsmonitor.jobs import SITE_YEARS_QUEUE, SiteYearJob
from rtsmonitor.registry import (
    SITE_ERRORS_CONTAINER,
    SITES_PARTITION,
    SITES_TABLE,
    active_sites,
    blob_key,
    list_sites,
    read_site,
    register_site,
    site_row_json,
)
from rtsmonitor.sites import FILE_FIELD, paper_site
from rtsmonitor.storage import LocalStorage

TODAY = dt.date(2026, 5, 1)
"""Before the 2026 season (07-01..08-31) has ended: 2026 must not be queued."""


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def config(site_id: str = "horton01", **changes: Any) -> dict[str, Any]:
    data = json.loads(paper_site("horton01").model_copy(update={"labels": []}).model_dump_json())
    data.update({"id": site_id, "first_year": 2022, "last_year": None, **changes})
    return data


def as_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def queued(storage: LocalStorage) -> list[SiteYearJob]:
    """Drain the site-years queue and return its jobs, sorted."""
    jobs = []
    while messages := storage.queues.receive(SITE_YEARS_QUEUE, 32, visibility_timeout_s=30):
        for message in messages:
            jobs.append(SiteYearJob.from_message(message.content))
            storage.queues.delete(SITE_YEARS_QUEUE, message)
    return sorted(jobs)


def row(storage: LocalStorage, key: str) -> dict[str, Any]:
    return dict(storage.tables.get(SITES_TABLE, SITES_PARTITION, key))


# --- blob_key -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("horton01.json", "horton01"),
        ("horton01.yaml", "horton01"),
        ("horton01.yml", "horton01"),
        ("folder/sub/My Site.JSON", "My_Site"),
        ("a/b.Yaml", "b"),
        ("x.YML", "x"),
        ("weird name#?.json", "weird_name__"),
        ("über.json", "_ber"),
        ("site.tar.json", "site.tar"),
        (".hidden.json", "hidden"),
        ("..json", "_"),
        ("noext", "noext"),
        ("notes.txt", "notes.txt"),
    ],
)
def test_blob_key(name: str, key: str) -> None:
    assert blob_key(name) == key


def test_blob_key_is_bounded_and_table_safe() -> None:
    key = blob_key("x" * 500 + ".json")
    assert key == "x" * 200
    for name in ["a/b#c?d\\e.json", "tab\there.json", "ctl\x01.json", "слизень.yaml"]:
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in blob_key(name)), name


# --- valid uploads --------------------------------------------------------------------------------


def test_valid_json_config_registers_and_queues_completed_years(storage: LocalStorage) -> None:
    registration = register_site(storage, "horton01.json", as_json(config()), today=TODAY)
    assert registration.status == "active" and registration.key == "horton01" and not registration.problems
    expected = [SiteYearJob("horton01", 2022), SiteYearJob("horton01", 2023), SiteYearJob("horton01", 2024)]
    expected.append(SiteYearJob("horton01", 2025))
    assert sorted(registration.queued) == expected
    assert queued(storage) == expected
    stored = row(storage, "horton01")
    assert stored["status"] == "active" and stored["name"] == "Horton 01" and stored["blob"] == "horton01.json"
    assert stored["area_km2"] == pytest.approx(100.0, rel=1e-3)
    site = read_site(storage, "horton01")
    assert site.config.id == "horton01" and site.config.first_year == 2022 and site.status == "active"
    assert site.registered == site.updated


def test_valid_yaml_config_registers_the_same_site(storage: LocalStorage) -> None:
    data = yaml.safe_dump(config(first_year=2023, last_year=2024)).encode()
    registration = register_site(storage, "horton01.yaml", data, today=TODAY)
    assert registration.status == "active"
    assert queued(storage) == [SiteYearJob("horton01", 2023), SiteYearJob("horton01", 2024)]
    assert read_site(storage, "horton01").config.last_year == 2024
    assert row(storage, "horton01")["blob"] == "horton01.yaml"


@pytest.mark.parametrize(
    ("today", "last_queued"),
    [
        (dt.date(2026, 5, 1), 2025),  # before the season
        (dt.date(2026, 7, 15), 2025),  # during the season
        (dt.date(2026, 8, 31), 2025),  # its last day: not ended yet
        (dt.date(2026, 9, 1), 2026),  # the day after
    ],
)
def test_registration_queues_only_seasons_that_have_ended(
    storage: LocalStorage, today: dt.date, last_queued: int
) -> None:
    registration = register_site(storage, "horton01.json", as_json(config(first_year=2024)), today=today)
    years = [job.year for job in registration.queued]
    assert years == list(range(2024, last_queued + 1))
    assert [job.year for job in queued(storage)] == years


def test_reregistration_keeps_registered_time_and_updates_the_rest(storage: LocalStorage) -> None:
    register_site(storage, "horton01.json", as_json(config()), today=TODAY)
    first = read_site(storage, "horton01")
    queued(storage)
    time.sleep(0.01)
    # the same config again: nothing queued, registered time kept
    again = register_site(storage, "horton01.json", as_json(config()), today=TODAY)
    assert again.unchanged and again.queued == [] and queued(storage) == []
    second = read_site(storage, "horton01")
    assert second.registered == first.registered
    assert second.updated >= first.updated
    time.sleep(0.01)
    # a changed config: registered kept, updated moves on, the backfill is queued again
    changed = register_site(storage, "horton01.json", as_json(config(max_cloud_pct=20.0)), today=TODAY)
    assert not changed.unchanged and len(changed.queued) == 4
    third = read_site(storage, "horton01")
    assert third.registered == first.registered
    assert third.updated > first.updated
    assert third.config.max_cloud_pct == 20.0
    assert [job.year for job in queued(storage)] == [2022, 2023, 2024, 2025]


def test_inactive_site_is_stored_inactive_and_queues_nothing(storage: LocalStorage) -> None:
    registration = register_site(storage, "paused.json", as_json(config("paused", active=False)), today=TODAY)
    assert registration.status == "inactive" and registration.queued == []
    assert storage.queues.peek_count(SITE_YEARS_QUEUE) == 0
    assert row(storage, "paused")["status"] == "inactive"
    assert read_site(storage, "paused").status == "inactive"
    assert active_sites(storage) == []


def test_active_sites_returns_only_active_ones(storage: LocalStorage) -> None:
    register_site(storage, "site-a.json", as_json(config("site-a")), today=TODAY)
    register_site(storage, "site-b.json", as_json(config("site-b", active=False)), today=TODAY)
    register_site(storage, "site-c.json", as_json(config("site-c", first_year=2024)), today=TODAY)
    register_site(storage, "site-d.json", as_json(config("site-d", max_cloud_pct=500)), today=TODAY)  # invalid
    assert [s.id for s in active_sites(storage)] == ["site-a", "site-c"]
    assert {r["RowKey"]: r["status"] for r in list_sites(storage)} == {
        "site-a": "active",
        "site-b": "inactive",
        "site-c": "active",
        "site-d": "invalid",
    }


def test_read_site_of_an_invalid_or_unknown_row_raises_not_found(storage: LocalStorage) -> None:
    register_site(storage, "broken.json", b"{not json", today=TODAY)
    assert row(storage, "broken")["status"] == "invalid"
    with pytest.raises(NotFoundError, match="broken"):
        read_site(storage, "broken")
    with pytest.raises(NotFoundError):
        read_site(storage, "never-registered")


def test_read_site_of_a_row_without_config_raises_not_found(storage: LocalStorage) -> None:
    storage.tables.upsert(SITES_TABLE, {"PartitionKey": SITES_PARTITION, "RowKey": "half", "status": "active"})
    with pytest.raises(NotFoundError, match="lacks config"):
        read_site(storage, "half")


def test_site_row_json_parses_config_problems_and_times(storage: LocalStorage) -> None:
    register_site(storage, "horton01.json", as_json(config()), today=TODAY)
    register_site(storage, "bad.json", as_json(config("bad", max_cloud_pct=500)), today=TODAY)
    good = site_row_json(row(storage, "horton01"))
    assert good["site_id"] == "horton01" and "PartitionKey" not in good and "RowKey" not in good
    assert isinstance(good["config"], dict) and good["config"]["id"] == "horton01"
    assert datetime.fromisoformat(good["registered"]).tzinfo is not None
    bad = site_row_json(row(storage, "bad"))
    assert isinstance(bad["problems"], list) and bad["problems"][0]["field"] == "max_cloud_pct"
    json.dumps([good, bad])  # serialisable as it is


# --- invalid uploads ------------------------------------------------------------------------------


def test_invalid_upload_for_a_fresh_key_writes_error_blob_and_invalid_row(storage: LocalStorage) -> None:
    data = as_json(config("fresh", max_cloud_pct=500, first_year=2010))
    registration = register_site(storage, "fresh.json", data, today=TODAY)
    assert registration.status == "invalid" and registration.queued == []
    fields = {field for field, _ in registration.problems}
    assert {"max_cloud_pct", "first_year"} <= fields
    assert registration.error_blob == "fresh.json"
    error = json.loads(storage.blobs.read_bytes(SITE_ERRORS_CONTAINER, "fresh.json"))
    assert error["status"] == "invalid" and error["blob"] == "sites/fresh.json"
    assert {p["field"] for p in error["problems"]} == fields
    stored = row(storage, "fresh")
    assert stored["status"] == "invalid" and stored["error_blob"] == "sites-errors/fresh.json"
    assert json.loads(stored["problems"]) == error["problems"]
    assert "config" not in stored
    assert storage.queues.peek_count(SITE_YEARS_QUEUE) == 0


@pytest.mark.parametrize(
    ("name", "data", "field"),
    [
        ("horton01.txt", as_json(config()), FILE_FIELD),
        ("nested/horton01.json", as_json(config()), FILE_FIELD),
        ("other.json", as_json(config()), "id"),
        ("horton01.json", b"id: [unclosed", FILE_FIELD),
        ("horton01.json", as_json(config(colour="red")), "colour"),
    ],
)
def test_invalid_upload_names_the_field(storage: LocalStorage, name: str, data: bytes, field: str) -> None:
    registration = register_site(storage, name, data, today=TODAY)
    assert registration.status == "invalid"
    assert field in {f for f, _ in registration.problems}, registration.problems
    assert storage.blobs.exists(SITE_ERRORS_CONTAINER, f"{blob_key(name)}.json")
    assert storage.queues.peek_count(SITE_YEARS_QUEUE) == 0


def test_invalid_upload_over_a_valid_site_keeps_its_config_and_status(storage: LocalStorage) -> None:
    register_site(storage, "horton01.json", as_json(config()), today=TODAY)
    queued(storage)
    good = row(storage, "horton01")
    registration = register_site(storage, "horton01.json", as_json(config(max_cloud_pct=250)), today=TODAY)
    assert registration.status == "invalid"
    after = row(storage, "horton01")
    assert after["status"] == "active" and after["config"] == good["config"]
    assert after["registered"] == good["registered"] and after["updated"] == good["updated"]
    assert after["last_upload"] == "horton01.json" and after["last_upload_status"] == "invalid"
    assert "max_cloud_pct" in after["last_upload_problems"]
    assert isinstance(after["last_upload_time"], datetime)
    assert read_site(storage, "horton01").config.max_cloud_pct == 10.0
    assert [s.id for s in active_sites(storage)] == ["horton01"]
    assert storage.queues.peek_count(SITE_YEARS_QUEUE) == 0
    assert site_row_json(after)["last_upload_problems"][0]["field"] == "max_cloud_pct"
    # a valid upload afterwards clears the error blob and the rejected-upload notes
    register_site(storage, "horton01.json", as_json(config()), today=TODAY)
    assert not storage.blobs.exists(SITE_ERRORS_CONTAINER, "horton01.json")
    assert "last_upload_status" not in row(storage, "horton01")


def test_invalid_upload_over_an_inactive_site_keeps_it_inactive(storage: LocalStorage) -> None:
    register_site(storage, "paused.json", as_json(config("paused", active=False)), today=TODAY)
    register_site(storage, "paused.json", b"[]", today=TODAY)
    assert row(storage, "paused")["status"] == "inactive"
    assert read_site(storage, "paused").status == "inactive"


def test_valid_upload_after_an_invalid_one_registers_the_site(storage: LocalStorage) -> None:
    register_site(storage, "horton01.json", b"{", today=TODAY)
    assert row(storage, "horton01")["status"] == "invalid"
    registration = register_site(storage, "horton01.json", as_json(config()), today=TODAY)
    assert registration.status == "active" and len(registration.queued) == 4
    assert read_site(storage, "horton01").status == "active"
    assert "problems" not in row(storage, "horton01")
    assert not storage.blobs.exists(SITE_ERRORS_CONTAINER, "horton01.json")
