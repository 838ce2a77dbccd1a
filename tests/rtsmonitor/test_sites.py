"""Tests of rtsmonitor.sites: the site config schema, its error reports and the six paper sites."""

from __future__ import annotations

import copy
import datetime as dt
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pyproj import Geod
from shapely.geometry import Point

from rtsmonitor.errors import ConfigError
from rtsmonitor.grid import utm_epsg
from rtsmonitor.sites import (
    LABELS_DIR_PREFIX,
    MAX_SITE_AREA_KM2,
    PAPER_SITE_IDS,
    CentreGeometry,
    LabelSource,
    SeasonWindow,
    ServiceLimits,
    SiteConfig,
    load_site_config,
    paper_site,
    paper_sites,
    parse_site_config,
    validate_paths,
)

DATA = Path(__file__).parents[1] / "data" / "sites"
REAL_LABELS = Path(__file__).parents[2].parent / "shared" / "data" / "labels"  # ../shared/data/labels
TODAY = dt.date(2025, 9, 1)  # "now" for the year checks, so that messages are reproducible

# Rustemeyer et al. 2022, Table 1: id -> (name, lon, lat, label file region, label site value)
PAPER_TABLE = {
    "herschel": ("Herschel Island", -139.00, 69.60, "Herschel", "Herschel_01"),
    "horton01": ("Horton 01", -126.75, 69.75, "Horton", "Horton_01"),
    "horton02": ("Horton 02", -126.60, 69.64, "Horton", "Horton_02"),
    "kolguev01": ("Kolguev 01", 48.35, 69.22, "Kolguev", "Kolguev_01"),
    "kolguev02": ("Kolguev 02", 48.51, 69.35, "Kolguev", "Kolguev_02"),
    "lena": ("Lena", 124.40, 69.12, "Lena", "Lena_01"),
}

SQUARE = {  # about 5 km x 5 km near Herschel Island
    "type": "Polygon",
    "coordinates": [[[-139.10, 69.55], [-138.97, 69.55], [-138.97, 69.595], [-139.10, 69.595], [-139.10, 69.55]]],
}
BOWTIE = {
    "type": "Polygon",
    "coordinates": [[[-139.10, 69.55], [-138.97, 69.595], [-138.97, 69.55], [-139.10, 69.595], [-139.10, 69.55]]],
}


def base() -> dict[str, Any]:
    """A valid centre-form config as a plain mapping."""
    return {"id": "horton01", "name": "Horton 01", "centre": {"lon": -126.75, "lat": 69.75, "size_km": 10.0}}


def problems_of(data: bytes | str, source: str = "site.yaml", **kwargs: Any) -> list[tuple[str, str]]:
    """The problems ConfigError reports for ``data`` (fails if it parses)."""
    kwargs.setdefault("today", TODAY)
    with pytest.raises(ConfigError) as info:
        parse_site_config(data, source, **kwargs)
    assert info.value.source == source
    return info.value.problems


def mapping_problems(mapping: dict[str, Any]) -> list[tuple[str, str]]:
    return problems_of(yaml.safe_dump(mapping))


# --- the six paper sites -------------------------------------------------------------------------------


def test_paper_sites_are_the_six_of_table_1() -> None:
    sites = paper_sites()
    assert [s.id for s in sites] == list(PAPER_SITE_IDS) == list(PAPER_TABLE)
    for site in sites:
        name, lon, lat, _, _ = PAPER_TABLE[site.id]
        assert site.name == name
        assert site.centre == CentreGeometry(lon=lon, lat=lat, size_km=10.0)
        assert site.geometry is None
        assert (site.first_year, site.last_year) == (2016, None)
        assert site.season == SeasonWindow(start="07-01", end="08-31")
        assert (site.max_cloud_pct, site.min_valid_fraction, site.active) == (10.0, 0.5, True)


@pytest.mark.parametrize("site_id", PAPER_SITE_IDS)
def test_paper_site_is_100_km2_around_its_centre(site_id: str) -> None:
    site = paper_site(site_id)
    _, lon, lat, _, _ = PAPER_TABLE[site_id]
    assert site.area_km2() == pytest.approx(100.0, rel=0.01)
    footprint = site.geometry_wgs84()
    geodesic_km2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(footprint)[0]) / 1e6
    assert geodesic_km2 == pytest.approx(100.0, rel=0.01)  # true area on the ellipsoid, not only in UTM
    assert footprint.contains(Point(lon, lat))
    assert footprint.centroid.distance(Point(lon, lat)) < 0.001  # degrees
    grid = site.grid()
    assert grid.epsg == utm_epsg(lon, lat)
    assert (grid.shape, grid.res_m) == ((1000, 1000), 10.0)
    assert site.grid(res_m=20.0).shape == (500, 500)


def test_paper_site_files_are_named_by_id() -> None:
    folder = resources.files("rtsmonitor").joinpath("sites_data")
    names = sorted(e.name for e in folder.iterdir() if e.name.endswith(".yaml"))
    assert names == [f"{site_id}.yaml" for site_id in PAPER_SITE_IDS]
    for name in names:
        assert "doi:10.1109/IGARSS46834.2022.9884869" in folder.joinpath(name).read_text("utf-8")


def test_paper_site_labels_point_at_the_nitze2021_files(tmp_path: Path) -> None:
    for site in paper_sites():
        _, _, _, region, value = PAPER_TABLE[site.id]
        (label,) = site.labels
        assert label == LabelSource(
            path=f"{LABELS_DIR_PREFIX}nitze2021_rts_{region}.geojson",
            date=None,
            date_field="image_date",
            site_field="site",
            site_value=value,
        )
        assert label.resolved_path(tmp_path) == tmp_path / f"nitze2021_rts_{region}.geojson"


def test_paper_site_labels_exist_and_select_polygons() -> None:
    for site in paper_sites():
        (label,) = site.labels
        path = label.resolved_path(REAL_LABELS)
        features = json.loads(path.read_text("utf-8"))["features"]
        assert label.site_field is not None
        selected = [f for f in features if f["properties"][label.site_field] == label.site_value]
        assert selected, f"{site.id}: no polygon with {label.site_field} == {label.site_value}"
        assert all(dt.date.fromisoformat(f["properties"][label.date_field]) for f in selected)


def test_paper_sites_validate_when_loaded_from_their_files() -> None:
    folder = resources.files("rtsmonitor").joinpath("sites_data")
    paths = [Path(str(folder.joinpath(f"{site_id}.yaml"))) for site_id in PAPER_SITE_IDS]
    assert validate_paths(paths) == []
    assert load_site_config(paths[0]).labels[0].path.startswith(LABELS_DIR_PREFIX)  # not made relative


def test_paper_site_unknown_id() -> None:
    with pytest.raises(KeyError, match="'nowhere'"):
        paper_site("nowhere")


# --- one broken config of each kind ---------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    """A mutation of base(): set a dotted path (or delete it if value is ...)."""

    def mutate(mapping: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = mapping
        for key in parents:
            target = target.setdefault(key, {})
        if value is ...:
            del target[last]
        else:
            target[last] = copy.deepcopy(value)

    return mutate


BROKEN: list[tuple[str, list[Any], str | list[str], list[str]]] = [
    # (case id, mutations of base(), the field(s) reported, fragments the first message must hold)
    ("id-uppercase", [_set("id", "Horton01")], "id", ["'Horton01'", "lowercase"]),
    ("id-space", [_set("id", "horton 01")], "id", ["'horton 01'", "' '"]),
    ("id-slash", [_set("id", "sites/horton01")], "id", ["'sites/horton01'", "'/'"]),
    ("id-leading-hyphen", [_set("id", "-horton")], "id", ["'-horton'"]),
    ("id-too-long", [_set("id", "a" * 64)], "id", ["'" + "a" * 64 + "'", "1-63"]),
    ("id-not-a-string", [_set("id", 7)], "id", ["7 is not allowed", "string"]),
    ("id-missing", [_set("id", ...)], "id", ["required field is missing"]),
    ("name-empty", [_set("name", "")], "name", ["''"]),
    ("name-blank", [_set("name", "   ")], "name", ["'   '", "blank"]),
    ("both-geometry-and-centre", [_set("geometry", SQUARE)], "geometry", ["both 'geometry' and 'centre'"]),
    ("neither-geometry-nor-centre", [_set("centre", ...)], "geometry", ["neither 'geometry' nor 'centre'"]),
    (
        "self-intersecting-polygon",
        [_set("centre", ...), _set("geometry", BOWTIE)],
        "geometry",
        ["invalid Polygon", "Self-intersection"],
    ),
    (
        "polygon-lon-out-of-range",
        [
            _set("centre", ...),
            _set("geometry", {"type": "Polygon", "coordinates": [[[200, 0], [1, 1], [1, 0], [200, 0]]]}),
        ],
        "geometry",
        ["(200, 0)", "lon -180..180"],
    ),
    (
        "polygon-not-closed",
        [_set("centre", ...), _set("geometry", {"type": "Polygon", "coordinates": [SQUARE["coordinates"][0][:-1]]})],
        "geometry",
        ["not closed"],
    ),
    (
        "geometry-is-a-point",
        [_set("centre", ...), _set("geometry", {"type": "Point", "coordinates": [0, 0]})],
        "geometry",
        ["'Point'", "'Polygon', 'MultiPolygon'"],
    ),
    (
        "geometry-is-a-feature",
        [_set("centre", ...), _set("geometry", {"type": "Feature", "geometry": SQUARE, "properties": {}})],
        "geometry",
        ["Feature", "'geometry' member"],
    ),
    ("centre-lon-out-of-range", [_set("centre.lon", 200.0)], "centre.lon", ["200.0", "180"]),
    ("centre-lat-out-of-range", [_set("centre.lat", -91)], "centre.lat", ["-91", "-90"]),
    ("size-km-zero", [_set("centre.size_km", 0)], "centre.size_km", ["0 is not allowed", "greater than 0"]),
    ("size-km-negative", [_set("centre.size_km", -5)], "centre.size_km", ["-5 is not allowed"]),
    ("size-km-missing", [_set("centre.size_km", ...)], "centre.size_km", ["required field is missing"]),
    (
        "area-over-limit-centre",
        [_set("centre.size_km", 60)],
        "centre.size_km",
        ["3600.0 km^2", f"limit of {MAX_SITE_AREA_KM2:g} km^2"],
    ),
    (
        "area-over-limit-polygon",
        [
            _set("centre", ...),
            _set("geometry", {"type": "Polygon", "coordinates": [[[0, 60], [2, 60], [2, 61], [0, 61], [0, 60]]]}),
        ],
        "geometry",
        ["km^2 is over the service limit of 2500 km^2"],
    ),
    (
        "first-year-before-sentinel2",
        [_set("first_year", 2012)],
        "first_year",
        ["2012 is before the Sentinel-2 era (allowed 2015..2025)"],
    ),
    ("last-year-in-the-future", [_set("last_year", 2026)], "last_year", ["2026 is in the future (allowed 2015..2025)"]),
    ("first-year-in-the-future", [_set("first_year", 2030)], "first_year", ["2030 is in the future"]),
    (
        "first-after-last",
        [_set("first_year", 2020), _set("last_year", 2018)],
        "first_year",
        ["2020 is after last_year 2018"],
    ),
    ("season-month-13", [_set("season", {"start": "13-01"})], "season.start", ["'13-01'", "01..12"]),
    ("season-feb-30", [_set("season", {"end": "02-30"})], "season.end", ["'02-30'", "February", "01..28"]),
    ("season-feb-29", [_set("season", {"start": "02-29"})], "season.start", ["'02-29'", "every year"]),
    ("season-not-mm-dd", [_set("season", {"start": "7-1"})], "season.start", ["'7-1'", "'MM-DD'"]),
    (
        "season-start-after-end",
        [_set("season", {"start": "08-31", "end": "07-01"})],
        "season",
        ["'08-31' is not before end '07-01'"],
    ),
    ("max-cloud-150", [_set("max_cloud_pct", 150)], "max_cloud_pct", ["150 is not allowed", "100"]),
    ("min-valid-negative", [_set("min_valid_fraction", -0.1)], "min_valid_fraction", ["-0.1 is not allowed", "0"]),
    ("min-valid-over-one", [_set("min_valid_fraction", 1.5)], "min_valid_fraction", ["1.5 is not allowed"]),
    ("schema-version-2", [_set("schema_version", 2)], "schema_version", ["2 is not allowed", "1"]),
    ("unknown-field", [_set("colour", "red")], "colour", ["unknown field 'colour'", "max_cloud_pct"]),
    (
        "unknown-field-close-match",
        [_set("centre", ...), _set("center", base()["centre"])],
        ["center", "geometry"],  # and so no geometry is given
        ["unknown field 'center'", "did you mean 'centre'?"],
    ),
    (
        "unknown-nested-field",
        [_set("season", {"length_days": 60})],
        "season.length_days",
        ["unknown field 'length_days' (allowed: start, end)"],
    ),
    ("label-bad-suffix", [_set("labels", [{"path": "labels.txt"}])], "labels.0.path", ["'labels.txt'", ".gpkg"]),
    ("label-path-missing", [_set("labels", [{"date": "2019-07-14"}])], "labels.0.path", ["required field is missing"]),
    ("label-bad-date", [_set("labels", [{"path": "a.gpkg", "date": "2019-02-30"}])], "labels.0.date", ["'2019-02-30'"]),
    (
        "label-site-field-alone",
        [_set("labels", [{"path": "a.gpkg", "site_field": "site"}])],
        "labels.0",
        ["site_field is given but site_value is not"],
    ),
    ("active-not-bool", [_set("active", "maybe")], "active", ["'maybe' is not allowed"]),
]


@pytest.mark.parametrize(("mutations", "field", "fragments"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_config_names_its_field_and_value(
    mutations: list[Any], field: str | list[str], fragments: list[str]
) -> None:
    mapping = base()
    for mutate in mutations:
        mutate(mapping)
    problems = mapping_problems(mapping)
    assert [f for f, _ in problems] == ([field] if isinstance(field, str) else field), problems
    message = problems[0][1]
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_base_config_is_valid() -> None:
    config = parse_site_config(yaml.safe_dump(base()), "site.yaml", today=TODAY)
    assert config.id == "horton01"
    assert config.area_km2() == pytest.approx(100.0)


FILE_PROBLEMS: list[tuple[str, bytes, list[str]]] = [
    ("yaml-syntax", b"id: a\nname: [b\ncentre: {}\n", ["YAML syntax error at line", "flow sequence"]),
    ("yaml-indent", b"id: a\n  name: b\n", ["YAML syntax error at line 2, column 7"]),
    ("top-level-list", b"- id: a\n- id: b\n", ["the top level is a list", "mapping"]),
    ("top-level-scalar", b"horton01\n", ["the top level is a str ('horton01')"]),
    ("top-level-null", b"~\n", ["holds no data"]),
    ("empty", b"", ["the file is empty"]),
    ("whitespace-only", b"  \n\n", ["the file is empty"]),
    ("comment-only", b"# nothing here\n", ["holds no data"]),
    ("not-utf8", b"id: horton01\nname: K\xf6lguev\n", ["not UTF-8", "0xf6 at line 2 (offset 20)"]),
    ("duplicate-key", b"id: a\nname: b\nid: c\n", ["key 'id' is given twice (again at line 3)"]),
    ("python-tag", b"!!python/object:collections.OrderedDict {}\n", ["YAML tag refused", "python/object"]),
]


@pytest.mark.parametrize(("data", "fragments"), [c[1:] for c in FILE_PROBLEMS], ids=[c[0] for c in FILE_PROBLEMS])
def test_file_level_problem(data: bytes, fragments: list[str]) -> None:
    problems = problems_of(data)
    assert [f for f, _ in problems] == ["(file)"]
    for fragment in fragments:
        assert fragment in problems[0][1], (fragment, problems)


def test_json_syntax_error_has_line_and_column() -> None:
    assert problems_of(b'{"id": "a",\n "name": }\n', "site.json") == [
        ("(file)", "JSON syntax error at line 2, column 10: Expecting value")
    ]


def test_json_duplicate_key() -> None:
    problems = problems_of(json.dumps(base())[:-1] + ', "id": "b"}', "site.json")
    assert problems == [("(file)", "key 'id' is given twice in one object: remove one, the later would silently win")]


def test_yaml_python_tag_is_refused_not_executed(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    data = f"!!python/object/apply:os.mkdir [{str(target)!r}]\n"
    problems = problems_of(data)
    assert [f for f, _ in problems] == ["(file)"]
    assert "python/object/apply:os.mkdir" in problems[0][1]
    assert not target.exists()


def test_a_nested_python_tag_is_refused_too(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    mapping = yaml.safe_dump(base()) + f"name: !!python/object/apply:os.mkdir [{str(target)!r}]\n"
    assert [f for f, _ in problems_of(mapping)] == ["(file)"]
    assert not target.exists()


def test_yaml_aliases_are_refused_before_they_expand() -> None:
    """A 500-byte "billion laughs" config would expand to 10^10 items: it is refused at once."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    data = yaml.safe_dump(base()) + "\n".join(levels) + "\n"
    problems = problems_of(data)  # expanded, this would not finish
    assert len(problems) == 1 and problems[0][0] == "(file)"
    assert "alias *a0 at line" in problems[0][1]


def test_several_problems_in_one_file_are_all_reported() -> None:
    problems = problems_of((DATA / "broken_many.yaml").read_bytes(), "broken_many.yaml")
    assert [f for f, _ in problems] == [
        "id",
        "first_year",
        "season.start",
        "max_cloud_pct",
        "min_valid_fraction",
        "center",
        "geometry",
    ]
    messages = dict(problems)
    assert "'Horton 01'" in messages["id"]
    assert "2012" in messages["first_year"]
    assert "'13-01'" in messages["season.start"]
    assert "150" in messages["max_cloud_pct"]
    assert "-0.1" in messages["min_valid_fraction"]
    assert "did you mean 'centre'?" in messages["center"]


def test_cross_field_and_area_problems_are_reported_beside_field_errors() -> None:
    mapping = base() | {"id": "Bad Id", "first_year": 2020, "last_year": 2018}
    mapping["centre"]["size_km"] = 60
    problems = mapping_problems(mapping)
    assert [f for f, _ in problems] == ["id", "first_year", "centre.size_km"]
    assert "3600.0 km^2" in problems[2][1]


def test_config_error_message_names_source_field_and_value() -> None:
    with pytest.raises(ConfigError, match=r"^sites/x\.yaml: max_cloud_pct: 150 is not allowed"):
        parse_site_config(yaml.safe_dump(base() | {"max_cloud_pct": 150}), "sites/x.yaml")


# --- formats, limits, years -----------------------------------------------------------------------------


def test_json_and_yaml_give_the_same_model() -> None:
    mapping = base() | {
        "season": {"start": "07-15", "end": "08-20"},
        "labels": [{"path": "labels/a.gpkg", "date": "2019-07-14", "site_field": "site", "site_value": "A"}],
    }
    from_json = parse_site_config(json.dumps(mapping), "site.json")
    from_yaml = parse_site_config(yaml.safe_dump(mapping), "site.yaml")
    assert from_json == from_yaml
    assert from_json.labels[0].date == dt.date(2019, 7, 14)
    assert SiteConfig.model_validate_json(from_json.model_dump_json()) == from_json


def test_polygon_site_from_yaml_and_json_files(tmp_path: Path) -> None:
    config = load_site_config(DATA / "valid_polygon.yaml")
    as_json = tmp_path / "site.json"
    as_json.write_text(json.dumps(yaml.safe_load((DATA / "valid_polygon.yaml").read_text("utf-8")), default=str))
    assert load_site_config(as_json).model_copy(update={"labels": config.labels}) == config
    assert config.geometry == SQUARE
    assert config.geometry_wgs84().equals(config.geometry_wgs84())
    assert config.area_km2() == pytest.approx(25.0, rel=0.05)
    grid = config.grid()
    assert grid.epsg == 32607
    assert grid.footprint_wgs84().contains(config.geometry_wgs84())
    assert config.years() == [2018, 2019, 2020, 2021]
    assert config.season_bounds(2019) == (dt.date(2019, 7, 15), dt.date(2019, 8, 15))


@pytest.mark.parametrize(
    ("data", "source", "fmt"),
    [
        ('{"id": "a", "name": "b", "centre": {"lon": 0, "lat": 60, "size_km": 5}}', "blob-without-extension", None),
        ("id: a\nname: b\ncentre: {lon: 0, lat: 60, size_km: 5}\n", "blob-without-extension", None),
        ("id: a\nname: b\ncentre: {lon: 0, lat: 60, size_km: 5}\n", "site.json", "yaml"),
        ('{"id": "a", "name": "b", "centre": {"lon": 0, "lat": 60, "size_km": 5}}', "site.txt", "JSON"),
    ],
)
def test_format_from_fmt_extension_or_sniffing(data: str, source: str, fmt: str | None) -> None:
    assert parse_site_config(data, source, fmt=fmt).id == "a"


def test_yaml_extension_forces_yaml_and_json_extension_json() -> None:
    assert [f for f, _ in problems_of("id: a\n", "site.json")] == ["(file)"]  # YAML text is no JSON
    assert parse_site_config(json.dumps(base()), "site.yml").id == "horton01"  # JSON is also YAML


def test_unknown_fmt_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="'toml'"):
        parse_site_config(json.dumps(base()), "site.json", fmt="toml")


def test_utf8_bom_and_non_ascii_names_are_fine() -> None:
    data = "\ufeff" + yaml.safe_dump(base() | {"name": "Kolguev, Колгуев"}, allow_unicode=True)
    assert parse_site_config(data.encode("utf-8"), "site.yaml").name == "Kolguev, Колгуев"


def test_service_limits_can_be_changed() -> None:
    large = yaml.safe_dump(base() | {"centre": {"lon": 0, "lat": 60, "size_km": 60}})
    assert parse_site_config(large, "site.yaml", limits=ServiceLimits(max_area_km2=5000)).area_km2() == 3600.0
    problems = problems_of(yaml.safe_dump(base()), limits=ServiceLimits(max_area_km2=50))
    assert problems == [
        (
            "centre.size_km",
            "the site's area 100.0 km^2 is over the service limit of 50 km^2 (use a smaller size_km, "
            "or ask the operator to raise max_area_km2)",
        )
    ]


def test_years_resolve_the_current_year_at_use_time() -> None:
    config = parse_site_config(yaml.safe_dump(base() | {"first_year": 2019}), "site.yaml")
    assert config.last_year is None
    assert config.years(today=dt.date(2021, 1, 5)) == [2019, 2020, 2021]
    assert config.years()[-1] == dt.date.today().year
    assert config.season_bounds(2020) == (dt.date(2020, 7, 1), dt.date(2020, 8, 31))


def test_current_year_is_allowed_as_last_year() -> None:
    config = parse_site_config(yaml.safe_dump(base() | {"last_year": 2025}), "site.yaml", today=TODAY)
    assert config.years() == list(range(2016, 2026))


def test_every_field_has_a_description() -> None:
    models: list[type[BaseModel]] = [SiteConfig, CentreGeometry, SeasonWindow, LabelSource, ServiceLimits]
    for model in models:
        assert model.model_config.get("extra") == "forbid"
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


# --- files: load_site_config and validate_paths ---------------------------------------------------------


def test_load_resolves_relative_label_paths_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    mapping = base() | {
        "labels": [
            {"path": "labels/a.gpkg"},
            {"path": "labels:nitze2021_rts_Horton.geojson"},
            {"path": str(tmp_path / "abs.shp")},
        ]
    }
    (folder / "site.yaml").write_text(yaml.safe_dump(mapping), "utf-8")
    paths = [label.path for label in load_site_config(folder / "site.yaml").labels]
    assert paths == [
        str((folder / "labels" / "a.gpkg").resolve()),
        "labels:nitze2021_rts_Horton.geojson",
        str(tmp_path / "abs.shp"),
    ]


def test_load_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_site_config(tmp_path / "nope.yaml")
    assert info.value.problems[0][0] == "(file)"
    assert "cannot read the file" in info.value.problems[0][1]


def test_validate_paths_all_valid_gives_no_lines() -> None:
    assert validate_paths([DATA / "valid_polygon.yaml"]) == []


def test_validate_paths_lines_name_path_and_field(tmp_path: Path) -> None:
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes(b"id: a\nname: K\xf6lguev\n")
    missing = tmp_path / "missing.yaml"
    broken = DATA / "broken_many.yaml"
    lines = validate_paths([DATA / "valid_polygon.yaml", broken, missing, not_utf8, tmp_path])
    assert len(lines) == 7 + 3
    assert lines[0].startswith(f"{broken}: id: 'Horton 01' is not a site id")
    assert lines[1] == f"{broken}: first_year: 2012 is before the Sentinel-2 era (allowed 2015..{dt.date.today().year})"
    assert lines[7].startswith(f"{missing}: (file): cannot read the file: ")
    assert lines[8].startswith(f"{not_utf8}: (file): not UTF-8 text: byte 0xf6")
    assert lines[9].startswith(f"{tmp_path}: (file): cannot read the file: ")


def test_validate_paths_reports_a_site_id_used_twice(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.json"):
        (tmp_path / name).write_text(json.dumps(base()), "utf-8")
    assert validate_paths([tmp_path / "a.yaml", tmp_path / "b.json"]) == [
        f"{tmp_path / 'b.json'}: id: 'horton01' is already the id of {tmp_path / 'a.yaml'} (site ids must be unique)"
    ]


def test_multipolygon_site_with_a_hole() -> None:
    shell = SQUARE["coordinates"][0]
    hole = [[-139.05, 69.56], [-139.0, 69.56], [-139.0, 69.58], [-139.05, 69.56]]
    other = [[-138.9, 69.55], [-138.85, 69.55], [-138.85, 69.57], [-138.9, 69.57], [-138.9, 69.55]]
    mapping = {k: v for k, v in base().items() if k != "centre"}
    mapping["geometry"] = {"type": "MultiPolygon", "coordinates": [[shell, hole], [other]]}
    config = parse_site_config(json.dumps(mapping), "site.json")
    geom = config.geometry_wgs84()
    assert geom.geom_type == "MultiPolygon"
    assert len(geom.geoms[0].interiors) == 1
    assert 25.0 < config.area_km2() < 30.0
    assert config.grid().footprint_wgs84().contains(geom)
