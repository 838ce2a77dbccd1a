"""QUICK end to end: train on a tiny synthetic dataset, export to ONNX, run it with onnxruntime alone."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_dataset import write_dataset

from rtsmonitor.errors import ModelError, RtsError
from rtsmonitor.stack import INPUT_LAYERS, read_stack
from rtsmonitor.tiling import Normalisation, pad_to_multiple
from rtstrain.export import check_parity, export_run, load_keras_model
from rtstrain.train import PAPER, QUICK, STATE_NAME, RunState, TrainConfig, TrainResult, image_id, train

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEST_CONFIG = QUICK.model_copy(update={"epochs": 4})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(
        dataset,
        tmp_path_factory.mktemp("run"),
        TEST_CONFIG,
        train_ids=["site1_2019-07-01", "site2_2019-07-02"],
        val_ids=["site3_2019-07-03"],
        verbose=0,
    )


def test_configs() -> None:
    assert (PAPER.epochs, PAPER.batch_size, PAPER.learning_rate, PAPER.tile_size_px) == (100, 32, 1e-4, 64)
    assert PAPER.undersample_ratio == 1.0 and PAPER.augment.gaussian_blur
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(epoch=3)  # type: ignore[call-arg]


def test_quick_training_learns_and_writes_its_files(trained: TrainResult) -> None:
    h = trained.history
    assert len(h["loss"]) == TEST_CONFIG.epochs
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_loss"][-1] < h["val_loss"][0]
    assert trained.monitor == "val_loss"
    assert trained.best_loss == min(h["val_loss"])
    assert trained.param_count == 994_933 and trained.input_multiple == 32
    stats = trained.tile_stats
    assert stats.tiles_total == 2 * 16 and 0 < stats.positive_fraction < 1
    assert stats.tiles_train == 2 * stats.tiles_undersampled  # one blurred copy each
    assert stats.tiles_val == 16
    for path in trained.files.values():
        assert path.is_file() and path.stat().st_size > 0
    assert trained.files["curve"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(trained.files["summary"].read_text())
    assert summary["train_ids"] == ["site1_2019-07-01", "site2_2019-07-02"]
    assert summary["config"]["epochs"] == 4
    norm = Normalisation.from_dict(json.loads(trained.files["normalisation"].read_text()))
    assert norm == trained.normalisation and norm.layers == INPUT_LAYERS


def test_training_rejects_bad_ids(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(RtsError, match="not in the manifest"):
        train(dataset, tmp_path, QUICK, train_ids=["nope"], verbose=0)
    with pytest.raises(RtsError, match="both"):
        train(dataset, tmp_path, QUICK, train_ids=["site1_2019-07-01"], val_ids=["site1_2019-07-01"], verbose=0)
    assert image_id({"path": "images/a.tif"}) == "a" and image_id({"image_id": "x", "path": "a.tif"}) == "x"


ONNX_ONLY = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    import onnxruntime as ort
    from rtsmonitor.stack import read_stack
    from rtsmonitor.tiling import Normalisation, pad_to_multiple
    bundle, stack_path, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    meta = json.loads((bundle / "model.json").read_text())
    norm = Normalisation.from_dict(meta["normalisation"])
    x = pad_to_multiple(norm.apply_stack(read_stack(stack_path)), meta["input_multiple_px"])[None]
    session = ort.InferenceSession(str(bundle / meta["onnx"]["file"]), providers=["CPUExecutionProvider"])
    probability = session.run([meta["onnx"]["output_name"]], {meta["onnx"]["input_name"]: x})[0]
    np.save(out, probability)
    assert not any(m.split(".")[0] in ("tensorflow", "keras", "tf2onnx") for m in sys.modules), "TF was imported"
    """
)


def test_export_parity_and_onnxruntime_only_inference(trained: TrainResult, dataset: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    result = export_run(
        trained.out_dir, bundle, name="rts-unet-test", version="0.0.1", threshold=0.5, metrics={"f1": None}
    )
    assert result.parity_shape == (1, 1024, 1024, 5)
    assert result.max_abs_diff <= 1e-4
    meta = json.loads(result.model_json_path.read_text())
    assert meta["onnx"]["sha256"] == hashlib.sha256(result.onnx_path.read_bytes()).hexdigest()
    assert meta["input_layers"] == list(INPUT_LAYERS) and meta["input_multiple_px"] == 32
    assert meta["tile_size_px"] == 64 and meta["threshold"] == 0.5
    assert meta["training_manifest_sha256"] == trained.manifest_sha256
    assert meta["normalisation"] == trained.normalisation.to_dict()
    assert set(meta["library_versions"]) >= {"tensorflow", "tf2onnx", "onnx", "onnxruntime", "numpy"}
    assert meta["parity"]["max_abs_diff"] == result.max_abs_diff

    stack_path = dataset / "images/site3_2019-07-03.tif"
    out = tmp_path / "probability.npy"
    env = {**os.environ, "PYTHONPATH": str(SHARED)}
    subprocess.run([sys.executable, "-c", ONNX_ONLY, str(bundle), str(stack_path), str(out)], check=True, env=env)
    onnx_probability = np.load(out)
    model = load_keras_model(trained.model_path)
    x = pad_to_multiple(trained.normalisation.apply_stack(read_stack(stack_path)), 32)[None]
    keras_probability = np.asarray(model(x, training=False))
    assert onnx_probability.shape == (1, 256, 256, 1)
    np.testing.assert_allclose(onnx_probability, keras_probability, atol=1e-4)

    with pytest.raises(ModelError, match="differs from Keras"):
        check_parity(model, result.onnx_path, x[:, :64, :64], tolerance=-1.0)


def test_same_seed_same_model(dataset: Path, tmp_path: Path) -> None:
    config = QUICK.model_copy(update={"epochs": 1, "validation_fraction": 0.0})
    runs = [train(dataset, tmp_path / str(i), config, train_ids=["site1_2019-07-01"], verbose=0) for i in range(2)]
    assert runs[0].monitor == "loss" and runs[0].tile_stats.tiles_val == 0
    assert runs[0].history == runs[1].history
    a, b = (load_keras_model(r.model_path).get_weights() for r in runs)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


RESUME_CONFIG = TEST_CONFIG.model_copy(update={"dropout": 0.2})
"""Four epochs with dropout, whose random-generator state must survive an interruption too."""
RESUME_IDS = {"train_ids": ["site1_2019-07-01", "site2_2019-07-02"], "val_ids": ["site3_2019-07-03"]}


@pytest.fixture(scope="module")
def uninterrupted(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(dataset, tmp_path_factory.mktemp("straight"), RESUME_CONFIG, verbose=0, **RESUME_IDS)


def _same_model(a: TrainResult, b: TrainResult) -> bool:
    wa, wb = (load_keras_model(r.model_path).get_weights() for r in (a, b))
    return a.history == b.history and all(np.array_equal(u, v) for u, v in zip(wa, wb, strict=True))


def test_a_run_continued_for_more_epochs_equals_one_never_stopped(
    dataset: Path, tmp_path: Path, uninterrupted: TrainResult
) -> None:
    first = train(dataset, tmp_path, RESUME_CONFIG.model_copy(update={"epochs": 1}), verbose=0, **RESUME_IDS)
    assert len(first.history["loss"]) == 1
    resumed = train(dataset, tmp_path, RESUME_CONFIG, verbose=0, resume=True, **RESUME_IDS)
    assert _same_model(resumed, uninterrupted)
    assert [(a["from_epoch"], a["to_epoch"]) for a in resumed.attempts] == [(0, 1), (1, 4)]
    assert resumed.seconds == pytest.approx(sum(a["seconds"] for a in resumed.attempts))
    assert len(resumed.epoch_seconds) == 4
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["epochs_run"] == 4 and len(summary["attempts"]) == 2

    finished = train(dataset, tmp_path, RESUME_CONFIG, verbose=0, resume=True, **RESUME_IDS)
    assert finished.attempts == resumed.attempts  # nothing left to train: no new attempt
    assert _same_model(finished, uninterrupted)


def test_a_killed_run_resumes_to_the_same_model(dataset: Path, tmp_path: Path, uninterrupted: TrainResult) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from rtstrain.train import TrainConfig, train
        config = TrainConfig.model_validate_json({RESUME_CONFIG.model_dump_json()!r})
        train(Path({str(dataset)!r}), Path({str(tmp_path)!r}), config, verbose=0, **{RESUME_IDS!r})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    state_path = tmp_path / STATE_NAME
    try:
        while child.poll() is None and not (state_path.exists() and RunState.load(state_path).epochs_done >= 1):
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    killed_after = RunState.load(state_path).epochs_done
    assert child.returncode == -signal.SIGKILL and 1 <= killed_after < RESUME_CONFIG.epochs
    assert not (tmp_path / "model.keras").exists()

    resumed = train(dataset, tmp_path, RESUME_CONFIG, verbose=0, resume=True, **RESUME_IDS)
    assert resumed.attempts[-1]["from_epoch"] == killed_after
    assert _same_model(resumed, uninterrupted)


def test_resuming_refuses_another_experiment_or_a_damaged_state(dataset: Path, tmp_path: Path) -> None:
    config = RESUME_CONFIG.model_copy(update={"epochs": 1})
    train(dataset, tmp_path, config, verbose=0, **RESUME_IDS)
    with pytest.raises(RtsError, match="already holds a training run"):
        train(dataset, tmp_path, config, verbose=0, **RESUME_IDS)
    faster = config.model_copy(update={"learning_rate": 0.01})
    with pytest.raises(RtsError, match=r"config field 'learning_rate' was 0\.001, now 0\.01"):
        train(dataset, tmp_path, faster, verbose=0, resume=True, **RESUME_IDS)
    with pytest.raises(RtsError, match="val_ids was"):
        train(dataset, tmp_path, config, verbose=0, resume=True, train_ids=RESUME_IDS["train_ids"])
    state = tmp_path / STATE_NAME
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(RtsError, match="is not a readable training state"):
        train(dataset, tmp_path, config, verbose=0, resume=True, **RESUME_IDS)
