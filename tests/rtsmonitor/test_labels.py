"""Label polygons: the real Nitze et al. 2021 files, other formats and CRSs, rasterisation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely

from rtsmonitor.errors import ConfigError
from rtsmonitor.grid import project_geometry
from rtsmonitor.labels import by_date, rasterise, read_labels
from rtsmonitor.sites import LabelSource, paper_site

REAL_LABELS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "labels"


def test_real_labels_of_a_paper_site() -> None:
    site = paper_site("horton01")
    labels = read_labels(site.labels[0], REAL_LABELS)
    groups = by_date(labels)
    assert len(labels) == 180
    assert list(groups) == [dt.date(2019, 6, 22), dt.date(2019, 7, 14), dt.date(2019, 8, 3), dt.date(2019, 9, 5)]
    assert all(label.geometry.is_valid for label in labels)
    mask = rasterise(groups[dt.date(2019, 7, 14)], site.grid())
    area_km2 = mask.sum() * 100 / 1e6
    assert 1.0 < area_km2 < 3.0  # the paper's sites hold roughly 1-2 km^2 of RTS per 100 km^2


def test_invalid_label_geometries_are_repaired() -> None:
    source = LabelSource(path="labels:nitze2021_rts_Herschel.geojson", site_field="site", site_value="Herschel_01")
    raw = pyogrio.raw.read(REAL_LABELS / "nitze2021_rts_Herschel.geojson")[2]
    assert not all(shapely.from_wkb(b).is_valid for b in raw)  # the file holds invalid polygons
    labels = read_labels(source, REAL_LABELS)
    assert len(labels) == 148
    assert all(label.geometry.is_valid and not label.geometry.is_empty for label in labels)


@pytest.mark.parametrize(("driver", "suffix"), [("GPKG", ".gpkg"), ("ESRI Shapefile", ".shp")])
def test_other_formats_and_crs_give_the_same_mask(tmp_path: Path, driver: str, suffix: str) -> None:
    site = paper_site("horton01")
    grid = site.grid()
    original = [lab for lab in read_labels(site.labels[0], REAL_LABELS) if lab.date == dt.date(2019, 7, 14)]
    utm = [project_geometry(lab.geometry, grid.epsg) for lab in original]
    path = tmp_path / f"labels{suffix}"
    pyogrio.raw.write(
        path,
        np.array([shapely.to_wkb(g) for g in utm], dtype=object),
        [np.array(["2019-07-14"] * len(utm), dtype=object)],
        fields=["day"],
        geometry_type="Polygon",
        crs=f"EPSG:{grid.epsg}",
        driver=driver,
    )
    again = read_labels(LabelSource(path=str(path), date_field="day"))
    assert len(again) == len(original)
    expected = rasterise(original, grid)
    got = rasterise(again, grid)
    assert np.count_nonzero(expected != got) <= 0.001 * expected.sum()


def test_missing_file_and_field_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_labels(LabelSource(path=str(tmp_path / "nope.geojson")))
    source = LabelSource(path="labels:nitze2021_rts_Lena.geojson", site_field="region_name", site_value="Lena")
    with pytest.raises(ConfigError, match="region_name"):
        read_labels(source, REAL_LABELS)


def test_unparsable_date_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"image_date": "July"},'
        ' "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0, 0.001], [0.001, 0.001], [0, 0]]]}}]}'
    )
    with pytest.raises(ConfigError, match="'July' is not a date"):
        read_labels(LabelSource(path=str(path)))
