"""The training chain from the command line: train -> export-onnx -> publish-model (local and Azurite)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_dataset import write_dataset

from rtsmonitor.cli import main
from rtsmonitor.errors import ModelError, RtsError
from rtsmonitor.modelstore import CURRENT_BLOB, MODELS_CONTAINER, publish_model
from rtsmonitor.storage import Storage, open_storage


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chain")
    dataset = write_dataset(root / "dataset")
    runner = CliRunner()
    trained = runner.invoke(
        main,
        [
            "train",
            "--dataset",
            str(dataset),
            "--out",
            str(root / "run"),
            "--preset",
            "quick",
            "--val-ids",
            "site3_2019-07-03",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "parameters: " in trained.output and "best epoch" in trained.output
    exported = runner.invoke(
        main,
        [
            "export-onnx",
            "--run",
            str(root / "run"),
            "--out",
            str(root / "bundle"),
            "--version",
            "t1",
            "--threshold",
            "0.5",
        ],
    )
    assert exported.exit_code == 0, exported.output
    assert "max |diff|" in exported.output
    return root / "bundle"


def test_publish_to_a_local_store(bundle: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["publish-model", str(bundle), "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    store = open_storage(str(tmp_path / "store"))
    onnx = store.blobs.read_bytes(MODELS_CONTAINER, "rts-unet/t1/model.onnx")
    meta = json.loads(store.blobs.read_bytes(MODELS_CONTAINER, "rts-unet/t1/model.json"))
    current = json.loads(store.blobs.read_bytes(MODELS_CONTAINER, CURRENT_BLOB))
    assert hashlib.sha256(onnx).hexdigest() == meta["onnx"]["sha256"] == current["onnx_sha256"]
    assert (current["name"], current["version"]) == ("rts-unet", "t1")
    assert meta["threshold"] == 0.5 and meta["input_layers"] == ["blue", "green", "red", "nir", "slope"]


@pytest.mark.azurite
def test_publish_to_azurite(bundle: Path, azure_storage: Storage) -> None:
    published = publish_model(azure_storage, bundle)
    assert azure_storage.blobs.exists(MODELS_CONTAINER, published.onnx_blob)
    assert json.loads(azure_storage.blobs.read_bytes(MODELS_CONTAINER, CURRENT_BLOB))["version"] == "t1"


def test_a_tampered_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    copy.mkdir()
    (copy / "model.json").write_bytes((bundle / "model.json").read_bytes())
    (copy / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes()[:-10])
    store = open_storage(str(tmp_path / "store"))
    with pytest.raises(ModelError, match=r"does not match model\.json"):
        publish_model(store, copy)
    assert store.blobs.list(MODELS_CONTAINER) == []


def test_evaluate_command_prints_the_report(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset", seeds=(1, 2, 3), sites=["a", "a", "a"])
    args = ["evaluate", "--dataset", str(dataset), "--out", str(tmp_path / "eval"), "--preset", "quick"]
    args += ["--loso-sites", "none"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| paper (Rustemeyer et al. 2022) | 0.86 | 0.80 | 0.83 |" in result.output
    assert "primary model pixel F1" in result.output and (tmp_path / "eval" / "report.json").is_file()

    again = CliRunner().invoke(main, args)
    assert isinstance(again.exception, RtsError) and "--resume" in str(again.exception)  # nothing overwritten
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "Epoch" not in resumed.output  # the finished evaluation is read back, not retrained
    report = result.output[result.output.index("# RTS U-Net evaluation") :]
    assert resumed.output.endswith(report)

    kept = tmp_path / "kept"
    elsewhere = ["evaluate", "--dataset", str(dataset), "--preset", "quick", "--loso-sites", "none"]
    first = CliRunner().invoke(main, [*elsewhere, "--out", str(tmp_path / "a"), "--scores-dir", str(kept)])
    assert first.exit_code == 0, first.output
    assert (kept / "primary.json").is_file()
    second = CliRunner().invoke(main, [*elsewhere, "--out", str(tmp_path / "b"), "--scores-dir", str(kept)])
    assert second.exit_code == 0, second.output
    assert "Epoch" not in second.output and not (tmp_path / "b" / "primary").exists()  # read from --scores-dir
