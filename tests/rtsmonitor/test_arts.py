"""The ARTS format rules: fields as published, the upstream UID rule, and a validator that catches breaks."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from shapely.geometry import box

from rtsmonitor.arts import (
    ARTS_FIELDS,
    PAPER_REGIONS,
    REQUIRED_FIELDS,
    arts_problems,
    arts_uid,
    creator_lab,
    join_uids,
    region_name,
    uid_seed,
)
from rtsmonitor.sites import paper_sites

PUBLISHED = Path(__file__).parents[2].parent / "shared" / "data" / "arts" / "Metadata_Format_Summary.csv"


def yamal(lat: float, lon: float, dates: str, train_class: str = "Positive") -> dict[str, Any]:
    return {
        "CentroidLat": lat,
        "CentroidLon": lon,
        "RegionName": "Yamal-Gydan",
        "CreatorLab": "Rodenhizer",
        "BaseMapDate": dates,
        "BaseMapSource": "WorldView-2",
        "BaseMapResolution": 4.0,
        "TrainClass": train_class,
        "LabelType": "Polygon",
    }


# The tutorial notebook of whrc/ARTS (Tutorial/data_formatting.ipynb at 8477d61, cells "pre-processing
# your rts data" and "Generate UIDs") prints these rows of its mock data set and the UIDs seed_gen +
# uuid5 gave them.
UPSTREAM = [
    (yamal(70.01655, 68.33926, "2023-05-01,2023-09-30"), "697680a4-9707-59fb-aabb-540308cf0705"),
    (yamal(70.01543, 68.34071, "2022-05-01,2022-9-30"), "aedeff78-0897-5159-aefd-c5a5885475c8"),
    (yamal(70.01526, 68.32684, "2023-05-01,2023-09-30", "Negative"), "a3425670-eef6-5b0c-9324-75563e3430ee"),
]


@pytest.mark.parametrize(("fields", "expected"), UPSTREAM)
def test_uids_match_the_ones_the_arts_tutorial_generated(fields: dict[str, Any], expected: str) -> None:
    assert arts_uid(fields) == expected


def test_uid_rule_by_hand() -> None:
    fields = {
        "CentroidLat": 69.75123,
        "CentroidLon": -126.7,
        "RegionName": "Horton",
        "CreatorLab": "rtsmonitor (Permafrost Lab)",
        "BaseMapDate": "2020-07-15",
        "BaseMapSource": "Sentinel-2 L2A",
        "BaseMapResolution": 10.0,
        "TrainClass": "Positive",
        "LabelType": "Polygon",
    }
    # the nine required fields joined in summary order; 10.0 m written without a decimal point
    seed = "69.75123-126.7Hortonrtsmonitor (Permafrost Lab)2020-07-15Sentinel-2 L2A10PositivePolygon"
    assert uid_seed(fields) == seed
    assert arts_uid(fields) == "f512bec3-7104-5952-8523-22293eced547"  # uuid5(NAMESPACE_DNS, seed), by hand
    assert arts_uid(fields) == str(uuid.uuid5(uuid.NAMESPACE_DNS, seed))
    # the centroid is rounded to 5 decimals first, a fractional resolution keeps its decimals
    assert uid_seed({**fields, "CentroidLat": 69.751234}) == seed
    assert uid_seed({**fields, "BaseMapResolution": 10}) == seed
    assert "-126.7Horton" in uid_seed(fields)
    assert uid_seed({**fields, "BaseMapResolution": 2.5}).endswith("Sentinel-2 L2A2.5PositivePolygon")


@pytest.mark.skipif(not PUBLISHED.is_file(), reason="shared/data/arts is not checked out beside the repository")
def test_fields_are_the_published_summary() -> None:
    with PUBLISHED.open(encoding="utf-8") as handle:
        published = [(r["FieldName"], r["Format"], r["Required"], r["Description"]) for r in csv.DictReader(handle)]
    assert [(f.name, f.format, f.required, f.description) for f in ARTS_FIELDS] == published
    assert tuple(name for name, _, required, _ in published if required == "True") == REQUIRED_FIELDS


def test_region_and_creator() -> None:
    assert {site.id for site in paper_sites()} == set(PAPER_REGIONS)
    assert region_name("horton02", "Horton 02") == "Horton"
    assert region_name("my-site", "My site") == "My site"
    assert creator_lab() == "rtsmonitor"
    assert creator_lab("  AWI Potsdam ") == "rtsmonitor (AWI Potsdam)"
    assert join_uids(["b", "a", "b"]) == "b,a"


UID_A = str(uuid.uuid5(uuid.NAMESPACE_DNS, "a"))
UID_B = str(uuid.uuid5(uuid.NAMESPACE_DNS, "b"))


def good_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "CentroidLat": 69.75123,
        "CentroidLon": -126.70001,
        "RegionName": "Horton",
        "CreatorLab": "rtsmonitor",
        "BaseMapDate": "2020-07-15",
        "BaseMapSource": "Sentinel-2 L2A",
        "BaseMapResolution": 10.0,
        "TrainClass": "Positive",
        "LabelType": "Polygon",
        "MergedRTS": f"{UID_A},{UID_B}",
        "SplitRTS": "",
        "NewRTS": "",
        "StabilizedRTS": UID_A,
        "UnknownRelationship": "",
        "ContributionDate": "2024-09-01",
        "BaseMapID": "S2B_MSIL2A_20200715T203609_R099_T09WWR_20200716T001",
        "Area": 1200.0,
        "Notes": "mapped automatically",
        "RepeatRTS": "",
    }
    row.update(changes)
    if "UID" not in changes:
        row["UID"] = arts_uid(row)
    return row


def test_good_rows_pass() -> None:
    assert arts_problems([good_row(), good_row(CentroidLat=69.8, BaseMapDate="2020-07-01,2020-08-31")]) == []
    assert arts_problems([good_row(Area=None, Notes=float("nan"), BaseMapID=None)]) == []  # optional


BROKEN = {
    "CentroidLat decimals": ({"CentroidLat": 69.751234}, "CentroidLat: 69.751234 has more than 5 decimal places"),
    "CentroidLat range": ({"CentroidLat": 90.5}, "CentroidLat: 90.5 is outside [-90, 90]"),
    "CentroidLat text": ({"CentroidLat": "69.75"}, "CentroidLat: '69.75' is not a finite number"),
    "CentroidLon nan": ({"CentroidLon": float("nan")}, "CentroidLon: nan is not a finite number"),
    "CentroidLon range": ({"CentroidLon": -180.5}, "CentroidLon: -180.5 is outside [-180, 180]"),
    "RegionName empty": ({"RegionName": ""}, "RegionName: '' is empty"),
    "CreatorLab missing": ({"CreatorLab": None}, "CreatorLab: None is not a string"),
    "BaseMapDate format": ({"BaseMapDate": "2020/07/15"}, "BaseMapDate: '2020/07/15' is not one date"),
    "BaseMapDate bad day": ({"BaseMapDate": "2020-02-30"}, "BaseMapDate: '2020-02-30' is not one date"),
    "BaseMapDate reversed": ({"BaseMapDate": "2020-08-01,2020-07-01"}, "ends before it starts"),
    "BaseMapResolution int": ({"BaseMapResolution": 10}, "BaseMapResolution: 10 is not a float"),
    "BaseMapResolution zero": ({"BaseMapResolution": 0.0}, "BaseMapResolution: 0.0 is not positive"),
    "TrainClass value": ({"TrainClass": "positive"}, "TrainClass: 'positive' is not one of Positive, Negative"),
    "LabelType value": ({"LabelType": "Point"}, "LabelType: 'Point' is not one of Polygon, BoundingBox"),
    "MergedRTS space": ({"MergedRTS": f"{UID_A}, {UID_B}"}, "MergedRTS: "),
    "MergedRTS trailing comma": ({"MergedRTS": f"{UID_A},"}, "MergedRTS: "),
    "MergedRTS repeat": ({"MergedRTS": f"{UID_A},{UID_A}"}, "MergedRTS: "),
    "SplitRTS not a uid": ({"SplitRTS": "s0001"}, "SplitRTS: 's0001' holds 's0001'"),
    "NewRTS uuid4": ({"NewRTS": "9f1c2a4e-1d2b-4c3d-8e4f-5a6b7c8d9e0f"}, "is not a version-5 (uuid5) UUID"),
    "UnknownRelationship nan": ({"UnknownRelationship": float("nan")}, "UnknownRelationship: nan is not a string"),
    "RepeatRTS junk": ({"RepeatRTS": "x"}, "RepeatRTS: 'x' holds 'x'"),
    "ContributionDate": ({"ContributionDate": "today"}, "ContributionDate: 'today' is not a date"),
    "UID edited": ({"UID": UID_A}, "is not uuid5 of the required fields"),
    "UID length": ({"UID": UID_A[:-1]}, "is not a 36-character"),
    "UID upper case": ({"UID": UID_A.upper()}, "is not a 36-character"),
    "Area negative": ({"Area": -1.0}, "Area: -1.0 is negative"),
    "Area text": ({"Area": "1200"}, "Area: '1200' is not a finite number"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_each_broken_rule_is_caught(case: str) -> None:
    changes, expected = BROKEN[case]
    problems = arts_problems([good_row(), good_row(**changes)])
    assert problems, case
    assert all(p.startswith("row 1: ") for p in problems), problems
    assert any(expected in p for p in problems), problems


def test_uid_follows_the_required_fields() -> None:
    row = good_row()
    moved = {**row, "CentroidLat": 69.75124}  # any required field changed: the stored UID no longer fits
    assert any("is not uuid5 of the required fields" in p for p in arts_problems([moved]))


def test_repeated_uids_and_self_references_are_caught() -> None:
    row = good_row()
    assert arts_problems([row, dict(row)]) == [f"row 1: UID: {row['UID']!r} repeats row 0"]
    own = good_row(NewRTS="")
    own["NewRTS"] = own["UID"]
    assert arts_problems([own]) == ["row 0: NewRTS lists the row's own UID"]


def test_missing_fields() -> None:
    row = good_row()
    del row["TrainClass"], row["Notes"]
    assert arts_problems([row]) == ["row 0: TrainClass is missing"]  # Notes is optional
    frame = gpd.GeoDataFrame([good_row()], geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").drop(
        columns=["UID", "BaseMapID"]
    )
    assert arts_problems(frame) == ["column UID is missing (a generated field)"]
