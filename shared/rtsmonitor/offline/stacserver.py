"""A small local STAC API 1.0 over a folder of STAC items, serving the COG assets with HTTP range requests.

The offline stand-in for the Planetary Computer STAC API (DESIGN.md, "Local stand-ins"): the same
client code (pystac-client searches, rasterio/GDAL ``/vsicurl/`` windowed reads) runs against it
unchanged. It implements what Planetary Computer's stac-fastapi + pgstac offers and the project
uses: core, collections, ogcapi-features, item search (GET and POST: ``collections``, ``ids``,
``bbox``, ``intersects``, ``datetime``, ``limit`` with ``next`` paging), the CQL2-JSON ``filter``,
the ``query`` extension and ``sortby``. Invalid parameters answer 400 with a JSON body naming the
parameter.

Folder layout (as written by :mod:`rtsmonitor.offline.corpus`)::

    <root>/collections/<collection id>/collection.json
    <root>/collections/<collection id>/items/<item id>.json
    <root>/files/...                                    served at /files/... with Range support

Relative hrefs in items (assets and links) are relative to ``<root>``; responses make them absolute
with the request's base URL. The folder is indexed at start-up and re-scanned when a collection or
items directory changes (files are written atomically, by rename), or on :meth:`StacIndex.reload`.

It can also serve a static catalog as pystac writes it (relative hrefs, no ``self`` links), such as
the results catalog of :mod:`rtsmonitor.catalog` (``_stac/catalog.json`` in the results folder,
``<store>/blobs/results``): with ``static_root`` (a folder) and ``static_catalog`` (the root
catalog's path inside it), the collections and items reachable from that catalog through ``child``
and ``item`` links are searchable like the others, every file under ``static_root`` is served at
``/static/...`` with Range support, and relative hrefs of their assets and links point there. An
href that leaves ``static_root`` is left out of the responses (the server cannot serve it), and an
unreadable document is skipped. The static catalog is re-read when one of its documents changes.
Either folder may be given alone; collection ids must differ between the two (the corpus folder's
collection wins a clash).

Range requests are answered by Starlette's ``FileResponse`` (Starlette 1.10: single ranges as 206
with ``Content-Range``, several ranges as ``multipart/byteranges``, ``Accept-Ranges: bytes``, HEAD,
416 for a start beyond the end of the file, 400 for a malformed header).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import posixpath
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import shapely
import uvicorn
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 10
"""Items per page when a search gives no ``limit`` (as stac-fastapi)."""
MAX_LIMIT = 1000
"""Largest page; larger ``limit`` values are lowered to it (Planetary Computer allows 1000)."""

CONFORMS_TO: tuple[str, ...] = (
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#filter",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
)
"""Conformance classes declared on ``/`` and ``/conformance`` (no cql2-text: not implemented)."""

GEOJSON = "application/geo+json"
_REWRITTEN_RELS = frozenset({"self", "root", "parent", "collection"})
STATIC_PATH = "/static"
"""Where the files of a static catalog's folder (``static_root``) are served."""
STATIC_CATALOG = "_stac/catalog.json"
"""Default path of the root catalog inside ``static_root``: ``rtsmonitor.catalog.CATALOG_BLOB`` in the results
folder (spelled out, not imported: the server child process starts faster without the catalog's imports)."""


class ApiError(Exception):
    """A request the API refuses: answered with ``status`` and a JSON body naming ``parameter``."""

    def __init__(self, parameter: str, message: str, status: int = 400) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message
        self.status = status


# --- The index ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    collection: str
    id: str
    start: datetime | None
    end: datetime | None
    bbox: tuple[float, float, float, float] | None
    geometry: BaseGeometry | None
    data: dict[str, Any]


class StacIndex:
    """The collections and items of a folder and/or a static catalog, in memory; re-scanned when they change."""

    def __init__(
        self, root: Path | None, *, static_root: Path | None = None, static_catalog: str = STATIC_CATALOG
    ) -> None:
        self.root = None if root is None else Path(root)
        self.static_root = None if static_root is None else Path(static_root)
        self.static_catalog = static_catalog
        self._lock = threading.Lock()
        self._signature: tuple[tuple[str, int], ...] = ()
        self._static_files: tuple[Path, ...] = ()
        self.collections: dict[str, dict[str, Any]] = {}
        self.items: list[_Item] = []
        self.reload()

    def _current_signature(self) -> tuple[tuple[str, int], ...]:
        return tuple(_mtime(path) for path in self._static_files) + self._folder_signature()

    def _folder_signature(self) -> tuple[tuple[str, int], ...]:
        if self.root is None:
            return ()
        entries: list[tuple[str, int]] = []
        collections = self.root / "collections"
        if collections.is_dir():
            entries.append((str(collections), collections.stat().st_mtime_ns))
            for folder in sorted(collections.iterdir()):
                for path in (folder, folder / "items", folder / "collection.json"):
                    if path.exists():
                        entries.append((str(path), path.stat().st_mtime_ns))
        return tuple(entries)

    def reload(self) -> None:
        """Read every collection and item of the folder and of the static catalog again."""
        with self._lock:
            static = _StaticCatalog(self.static_root, self.static_catalog) if self.static_root is not None else None
            self._static_files = tuple(Path(path) for path, _ in static.files) if static is not None else ()
            signature = (tuple(static.files) if static is not None else ()) + self._folder_signature()
            collections: dict[str, dict[str, Any]] = {}
            items: list[_Item] = []
            folder = self.root / "collections" if self.root is not None else None
            for collection_file in sorted(folder.glob("*/collection.json")) if folder and folder.is_dir() else []:
                data = json.loads(collection_file.read_text())
                collections[data["id"]] = data
                for item_file in sorted((collection_file.parent / "items").glob("*.json")):
                    items.append(_index_item(json.loads(item_file.read_text()), data["id"]))
            if static is not None:
                for collection_id, data in static.collections.items():
                    if collection_id in collections:
                        log.warning("static catalog: collection %r is already served; skipped", collection_id)
                        continue
                    collections[collection_id] = data
                    items.extend(item for item in static.items if item.collection == collection_id)
            self.collections, self.items, self._signature = collections, items, signature

    def refresh(self) -> None:
        """Re-scan if a collection or items directory, or a static catalog document, changed since the last scan."""
        if self._current_signature() != self._signature:
            self.reload()


def _mtime(path: Path) -> tuple[str, int]:
    """``(path, mtime in ns)``, with -1 for a file that cannot be read."""
    try:
        return str(path), path.stat().st_mtime_ns
    except OSError:
        return str(path), -1


class _StaticCatalog:
    """The collections and items reachable from a static catalog's root through child and item links.

    ``files`` lists every document read (or tried) with its mtime from before the read, so that a
    change to any of them, even one during the read, is noticed.
    Relative hrefs are rewritten to ``static/<path inside the folder>`` (made absolute per request);
    hrefs that leave the folder are dropped, and so are the tree links the API writes itself.
    """

    def __init__(self, folder: Path, catalog: str) -> None:
        self.folder = folder
        self.files: list[tuple[str, int]] = []
        self.collections: dict[str, dict[str, Any]] = {}
        self.items: list[_Item] = []
        self._seen: set[str] = set()
        self._walk(posixpath.normpath(catalog), None)

    def _read(self, relative: str) -> dict[str, Any] | None:
        path = self.folder / relative
        self.files.append(_mtime(path))
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("static catalog: skipped %s (%s)", path, exc)
            return None
        return data if isinstance(data, dict) else None

    def _walk(self, relative: str, collection_id: str | None) -> None:
        if relative in self._seen:
            return
        self._seen.add(relative)
        data = self._read(relative)
        if data is None or not isinstance(data.get("id"), str):
            return
        if data.get("type") == "Feature":
            item = _static_hrefs(data, relative, drop=_REWRITTEN_RELS)
            self.items.append(_index_item(item, str(data.get("collection") or collection_id or "")))
            return
        if data.get("type") == "Collection":
            collection_id = data["id"]
            self.collections[collection_id] = _static_hrefs(data, relative, drop={*_REWRITTEN_RELS, "child", "item"})
        for link in data.get("links", []):
            if isinstance(link, dict) and link.get("rel") in ("child", "item") and isinstance(link.get("href"), str):
                target = _static_target(relative, link["href"])
                if target is not None:
                    self._walk(target, collection_id)


def _static_target(document: str, href: str) -> str | None:
    """The path inside the static folder of a relative ``href`` of ``document``; ``None`` if it leaves it."""
    if "://" in href or href.startswith("/"):
        return None
    target = posixpath.normpath(posixpath.join(posixpath.dirname(document), href.split("#", 1)[0]))
    return None if target == ".." or target.startswith("../") else target


def _static_hrefs(data: dict[str, Any], document: str, drop: set[str] | frozenset[str]) -> dict[str, Any]:
    """A copy of a static document with relative hrefs served from :data:`STATIC_PATH`, ``drop`` links removed."""
    out = copy.deepcopy(data)

    def served(href: Any) -> str | None:
        if not isinstance(href, str):
            return None
        if "://" in href or href.startswith("/vsi"):
            return href
        target = _static_target(document, href)
        return None if target is None else f"{STATIC_PATH.lstrip('/')}/{target}"

    assets = {}
    for key, asset in (out.get("assets") or {}).items():
        href = served(asset.get("href")) if isinstance(asset, dict) else None
        if href is not None:
            assets[key] = {**asset, "href": href}
    if "assets" in out:
        out["assets"] = assets
    links = []
    for link in out.get("links", []):
        if not isinstance(link, dict) or link.get("rel") in drop:
            continue
        href = served(link.get("href"))
        if href is not None:
            links.append({**link, "href": href})
    out["links"] = links
    return out


def _index_item(data: dict[str, Any], collection: str) -> _Item:
    properties = data.get("properties", {})
    start = end = None
    if properties.get("datetime"):
        start = end = _parse_instant(properties["datetime"], "datetime")
    elif properties.get("start_datetime") and properties.get("end_datetime"):
        start = _parse_instant(properties["start_datetime"], "start_datetime")
        end = _parse_instant(properties["end_datetime"], "end_datetime")
    geometry = shape(data["geometry"]) if data.get("geometry") else None
    raw_bbox = data.get("bbox")
    bbox = (
        (float(raw_bbox[0]), float(raw_bbox[1]), float(raw_bbox[-2]), float(raw_bbox[-1]))
        if raw_bbox
        else (geometry.bounds if geometry is not None else None)
    )
    return _Item(data.get("collection", collection), data["id"], start, end, bbox, geometry, data)


# --- Parsing search parameters ---------------------------------------------------------------


def _parse_instant(text: str, parameter: str) -> datetime:
    """An RFC 3339 date-time (or a plain date, taken as midnight UTC) as an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApiError(parameter, f"not an RFC 3339 date-time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parse_datetime(text: str) -> tuple[datetime | None, datetime | None]:
    """A STAC ``datetime`` parameter: an instant, or an interval with ``..`` or empty open ends."""
    parts = text.split("/")
    if len(parts) == 1:
        if not parts[0] or parts[0] == "..":
            raise ApiError("datetime", f"an instant may not be open: {text!r}")
        instant = _parse_instant(parts[0], "datetime")
        if "T" not in parts[0].upper():
            return instant, instant + timedelta(days=1) - timedelta(microseconds=1)
        return instant, instant
    if len(parts) != 2:
        raise ApiError("datetime", f"expected an instant or 'start/end', got {text!r}")
    start = None if parts[0] in ("", "..") else _parse_instant(parts[0], "datetime")
    end = None if parts[1] in ("", "..") else _parse_instant(parts[1], "datetime")
    if start is None and end is None:
        raise ApiError("datetime", "both ends of the interval are open")
    if end is not None and "T" not in parts[1].upper():
        end = end + timedelta(days=1) - timedelta(microseconds=1)
    if start is not None and end is not None and start > end:
        raise ApiError("datetime", f"start is after end: {text!r}")
    return start, end


def _parse_bbox(value: Any) -> BaseGeometry:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or len(value) not in (4, 6):
        raise ApiError("bbox", f"expected 4 or 6 numbers, got {value!r}")
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ApiError("bbox", f"not numbers: {value!r}") from None
    west, south, east, north = (numbers[0], numbers[1], numbers[3], numbers[4]) if len(numbers) == 6 else numbers
    if not (-90.0 <= south <= north <= 90.0):
        raise ApiError("bbox", f"need -90 <= south <= north <= 90, got south={south}, north={north}")
    if not (-180.0 <= west <= 180.0 and -180.0 <= east <= 180.0):
        raise ApiError("bbox", f"longitudes must be within -180..180, got west={west}, east={east}")
    if west > east:  # crosses the antimeridian
        return box(west, south, 180.0, north).union(box(-180.0, south, east, north))
    return box(west, south, east, north)


def _parse_geojson(value: Any, parameter: str) -> BaseGeometry:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ApiError(parameter, "not valid JSON") from None
    if not isinstance(value, dict) or "type" not in value:
        raise ApiError(parameter, "expected a GeoJSON geometry object")
    try:
        geometry = shape(value)
    except Exception as exc:  # shapely raises several types for bad GeoJSON
        raise ApiError(parameter, f"invalid GeoJSON geometry: {exc}") from None
    if geometry.is_empty:
        raise ApiError(parameter, "empty geometry")
    return geometry if geometry.is_valid else shapely.make_valid(geometry)


def _parse_list(value: Any, parameter: str) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ApiError(parameter, f"expected a list of strings, got {value!r}")


def _parse_sortby(value: Any) -> list[tuple[str, bool]]:
    """``sortby`` as (field, descending) pairs, from "+a,-b" (GET) or [{field, direction}] (POST)."""
    fields: list[tuple[str, bool]] = []
    if isinstance(value, str):
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            descending = part.startswith("-")
            fields.append((part.lstrip("+- "), descending))
    elif isinstance(value, list):
        for entry in value:
            if not isinstance(entry, dict) or not isinstance(entry.get("field"), str):
                raise ApiError("sortby", f"expected {{'field': ..., 'direction': 'asc'|'desc'}}, got {entry!r}")
            direction = str(entry.get("direction", "asc")).lower()
            if direction not in ("asc", "desc"):
                raise ApiError("sortby", f"direction must be 'asc' or 'desc', got {direction!r}")
            fields.append((entry["field"], direction == "desc"))
    else:
        raise ApiError("sortby", f"expected a string or a list, got {value!r}")
    if not fields:
        raise ApiError("sortby", "no field given")
    return fields


def _parse_limit(value: Any) -> int:
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise ApiError("limit", f"not an integer: {value!r}") from None
    if limit < 1:
        raise ApiError("limit", f"must be >= 1, got {limit}")
    return min(limit, MAX_LIMIT)


def _parse_token(value: Any) -> int:
    text = str(value)
    prefix, _, number = text.partition(":")
    if prefix != "next" or not number.isdigit():
        raise ApiError("token", f"unknown paging token {text!r}")
    return int(number)


def _parse_json_object(value: Any, parameter: str) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ApiError(parameter, "not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(parameter, f"expected a JSON object, got {value!r}")
    return value


@dataclass
class _Search:
    collections: list[str] | None = None
    ids: list[str] | None = None
    area: BaseGeometry | None = None
    interval: tuple[datetime | None, datetime | None] | None = None
    limit: int = DEFAULT_LIMIT
    filter: dict[str, Any] | None = None
    query: dict[str, Any] | None = None
    sortby: list[tuple[str, bool]] = field(default_factory=lambda: [("datetime", True), ("id", False)])
    offset: int = 0


_SEARCH_KEYS = frozenset(
    {
        "collections",
        "ids",
        "bbox",
        "intersects",
        "datetime",
        "limit",
        "filter",
        "filter-lang",
        "filter_lang",
        "filter-crs",
        "query",
        "sortby",
        "token",
        "fields",
    }
)


def _parse_search(params: dict[str, Any]) -> _Search:
    """Validate search parameters (GET query string values or a POST body)."""
    search = _Search()
    if params.get("collections") not in (None, "", []):
        search.collections = _parse_list(params["collections"], "collections")
    if params.get("ids") not in (None, "", []):
        search.ids = _parse_list(params["ids"], "ids")
    if params.get("bbox") not in (None, "") and params.get("intersects") not in (None, ""):
        raise ApiError("intersects", "give either bbox or intersects, not both")
    if params.get("bbox") not in (None, ""):
        search.area = _parse_bbox(params["bbox"])
    if params.get("intersects") not in (None, ""):
        search.area = _parse_geojson(params["intersects"], "intersects")
    if params.get("datetime") not in (None, ""):
        if not isinstance(params["datetime"], str):
            raise ApiError("datetime", f"expected a string, got {params['datetime']!r}")
        search.interval = _parse_datetime(params["datetime"])
    if params.get("limit") not in (None, ""):
        search.limit = _parse_limit(params["limit"])
    if params.get("filter") not in (None, ""):
        language = params.get("filter-lang", params.get("filter_lang", "cql2-json"))
        if language != "cql2-json":
            raise ApiError("filter-lang", f"only cql2-json is supported, got {language!r}")
        crs = params.get("filter-crs")
        if crs not in (None, "http://www.opengis.net/def/crs/OGC/1.3/CRS84"):
            raise ApiError("filter-crs", f"only CRS84 is supported, got {crs!r}")
        search.filter = _parse_json_object(params["filter"], "filter")
        _check_cql2(search.filter)
    if params.get("query") not in (None, ""):
        search.query = _parse_json_object(params["query"], "query")
        _check_query(search.query)
    if params.get("sortby") not in (None, "", []):
        search.sortby = _parse_sortby(params["sortby"])
    if params.get("token") not in (None, ""):
        search.offset = _parse_token(params["token"])
    return search


# --- Matching -------------------------------------------------------------------------------------


def _property(item: _Item, name: str) -> Any:
    """The value of a queryable: id, collection, geometry, datetime or a property (``properties.`` optional)."""
    name = name.removeprefix("properties.")
    if name == "id":
        return item.id
    if name == "collection":
        return item.collection
    if name == "geometry":
        return item.geometry
    if name == "datetime":
        return item.start
    if name in ("start_datetime", "end_datetime"):
        value = item.data.get("properties", {}).get(name)
        return _parse_instant(value, name) if isinstance(value, str) else None
    return item.data.get("properties", {}).get(name)


_CQL2_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "<>": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}
_CQL2_OPS = frozenset({*_CQL2_COMPARISONS, "and", "or", "not", "in", "between", "isNull", "s_intersects"})


def _check_cql2(expression: Any) -> None:
    """Reject unknown CQL2-JSON operators before any item is looked at."""
    if isinstance(expression, dict):
        if "op" in expression:
            if expression["op"] not in _CQL2_OPS:
                raise ApiError("filter", f"unsupported CQL2 operator {expression['op']!r}")
            if not isinstance(expression.get("args"), list):
                raise ApiError("filter", f"operator {expression['op']!r} needs an 'args' list")
            for arg in expression["args"]:
                _check_cql2(arg)
    elif isinstance(expression, list):
        for arg in expression:
            _check_cql2(arg)


def _cql2_value(node: Any, item: _Item) -> Any:
    if isinstance(node, dict):
        if "property" in node:
            return _property(item, str(node["property"]))
        if "timestamp" in node:
            return _parse_instant(str(node["timestamp"]), "filter")
        if "date" in node:
            return _parse_instant(str(node["date"]), "filter")
        if "type" in node and "coordinates" in node:
            return _parse_geojson(node, "filter")
        if "bbox" in node:
            return _parse_bbox(node["bbox"])
        raise ApiError("filter", f"unsupported CQL2 value {node!r}")
    if isinstance(node, list):
        return [_cql2_value(v, item) for v in node]
    return node


def _comparable(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Both values of one comparable type (timestamps from strings when the other is a datetime)."""
    if a is None or b is None:
        return None
    if isinstance(a, datetime) and isinstance(b, str):
        b = _parse_instant(b, "filter")
    elif isinstance(b, datetime) and isinstance(a, str):
        a = _parse_instant(a, "filter")
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    if isinstance(a, numeric) and isinstance(b, numeric):
        return a, b
    if type(a) is type(b):
        return a, b
    return None


def _cql2(expression: Any, item: _Item) -> bool | None:
    """Evaluate a CQL2-JSON boolean expression; None means unknown (a missing property)."""
    if isinstance(expression, bool):
        return expression
    if not isinstance(expression, dict) or "op" not in expression:
        raise ApiError("filter", f"not a CQL2 boolean expression: {expression!r}")
    op, args = expression["op"], expression["args"]
    if op in ("and", "or"):
        results = [_cql2(arg, item) for arg in args]
        if op == "and":
            return False if False in results else (None if None in results else True)
        return True if True in results else (None if None in results else False)
    if op == "not":
        inner = _cql2(args[0], item)
        return None if inner is None else not inner
    values = [_cql2_value(arg, item) for arg in args]
    if op == "isNull":
        return values[0] is None
    if op in _CQL2_COMPARISONS:
        if len(values) != 2:
            raise ApiError("filter", f"operator {op!r} needs 2 arguments")
        pair = _comparable(values[0], values[1])
        return None if pair is None else _CQL2_COMPARISONS[op](*pair)
    if op == "between":
        if len(values) != 3:
            raise ApiError("filter", "operator 'between' needs 3 arguments")
        low, high = _comparable(values[0], values[1]), _comparable(values[0], values[2])
        return None if low is None or high is None else bool(low[1] <= low[0] <= high[1])
    if op == "in":
        if len(values) != 2 or not isinstance(values[1], list):
            raise ApiError("filter", "operator 'in' needs a value and a list")
        pairs = [_comparable(values[0], v) for v in values[1]]
        return None if values[0] is None else any(p is not None and p[0] == p[1] for p in pairs)
    # s_intersects
    geometries = [v for v in values if isinstance(v, BaseGeometry)]
    if len(geometries) != 2:
        return None
    return bool(geometries[0].intersects(geometries[1]))


_QUERY_OPS = frozenset({"eq", "neq", "lt", "lte", "gt", "gte", "startsWith", "endsWith", "contains", "in"})


def _check_query(query: dict[str, Any]) -> None:
    for name, conditions in query.items():
        if not isinstance(conditions, dict):
            raise ApiError("query", f"{name}: expected an object of operators, got {conditions!r}")
        for op in conditions:
            if op not in _QUERY_OPS:
                raise ApiError("query", f"{name}: unsupported operator {op!r} (use {sorted(_QUERY_OPS)})")


def _query_matches(query: dict[str, Any], item: _Item) -> bool:
    """The STAC API ``query`` extension: every condition on every property must hold."""
    for name, conditions in query.items():
        value = _property(item, name)
        if name.removeprefix("properties.") == "datetime" and value is not None:
            value = value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for op, target in conditions.items():
            if op == "in":
                if not isinstance(target, list) or value not in target:
                    return False
                continue
            if op in ("startsWith", "endsWith", "contains"):
                if not isinstance(value, str) or not isinstance(target, str):
                    return False
                method = {"startsWith": value.startswith, "endsWith": value.endswith, "contains": value.__contains__}
                if not method[op](target):
                    return False
                continue
            pair = _comparable(value, target)
            symbol = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
            if pair is None or not _CQL2_COMPARISONS[symbol](*pair):
                return False
    return True


def _matches(search: _Search, item: _Item) -> bool:
    if search.collections is not None and item.collection not in search.collections:
        return False
    if search.ids is not None and item.id not in search.ids:
        return False
    if search.interval is not None:
        start, end = search.interval
        if item.start is None or item.end is None:
            return False
        if (end is not None and item.start > end) or (start is not None and item.end < start):
            return False
    if search.area is not None:
        if item.geometry is None or item.bbox is None:
            return False
        west, south, east, north = search.area.bounds
        ib = item.bbox
        if ib[0] > east or ib[2] < west or ib[1] > north or ib[3] < south:
            return False
        if not item.geometry.intersects(search.area):
            return False
    if search.query is not None and not _query_matches(search.query, item):
        return False
    return not (search.filter is not None and _cql2(search.filter, item) is not True)


def _sorted(items: list[_Item], sortby: list[tuple[str, bool]]) -> list[_Item]:
    """Items ordered by the ``sortby`` fields; items lacking a field come last."""
    ordered = list(items)
    for name, descending in reversed(sortby):
        present = [i for i in ordered if _property(i, name) is not None]
        missing = [i for i in ordered if _property(i, name) is None]
        present.sort(key=_sort_key_of(name), reverse=descending)
        ordered = present + missing
    return ordered


def _sort_key_of(name: str) -> Callable[[_Item], tuple[int, Any]]:
    def key(item: _Item) -> tuple[int, Any]:
        return _sort_key(_property(item, name))

    return key


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, datetime):
        return (1, value.timestamp())
    return (2, str(value))


# --- Responses ----------------------------------------------------------------------------------


def _absolute(href: str, base: str) -> str:
    if "://" in href or href.startswith("/vsi"):
        return href
    relative = href.removeprefix("./").lstrip("/")
    return f"{base}/{relative}"


def _item_json(item: _Item, base: str) -> dict[str, Any]:
    data = copy.deepcopy(item.data)
    for asset in data.get("assets", {}).values():
        if isinstance(asset.get("href"), str):
            asset["href"] = _absolute(asset["href"], base)
    collection_url = f"{base}/collections/{item.collection}"
    links = [
        {**link, "href": _absolute(link["href"], base)}
        for link in data.get("links", [])
        if link.get("rel") not in _REWRITTEN_RELS
    ]
    data["links"] = [
        {"rel": "collection", "href": collection_url, "type": "application/json"},
        {"rel": "parent", "href": collection_url, "type": "application/json"},
        {"rel": "root", "href": f"{base}/", "type": "application/json"},
        {"rel": "self", "href": f"{collection_url}/items/{item.id}", "type": GEOJSON},
        *links,
    ]
    return data


def _collection_json(data: dict[str, Any], base: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    url = f"{base}/collections/{data['id']}"
    links = [
        {**link, "href": _absolute(link["href"], base)}
        for link in out.get("links", [])
        if link.get("rel") not in {*_REWRITTEN_RELS, "items"}
    ]
    out["links"] = [
        {"rel": "self", "href": url, "type": "application/json"},
        {"rel": "parent", "href": f"{base}/", "type": "application/json"},
        {"rel": "root", "href": f"{base}/", "type": "application/json"},
        {"rel": "items", "href": f"{url}/items", "type": GEOJSON},
        *links,
    ]
    for asset in out.get("assets", {}).values():
        if isinstance(asset.get("href"), str):
            asset["href"] = _absolute(asset["href"], base)
    return out


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _index(request: Request) -> StacIndex:
    index: StacIndex = request.app.state.index
    index.refresh()
    return index


def _error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    code = "InvalidParameterValue" if exc.status == 400 else "NotFound"
    return JSONResponse({"code": code, "description": exc.message, "parameter": exc.parameter}, status_code=exc.status)


async def _landing(request: Request) -> Response:
    base = _base_url(request)
    index = _index(request)
    links = [
        {"rel": "self", "href": f"{base}/", "type": "application/json"},
        {"rel": "root", "href": f"{base}/", "type": "application/json"},
        {"rel": "conformance", "href": f"{base}/conformance", "type": "application/json"},
        {"rel": "data", "href": f"{base}/collections", "type": "application/json"},
        {"rel": "search", "href": f"{base}/search", "type": GEOJSON, "method": "GET"},
        {"rel": "search", "href": f"{base}/search", "type": GEOJSON, "method": "POST"},
        *(
            {"rel": "child", "href": f"{base}/collections/{cid}", "type": "application/json"}
            for cid in sorted(index.collections)
        ),
    ]
    return JSONResponse(
        {
            "type": "Catalog",
            "id": "rtsmonitor-local-stac",
            "title": "RTS monitor local STAC API",
            "description": "Offline stand-in for the Microsoft Planetary Computer STAC API.",
            "stac_version": "1.0.0",
            "conformsTo": list(CONFORMS_TO),
            "links": links,
        }
    )


async def _conformance(request: Request) -> Response:
    return JSONResponse({"conformsTo": list(CONFORMS_TO)})


async def _collections(request: Request) -> Response:
    base = _base_url(request)
    index = _index(request)
    return JSONResponse(
        {
            "collections": [_collection_json(c, base) for _, c in sorted(index.collections.items())],
            "links": [
                {"rel": "self", "href": f"{base}/collections", "type": "application/json"},
                {"rel": "root", "href": f"{base}/", "type": "application/json"},
            ],
        }
    )


def _collection_or_404(index: StacIndex, collection_id: str) -> dict[str, Any]:
    if collection_id not in index.collections:
        raise ApiError("collection", f"no collection {collection_id!r}", status=404)
    return index.collections[collection_id]


async def _collection(request: Request) -> Response:
    index = _index(request)
    collection = _collection_or_404(index, request.path_params["collection_id"])
    return JSONResponse(_collection_json(collection, _base_url(request)))


async def _item(request: Request) -> Response:
    index = _index(request)
    collection_id = request.path_params["collection_id"]
    _collection_or_404(index, collection_id)
    item_id = request.path_params["item_id"]
    for item in index.items:
        if item.collection == collection_id and item.id == item_id:
            return JSONResponse(_item_json(item, _base_url(request)), media_type=GEOJSON)
    raise ApiError("item", f"no item {item_id!r} in collection {collection_id!r}", status=404)


def _page(request: Request, search: _Search, self_url: str, next_link: Callable[[int], dict[str, Any]]) -> Response:
    index = _index(request)
    base = _base_url(request)
    matched = _sorted([item for item in index.items if _matches(search, item)], search.sortby)
    page = matched[search.offset : search.offset + search.limit]
    links: list[dict[str, Any]] = [
        {"rel": "self", "href": self_url, "type": GEOJSON},
        {"rel": "root", "href": f"{base}/", "type": "application/json"},
    ]
    if search.offset + search.limit < len(matched):
        links.append(next_link(search.offset + search.limit))
    body = {
        "type": "FeatureCollection",
        "features": [_item_json(item, base) for item in page],
        "links": links,
        "numberMatched": len(matched),
        "numberReturned": len(page),
        "context": {"returned": len(page), "limit": search.limit, "matched": len(matched)},
    }
    return JSONResponse(body, media_type=GEOJSON)


def _get_next(request: Request, path: str) -> Callable[[int], dict[str, Any]]:
    params = {k: v for k, v in request.query_params.items() if k != "token"}

    def link(offset: int) -> dict[str, Any]:
        query = urlencode({**params, "token": f"next:{offset}"})
        return {"rel": "next", "href": f"{_base_url(request)}{path}?{query}", "type": GEOJSON, "method": "GET"}

    return link


async def _items(request: Request) -> Response:
    index = _index(request)
    collection_id = request.path_params["collection_id"]
    _collection_or_404(index, collection_id)
    params: dict[str, Any] = dict(request.query_params)
    unknown = sorted(set(params) - {"limit", "bbox", "datetime", "token", "sortby", "filter", "filter-lang", "query"})
    if unknown:
        raise ApiError(unknown[0], "not a parameter of /items")
    search = _parse_search({**params, "collections": [collection_id]})
    path = f"/collections/{collection_id}/items"
    return _page(request, search, str(request.url), _get_next(request, path))


async def _search(request: Request) -> Response:
    if request.method == "POST":
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise ApiError("body", "not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError("body", "expected a JSON object")
        params: dict[str, Any] = body
        base = _base_url(request)
        next_link: Callable[[int], dict[str, Any]]

        def next_post(offset: int) -> dict[str, Any]:
            return {
                "rel": "next",
                "href": f"{base}/search",
                "type": GEOJSON,
                "method": "POST",
                "body": {**body, "token": f"next:{offset}"},
                "merge": False,
            }

        next_link = next_post
    else:
        params = dict(request.query_params)
        next_link = _get_next(request, "/search")
    unknown = sorted(set(params) - _SEARCH_KEYS)
    if unknown:
        raise ApiError(unknown[0], "not a search parameter")
    return _page(request, _parse_search(params), f"{_base_url(request)}/search", next_link)


# --- Byte accounting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferStats:
    """What the server sent since the last reset.

    Attributes
    ----------
    bytes_total : response body bytes sent, all requests.
    requests : number of requests.
    bytes_by_path : body bytes per request path (e.g. ``/files/sentinel-2-l2a/.../B02_10m.tif``).
    requests_by_path : requests per path.
    """

    bytes_total: int
    requests: int
    bytes_by_path: dict[str, int]
    requests_by_path: dict[str, int]


class TransferCounter:
    """Thread-safe counters of requests and response body bytes, per request path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes: dict[str, int] = {}
        self._requests: dict[str, int] = {}

    def add_request(self, path: str) -> None:
        """Count one request to ``path``."""
        with self._lock:
            self._requests[path] = self._requests.get(path, 0) + 1

    def add_bytes(self, path: str, count: int) -> None:
        """Count ``count`` body bytes sent for ``path``."""
        with self._lock:
            self._bytes[path] = self._bytes.get(path, 0) + count

    def snapshot(self) -> TransferStats:
        """The counts so far."""
        with self._lock:
            return TransferStats(
                bytes_total=sum(self._bytes.values()),
                requests=sum(self._requests.values()),
                bytes_by_path=dict(self._bytes),
                requests_by_path=dict(self._requests),
            )

    def reset(self) -> None:
        """Set every count back to zero."""
        with self._lock:
            self._bytes.clear()
            self._requests.clear()


class ByteCountingMiddleware:
    """ASGI middleware counting requests and the response body bytes actually sent, per path."""

    def __init__(self, app: ASGIApp, counter: TransferCounter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, counting it and the body bytes of its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        self.counter.add_request(path)
        extensions = scope.get("extensions") or {}
        if "http.response.pathsend" in extensions:  # make file bodies pass through ``send``
            scope = {**scope, "extensions": {k: v for k, v in extensions.items() if k != "http.response.pathsend"}}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                self.counter.add_bytes(path, len(message.get("body", b"")))
            await send(message)

        await self.app(scope, receive, counting_send)


# --- The app and the server ---------------------------------------------------------------------


def create_app(
    root: Path | None, *, static_root: Path | None = None, static_catalog: str = STATIC_CATALOG
) -> Starlette:
    """The STAC API + file server over ``root`` and/or the static catalog ``static_root/static_catalog``.

    ``app.state.index`` is the :class:`StacIndex`, ``app.state.counter`` the :class:`TransferCounter`
    of the byte accounting.
    """
    if root is None and static_root is None:
        raise ValueError("give a corpus folder (root), a static catalog folder (static_root), or both")
    index = StacIndex(root, static_root=static_root, static_catalog=static_catalog)
    counter = TransferCounter()
    mounts = []
    if root is not None:
        mounts.append(Mount("/files", app=StaticFiles(directory=Path(root) / "files", check_dir=False), name="files"))
    if static_root is not None:
        mounts.append(Mount(STATIC_PATH, app=StaticFiles(directory=Path(static_root), check_dir=False), name="static"))
    routes = [
        Route("/", _landing, methods=["GET"]),
        Route("/conformance", _conformance, methods=["GET"]),
        Route("/collections", _collections, methods=["GET"]),
        Route("/collections/{collection_id}", _collection, methods=["GET"]),
        Route("/collections/{collection_id}/items", _items, methods=["GET"]),
        Route("/collections/{collection_id}/items/{item_id}", _item, methods=["GET"]),
        Route("/search", _search, methods=["GET", "POST"]),
        *mounts,
        Route(STATS_PATH, _stats, methods=["GET"]),
        Route(STATS_PATH + "/reset", _reset_stats, methods=["POST"]),
        Route(RELOAD_PATH, _reload, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ByteCountingMiddleware, counter=counter)],
        exception_handlers={ApiError: _error_response},
    )
    app.state.index = index
    app.state.counter = counter
    return app


STATS_PATH = "/_stats"
"""Non-STAC endpoint of the stand-in: GET the transfer counters, POST ``/_stats/reset`` to zero them."""
RELOAD_PATH = "/_reload"
"""Non-STAC endpoint of the stand-in: POST to re-read the folder's collections and items."""


async def _stats(request: Request) -> Response:
    counter: TransferCounter = request.app.state.counter
    return JSONResponse(dataclasses.asdict(counter.snapshot()))


async def _reset_stats(request: Request) -> Response:
    counter: TransferCounter = request.app.state.counter
    counter.reset()
    return Response(status_code=204)


async def _reload(request: Request) -> Response:
    _index(request).reload()
    return Response(status_code=204)


class LocalStacServer:
    """The app of :func:`create_app` served by uvicorn in a child process on a loopback port.

    A separate process, not a thread: GDAL calls that hold the GIL (rasterio's sidecar-file probe
    on open, for one) would otherwise deadlock against a server in the same interpreter. Use as a
    context manager::

        with LocalStacServer(root) as server:
            client = pystac_client.Client.open(server.url)
    """

    def __init__(
        self,
        root: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        static_root: Path | None = None,
        static_catalog: str = STATIC_CATALOG,
    ) -> None:
        if root is None and static_root is None:
            raise ValueError("give a corpus folder (root), a static catalog folder (static_root), or both")
        self.root = None if root is None else Path(root)
        self.static_root = None if static_root is None else Path(static_root)
        self.static_catalog = static_catalog
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._process: subprocess.Popen[str] | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        if self._port is None:
            raise RuntimeError("the server is not running")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the child process; returns once the server accepts connections."""
        if self._process is not None:
            raise RuntimeError("the server is already running")
        command = [
            sys.executable,
            "-m",
            "rtsmonitor.offline.stacserver",
            *([] if self.root is None else [str(self.root)]),
            "--host",
            self.host,
            "--port",
            str(self._requested_port),
        ]
        if self.static_root is not None:
            command += ["--static-root", str(self.static_root), "--static-catalog", self.static_catalog]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self._stdout_line()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not ready or not ready[0].startswith(READY_PREFIX):
            self.stop()
            where = self.root if self.root is not None else self.static_root
            raise RuntimeError(f"local STAC server over {where} did not start within {timeout_s} s")
        self._port = int(ready[0].removeprefix(READY_PREFIX))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"local STAC server at {self.url} does not answer") from None
                time.sleep(0.05)

    def _stdout_line(self) -> str:
        assert self._process is not None and self._process.stdout is not None
        return self._process.stdout.readline().strip()

    def stop(self) -> None:
        """Stop the child process and wait for it."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
        self._process = None
        self._port = None

    def __enter__(self) -> LocalStacServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _post(self, path: str) -> None:
        request = urllib.request.Request(self.url + path, method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stats(self) -> TransferStats:
        """Requests and body bytes sent since start or the last :meth:`reset_stats`."""
        with urllib.request.urlopen(self.url + STATS_PATH, timeout=10) as response:
            data = json.loads(response.read())
        return TransferStats(**data)

    def reset_stats(self) -> None:
        """Zero the transfer counters."""
        self._post(STATS_PATH + "/reset")

    def reload(self) -> None:
        """Re-read the folder's (and the static catalog's) collections and items now."""
        self._post(RELOAD_PATH)


READY_PREFIX = "rts-stac-server listening on port "
"""First line the child process prints once its socket is bound."""


def _serve_child(argv: list[str]) -> None:
    """Entry point of the child process: bind, announce the port on stdout, serve until terminated."""
    parser = argparse.ArgumentParser(prog="python -m rtsmonitor.offline.stacserver")
    parser.add_argument("root", type=Path, nargs="?")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--static-root", type=Path)
    parser.add_argument("--static-catalog", default=STATIC_CATALOG)
    args = parser.parse_args(argv)
    app = create_app(args.root, static_root=args.static_root, static_catalog=args.static_catalog)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
    print(f"{READY_PREFIX}{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def serve(
    root: Path | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    static_root: Path | None = None,
    static_catalog: str = STATIC_CATALOG,
) -> None:
    """Serve ``root`` (and/or a static catalog) in the foreground until interrupted (for a CLI command)."""
    app = create_app(
        None if root is None else Path(root),
        static_root=None if static_root is None else Path(static_root),
        static_catalog=static_catalog,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


if __name__ == "__main__":
    _serve_child(sys.argv[1:])
