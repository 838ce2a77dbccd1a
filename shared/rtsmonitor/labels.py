"""RTS label polygons: read any vector file (GeoPackage, Shapefile, GeoJSON; any CRS) and rasterise.

The paper's labels are the RTS polygons of Nitze et al. 2021 ("Evaluating a deep-learning
approach for mapping retrogressive thaw slumps across the Arctic", AGU Fall Meeting 2021), as
compiled in the ARTS data set (github.com/whrc/ARTS, CC0 1.0). They were drawn on 3 m PlanetScope
images, so their edges are finer than a 10 m pixel: a pixel is RTS when its centre lies inside a
polygon (rasterio's default rule), which keeps the labelled area unbiased on average.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from rtsmonitor.errors import ConfigError
from rtsmonitor.grid import SiteGrid, burn_wgs84
from rtsmonitor.sites import LabelSource


@dataclass(frozen=True)
class Label:
    """One RTS polygon in WGS84 with the date of the image it was drawn on."""

    geometry: BaseGeometry
    date: dt.date


def read_labels(source: LabelSource, labels_dir: Path | str | None = None) -> list[Label]:
    """The polygons of ``source`` in WGS84 (lon, lat), repaired when invalid, with their dates.

    Rows are selected by ``site_field == site_value`` when given. Invalid polygons (self-touching
    rings are common in hand-drawn labels) are repaired with ``make_valid``; empty geometries are
    dropped. A missing file, field or unparsable date is a :class:`ConfigError` naming it.
    """
    path = source.resolved_path(labels_dir) if labels_dir is not None else source.resolved_path()
    if not path.exists():
        raise ConfigError(str(path), [("labels.path", f"label file {str(path)!r} does not exist")])
    info = pyogrio.read_info(path)
    fields = [str(f) for f in info["fields"]]
    wanted = [f for f in (source.site_field, None if source.date else source.date_field) if f]
    missing = [f for f in wanted if f not in fields]
    if missing:
        raise ConfigError(str(path), [("labels", f"field(s) {missing} not in {path.name} (has {fields})")])
    meta, _, wkb, columns = pyogrio.raw.read(path, columns=wanted)
    values = dict(zip([str(f) for f in meta["fields"]], columns, strict=True))  # in file order
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else CRS.from_epsg(4326)
    to_wgs84 = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    labels = []
    for i, blob in enumerate(wkb):
        if source.site_field and str(values[source.site_field][i]) != source.site_value:
            continue
        if blob is None:
            continue
        geometry = shapely.transform(shapely.from_wkb(blob), to_wgs84.transform, interleaved=False)
        if not geometry.is_valid:
            geometry = shapely.make_valid(geometry)
        if geometry.is_empty:
            continue
        labels.append(Label(geometry, source.date or _parse_date(values[source.date_field][i], path, i)))
    return labels


def _parse_date(value: object, path: Path, row: int) -> dt.date:
    if isinstance(value, dt.date):
        return value
    text = str(value)[:10]
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(str(path), [("labels.date_field", f"row {row}: {value!r} is not a date YYYY-MM-DD")]) from exc


def by_date(labels: list[Label]) -> dict[dt.date, list[Label]]:
    """Labels grouped by image date, dates in order."""
    groups: dict[dt.date, list[Label]] = defaultdict(list)
    for label in labels:
        groups[label.date].append(label)
    return dict(sorted(groups.items()))


def rasterise(labels: list[Label], grid: SiteGrid) -> NDArray[np.bool_]:
    """Boolean RTS mask on ``grid``: True where a pixel centre lies inside a label polygon."""
    return burn_wgs84([label.geometry for label in labels], grid)
