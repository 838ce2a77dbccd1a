"""Tests of the local STAC API + COG file server, with pystac-client, requests and rasterio as clients."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pytest
import rasterio
import requests
from pystac_client import Client
from rasterio.transform import from_origin
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape

from rtsmonitor.grid import grid_for_centre
from rtsmonitor.offline.corpus import CorpusSummary, build_corpus
from rtsmonitor.offline.stacserver import LocalStacServer

SITE = grid_for_centre(-126.75, 69.75, 2.0)
GDAL_HTTP = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusSummary:
    root = tmp_path_factory.mktemp("corpus")
    summary = build_corpus(
        root, [("site", SITE)], [2019, 2022], scenes_per_year=3, seed=2, tile_size_m=6000.0, progress=False
    )
    big = np.add.outer(np.arange(3000) % 251, np.arange(3000) % 241).astype("uint16") * 7 + 1
    big += np.random.default_rng(0).integers(0, 300, big.shape, dtype="uint16")
    with rasterio.open(
        root / "files" / "big.tif",
        "w",
        driver="COG",
        width=3000,
        height=3000,
        count=1,
        dtype="uint16",
        crs="EPSG:32609",
        transform=from_origin(500000, 7700000, 10, 10),
        nodata=0,
        compress="DEFLATE",
        blocksize=512,
    ) as ds:
        ds.write(big, 1)
    return summary


@pytest.fixture(scope="module")
def server(corpus: CorpusSummary) -> Iterator[LocalStacServer]:
    started = time.perf_counter()
    with LocalStacServer(corpus.root) as srv:
        assert time.perf_counter() - started < 2.0
        yield srv


def _all_items(corpus: CorpusSummary) -> list[dict]:
    folder = corpus.root / "collections" / "sentinel-2-l2a" / "items"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _when(item: dict) -> datetime:
    return datetime.fromisoformat(item["properties"]["datetime"])


def test_landing_page_and_collections(server: LocalStacServer) -> None:
    landing = requests.get(server.url + "/", timeout=10).json()
    assert landing["type"] == "Catalog"
    assert "https://api.stacspec.org/v1.0.0/item-search#filter" in landing["conformsTo"]
    rels = {(link["rel"], link.get("method")) for link in landing["links"]}
    assert {("search", "GET"), ("search", "POST"), ("conformance", None), ("data", None)} <= rels
    client = Client.open(server.url)
    assert {c.id for c in client.get_collections()} == {"sentinel-2-l2a", "cop-dem-glo-30"}
    assert requests.get(server.url + "/collections/nope", timeout=10).status_code == 404
    missing = requests.get(server.url + "/collections/sentinel-2-l2a/items/nope", timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "NotFound"


def test_search_by_bbox_datetime_and_collection(server: LocalStacServer, corpus: CorpusSummary) -> None:
    client = Client.open(server.url)
    found = client.search(
        collections=["sentinel-2-l2a"], bbox=list(SITE.bbox_wgs84()), datetime="2019-07-01/2019-08-31"
    )
    ids = sorted(item.id for item in found.items())
    expected = sorted(i for s in corpus.scenes if s.spec.year == 2019 for i in s.item_ids)
    assert ids == expected and ids
    item = next(iter(client.search(ids=[ids[0]]).items()))
    assert item.assets["B04"].href.startswith(server.url + "/files/sentinel-2-l2a/")
    assert item.get_self_href() == f"{server.url}/collections/sentinel-2-l2a/items/{ids[0]}"
    far = client.search(collections=["sentinel-2-l2a"], bbox=[10, 10, 11, 11])
    assert list(far.items()) == []
    dem = list(client.search(collections=["cop-dem-glo-30"], bbox=list(SITE.bbox_wgs84())).items())
    assert [d.id for d in dem] == list(corpus.dem_item_ids)
    instant = _when(_all_items(corpus)[0]).isoformat().replace("+00:00", "Z")
    assert len(list(client.search(datetime=instant).items())) >= 1
    open_ended = list(client.search(collections=["sentinel-2-l2a"], datetime="2022-01-01T00:00:00Z/..").items())
    assert open_ended and all(i.datetime is not None and i.datetime.year == 2022 for i in open_ended)


def test_filter_query_and_sortby(server: LocalStacServer, corpus: CorpusSummary) -> None:
    client = Client.open(server.url)
    everything = _all_items(corpus)
    low = sorted(i["id"] for i in everything if i["properties"]["eo:cloud_cover"] < 10)
    assert 0 < len(low) < len(everything)
    cql = {"op": "<", "args": [{"property": "eo:cloud_cover"}, 10]}
    assert sorted(i.id for i in client.search(collections=["sentinel-2-l2a"], filter=cql).items()) == low
    get = client.search(collections=["sentinel-2-l2a"], filter=cql, filter_lang="cql2-json", method="GET")
    assert sorted(i.id for i in get.items()) == low
    queried = client.search(collections=["sentinel-2-l2a"], query={"eo:cloud_cover": {"lt": 10}})
    assert sorted(i.id for i in queried.items()) == low
    combined = {
        "op": "and",
        "args": [
            {"op": "between", "args": [{"property": "eo:cloud_cover"}, 0, 10]},
            {"op": "in", "args": [{"property": "s2:processing_baseline"}, ["04.00", "05.09"]]},
            {"op": ">=", "args": [{"property": "datetime"}, {"timestamp": "2022-01-01T00:00:00Z"}]},
            {"op": "not", "args": [{"op": "isNull", "args": [{"property": "s2:mgrs_tile"}]}]},
        ],
    }
    new_low = sorted(
        i["id"]
        for i in everything
        if i["properties"]["eo:cloud_cover"] <= 10 and i["properties"]["s2:processing_baseline"] == "04.00"
    )
    assert sorted(i.id for i in client.search(filter=combined).items()) == new_low
    ordered = [
        i.properties["eo:cloud_cover"]
        for i in client.search(collections=["sentinel-2-l2a"], sortby="-properties.eo:cloud_cover").items()
    ]
    assert ordered == sorted(ordered, reverse=True) and len(ordered) == len(everything)
    by_date = [i.datetime for i in client.search(collections=["sentinel-2-l2a"], sortby="+datetime").items()]
    assert by_date == sorted(by_date)  # type: ignore[type-var]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_paging_returns_every_item_once(server: LocalStacServer, corpus: CorpusSummary, method: str) -> None:
    everything = sorted(i["id"] for i in _all_items(corpus))
    assert len(everything) > 3
    search = Client.open(server.url).search(collections=["sentinel-2-l2a"], limit=3, method=method)
    pages = list(search.pages_as_dicts())
    assert len(pages) == -(-len(everything) // 3)
    ids = [f["id"] for page in pages for f in page["features"]]
    assert sorted(ids) == everything
    assert search.matched() == len(everything)


def test_intersects(server: LocalStacServer, corpus: CorpusSummary) -> None:
    client = Client.open(server.url)
    west, south, _, _ = SITE.bbox_wgs84()
    inside = mapping(box(west + 0.001, south + 0.001, west + 0.002, south + 0.002))
    found = sorted(i.id for i in client.search(collections=["sentinel-2-l2a"], intersects=inside).items())
    expected = sorted(i["id"] for i in _all_items(corpus) if shape(i["geometry"]).intersects(shape(inside)))
    assert found == expected and found
    away = mapping(box(0, 0, 1, 1))
    assert list(client.search(intersects=away).items()) == []


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"bbox": "1,2,3"}, "bbox"),
        ({"bbox": "0,80,1,70"}, "bbox"),
        ({"bbox": "a,b,c,d"}, "bbox"),
        ({"datetime": "yesterday"}, "datetime"),
        ({"datetime": "2020-01-02T00:00:00Z/2020-01-01T00:00:00Z"}, "datetime"),
        ({"limit": "0"}, "limit"),
        ({"intersects": "{not json"}, "intersects"),
        ({"filter": '{"op": "like", "args": [{"property": "id"}, "S2%"]}', "filter-lang": "cql2-json"}, "filter"),
        ({"filter": "eo:cloud_cover < 10", "filter-lang": "cql2-text"}, "filter-lang"),
        ({"query": '{"eo:cloud_cover": {"approx": 3}}'}, "query"),
        ({"token": "page7"}, "token"),
        ({"colections": "x"}, "colections"),
    ],
)
def test_bad_parameters_answer_400_naming_the_parameter(
    server: LocalStacServer, params: dict[str, str], parameter: str
) -> None:
    response = requests.get(server.url + "/search", params=params, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == parameter


def test_bad_post_body(server: LocalStacServer) -> None:
    response = requests.post(server.url + "/search", json={"bbox": [1, 2, 3]}, timeout=10)
    assert response.status_code == 400 and response.json()["parameter"] == "bbox"
    response = requests.post(server.url + "/search", json={"sortby": [{"field": "id", "direction": "up"}]}, timeout=10)
    assert response.status_code == 400 and response.json()["parameter"] == "sortby"


def test_range_requests(server: LocalStacServer, corpus: CorpusSummary) -> None:
    path = corpus.root / "files" / "big.tif"
    content = path.read_bytes()
    url = server.url + "/files/big.tif"
    partial = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=10)
    assert partial.status_code == 206
    assert partial.content == content[100:200]
    assert partial.headers["Content-Range"] == f"bytes 100-199/{len(content)}"
    suffix = requests.get(url, headers={"Range": "bytes=-50"}, timeout=10)
    assert suffix.status_code == 206 and suffix.content == content[-50:]
    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.headers["Accept-Ranges"] == "bytes"
    assert int(head.headers["Content-Length"]) == len(content)
    beyond = requests.get(url, headers={"Range": f"bytes={len(content) + 10}-"}, timeout=10)
    assert beyond.status_code == 416
    assert requests.get(server.url + "/files/missing.tif", timeout=10).status_code == 404


def test_a_window_read_transfers_a_small_fraction_of_the_file(server: LocalStacServer, corpus: CorpusSummary) -> None:
    size = (corpus.root / "files" / "big.tif").stat().st_size
    server.reset_stats()
    with rasterio.Env(**GDAL_HTTP), rasterio.open(server.url + "/files/big.tif") as ds:
        assert ds.shape == (3000, 3000)
        window = ds.read(1, window=Window(1200, 1700, 100, 100))
    with rasterio.open(corpus.root / "files" / "big.tif") as local:
        np.testing.assert_array_equal(window, local.read(1, window=Window(1200, 1700, 100, 100)))
    stats = server.stats()
    sent = stats.bytes_by_path["/files/big.tif"]
    assert 0 < sent < 0.1 * size
    assert stats.requests_by_path["/files/big.tif"] >= 1 and stats.bytes_total >= sent


def test_asset_read_through_the_api(server: LocalStacServer) -> None:
    item = next(iter(Client.open(server.url).search(collections=["sentinel-2-l2a"], limit=1).items()))
    with rasterio.Env(**GDAL_HTTP), rasterio.open(item.assets["SCL"].href) as ds:
        assert ds.res == (20.0, 20.0)
        assert ds.read(1, window=Window(0, 0, 10, 10)).shape == (10, 10)


def test_new_items_are_indexed_without_restart(server: LocalStacServer, corpus: CorpusSummary) -> None:
    folder = corpus.root / "collections" / "sentinel-2-l2a" / "items"
    original = _all_items(corpus)[0]
    copy = {**original, "id": original["id"] + "_COPY"}
    target = folder / f"{copy['id']}.json"
    tmp = folder / ".tmp.json"
    tmp.write_text(json.dumps(copy))
    tmp.replace(target)
    try:
        found = Client.open(server.url).search(ids=[copy["id"]])
        assert [i.id for i in found.items()] == [copy["id"]]
    finally:
        target.unlink()
        server.reload()
    assert list(Client.open(server.url).search(ids=[copy["id"]]).items()) == []


def test_server_stops_and_frees_the_port(corpus: CorpusSummary) -> None:
    with LocalStacServer(corpus.root) as srv:
        url = srv.url
        assert requests.get(url + "/conformance", timeout=10).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/conformance", timeout=2)
