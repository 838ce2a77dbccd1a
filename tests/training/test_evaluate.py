"""Evaluation: splits as documented, threshold from validation data, reports beside the paper's tables."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tiny_dataset import write_dataset

from rtsmonitor.errors import RtsError
from rtstrain.evaluate import EVALUATED_NAME, PAPER_LOSO_F1, evaluate, loso_split, primary_split
from rtstrain.metrics import THRESHOLD_GRID
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
    assert primary["threshold"] in THRESHOLD_GRID
    for key in ("pixel", "object", "baseline_pixel"):
        assert 0.0 <= primary[key]["f1"] <= 1.0
        assert primary[key]["tp"] + primary[key]["fn"] > 0  # the test images hold RTS
    assert json.loads((tmp_path / "report.json").read_text())["loso"]["lena"]["split"]["test"]
    assert primary["host"]["cpus"] == os.cpu_count()  # each experiment names the machine that ran it
    assert datetime.fromisoformat(primary["finished_utc"]) <= datetime.now(UTC)
    markdown = (tmp_path / "report.md").read_text()
    assert "| paper (Rustemeyer et al. 2022) | 0.86 | 0.80 | 0.83 |" in markdown
    assert f"| lena | {PAPER_LOSO_F1['lena']:.2f} |" in markdown
    assert "chosen on the validation images" in markdown


def test_an_evaluation_resumed_for_more_epochs_equals_one_never_stopped(dataset: Path, tmp_path: Path) -> None:
    config, sites = QUICK.model_copy(update={"epochs": 2}), ["lena"]
    straight = evaluate(dataset, tmp_path / "straight", config, loso_sites=sites)

    evaluate(dataset, tmp_path / "resumed", config.model_copy(update={"epochs": 1}), loso_sites=sites)
    with pytest.raises(RtsError, match="--resume"):
        evaluate(dataset, tmp_path / "resumed", config, loso_sites=sites)
    resumed = evaluate(dataset, tmp_path / "resumed", config, loso_sites=sites, resume=True)
    for experiment in (resumed["primary"], resumed["loso"]["lena"]):
        assert experiment["training"]["attempts"] == 2 and experiment["training"]["epochs_run"] == 2
    for key in ("threshold", "pixel", "object", "baseline_pixel", "per_site"):
        assert resumed["primary"][key] == straight["primary"][key]
        assert resumed["loso"]["lena"][key] == straight["loso"]["lena"][key]

    summary = (tmp_path / "resumed" / "primary" / "train.json").read_text()
    again = evaluate(dataset, tmp_path / "resumed", config, loso_sites=sites, resume=True)
    assert again["loso"] == resumed["loso"]  # finished experiments are read back from evaluated.json
    assert (tmp_path / "resumed" / "primary" / "train.json").read_text() == summary
    assert (tmp_path / "resumed" / "primary" / EVALUATED_NAME).is_file()
    markdown = (tmp_path / "resumed" / "report.md").read_text()
    assert "## Compute time" in markdown and "| leave out lena | 2 |" in markdown


def test_scores_cut_short_are_computed_again(dataset: Path, tmp_path: Path) -> None:
    config = QUICK.model_copy(update={"epochs": 1})
    report = evaluate(dataset, tmp_path, config, loso_sites=[])
    kept = tmp_path / "primary" / EVALUATED_NAME
    kept.write_text(kept.read_text()[:100])  # as if killed while writing it (before it was atomic)
    again = evaluate(dataset, tmp_path, config, loso_sites=[], resume=True)
    assert again["primary"]["pixel"] == report["primary"]["pixel"]
    assert again["primary"]["training"]["attempts"] == 1  # the finished run was not trained again
    assert json.loads(kept.read_text())["split"] == report["primary"]["split"]


def test_kept_scores_carry_an_evaluation_to_another_machine(dataset: Path, tmp_path: Path) -> None:
    config, scores = QUICK.model_copy(update={"epochs": 1}), tmp_path / "kept"
    first = evaluate(dataset, tmp_path / "machine-a", config, loso_sites=["lena"], scores_dir=scores)
    assert sorted(p.name for p in scores.iterdir()) == ["loso-lena.json", "primary.json"]
    # The leave-one-site-out models run first, so the primary model is the one trained last.
    a = tmp_path / "machine-a"
    assert (a / "loso-lena" / EVALUATED_NAME).stat().st_mtime_ns < (a / "primary" / EVALUATED_NAME).stat().st_mtime_ns

    # A machine without machine-a's folder trains nothing that is kept: no run folder is made.
    second = evaluate(dataset, tmp_path / "machine-b", config, loso_sites=["lena"], scores_dir=scores)
    assert second["primary"] == first["primary"] and second["loso"] == first["loso"]
    assert not (tmp_path / "machine-b" / "primary").exists()
    assert not (tmp_path / "machine-b" / "loso-lena").exists()

    # Kept scores of another dataset are not reused; the new ones replace them.
    kept = scores / "loso-lena.json"
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "manifest_sha256": "0" * 64}))
    evaluate(dataset, tmp_path / "machine-c", config, loso_sites=["lena"], scores_dir=scores)
    assert (tmp_path / "machine-c" / "loso-lena" / "train.json").is_file()
    assert not (tmp_path / "machine-c" / "primary").exists()
    assert json.loads(kept.read_text())["manifest_sha256"] == load_manifest(dataset)["manifest_sha256"]

    # Nor are those of another config.
    longer = config.model_copy(update={"epochs": 2})
    fourth = evaluate(dataset, tmp_path / "machine-d", longer, loso_sites=["lena"], scores_dir=scores)
    for experiment, name in ((fourth["primary"], "primary"), (fourth["loso"]["lena"], "loso-lena")):
        assert experiment["training"]["epochs_run"] == 2
        assert json.loads((scores / f"{name}.json").read_text())["config"]["epochs"] == 2
