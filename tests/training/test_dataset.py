"""Tests of the dataset builder (rtstrain.dataset) end to end on a quick paper corpus served locally."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
from click.testing import CliRunner

from rtsmonitor.cli import main
from rtsmonitor.grid import project_geometry
from rtsmonitor.labels import rasterise, read_labels
from rtsmonitor.modelstore import file_sha256
from rtsmonitor.offline.paper import PaperCorpusSummary, build_paper_corpus
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.sites import LabelSource, paper_site
from rtsmonitor.stack import read_stack
from rtstrain.dataset import (
    DATASET_LAYERS,
    DatasetError,
    DatasetManifest,
    build_dataset,
    images_hash,
)

REAL_LABELS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "labels"
SITE = "kolguev02"
NO_SCENE_DATE = dt.date(2019, 12, 20)


@dataclass
class Built:
    corpus: PaperCorpusSummary
    url: str
    out: Path
    manifest: DatasetManifest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """A two-image paper corpus of one site, served locally, and the dataset built from it."""
    tmp = tmp_path_factory.mktemp("dataset")
    corpus = build_paper_corpus(tmp / "corpus", REAL_LABELS, sites=[SITE], max_images_per_site=2, progress=False)
    with LocalStacServer(corpus.root) as server:
        out = tmp / "dataset"
        manifest = build_dataset([paper_site(SITE)], server.url, out, corpus.labels_dir, progress=False)
        yield Built(corpus, server.url, out, manifest)


def test_counts_and_merged_groups_as_designed(built: Built) -> None:
    plan = built.corpus.sites[SITE]
    manifest = built.manifest
    assert manifest.counts() == built.corpus.expected_counts() == {SITE: 2}
    assert manifest.dropped == []
    assert manifest.synthetic
    images = {image.label_date: image for image in manifest.images}
    assert sorted(images) == sorted(d.isoformat() for d in plan.image_label_dates)
    merged = {d.isoformat() for c in plan.clusters for d in c} - set(images)
    assert merged and {d for i in manifest.images for d in i.merged_label_dates} == merged
    for cluster, clear_day, label_date in zip(plan.clusters, plan.clear_dates, plan.image_label_dates, strict=True):
        image = images[label_date.isoformat()]
        assert image.scene_date == clear_day.isoformat()  # the clear scene, not a nearer distractor
        assert image.merged_label_dates == tuple(d.isoformat() for d in cluster if d != label_date)
        assert image.site_cloud_pct <= 10.0 and image.valid_fraction >= 0.5
        assert image.processing_baselines and image.days_from_label == (clear_day - label_date).days
    assert "closest in time to the scene (ties: the earlier label date)" in manifest.rule


def test_images_have_six_named_layers_and_the_chosen_groups_mask(built: Built) -> None:
    site = paper_site(SITE)
    labels = read_labels(site.labels[0], built.corpus.labels_dir)
    for image in built.manifest.images:
        path = built.out / image.path
        assert path.name == f"{SITE}_{image.label_date}.tif"
        assert file_sha256(path) == image.sha256
        stack = read_stack(path)
        assert stack.layers == DATASET_LAYERS
        assert stack.grid == site.grid()
        group = [lab for lab in labels if lab.date.isoformat() == image.label_date]
        expected = rasterise(group, site.grid())
        assert image.label_polygons == len(group)
        assert image.rts_pixels == int(expected.sum()) > 0
        np.testing.assert_array_equal(stack.layer("mask") == 1.0, expected)
        assert np.isfinite(stack.layer("slope")).all()
        assert stack.meta["label_date"] == image.label_date
    assert built.manifest.verify_files(built.out) == []


def test_manifest_round_trip_and_hash(built: Built) -> None:
    path = built.out / "manifest.json"
    loaded = DatasetManifest.load(built.out)
    assert loaded == built.manifest
    data = json.loads(path.read_text())
    assert data["manifest_sha256"] == images_hash(loaded.images) == built.manifest.manifest_sha256
    assert data["layers"] == list(DATASET_LAYERS) and data["counts"] == {SITE: 2}
    data["images"][0]["rts_pixels"] += 1
    tampered = built.out / "tampered.json"
    tampered.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="does not match its images"):
        DatasetManifest.load(tampered)
    with pytest.raises(DatasetError, match="no dataset manifest"):
        DatasetManifest.load(built.out / "missing.json")


def test_geopackage_in_utm_gives_the_same_mask_and_a_far_date_is_dropped(built: Built, tmp_path: Path) -> None:
    site = paper_site(SITE)
    grid = site.grid()
    image = built.manifest.images[-1]
    labels = [
        lab for lab in read_labels(site.labels[0], built.corpus.labels_dir) if lab.date.isoformat() == image.label_date
    ]
    shapes = [project_geometry(lab.geometry, grid.epsg) for lab in labels]
    dates = [image.label_date] * len(shapes)
    shapes.append(shapes[0])  # the same slump, labelled on a date with no scene near it
    dates.append(NO_SCENE_DATE.isoformat())
    gpkg = tmp_path / "labels_utm.gpkg"
    pyogrio.raw.write(
        gpkg,
        np.array([shapely.to_wkb(s) for s in shapes], dtype=object),
        [np.array(dates, dtype=object)],
        ["image_date"],
        driver="GPKG",
        geometry_type="MultiPolygon",
        crs=f"EPSG:{grid.epsg}",
        promote_to_multi=True,
    )
    config = site.model_copy(update={"labels": [LabelSource(path=str(gpkg), date_field="image_date")]})
    manifest = build_dataset([config], built.url, tmp_path / "dataset", tmp_path, progress=False)
    assert [i.label_date for i in manifest.images] == [image.label_date]
    again = manifest.images[0]
    assert again.scene_id == image.scene_id and again.rts_pixels == image.rts_pixels
    np.testing.assert_array_equal(
        read_stack(tmp_path / "dataset" / again.path).layer("mask"), read_stack(built.out / image.path).layer("mask")
    )
    (dropped,) = manifest.dropped
    assert dropped.site_id == SITE and dropped.label_date == NO_SCENE_DATE.isoformat()
    assert dropped.stage == "scene" and "no scene within 45 d of 2019-12-20" in dropped.reason


def test_cli_dataset_build(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["dataset", "build", "--out", str(out), "--site", SITE, "--labels-dir", str(built.corpus.labels_dir)]
    result = CliRunner().invoke(main, [*args, "--stac-url", built.url])
    assert result.exit_code == 0, result.output
    assert "2 image(s), 1 group(s) merged, 0 dropped" in result.output
    assert built.manifest.manifest_sha256 in result.output  # same images, same bytes, same hash
    assert DatasetManifest.load(out).manifest_sha256 == built.manifest.manifest_sha256


def test_rtsmonitor_does_not_import_rtstrain() -> None:
    code = "import sys, rtsmonitor.cli; assert 'rtstrain' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
