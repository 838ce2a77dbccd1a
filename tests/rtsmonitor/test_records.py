"""Site-year records: the table row, its round trip through storage, the CSV and the pruning of old runs."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from rtsmonitor.errors import RtsError
from rtsmonitor.records import (
    CSV_COLUMNS,
    RECORDS_TABLE,
    RESULTS_CONTAINER,
    SiteYearRecord,
    prune_runs,
    read_record,
    read_records,
    records_csv,
    results_prefix,
    write_record,
    year_key,
)
from rtsmonitor.storage import LocalStorage

PROCESSED = datetime(2024, 9, 1, 12, 30, 15, tzinfo=UTC)


def ok_record(site_id: str = "horton01", year: int = 2021, **changes: object) -> SiteYearRecord:
    record = SiteYearRecord(
        site_id=site_id,
        year=year,
        status="ok",
        reason="clear scene",
        processed=PROCESSED,
        code_version="1.2.3",
        scene_id="S2B_MSIL2A_20210715",
        scene_datetime="2021-07-15T20:05:59+00:00",
        processing_baseline="03.00",
        cloud_pct=1.25,
        valid_fraction=0.98765,
        site_area_m2=1e8,
        observed_area_m2=9.8e7,
        rts_count=7,
        rts_area_m2=123456.7,
        rts_area_err_m2=18518.5,
        carbon_t_c_per_yr=12.34,
        carbon_t_c_err_per_yr=3.21,
        co2_t_per_yr=45.25,
        co2_t_err_per_yr=11.77,
        carbon_factors='{"a": 1}',
        model_name="rts-unet-demo",
        model_version="demo-1",
        threshold=0.5,
        run_id="run-a",
        results_prefix=results_prefix(site_id, year, "run-a"),
        seconds=12.5,
        attempts=1,
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def no_scene_record(site_id: str = "horton01", year: int = 2019) -> SiteYearRecord:
    return SiteYearRecord(
        site_id=site_id,
        year=year,
        status="no-scene",
        reason="no scene under 10 % cloud",
        processed=PROCESSED,
        code_version="1.2.3",
        attempts=2,
    )


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def test_ok_record_round_trips_through_the_table(storage: LocalStorage) -> None:
    record = ok_record()
    write_record(storage, record)
    assert read_record(storage, "horton01", 2021) == record
    row = storage.tables.get(RECORDS_TABLE, "horton01", "2021")
    assert row["PartitionKey"] == "horton01" and row["RowKey"] == "2021"
    assert "site_id" not in row and "year" not in row
    assert row["rts_count"] == 7 and isinstance(row["rts_count"], int)
    assert row["processed"] == PROCESSED


def test_none_fields_are_absent_from_the_row_and_come_back_as_none(storage: LocalStorage) -> None:
    record = no_scene_record()
    entity = record.to_entity()
    assert entity["RowKey"] == "2019"
    write_record(storage, record)
    row = storage.tables.get(RECORDS_TABLE, "horton01", "2019")
    for name in ("scene_id", "rts_count", "rts_area_m2", "results_prefix", "run_id", "model_name"):
        assert name not in row
    assert row["status"] == "no-scene" and row["attempts"] == 2
    back = read_record(storage, "horton01", 2019)
    assert back == record and back is not None and back.scene_id is None and back.rts_count is None


def test_from_entity_ignores_unknown_properties() -> None:
    entity = {**ok_record().to_entity(), "Timestamp": "x", "some_new_field": 3}
    assert SiteYearRecord.from_entity(entity) == ok_record()


def test_year_key_is_four_digits() -> None:
    assert year_key(2021) == "2021"
    assert year_key(987) == "0987"
    assert ok_record(year=987).to_entity()["RowKey"] == "0987"
    assert results_prefix("horton01", 2021, "r1") == "horton01/2021/r1/"


@pytest.mark.parametrize("missing", ["rts_count", "rts_area_m2", "scene_id", "results_prefix"])
def test_ok_record_without_its_numbers_is_refused(missing: str) -> None:
    with pytest.raises(RtsError, match=missing):
        ok_record(**{missing: None})


def test_ok_record_with_zero_slumps_is_accepted() -> None:
    assert ok_record(rts_count=0, rts_area_m2=0.0).rts_count == 0


def test_unknown_status_is_refused() -> None:
    with pytest.raises(RtsError, match="status 'done'"):
        replace(no_scene_record(), status="done")  # type: ignore[arg-type]


def test_unknown_status_in_a_stored_row_is_refused(storage: LocalStorage) -> None:
    storage.tables.upsert(RECORDS_TABLE, {**no_scene_record().to_entity(), "status": "weird"})
    with pytest.raises(RtsError, match="weird"):
        read_record(storage, "horton01", 2019)


def test_rewriting_a_site_year_leaves_one_row(storage: LocalStorage) -> None:
    write_record(storage, no_scene_record(year=2021))
    write_record(storage, ok_record(year=2021, rts_count=3))
    write_record(storage, ok_record(year=2021, rts_count=4))
    rows = storage.tables.query(RECORDS_TABLE, "horton01")
    assert len(rows) == 1
    record = read_record(storage, "horton01", 2021)
    assert record is not None and record.rts_count == 4 and record.status == "ok"
    # the replaced no-scene row's fields must not linger: the row is replaced, not merged
    write_record(storage, no_scene_record(year=2021))
    assert "rts_count" not in storage.tables.get(RECORDS_TABLE, "horton01", "2021")


def test_read_record_of_an_unknown_site_year_is_none(storage: LocalStorage) -> None:
    assert read_record(storage, "nowhere", 2021) is None
    write_record(storage, ok_record())
    assert read_record(storage, "horton01", 2020) is None


def test_read_records_orders_by_site_and_year_and_filters_by_site(storage: LocalStorage) -> None:
    for site_id, year in [("lena", 2020), ("horton01", 2021), ("horton01", 2016), ("lena", 2017)]:
        write_record(storage, ok_record(site_id, year))
    assert [(r.site_id, r.year) for r in read_records(storage)] == [
        ("horton01", 2016),
        ("horton01", 2021),
        ("lena", 2017),
        ("lena", 2020),
    ]
    assert [r.year for r in read_records(storage, "lena")] == [2017, 2020]
    assert read_records(storage, "kolguev01") == []


def test_records_csv_header_and_values() -> None:
    east = timezone(timedelta(hours=2))
    records = [ok_record(processed=datetime(2024, 9, 1, 14, 30, 15, 999, tzinfo=east)), no_scene_record()]
    text = records_csv(records)
    lines = text.splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert CSV_COLUMNS[:3] == ("site_id", "year", "status") and len(set(CSV_COLUMNS)) == len(CSV_COLUMNS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2
    ok, none = rows
    assert ok["site_id"] == "horton01" and ok["year"] == "2021" and ok["status"] == "ok"
    assert ok["processed"] == "2024-09-01T12:30:15+00:00"  # UTC, ISO 8601, whole seconds
    assert ok["rts_count"] == "7" and float(ok["rts_area_m2"]) == 123456.7
    assert ok["results_prefix"] == "horton01/2021/run-a/"
    assert none["status"] == "no-scene" and none["scene_id"] == "" and none["rts_count"] == ""
    assert none["reason"] == "no scene under 10 % cloud"


def test_records_csv_of_no_records_is_the_header() -> None:
    assert records_csv([]) == ",".join(CSV_COLUMNS) + "\n"


def test_as_row_is_in_csv_column_order() -> None:
    row = ok_record().as_row()
    assert tuple(row) == CSV_COLUMNS
    assert row["processed"] == "2024-09-01T12:30:15+00:00"


def _blob(storage: LocalStorage, name: str) -> None:
    storage.blobs.write_bytes(RESULTS_CONTAINER, name, b"x")


def test_prune_runs_deletes_only_other_runs_of_that_site_year(storage: LocalStorage) -> None:
    keep = ["horton01/2021/run-b/mask.tif", "horton01/2021/run-b/rts.geojson"]
    stale = ["horton01/2021/run-a/mask.tif", "horton01/2021/run-a/rts.geojson", "horton01/2021/run-bb/mask.tif"]
    others = [
        "horton01/2020/run-a/mask.tif",  # another year
        "horton01/2022/run-a/mask.tif",
        "horton011/2021/run-a/mask.tif",  # a site whose id starts like this one
        "horton0/2021/run-a/mask.tif",
        "lena/2021/run-a/mask.tif",
    ]
    for name in keep + stale + others:
        _blob(storage, name)
    deleted = prune_runs(storage, "horton01", 2021, keep_run_id="run-b")
    assert sorted(deleted) == sorted(stale)
    assert storage.blobs.list(RESULTS_CONTAINER) == sorted(keep + others)


def test_prune_runs_without_a_run_to_keep_deletes_all_of_the_site_year(storage: LocalStorage) -> None:
    mine = ["horton01/2021/run-a/mask.tif", "horton01/2021/run-b/mask.tif"]
    others = ["horton01/2020/run-a/mask.tif", "horton011/2021/run-a/mask.tif", "lena/2021/run-a/mask.tif"]
    for name in mine + others:
        _blob(storage, name)
    assert sorted(prune_runs(storage, "horton01", 2021, keep_run_id=None)) == mine
    assert storage.blobs.list(RESULTS_CONTAINER) == sorted(others)
    assert prune_runs(storage, "horton01", 2021, keep_run_id=None) == []


def test_prune_runs_on_an_empty_store_deletes_nothing(storage: LocalStorage) -> None:
    assert prune_runs(storage, "horton01", 2021, keep_run_id="run-a") == []
