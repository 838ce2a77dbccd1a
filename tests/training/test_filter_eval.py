"""The filter before/after evaluation: tables from two tiny images, the report section, clouded views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_dataset import write_dataset

from rtsmonitor.filters import FILTER_NAMES
from rtsmonitor.imagery import SCL_UNUSABLE
from rtsmonitor.modelstore import DEMO_BUNDLE
from rtsmonitor.offline.corpus import build_corpus
from rtsmonitor.sites import SiteConfig
from rtsmonitor.stack import INPUT_LAYERS, MASK_LAYER, Stack
from rtsmonitor.tiers import TIERS
from rtstrain.filter_eval import (
    CONFIGURATIONS,
    JSON_KEY,
    PAPER_CORPUS_JSON,
    SECTION_HEADING,
    EvalImage,
    clouded_images,
    evaluate_filters,
    main,
    markdown_section,
    update_markdown_report,
)

IMAGES = ["site1_2019-07-01", "site2_2019-07-02"]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    dataset = write_dataset(tmp_path_factory.mktemp("dataset"), seeds=(1, 2))
    return evaluate_filters(dataset, DEMO_BUNDLE, IMAGES)


def test_every_filter_set_is_scored(result: dict) -> None:
    test = result["sets"]["test"]
    assert test["images"] == IMAGES and not test["scl"]
    assert list(test["configurations"]) == [name for name, _ in CONFIGURATIONS]
    confs = test["configurations"]
    assert confs["none"]["removed_objects"] == 0
    for name in FILTER_NAMES:
        assert confs[name]["removed_objects"] <= confs["all"]["removed_objects"]
        # a filter only removes predictions: it never adds true positives
        assert confs[name]["pixel"]["tp"] <= confs["none"]["pixel"]["tp"]
        assert (
            confs[name]["pixel"]["tp"] + confs[name]["pixel"]["fn"]
            == confs["none"]["pixel"]["tp"] + confs["none"]["pixel"]["fn"]
        )
    assert confs["defaults"]["filters"] == ["water", "mmu", "flat"]
    assert all(v > 0 for v in test["unobserved_fraction"].values())  # the tiny images have a cloud
    assert set(test["tiers"]) == set(TIERS)
    assert result["threshold_mid"] == pytest.approx(1 - (1 - result["threshold"]) / 2)


def test_markdown_section_and_report_update(result: dict, tmp_path: Path) -> None:
    section = markdown_section(result)
    assert section.startswith(SECTION_HEADING)
    assert "| no filter |" in section and "| all four |" in section and "### Confidence tiers" in section
    report = tmp_path / "report.md"
    report.write_text("# RTS U-Net evaluation\n\n## Primary model\n\ntext\n")
    update_markdown_report(report, section)  # appended
    report.write_text(report.read_text() + "\n## Later section\n\nkept\n")
    update_markdown_report(report, section)  # a re-run replaces the section in place
    text = report.read_text()
    assert text.count(SECTION_HEADING) == 1 and "## Primary model\n\ntext\n\n" + SECTION_HEADING in text
    assert text.endswith(section + "\n## Later section\n\nkept\n")


def test_command_writes_the_report(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset", seeds=(1,))
    report = tmp_path / "report.md"
    report.write_text("# RTS U-Net evaluation\n")
    (tmp_path / "report.json").write_text(json.dumps({"primary": {}}))
    out = CliRunner().invoke(main, ["--dataset", str(dataset), "--image", "site1_2019-07-01", "--report", str(report)])
    assert out.exit_code == 0, out.output
    assert "| filters | pixel precision |" in out.output and SECTION_HEADING in report.read_text()
    stored = json.loads((tmp_path / "report.json").read_text())
    assert set(stored) == {"primary", JSON_KEY} and stored[JSON_KEY]["sets"]["test"]["images"] == ["site1_2019-07-01"]


def test_clouded_view_reads_the_corpus_scene_with_scl(tmp_path: Path) -> None:
    config = SiteConfig.model_validate(
        {"id": "tiny01", "name": "T", "centre": {"lon": -126.75, "lat": 69.75, "size_km": 1}}
    )
    grid = config.grid()
    corpus = build_corpus(tmp_path / "stac", [("tiny01", grid)], [2021], scenes_per_year=1, seed=3, progress=False)
    (scene,) = corpus.scenes_for("tiny01", 2021)
    when = scene.spec.datetime
    plan = {
        "acquisitions": [
            {
                "datetime": when.isoformat(),
                "item_ids": list(scene.item_ids),
                "measured": {"tiny01": {"valid_fraction": 0.6, "coverage": 1.0}},
            }
        ]
    }
    (corpus.root / PAPER_CORPUS_JSON).write_text(json.dumps(plan))
    mask = np.zeros(grid.shape, np.float32)
    mask[10:20, 10:20] = 1.0
    data = np.concatenate([np.zeros((len(INPUT_LAYERS), *grid.shape), np.float32), mask[None]])
    stack = Stack(data, (*INPUT_LAYERS, MASK_LAYER), grid, {"scene": {"datetime": when.isoformat()}})
    image = EvalImage("tiny01_2021-07-01", stack, None, "S2_test")
    (view,) = clouded_images(corpus.root, [image])
    assert view.image_id == f"tiny01_2021-07-01 @ {when.date()}" and view.scl is not None
    assert np.array_equal(view.stack.layer(MASK_LAYER), mask)  # the truth comes with the image
    clear = ~np.isin(view.scl, list(SCL_UNUSABLE))
    assert np.array_equal(np.isfinite(view.stack.layer("green")), clear)
    assert np.isfinite(view.stack.layer("green")).any()
    plan["acquisitions"][0]["measured"]["tiny01"]["valid_fraction"] = 1.0  # a clear scene is no clouded view
    (corpus.root / PAPER_CORPUS_JSON).write_text(json.dumps(plan))
    assert clouded_images(corpus.root, [image]) == []
