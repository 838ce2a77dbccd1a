"""The results as a STAC catalog: layout, fields, offline schema validation, idempotence, broken years, serving.

Most tests write ok records and their product files themselves (small COGs on the site's grid, made
here with a seeded generator), so they run without the model; one runs the real pipeline on a 3 km
site to check the catalog of real products.
"""

from __future__ import annotations

import copy
import json
import socket
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import requests
from hooked_blobs import HookedBlobs
from pystac_client import Client
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from rtsmonitor.catalog import (
    ASSETS,
    CATALOG_BLOB,
    LICENSE_URL,
    PAPER_DOI_URL,
    STAC_LICENSE,
    collection_blob,
    item_blob,
    validate_catalog,
    validate_stac,
    write_catalog,
    write_site_catalog,
)
from rtsmonitor.inference import Model
from rtsmonitor.jobs import SiteYearJob
from rtsmonitor.modelstore import DEMO_BUNDLE, META_NAME, MODELS_CONTAINER, publish_model
from rtsmonitor.offline.corpus import build_corpus
from rtsmonitor.offline.stacserver import STATIC_CATALOG, LocalStacServer
from rtsmonitor.records import RESULTS_CONTAINER, SiteYearRecord, results_prefix, write_record
from rtsmonitor.registry import register_site
from rtsmonitor.sites import SiteConfig
from rtsmonitor.siteyear import PRODUCT_TYPES, Services, process_site_year
from rtsmonitor.stac import open_catalog
from rtsmonitor.storage import LocalStorage, Storage
from rtsmonitor.terrain import StacDem

SITE = "tiny01"
LON, LAT = -126.75, 69.75
CONFIG = {
    "id": SITE,
    "name": "Tiny test site",
    "centre": {"lon": LON, "lat": LAT, "size_km": 3.0},
    "first_year": 2019,
    "last_year": 2021,
}
MODEL = ("rts-unet-demo", "demo-1")
SAS = "?st=2024-01-01&se=2024-01-02&sp=rl&sv=2024-05-04&sig=SECRET"
GDAL_HTTP = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif"}


def scene_ids(year: int) -> list[str]:
    return [f"S2B_MSIL2A_{year}0715T203609_R099_T09WWR_20{year % 100}0716T001", f"S2B_MSIL2A_{year}0715_T09WWS"]


def cog(array: np.ndarray, nodata: float | None = None) -> bytes:
    grid = SiteConfig.model_validate(CONFIG).grid()
    with MemoryFile() as memory:
        with memory.open(
            driver="COG",
            width=array.shape[1],
            height=array.shape[0],
            count=1,
            dtype=array.dtype,
            crs=f"EPSG:{grid.epsg}",
            transform=grid.transform,
            nodata=nodata,
            compress="DEFLATE",
        ) as dataset:
            dataset.write(array, 1)
        return bytes(memory.read())


def png(array: np.ndarray) -> bytes:
    with warnings.catch_warnings(), MemoryFile() as memory:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a plain picture, as write_quicklook makes
        with memory.open(driver="PNG", width=array.shape[1], height=array.shape[0], count=1, dtype="uint8") as dataset:
            dataset.write(array, 1)
        return bytes(memory.read())


def write_products(storage: Storage, year: int, run_id: str, seed: int = 0) -> str:
    """A run's product blobs, made from a seeded generator; returns its prefix."""
    grid = SiteConfig.model_validate(CONFIG).grid()
    rng = np.random.default_rng(seed + year)
    probability = rng.random(grid.shape, dtype=np.float32)
    mask = (probability > 0.98).astype("uint8")
    mask[:10, :] = 255
    prefix = results_prefix(SITE, year, run_id)
    slump = {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[LON, LAT], [LON + 0.001, LAT], [LON, LAT + 0.001], [LON, LAT]]],
        },
        "properties": {"id": 1, "area_m2": 1200.0, "site_id": SITE, "year": year},
    }
    scene = {
        "reason": "clear scene",
        "items": [
            {
                "type": "Feature",
                "id": item,
                "links": [
                    {"rel": "self", "href": f"https://example.test/api/collections/sentinel-2-l2a/items/{item}{SAS}"},
                    {"rel": "collection", "href": "https://example.test/api/collections/sentinel-2-l2a"},
                ],
            }
            for item in scene_ids(year)
        ],
    }
    blobs = {
        "probability.tif": cog(probability),
        "mask.tif": cog(mask, nodata=255),
        "rts.geojson": json.dumps({"type": "FeatureCollection", "features": [slump]}).encode(),
        "quicklook.png": png((probability * 255).astype("uint8")),
        "scene.json": json.dumps(scene).encode(),
    }
    for product, data in blobs.items():
        storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + product, data, content_type=PRODUCT_TYPES[product])
    return prefix


def ok_record(year: int, run_id: str = "20240901T000000000000Z-aaaaaaaa", **changes: Any) -> SiteYearRecord:
    record = SiteYearRecord(
        site_id=SITE,
        year=year,
        status="ok",
        reason="clear scene",
        processed=datetime(2024, 9, 1, 12, 0, tzinfo=UTC),
        code_version="0.1.0",
        scene_id="+".join(sorted(scene_ids(year))),
        scene_datetime=f"{year}-07-15T20:36:09.024000+00:00",
        processing_baseline="04.00",
        cloud_pct=1.5,
        valid_fraction=0.9667,
        site_area_m2=9e6,
        observed_area_m2=8.7e6,
        rts_count=3 + year % 10,
        rts_area_m2=12345.6 + year,
        rts_area_err_m2=1851.8,
        carbon_t_c_per_yr=-12.34,
        carbon_t_c_err_per_yr=1.85,
        co2_t_per_yr=-45.25,
        co2_t_err_per_yr=6.79,
        carbon_factors='{"nee_rts_g_c_m2_yr": -95.0}',
        model_name=MODEL[0],
        model_version=MODEL[1],
        model_sha256="ab" * 32,
        threshold=0.5,
        run_id=run_id,
        results_prefix=results_prefix(SITE, year, run_id),
        seconds=1.0,
        attempts=1,
    )
    return replace(record, **changes)


def no_scene(year: int) -> SiteYearRecord:
    return SiteYearRecord(
        site_id=SITE,
        year=year,
        status="no-scene",
        reason="no scene under 10 % cloud",
        processed=datetime(2024, 9, 1, tzinfo=UTC),
        code_version="0.1.0",
    )


def make_results(storage: Storage) -> None:
    """A registered site with a published model, ok records for 2020 and 2021 and no scene in 2019."""
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())
    storage.blobs.write_bytes(
        MODELS_CONTAINER, f"{MODEL[0]}/{MODEL[1]}/{META_NAME}", (DEMO_BUNDLE / META_NAME).read_bytes()
    )
    write_record(storage, no_scene(2019))
    for year in (2020, 2021):
        record = ok_record(year)
        assert record.run_id is not None
        write_products(storage, year, record.run_id)
        write_record(storage, record)


def read_json(storage: Storage, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(storage.blobs.read_bytes(RESULTS_CONTAINER, name))
    return document


def links(document: dict[str, Any], rel: str) -> list[dict[str, Any]]:
    return [link for link in document["links"] if link["rel"] == rel]


@pytest.fixture(params=["local", pytest.param("azure", marks=pytest.mark.azurite)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    store: Storage = (
        LocalStorage(tmp_path / "store") if request.param == "local" else request.getfixturevalue("azure_storage")
    )
    make_results(store)
    return store


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path / "store")
    make_results(store)
    return store


LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any connection or name lookup beyond this machine fails (Azurite on loopback still works).

    Returns the list of refused addresses (a schema fetch would show up there even if caught).
    """
    refused: list[str] = []
    connect, create_connection, getaddrinfo = socket.socket.connect, socket.create_connection, socket.getaddrinfo

    def check(host: object) -> None:
        if str(host) not in LOOPBACK:
            refused.append(str(host))
            raise AssertionError(f"network access attempted: {host}")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            check(address[0])
        connect(self, address)

    def guarded_create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        check(address[0])
        return create_connection(address, *args, **kwargs)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        check(host)
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return refused


def test_the_network_guard_works(no_network: list[str]) -> None:
    with pytest.raises(AssertionError, match="network access attempted"):
        urllib.request.urlopen("https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json", timeout=5)
    assert no_network == ["schemas.stacspec.org"]


# --- the catalog's documents ---------------------------------------------------------------------------


def test_catalog_validates_offline_and_carries_the_records(storage: Storage, no_network: list[str]) -> None:
    summary = write_site_catalog(storage, SITE)
    assert summary.items == (f"{SITE}-2020", f"{SITE}-2021") and summary.broken_years == {}
    assert summary.collection == collection_blob(SITE) and summary.deleted == ()
    assert storage.blobs.list(RESULTS_CONTAINER, "_stac/") == sorted(
        [CATALOG_BLOB, collection_blob(SITE), item_blob(SITE, 2020), item_blob(SITE, 2021)]
    )
    assert validate_catalog(storage) == {}
    assert no_network == []

    root = read_json(storage, CATALOG_BLOB)
    assert root["type"] == "Catalog" and root["stac_version"] == "1.1.0"
    assert [(link["href"], link["title"]) for link in links(root, "child")] == [
        (f"./{SITE}/collection.json", "Tiny test site")
    ]

    collection = read_json(storage, collection_blob(SITE))
    assert collection["id"] == SITE and collection["title"] == "Tiny test site"
    assert collection["license"] == STAC_LICENSE and links(collection, "license")[0]["href"] == LICENSE_URL
    roles = {p["name"]: set(p["roles"]) for p in collection["providers"]}
    assert {"processor", "host"} <= roles["RTS monitor (rtsmonitor)"]
    assert roles["ESA Copernicus Sentinel-2"] == {"producer"}
    assert roles["Microsoft Planetary Computer"] == {"host"}
    grid_bbox = SiteConfig.model_validate(CONFIG).grid().bbox_wgs84()
    assert collection["extent"]["spatial"]["bbox"][0] == pytest.approx(list(grid_bbox), abs=1e-6)
    assert collection["extent"]["temporal"]["interval"] == [
        ["2020-07-15T20:36:09.024000Z", "2021-07-15T20:36:09.024000Z"]
    ]
    assert links(collection, "cite-as")[0]["href"] == PAPER_DOI_URL
    assert "Rustemeyer" in links(collection, "cite-as")[0]["title"]
    model_link = links(collection, "via")[0]
    assert model_link["href"] == f"../../../models/{MODEL[0]}/{MODEL[1]}/model.json" and MODEL[1] in model_link["title"]
    assert [link["href"] for link in links(collection, "item")] == [
        "./2020/tiny01-2020.json",
        "./2021/tiny01-2021.json",
    ]
    assert links(collection, "root")[0]["href"] == links(collection, "parent")[0]["href"] == "../catalog.json"

    item = read_json(storage, item_blob(SITE, 2021))
    record = ok_record(2021)
    assert item["type"] == "Feature" and item["id"] == "tiny01-2021" and item["collection"] == SITE
    assert item["stac_extensions"] == []
    assert item["geometry"]["type"] == "Polygon" and item["bbox"] == pytest.approx(list(grid_bbox), abs=1e-6)
    properties = item["properties"]
    assert properties["datetime"] == "2021-07-15T20:36:09.024000Z"
    assert properties["rts:count"] == record.rts_count and properties["rts:area_m2"] == record.rts_area_m2
    assert properties["rts:area_err_m2"] == record.rts_area_err_m2
    assert (properties["rts:carbon_t_c_per_yr"], properties["rts:carbon_t_c_err_per_yr"]) == (-12.34, 1.85)
    assert (properties["rts:co2_t_per_yr"], properties["rts:co2_t_err_per_yr"]) == (-45.25, 6.79)
    assert properties["rts:cloud_pct"] == 1.5 and properties["rts:valid_fraction"] == 0.9667
    assert (properties["rts:model_name"], properties["rts:model_version"]) == MODEL
    assert properties["rts:model_sha256"] == "ab" * 32 and properties["rts:run_id"] == record.run_id
    assert properties["rts:code_version"] == "0.1.0" and properties["rts:carbon_factors"] == {
        "nee_rts_g_c_m2_yr": -95.0
    }
    assert "rts:broken" not in properties and "rts:new" not in properties  # tracking has not run
    assert set(item["assets"]) == {"probability", "mask", "slumps", "quicklook", "scene"}
    for product, spec in ASSETS.items():
        asset = item["assets"][spec.key]
        assert asset["href"] == f"../../../{SITE}/2021/{record.run_id}/{product}"
        assert asset["type"] == PRODUCT_TYPES[product] and asset["roles"] == list(spec.roles)
    assert item["assets"]["probability"]["roles"] == ["data"]
    assert item["assets"]["probability"]["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert item["assets"]["slumps"]["type"] == "application/geo+json"
    assert item["assets"]["quicklook"]["roles"] == ["overview", "visual"]
    sources = links(item, "derived_from")
    assert sorted(link["href"] for link in sources) == sorted(
        f"https://example.test/api/collections/sentinel-2-l2a/items/{i}" for i in scene_ids(2021)
    )  # the query string (a SAS token) is gone
    assert links(item, "collection")[0]["href"] == links(item, "parent")[0]["href"] == "../collection.json"
    assert links(item, "root")[0]["href"] == "../../catalog.json"
    assert links(item, "via")[0]["href"] == f"../../../../models/{MODEL[0]}/{MODEL[1]}/model.json"
    assert not storage.blobs.exists(RESULTS_CONTAINER, item_blob(SITE, 2019))  # no-scene year: no item


def test_tracking_counts_become_properties(local: LocalStorage) -> None:
    write_record(local, replace(ok_record(2021), rts_new=2, rts_vanished=0, rts_growing=1))
    write_site_catalog(local, SITE)
    properties = read_json(local, item_blob(SITE, 2021))["properties"]
    assert (properties["rts:new"], properties["rts:vanished"], properties["rts:growing"]) == (2, 0, 1)


def test_media_types_match_the_products() -> None:
    assert {product: spec.media_type for product, spec in ASSETS.items()} == PRODUCT_TYPES
    assert STATIC_CATALOG == CATALOG_BLOB


def test_validator_rejects_broken_documents_without_the_network(local: LocalStorage, no_network: list[str]) -> None:
    write_site_catalog(local, SITE)
    item = read_json(local, item_blob(SITE, 2021))
    assert validate_stac(item) == []
    no_datetime = copy.deepcopy(item)
    del no_datetime["properties"]["datetime"]
    assert validate_stac(no_datetime)
    bad_geometry = copy.deepcopy(item)
    bad_geometry["geometry"]["coordinates"] = [[1.0, 2.0]]
    assert validate_stac(bad_geometry)
    bad_asset = copy.deepcopy(item)
    bad_asset["assets"]["probability"]["href"] = 5
    assert any("assets/probability/href" in problem for problem in validate_stac(bad_asset))
    collection = read_json(local, collection_blob(SITE))
    no_extent = copy.deepcopy(collection)
    del no_extent["extent"]
    assert any("extent" in problem for problem in validate_stac(no_extent))
    old = {**item, "stac_version": "0.9.0"}
    assert "schema not shipped" in validate_stac(old)[0]
    extended = {**item, "stac_extensions": ["https://stac-extensions.github.io/eo/v2.0.0/schema.json"]}
    assert any("schema not shipped" in problem for problem in validate_stac(extended))
    assert validate_stac({"type": "FeatureCollection"})[0].startswith("type:")

    local.blobs.write_bytes(RESULTS_CONTAINER, item_blob(SITE, 2020), json.dumps(no_datetime).encode())
    local.blobs.delete(RESULTS_CONTAINER, results_prefix(SITE, 2021, str(ok_record(2021).run_id)) + "mask.tif")
    problems = validate_catalog(local)
    assert set(problems) == {item_blob(SITE, 2020), item_blob(SITE, 2021)}
    assert any("asset mask" in problem for problem in problems[item_blob(SITE, 2021)])
    assert no_network == []


# --- re-running, stale and broken years -----------------------------------------------------------


def test_rerun_is_idempotent_and_removes_stale_items(storage: Storage) -> None:
    first = write_site_catalog(storage, SITE)
    assert len(first.written) == 3
    before = {
        name: storage.blobs.read_bytes(RESULTS_CONTAINER, name)
        for name in storage.blobs.list(RESULTS_CONTAINER, "_stac/")
    }
    again = write_site_catalog(storage, SITE)
    assert again.written == () and again.deleted == () and again.items == first.items
    assert {name: storage.blobs.read_bytes(RESULTS_CONTAINER, name) for name in before} == before

    write_record(storage, no_scene(2020))  # e.g. a reprocessing found no usable scene this time
    new_run = "20240902T000000000000Z-bbbbbbbb"
    write_products(storage, 2021, new_run, seed=5)
    write_record(storage, ok_record(2021, run_id=new_run, rts_count=9))
    third = write_site_catalog(storage, SITE)
    assert third.items == (f"{SITE}-2021",) and third.deleted == (item_blob(SITE, 2020),)
    assert sorted(third.written) == sorted([item_blob(SITE, 2021), collection_blob(SITE)])
    assert not storage.blobs.exists(RESULTS_CONTAINER, item_blob(SITE, 2020))
    collection = read_json(storage, collection_blob(SITE))
    assert [link["href"] for link in links(collection, "item")] == ["./2021/tiny01-2021.json"]
    item = read_json(storage, item_blob(SITE, 2021))
    assert item["properties"]["rts:count"] == 9 and new_run in item["assets"]["probability"]["href"]
    assert validate_catalog(storage) == {}

    for year in (2020, 2021):
        write_record(storage, no_scene(year))
    gone = write_site_catalog(storage, SITE)
    assert gone.collection is None and gone.items == ()
    assert storage.blobs.list(RESULTS_CONTAINER, "_stac/") == [CATALOG_BLOB]
    assert links(read_json(storage, CATALOG_BLOB), "child") == []
    assert validate_catalog(storage) == {}


def test_a_record_committed_while_writing_is_caught_up(local: LocalStorage) -> None:
    fired: list[object] = []

    def commit_2019(operation: str, args: tuple[object, ...]) -> None:
        # Another job commits the 2019 record just as this one writes the site's Collection.
        if operation == "blob write" and args[1] == collection_blob(SITE) and not fired:
            fired.append(args)
            write_products(local, 2019, str(ok_record(2019).run_id))
            write_record(local, ok_record(2019))

    hooked = Storage(HookedBlobs(local.blobs, commit_2019), local.tables, local.queues)
    summary = write_site_catalog(hooked, SITE)
    assert summary.items == (f"{SITE}-2019", f"{SITE}-2020", f"{SITE}-2021")
    collection = read_json(local, collection_blob(SITE))
    assert [link["href"] for link in links(collection, "item")] == [
        f"./{y}/tiny01-{y}.json" for y in (2019, 2020, 2021)
    ]
    assert item_blob(SITE, 2019) in summary.written and validate_catalog(local) == {}


def test_a_broken_year_is_marked_and_the_rest_is_written(storage: Storage) -> None:
    prefix = results_prefix(SITE, 2020, str(ok_record(2020).run_id))
    storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + "rts.geojson", b'{"type": "FeatureCollection", "feat')
    storage.blobs.delete(RESULTS_CONTAINER, prefix + "probability.tif")
    storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + "scene.json", b"\xff\xfe not json")
    summary = write_site_catalog(storage, SITE)
    assert summary.items == (f"{SITE}-2020", f"{SITE}-2021") and set(summary.broken_years) == {2020}
    reason = summary.broken_years[2020]
    assert "probability.tif is missing" in reason and "rts.geojson is not JSON" in reason and "scene.json" in reason
    broken = read_json(storage, item_blob(SITE, 2020))
    assert broken["properties"]["rts:broken"] == reason
    assert set(broken["assets"]) == {"mask", "quicklook"}
    assert broken["properties"]["rts:count"] == ok_record(2020).rts_count
    # without scene.json the source items are named from the record's scene id
    assert sorted(link["href"] for link in links(broken, "derived_from")) == sorted(
        f"https://planetarycomputer.microsoft.com/api/stac/v1/collections/sentinel-2-l2a/items/{i}"
        for i in scene_ids(2020)
    )
    fine = read_json(storage, item_blob(SITE, 2021))
    assert "rts:broken" not in fine["properties"] and len(fine["assets"]) == 5
    assert validate_catalog(storage) == {}

    storage.blobs.write_bytes(RESULTS_CONTAINER, prefix + "rts.geojson", b'{"type": "Feature"}')
    assert "rts.geojson is not a GeoJSON FeatureCollection" in write_site_catalog(storage, SITE).broken_years[2020]


def test_root_catalog_links_every_site(local: LocalStorage) -> None:
    other = {**CONFIG, "id": "tiny02", "name": "Second site"}
    register_site(local, "tiny02.json", json.dumps(other).encode())
    run_id = "20240901T000000000000Z-cccccccc"
    prefix = write_products(local, 2021, run_id)
    for name in local.blobs.list(RESULTS_CONTAINER, prefix):  # the same products under the other site
        target = name.replace(f"{SITE}/", "tiny02/", 1)
        local.blobs.write_bytes(RESULTS_CONTAINER, target, local.blobs.read_bytes(RESULTS_CONTAINER, name))
    write_record(
        local, replace(ok_record(2021, run_id=run_id), site_id="tiny02", results_prefix=f"tiny02/2021/{run_id}/")
    )
    summaries = write_catalog(local)
    assert [s.site_id for s in summaries] == [SITE, "tiny02"]
    children = links(read_json(local, CATALOG_BLOB), "child")
    assert [(c["href"], c["title"]) for c in children] == [
        ("./tiny01/collection.json", "Tiny test site"),
        ("./tiny02/collection.json", "Second site"),
    ]
    assert validate_catalog(local) == {}


# --- reading it back: pystac from the folder, pystac-client through the local server ---------------


def test_pystac_opens_the_catalog_from_the_folder(local: LocalStorage) -> None:
    write_site_catalog(local, SITE)
    catalog = pystac.Catalog.from_file(str(local.root / "blobs" / RESULTS_CONTAINER / CATALOG_BLOB))
    collections = list(catalog.get_collections())
    assert [c.id for c in collections] == [SITE] and collections[0].license == STAC_LICENSE
    items = sorted(catalog.get_items(recursive=True), key=lambda i: i.id)
    assert [i.id for i in items] == ["tiny01-2020", "tiny01-2021"]
    href = items[1].assets["probability"].get_absolute_href()
    assert href is not None and Path(href).is_file()
    with rasterio.open(href) as dataset:
        assert (
            dataset.read(1).dtype == np.float32
            and dataset.crs.to_epsg() == SiteConfig.model_validate(CONFIG).grid().epsg
        )
    assert items[1].get_single_link("derived_from") is not None


@pytest.fixture
def served(local: LocalStorage) -> Iterator[LocalStacServer]:
    write_site_catalog(local, SITE)
    with LocalStacServer(static_root=local.root / "blobs" / RESULTS_CONTAINER) as server:
        yield server


def test_pystac_client_searches_the_catalog_through_the_local_server(
    served: LocalStacServer, local: LocalStorage
) -> None:
    client = Client.open(served.url)
    assert [c.id for c in client.get_collections()] == [SITE]
    found = list(client.search(collections=[SITE], datetime="2021").items())
    assert [item.id for item in found] == ["tiny01-2021"]
    item = found[0]
    assert item.properties["rts:count"] == ok_record(2021).rts_count
    run_id = ok_record(2021).run_id
    assert item.assets["probability"].href == f"{served.url}/static/{SITE}/2021/{run_id}/probability.tif"
    assert item.assets["probability"].media_type == pystac.MediaType.COG
    assert item.get_single_link("via") is None  # the model lives outside the served folder
    assert len(item.get_links("derived_from")) == 2
    bbox = list(SiteConfig.model_validate(CONFIG).grid().bbox_wgs84())
    assert len(list(client.search(bbox=bbox, collections=[SITE]).items())) == 2
    assert list(client.search(bbox=[10, 10, 11, 11], collections=[SITE]).items()) == []
    with rasterio.Env(**GDAL_HTTP), rasterio.open(item.assets["probability"].href) as dataset:
        window = dataset.read(1, window=((0, 16), (0, 16)))
    expected = local.root / "blobs" / RESULTS_CONTAINER / f"{SITE}/2021/{run_id}/probability.tif"
    with rasterio.open(expected) as dataset:
        assert np.array_equal(window, dataset.read(1, window=((0, 16), (0, 16))))
    assert served.stats().requests_by_path.get(f"/static/{SITE}/2021/{run_id}/probability.tif", 0) >= 1

    write_record(local, no_scene(2020))  # the server notices the rewritten catalog
    write_site_catalog(local, SITE)
    assert [i.id for i in client.search(collections=[SITE]).items()] == ["tiny01-2021"]
    local.blobs.write_bytes(RESULTS_CONTAINER, item_blob(SITE, 2021), b"{not json")  # skipped, not fatal
    assert list(client.search(collections=[SITE]).items()) == []
    assert [c.id for c in client.get_collections()] == [SITE]


def test_the_server_needs_something_to_serve() -> None:
    with pytest.raises(ValueError, match="static_root"):
        LocalStacServer()


# --- the catalog of real products ---------------------------------------------------------------------


def test_catalog_of_a_real_run(tmp_path: Path) -> None:
    grid = SiteConfig.model_validate(CONFIG).grid()
    corpus = build_corpus(tmp_path / "stac", [(SITE, grid)], [2021], scenes_per_year=1, seed=3, progress=False)
    storage = LocalStorage(tmp_path / "store")
    register_site(storage, f"{SITE}.json", json.dumps(CONFIG).encode())
    publish_model(storage, DEMO_BUNDLE)
    with LocalStacServer(corpus.root) as server:
        services = Services(open_catalog(server.url), StacDem(server.url), Model.load(DEMO_BUNDLE))
        record = process_site_year(storage, SiteYearJob(SITE, 2021), services).record
        summary = write_site_catalog(storage, SITE)
        stac_url = server.url
    assert record.status == "ok" and summary.items == (f"{SITE}-2021",) and summary.broken_years == {}
    assert validate_catalog(storage) == {}
    item = read_json(storage, item_blob(SITE, 2021))
    assert item["properties"]["rts:count"] == record.rts_count and item["properties"]["rts:run_id"] == record.run_id
    assert item["properties"]["datetime"] == pystac.utils.datetime_to_str(
        datetime.fromisoformat(str(record.scene_datetime))
    )
    assert sorted(link["href"] for link in links(item, "derived_from")) == sorted(
        f"{stac_url}/collections/sentinel-2-l2a/items/{i}" for i in str(record.scene_id).split("+")
    )
    assert links(item, "via")[0]["title"].startswith(f"Model {services.model.name} {services.model.version}")
    catalog = pystac.Catalog.from_file(str(storage.root / "blobs" / RESULTS_CONTAINER / CATALOG_BLOB))
    (only,) = catalog.get_items(recursive=True)
    for asset in only.assets.values():
        href = asset.get_absolute_href()
        assert href is not None and Path(href).is_file()

    # one server for the imagery corpus and the results, over the whole blob folder (models included)
    blobs = storage.root / "blobs"
    with LocalStacServer(corpus.root, static_root=blobs, static_catalog=f"{RESULTS_CONTAINER}/{CATALOG_BLOB}") as both:
        client = Client.open(both.url)
        assert {c.id for c in client.get_collections()} == {"sentinel-2-l2a", "cop-dem-glo-30", SITE}
        (found,) = client.search(collections=[SITE], datetime="2021-07-01/2021-08-31").items()
        model = requests.get(found.get_links("via")[0].href, timeout=10).json()
        assert (model["name"], model["version"]) == (services.model.name, services.model.version)
        assert len(list(client.search(collections=["sentinel-2-l2a"], datetime="2021").items())) >= 1
