"""Evaluation: splits as documented, threshold from validation data, reports beside the paper's tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_dataset import write_dataset

from rtstrain.evaluate import PAPER_LOSO_F1, evaluate, loso_split, primary_split
from rtstrain.train import QUICK, load_manifest

SITES = ("horton01", "horton01", "horton01", "lena", "lena")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dataset"), seeds=(1, 2, 3, 4, 5), sites=SITES)


def test_splits_follow_the_documented_rule(dataset: Path) -> None:
    manifest = load_manifest(dataset)
    primary = primary_split(manifest)
    assert primary.test == ["horton01_2019-07-03", "lena_2019-07-05"]
    assert primary.val == ["horton01_2019-07-02"]  # lena has two images: no validation image
    assert primary.train == ["horton01_2019-07-01", "lena_2019-07-04"]
    loso = loso_split(manifest, "lena")
    assert loso.test == ["lena_2019-07-04", "lena_2019-07-05"]
    assert loso.val == ["horton01_2019-07-03"]
    assert loso.train == ["horton01_2019-07-01", "horton01_2019-07-02"]
    assert not set(loso.test) & set(loso.train + loso.val)


def test_evaluate_writes_reports(dataset: Path, tmp_path: Path) -> None:
    report = evaluate(dataset, tmp_path, QUICK.model_copy(update={"epochs": 3}), loso_sites=["lena"])
    primary = report["primary"]
    assert set(primary["per_site"]) == {"horton01", "lena"}
    assert 0.05 <= primary["threshold"] <= 0.95
    for key in ("pixel", "object", "baseline_pixel"):
        assert 0.0 <= primary[key]["f1"] <= 1.0
        assert primary[key]["tp"] + primary[key]["fn"] > 0  # the test images hold RTS
    assert json.loads((tmp_path / "report.json").read_text())["loso"]["lena"]["split"]["test"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| paper (Rustemeyer et al. 2022) | 0.86 | 0.80 | 0.83 |" in markdown
    assert f"| lena | {PAPER_LOSO_F1['lena']:.2f} |" in markdown
    assert "chosen on the validation images" in markdown
