"""The results as a static STAC catalog: one Collection per site, one Item per site-year, beside the products.

Layout in :data:`~rtsmonitor.records.RESULTS_CONTAINER` (site ids cannot contain ``_``, so ``_stac/``
never clashes with a site's ``<site>/`` folder)::

    _stac/catalog.json                          root Catalog, one child link per site collection
    _stac/<site>/collection.json                Collection: extent, license, providers, paper, models
    _stac/<site>/<yyyy>/<site>-<yyyy>.json      Item of a site-year with an ``ok`` record

Every href between these documents and to the products is relative (pystac's "self-contained"
catalog: no ``self`` links), so the tree works as it is from the local folder (``file://``,
``pystac.Catalog.from_file``), from a static web server over the container, and through
:class:`rtsmonitor.offline.stacserver.LocalStacServer` (``static_root``), which pystac-client can
search. An Item's assets point at the products of the run its record names
(``../../../<site>/<yyyy>/<run_id>/probability.tif``); a link to a model bundle crosses into the
``models`` container (``../../../models/<name>/<version>/model.json``), which resolves in the local
folder and on Azure Blob Storage alike (containers are siblings under one account URL).

Items carry STAC 1.1.0 core fields only (no extension is declared); the record's numbers are
properties prefixed ``rts:`` (``rts:area_m2``, ``rts:count``, ``rts:carbon_t_c_per_yr`` ...: the
record's field name without a leading ``rts_``; units as in :class:`~rtsmonitor.records.SiteYearRecord`).
Each Item has a ``derived_from`` link per Sentinel-2 L2A item the scene was made of (the ``self``
href that ``scene.json`` recorded, query string removed; the Planetary Computer item URL of the
record's ``scene_id`` when ``scene.json`` cannot be read).

License: the products are published as **CC-BY-4.0** (:data:`STAC_LICENSE`). They are derived from
Copernicus Sentinel-2 data, whose licence (free, full and open, attribution required) allows any
licence for derived products as long as the source is credited; CC-BY-4.0 keeps that attribution
chain ("contains modified Copernicus Sentinel data") and lets anyone reuse the RTS maps. The method
is Rustemeyer et al. 2022, IGARSS, doi:10.1109/IGARSS46834.2022.9884869 (the Collection's
``cite-as`` link).

A year whose products are missing or unreadable (a product blob absent, ``rts.geojson`` or
``scene.json`` not JSON) still gets its Item, without the broken assets and with the property
``rts:broken`` saying what is wrong; the rest of the site is written as usual
(:attr:`CatalogSummary.broken_years`). The TIFF and PNG products are checked for presence only:
the storage interface reads whole blobs, and reading every raster of a site after each job would
cost more than the check is worth.

Validation is offline: :func:`validate_stac` checks a document against the STAC 1.1.0 and GeoJSON
JSON schemas shipped in ``rtsmonitor/schemas/`` (sources and licences in its README) with
``jsonschema``; a reference to anything not shipped is reported as a problem, never fetched.
"""

from __future__ import annotations

import functools
import json
import logging
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jsonschema  # type: ignore[import-untyped]
import pystac
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from rtsmonitor import __version__
from rtsmonitor.errors import ModelError, NotFoundError
from rtsmonitor.modelstore import META_NAME, MODELS_CONTAINER, bundle_prefix
from rtsmonitor.records import RESULTS_CONTAINER, SiteYearRecord, read_records, year_key
from rtsmonitor.registry import list_sites, read_site
from rtsmonitor.sites import SiteConfig
from rtsmonitor.storage import Storage

log = logging.getLogger(__name__)

STAC_PREFIX = "_stac/"
"""Blob-name prefix of the catalog in :data:`~rtsmonitor.records.RESULTS_CONTAINER`."""
CATALOG_BLOB = STAC_PREFIX + "catalog.json"
"""The root Catalog."""
CATALOG_ID = "rtsmonitor-results"
STAC_LICENSE = "CC-BY-4.0"
"""SPDX id of the licence of the published products (see the module docstring for why)."""
LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"
PAPER_DOI_URL = "https://doi.org/10.1109/IGARSS46834.2022.9884869"
PAPER_TITLE = (
    "Rustemeyer et al. 2022, Tracking rapid permafrost thaw through time: exploring the potential of "
    "convolutional neural network based models, IGARSS 2022, pp. 3838-3841"
)
SOURCE_ITEM_URL = "https://planetarycomputer.microsoft.com/api/stac/v1/collections/sentinel-2-l2a/items/{item_id}"
"""Planetary Computer's URL of a Sentinel-2 L2A item (the fallback ``derived_from`` href)."""
SCHEMAS_DIR = Path(__file__).parent / "schemas"
"""The vendored JSON schemas (see its README for sources and licences)."""
SCHEMA_LOCATIONS: tuple[tuple[str, str], ...] = (
    ("https://schemas.stacspec.org/", "stacspec"),
    ("https://geojson.org/schema/", "geojson"),
)
"""(URL prefix, folder under :data:`SCHEMAS_DIR`) of every vendored schema."""
SITE_PASSES = 3
"""Most times :func:`write_site_catalog` re-derives a site whose records changed while it wrote."""

PROVIDERS: tuple[pystac.Provider, ...] = (
    pystac.Provider(
        "RTS monitor (rtsmonitor)",
        description="Runs the RTS detection each summer and hosts the products and this catalog.",
        roles=[pystac.ProviderRole.PROCESSOR, pystac.ProviderRole.HOST, pystac.ProviderRole.LICENSOR],
    ),
    pystac.Provider(
        "ESA Copernicus Sentinel-2",
        description="Sentinel-2 MSI Level-2A surface reflectance, the source imagery (contains modified "
        "Copernicus Sentinel data).",
        roles=[pystac.ProviderRole.PRODUCER],
        url="https://sentinel.esa.int/web/sentinel/missions/sentinel-2",
    ),
    pystac.Provider(
        "Microsoft Planetary Computer",
        description="Hosts the Sentinel-2 L2A items and COGs the products were made from.",
        roles=[pystac.ProviderRole.HOST],
        url="https://planetarycomputer.microsoft.com/dataset/sentinel-2-l2a",
    ),
)
"""The Collection's providers: the operator of this service, and who made and hosts the source imagery."""


@dataclass(frozen=True)
class AssetSpec:
    """How one product file of a run appears as an Item asset."""

    key: str
    media_type: str
    roles: tuple[str, ...]
    title: str
    description: str


ASSETS: dict[str, AssetSpec] = {
    "probability.tif": AssetSpec(
        "probability",
        pystac.MediaType.COG,
        ("data",),
        "RTS probability",
        "U-Net probability that a pixel is part of an RTS, 0..1 (float32 COG on the site's 10 m UTM grid).",
    ),
    "mask.tif": AssetSpec(
        "mask",
        pystac.MediaType.COG,
        ("data",),
        "RTS mask",
        "1 = RTS, 0 = not RTS, 255 = unobserved (cloud, shadow, snow or no data) (uint8 COG, 10 m UTM grid).",
    ),
    "rts.geojson": AssetSpec(
        "slumps",
        pystac.MediaType.GEOJSON,
        ("data",),
        "RTS polygons",
        "One polygon per RTS object in WGS84 with area_m2, perimeter_m, pixels, mean and max probability.",
    ),
    "quicklook.png": AssetSpec(
        "quicklook",
        pystac.MediaType.PNG,
        ("overview", "visual"),
        "Quick-look",
        "True-colour image of the scene with the RTS outlined.",
    ),
    "scene.json": AssetSpec(
        "scene",
        pystac.MediaType.JSON,
        ("metadata",),
        "Scene choice",
        "The Sentinel-2 items used (STAC JSON, hrefs unsigned) and why this scene was chosen.",
    ),
}
"""The products of a run (:data:`rtsmonitor.siteyear.PRODUCT_TYPES`, same media types) as Item assets."""

_RECORD_PROPERTIES: tuple[str, ...] = (
    "rts_count",
    "rts_area_m2",
    "rts_area_err_m2",
    "carbon_t_c_per_yr",
    "carbon_t_c_err_per_yr",
    "co2_t_per_yr",
    "co2_t_err_per_yr",
    "cloud_pct",
    "valid_fraction",
    "site_area_m2",
    "observed_area_m2",
    "scene_id",
    "processing_baseline",
    "model_name",
    "model_version",
    "model_sha256",
    "threshold",
    "model_note",
    "code_version",
    "run_id",
    "rts_new",
    "rts_vanished",
    "rts_growing",
)
"""Record fields copied into Item properties as ``rts:<name without a leading rts_>``. ``rts_new``,
``rts_vanished`` and ``rts_growing`` come from the slump tracking and are left out while absent."""


@dataclass(frozen=True)
class CatalogSummary:
    """What :func:`write_site_catalog` did for one site.

    Attributes
    ----------
    site_id : the site.
    items : ids of the site's Items now in the catalog, by year.
    broken_years : year -> what is wrong with its products (its Item carries ``rts:broken``).
    written : blobs whose content changed (an unchanged document is not written again).
    deleted : blobs removed (Items of years that no longer have an ``ok`` record, or the whole site).
    collection : blob name of the site's Collection, ``None`` when the site has no ``ok`` year.
    """

    site_id: str
    items: tuple[str, ...]
    broken_years: dict[int, str]
    written: tuple[str, ...]
    deleted: tuple[str, ...]
    collection: str | None


def collection_blob(site_id: str) -> str:
    """Blob name of a site's Collection."""
    return f"{STAC_PREFIX}{site_id}/collection.json"


def item_id(site_id: str, year: int) -> str:
    """Id of a site-year's Item: ``<site>-<yyyy>``."""
    return f"{site_id}-{year_key(year)}"


def item_blob(site_id: str, year: int) -> str:
    """Blob name of a site-year's Item."""
    return f"{STAC_PREFIX}{site_id}/{year_key(year)}/{item_id(site_id, year)}.json"


# --- Writing ----------------------------------------------------------------------------------------


def write_site_catalog(storage: Storage, site_id: str) -> CatalogSummary:
    """Re-derive a site's Collection and Items from its records, and the root Catalog's links.

    Idempotent: a second call with unchanged records writes nothing. Items of years without an
    ``ok`` record are deleted; a site without any loses its Collection. If the site's records
    change while this runs (another year's job committed), the site is derived again, up to
    :data:`SITE_PASSES` times, so the last job of a site always leaves a catalog of its final records.

    Raises
    ------
    NotFoundError
        If the site has ``ok`` records but no valid registration (its footprint comes from the config).
    StorageError
        If the storage fails (a missing or unreadable product is not an error: see ``broken_years``).
    """
    records = read_records(storage, site_id)
    written: list[str] = []
    deleted: list[str] = []
    for _ in range(SITE_PASSES):
        summary = _write_site(storage, site_id, records)
        written += [name for name in summary.written if name not in written]
        deleted += [name for name in summary.deleted if name not in deleted]
        again = read_records(storage, site_id)
        if again == records:
            break
        records = again
    write_root_catalog(storage)
    return replace(summary, written=tuple(written), deleted=tuple(deleted))


def write_catalog(storage: Storage) -> list[CatalogSummary]:
    """:func:`write_site_catalog` for every site with records or with a Collection in the catalog."""
    site_ids = {record.site_id for record in read_records(storage)} | set(_collection_site_ids(storage))
    return [write_site_catalog(storage, site_id) for site_id in sorted(site_ids)]


def write_root_catalog(storage: Storage) -> tuple[str, ...]:
    """Write the root Catalog with a child link per site Collection present; return those site ids.

    The links are re-derived from the Collections present; if one appears or goes while this writes
    (another site's job), it is written again, so the last writer leaves every Collection linked.
    """
    site_ids = _collection_site_ids(storage)
    for _ in range(SITE_PASSES):
        _put_json(storage, CATALOG_BLOB, _root_document(storage, site_ids))
        now = _collection_site_ids(storage)
        if now == site_ids:
            break
        site_ids = now
    return site_ids


def _collection_site_ids(storage: Storage) -> tuple[str, ...]:
    """Ids of the sites that have a Collection blob."""
    parts = (name.split("/") for name in storage.blobs.list(RESULTS_CONTAINER, STAC_PREFIX))
    return tuple(sorted(p[1] for p in parts if len(p) == 3 and p[2] == "collection.json"))


def _write_site(storage: Storage, site_id: str, records: Sequence[SiteYearRecord]) -> CatalogSummary:
    ok = [record for record in records if record.status == "ok"]
    existing = set(storage.blobs.list(RESULTS_CONTAINER, f"{STAC_PREFIX}{site_id}/"))
    written: list[str] = []
    if not ok:
        deleted = sorted(existing)
        for name in deleted:
            storage.blobs.delete(RESULTS_CONTAINER, name)
        return CatalogSummary(site_id, (), {}, (), tuple(deleted), None)

    site = read_site(storage, site_id).config
    footprint = _rounded(site.geometry_wgs84())
    keep = {collection_blob(site_id)}
    broken: dict[int, str] = {}
    items: list[str] = []
    for record in ok:
        name = item_blob(site_id, record.year)
        products = _check_products(storage, record)
        if products.problems:
            broken[record.year] = "; ".join(products.problems)
            log.warning("%s %d: catalog item marked broken: %s", site_id, record.year, broken[record.year])
        document = _item_document(storage, site, record, products, footprint)
        if _put_json(storage, name, document, content_type=pystac.MediaType.GEOJSON):
            written.append(name)
        keep.add(name)
        items.append(item_id(site_id, record.year))
    document = _collection_document(storage, site, ok, footprint)
    if _put_json(storage, collection_blob(site_id), document):
        written.append(collection_blob(site_id))
    deleted = sorted(existing - keep)  # after the Collection stopped linking them
    for name in deleted:
        storage.blobs.delete(RESULTS_CONTAINER, name)
    return CatalogSummary(site_id, tuple(items), broken, tuple(written), tuple(deleted), collection_blob(site_id))


def _put_json(
    storage: Storage, name: str, document: Mapping[str, Any], *, content_type: str = pystac.MediaType.JSON
) -> bool:
    """Write ``document`` to ``name`` unless the blob already holds exactly it; return whether it wrote."""
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    try:
        if storage.blobs.read_bytes(RESULTS_CONTAINER, name) == data:
            return False
    except NotFoundError:
        pass
    storage.blobs.write_bytes(RESULTS_CONTAINER, name, data, content_type=content_type)
    return True


def _relative(from_blob: str, to_blob: str) -> str:
    """Relative href from one blob to another (``<container>/<name>`` paths)."""
    href = posixpath.relpath(to_blob, posixpath.dirname(from_blob))
    return href if href.startswith("../") else f"./{href}"


def _in_results(name: str) -> str:
    return f"{RESULTS_CONTAINER}/{name}"


@dataclass(frozen=True)
class _Products:
    """The product blobs of a record's run that can be used, and what is wrong with the others."""

    present: dict[str, str]
    problems: list[str]
    sources: list[tuple[str, str]]


def _check_products(storage: Storage, record: SiteYearRecord) -> _Products:
    prefix = record.results_prefix or ""
    present: dict[str, str] = {}
    problems: list[str] = []
    scene: Any = None
    for product in ASSETS:
        name = prefix + product
        if not storage.blobs.exists(RESULTS_CONTAINER, name):
            problems.append(f"{product} is missing ({RESULTS_CONTAINER}/{name})")
            continue
        if product.endswith((".json", ".geojson")):
            try:
                content = json.loads(storage.blobs.read_bytes(RESULTS_CONTAINER, name))
            except NotFoundError:
                problems.append(f"{product} is missing ({RESULTS_CONTAINER}/{name})")
                continue
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                problems.append(f"{product} is not JSON ({exc})")
                continue
            problem = _content_problem(product, content)
            if problem:
                problems.append(f"{product} {problem}")
                continue
            if product == "scene.json":
                scene = content
        present[product] = name
    return _Products(present, problems, _source_items(scene, record.scene_id or ""))


def _content_problem(product: str, content: Any) -> str | None:
    if product == "rts.geojson":
        if not isinstance(content, dict) or content.get("type") != "FeatureCollection":
            return "is not a GeoJSON FeatureCollection"
        if not isinstance(content.get("features"), list):
            return "has no 'features' list"
    if product == "scene.json" and (not isinstance(content, dict) or not isinstance(content.get("items"), list)):
        return "has no 'items' list"
    return None


def _source_items(scene: Any, scene_id: str) -> list[tuple[str, str]]:
    """(id, href) of the Sentinel-2 items the scene was made of."""
    sources: list[tuple[str, str]] = []
    if isinstance(scene, dict):
        for entry in scene.get("items", []):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            hrefs = [
                str(link["href"])
                for link in entry.get("links", [])
                if isinstance(link, dict) and link.get("rel") == "self" and isinstance(link.get("href"), str)
            ]
            href = hrefs[0] if hrefs else SOURCE_ITEM_URL.format(item_id=entry["id"])
            sources.append((entry["id"], _without_query(href)))
    if not sources:
        sources = [(part, SOURCE_ITEM_URL.format(item_id=part)) for part in scene_id.split("+") if part]
    return sorted(sources)


def _without_query(href: str) -> str:
    parts = urlsplit(href)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _rounded(geometry: BaseGeometry, digits: int = 7) -> dict[str, Any]:
    """GeoJSON of ``geometry`` with coordinates rounded to ``digits`` decimals (1 cm at 7)."""

    def walk(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, digits)
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    return {"type": mapping(geometry)["type"], "coordinates": walk(mapping(geometry)["coordinates"])}


def _bbox(footprint: Mapping[str, Any]) -> list[float]:
    return [float(v) for v in shape(footprint).bounds]


def _scene_datetime(record: SiteYearRecord) -> datetime | None:
    if not record.scene_datetime:
        return None
    value = datetime.fromisoformat(record.scene_datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _record_properties(record: SiteYearRecord) -> dict[str, Any]:
    properties: dict[str, Any] = {"rts:site_id": record.site_id, "rts:year": record.year}
    for field in _RECORD_PROPERTIES:
        value = getattr(record, field, None)  # rts_new & co. exist once slump tracking is in
        if value is not None:
            properties["rts:" + field.removeprefix("rts_")] = value
    if record.carbon_factors:
        try:
            properties["rts:carbon_factors"] = json.loads(record.carbon_factors)
        except ValueError:
            properties["rts:carbon_factors"] = record.carbon_factors
    return properties


def _model_blob(storage: Storage, name: str | None, version: str | None) -> str | None:
    """``models/<name>/<version>/model.json`` if that bundle is published in this storage."""
    if not name or not version:
        return None
    try:
        blob = bundle_prefix(name, version) + META_NAME
    except ModelError:
        return None
    return f"{MODELS_CONTAINER}/{blob}" if storage.blobs.exists(MODELS_CONTAINER, blob) else None


def _model_link(storage: Storage, from_blob: str, name: str | None, version: str | None) -> pystac.Link | None:
    target = _model_blob(storage, name, version)
    if target is None:
        return None
    title = f"Model {name} {version}: model.json (layers, normalisation, threshold, metrics, ONNX sha256)"
    return pystac.Link("via", _relative(from_blob, target), pystac.MediaType.JSON, title)


def _item_document(
    storage: Storage, site: SiteConfig, record: SiteYearRecord, products: _Products, footprint: dict[str, Any]
) -> dict[str, Any]:
    name = _in_results(item_blob(site.id, record.year))
    when = _scene_datetime(record)
    properties: dict[str, Any] = {
        "title": f"{site.name} {record.year}",
        "created": pystac.utils.datetime_to_str(record.processed),
        **_record_properties(record),
    }
    if when is None:
        properties["start_datetime"] = f"{year_key(record.year)}-01-01T00:00:00Z"
        properties["end_datetime"] = f"{year_key(record.year)}-12-31T23:59:59Z"
    if products.problems:
        properties["rts:broken"] = "; ".join(products.problems)
    item = pystac.Item(
        id=item_id(site.id, record.year),
        geometry=footprint,
        bbox=_bbox(footprint),
        datetime=when,
        properties=properties,
        collection=site.id,
    )
    for product, blob in products.present.items():
        spec = ASSETS[product]
        item.add_asset(
            spec.key,
            pystac.Asset(
                _relative(name, _in_results(blob)),
                title=spec.title,
                description=spec.description,
                media_type=spec.media_type,
                roles=list(spec.roles),
            ),
        )
    collection_href = _relative(name, _in_results(collection_blob(site.id)))
    links = [
        pystac.Link("root", _relative(name, _in_results(CATALOG_BLOB)), pystac.MediaType.JSON, "RTS monitor results"),
        pystac.Link("parent", collection_href, pystac.MediaType.JSON, site.name),
        pystac.Link("collection", collection_href, pystac.MediaType.JSON, site.name),
        *(
            pystac.Link("derived_from", href, pystac.MediaType.GEOJSON, f"Sentinel-2 L2A item {source_id}")
            for source_id, href in products.sources
        ),
    ]
    model = _model_link(storage, name, record.model_name, record.model_version)
    if model is not None:
        links.append(model)
    for link in links:
        item.add_link(link)
    document: dict[str, Any] = item.to_dict(include_self_link=False, transform_hrefs=False)
    return document


def _collection_document(
    storage: Storage, site: SiteConfig, ok: Sequence[SiteYearRecord], footprint: dict[str, Any]
) -> dict[str, Any]:
    name = _in_results(collection_blob(site.id))
    times = [t for t in (_scene_datetime(record) for record in ok) if t is not None]
    years = sorted(record.year for record in ok)
    start = min(times) if times else datetime(years[0], 1, 1, tzinfo=UTC)
    end = max(times) if times else datetime(years[-1], 12, 31, 23, 59, 59, tzinfo=UTC)
    models = sorted({(r.model_name or "", r.model_version or "") for r in ok})
    collection = pystac.Collection(
        id=site.id,
        title=site.name,
        description=(
            f"Retrogressive thaw slumps (RTS) at {site.name} ({site.id}), mapped each summer from one "
            "Sentinel-2 L2A scene with a U-Net after Rustemeyer et al. 2022: RTS probability and mask "
            "(COG, 10 m), RTS polygons (GeoJSON), a quick-look, and the year's RTS count, area and net "
            "carbon flux with uncertainty (Turetsky et al. 2020) as Item properties (rts:*). Contains "
            f"modified Copernicus Sentinel data {years[0]}-{years[-1]}."
        ),
        extent=pystac.Extent(pystac.SpatialExtent([_bbox(footprint)]), pystac.TemporalExtent([[start, end]])),
        license=STAC_LICENSE,
        keywords=["permafrost", "retrogressive thaw slump", "Sentinel-2", "deep learning", "carbon"],
        providers=list(PROVIDERS),
        summaries=pystac.Summaries(
            {
                "rts:year": {"minimum": years[0], "maximum": years[-1]},
                "rts:model_version": sorted({version for _, version in models if version}),
            }
        ),
    )
    root_href = _relative(name, _in_results(CATALOG_BLOB))
    links = [
        pystac.Link("root", root_href, pystac.MediaType.JSON, "RTS monitor results"),
        pystac.Link("parent", root_href, pystac.MediaType.JSON, "RTS monitor results"),
        pystac.Link("license", LICENSE_URL, pystac.MediaType.HTML, "Creative Commons Attribution 4.0"),
        pystac.Link("cite-as", PAPER_DOI_URL, pystac.MediaType.HTML, f"Method: {PAPER_TITLE}"),
    ]
    for model_name, version in models:
        model = _model_link(storage, name, model_name, version)
        if model is not None:
            links.append(model)
    for record in ok:
        href = _relative(name, _in_results(item_blob(site.id, record.year)))
        links.append(pystac.Link("item", href, pystac.MediaType.GEOJSON, f"{site.name} {record.year}"))
    for link in links:
        collection.add_link(link)
    document: dict[str, Any] = collection.to_dict(include_self_link=False, transform_hrefs=False)
    return document


def _root_document(storage: Storage, site_ids: Iterable[str]) -> dict[str, Any]:
    catalog = pystac.Catalog(
        id=CATALOG_ID,
        title="RTS monitor results",
        description=(
            "Yearly maps of retrogressive thaw slumps (RTS) in permafrost from Sentinel-2, one Collection "
            f"per monitored site (rtsmonitor {__version__}; method: Rustemeyer et al. 2022)."
        ),
    )
    name = _in_results(CATALOG_BLOB)
    catalog.add_link(pystac.Link("root", "./catalog.json", pystac.MediaType.JSON, "RTS monitor results"))
    titles = _site_names(storage)
    for site_id in site_ids:
        href = _relative(name, _in_results(collection_blob(site_id)))
        catalog.add_link(pystac.Link("child", href, pystac.MediaType.JSON, titles.get(site_id, site_id)))
    document: dict[str, Any] = catalog.to_dict(include_self_link=False, transform_hrefs=False)
    return document


def _site_names(storage: Storage) -> dict[str, str]:
    """Site id -> name (the Collections' titles) from one query of the sites table, not one read per site."""
    names: dict[str, str] = {}
    for row in list_sites(storage):
        try:
            config = json.loads(str(row.get("config", "")))
        except ValueError:
            continue
        if isinstance(config, dict) and isinstance(config.get("name"), str):
            names[str(row["RowKey"])] = config["name"]
    return names


# --- Validation -------------------------------------------------------------------------------------

_ROOT_SCHEMAS = {
    "Catalog": "catalog-spec/json-schema/catalog.json",
    "Collection": "collection-spec/json-schema/collection.json",
    "Feature": "item-spec/json-schema/item.json",
}


def local_schema_path(url: str) -> Path | None:
    """The vendored file of a schema URL, or ``None`` if it is not shipped."""
    for prefix, folder in SCHEMA_LOCATIONS:
        if url.startswith(prefix):
            relative = url[len(prefix) :].split("#", 1)[0]
            path = (SCHEMAS_DIR / folder / relative).resolve()
            if path.is_file() and path.is_relative_to(SCHEMAS_DIR.resolve()):
                return path
    return None


def _refuse(uri: str) -> Resource[Any]:
    """The registry's retriever: any schema not shipped is an error; nothing is fetched."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class mypy does not see through


@functools.cache
def schema_registry() -> Registry[Any]:
    """Every vendored schema, registered under its URL; unknown URLs fail instead of being fetched."""
    resources: list[tuple[str, Resource[Any]]] = []
    for prefix, folder in SCHEMA_LOCATIONS:
        for path in sorted((SCHEMAS_DIR / folder).rglob("*.json")):
            url = prefix + path.relative_to(SCHEMAS_DIR / folder).as_posix()
            resources.append((url, Resource.from_contents(json.loads(path.read_text()))))
    registry: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]
    return registry.with_resources(resources)


def validate_stac(document: Mapping[str, Any]) -> list[str]:
    """Problems of one STAC Catalog, Collection or Item document against the vendored schemas.

    An empty list means valid. Each problem names the JSON path and what is wrong. A document whose
    ``stac_version`` or declared extension has no shipped schema is reported, not fetched.
    """
    kind, version = document.get("type"), document.get("stac_version")
    if kind not in _ROOT_SCHEMAS:
        return [f"type: {kind!r} is not a STAC document type ({sorted(_ROOT_SCHEMAS)})"]
    urls = [f"https://schemas.stacspec.org/v{version}/{_ROOT_SCHEMAS[str(kind)]}"]
    urls += [str(url) for url in document.get("stac_extensions") or []]
    registry = schema_registry()
    problems: list[str] = []
    for url in urls:
        if local_schema_path(url) is None:
            problems.append(f"{url}: schema not shipped in rtsmonitor/schemas (no network lookup is made)")
            continue
        schema = registry.contents(url)
        validator = jsonschema.validators.validator_for(schema)(schema, registry=registry)
        try:
            errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
        except Unresolvable as exc:
            problems.append(f"{url}: a reference cannot be resolved offline: {exc}")
            continue
        for error in errors:
            best = jsonschema.exceptions.best_match([error])
            where = "/".join(map(str, best.absolute_path)) or "(document)"
            problems.append(f"{where}: {best.message}")
    return problems


def validate_catalog(storage: Storage, container: str = RESULTS_CONTAINER) -> dict[str, list[str]]:
    """Problems of every document of the catalog, by blob name; an empty dict means it is valid.

    Each document is checked against the schemas (:func:`validate_stac`), and every relative href
    (links between the documents, asset hrefs, the link to a model in the ``models`` container) must
    name an existing blob. A missing root Catalog is a problem too.
    """
    problems: dict[str, list[str]] = {}
    names = storage.blobs.list(container, STAC_PREFIX)
    if CATALOG_BLOB not in names:
        problems[CATALOG_BLOB] = ["the root Catalog is missing"]
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            document = json.loads(storage.blobs.read_bytes(container, name))
        except ValueError as exc:
            problems[name] = [f"not JSON: {exc}"]
            continue
        if not isinstance(document, dict):
            problems[name] = ["not a JSON object"]
            continue
        found = validate_stac(document) + _href_problems(storage, container, name, document)
        if found:
            problems[name] = found
    return problems


def _href_problems(storage: Storage, container: str, name: str, document: Mapping[str, Any]) -> list[str]:
    hrefs = [
        (f"link {link.get('rel')}", link.get("href")) for link in document.get("links", []) if isinstance(link, dict)
    ]
    hrefs += [(f"asset {key}", asset.get("href")) for key, asset in (document.get("assets") or {}).items()]
    problems = []
    for what, href in hrefs:
        if not isinstance(href, str) or "://" in href or href.startswith("/"):
            continue
        target = posixpath.normpath(posixpath.join(container, posixpath.dirname(name), href))
        target_container, _, target_name = target.partition("/")
        if target.startswith("../") or not target_name or not storage.blobs.exists(target_container, target_name):
            problems.append(f"{what}: {href} does not lead to a blob ({target})")
    return problems
