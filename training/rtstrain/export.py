"""Export of a trained U-Net to ONNX (tf2onnx), a Keras-vs-onnxruntime parity check, and ``model.json``.

The model bundle is ``model.onnx`` + ``model.json``; inference loads it with onnxruntime alone. The
ONNX graph takes ``input`` [B, H, W, 5] float32 (NHWC, normalised as ``model.json`` says; H and W
multiples of ``input_multiple_px``) and returns ``probability`` [B, H, W, 1], the RTS probability.
Parity is checked on a full-size window (1024 x 1024 by default, about a 100 km^2 site at 10 m):
the export fails when the largest absolute difference exceeds 1e-4.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rtsmonitor.errors import ModelError
from rtsmonitor.modelstore import file_sha256
from rtsmonitor.tiling import Normalisation

MODEL_JSON_SCHEMA_VERSION = 1
"""Version of the ``model.json`` layout written by :func:`write_model_json`."""

ONNX_OPSET = 17
"""ONNX opset of the exported graph."""

PARITY_SIZE_PX = 1024
"""Edge of the square input of the parity check, in pixels."""

PARITY_TOLERANCE = 1e-4
"""Largest allowed absolute difference between Keras and onnxruntime probabilities."""

PAPER_REFERENCE = (
    "Rustemeyer et al. 2022, Tracking rapid permafrost thaw through time: exploring the potential of "
    "convolutional neural network based models, IGARSS 2022, doi:10.1109/IGARSS46834.2022.9884869"
)


@dataclass
class ExportResult:
    """Files written by :func:`export_model` and the parity found."""

    onnx_path: Path
    model_json_path: Path
    onnx_sha256: str
    max_abs_diff: float
    parity_shape: tuple[int, ...]
    keras_seconds: float
    onnx_seconds: float
    export_seconds: float


def library_versions() -> dict[str, str]:
    """Versions of the libraries that made the bundle."""
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "tensorflow": str(tf.__version__),
        "keras": str(keras.__version__),
        "tf2onnx": str(tf2onnx.__version__),
        "onnx": str(onnx.__version__),
        "onnxruntime": str(onnxruntime.__version__),
        "numpy": str(np.__version__),
    }


def load_keras_model(path: Path) -> Any:
    """Load a ``model.keras`` written by :func:`rtstrain.train.train`, without its training config."""
    import keras

    import rtstrain.losses  # noqa: F401  # registers the custom loss for deserialisation

    return keras.models.load_model(path, compile=False)


def export_onnx(model: Any, onnx_path: Path, opset: int = ONNX_OPSET) -> Path:
    """Convert a Keras model to ONNX with free batch, height and width (tf2onnx ``from_keras``)."""
    import tensorflow as tf
    import tf2onnx

    from rtstrain.unet import INPUT_NAME

    channels = int(model.inputs[0].shape[-1])
    spec = (tf.TensorSpec((None, None, None, channels), tf.float32, name=INPUT_NAME),)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=str(onnx_path))
    return onnx_path


def onnx_session(onnx_path: Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session for ``onnx_path`` (``threads`` 0 = onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def parity_input(size_px: int = PARITY_SIZE_PX, channels: int = 5, seed: int = 0) -> NDArray[np.float32]:
    """A seeded [1, size, size, channels] input: smooth random fields in [0, 1] plus pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((1, size_px // 32 + 1, size_px // 32 + 1, channels), dtype=np.float32)
    smooth = np.repeat(np.repeat(coarse, 32, axis=1), 32, axis=2)[:, :size_px, :size_px]
    noise = rng.random((1, size_px, size_px, channels), dtype=np.float32)
    return np.asarray(np.clip(0.8 * smooth + 0.2 * noise, 0.0, 1.0), dtype=np.float32)


def check_parity(
    model: Any,
    onnx_path: Path,
    x: NDArray[np.float32] | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> tuple[float, float, float]:
    """Compare Keras and onnxruntime on ``x`` (default :func:`parity_input`, 1024 x 1024).

    Returns ``(max_abs_diff, keras_seconds, onnx_seconds)``; raises :class:`ModelError` when the
    difference exceeds ``tolerance``.
    """
    if x is None:
        x = parity_input(channels=int(model.inputs[0].shape[-1]))
    started = time.monotonic()
    expected = np.asarray(model(x, training=False), dtype=np.float32)
    keras_seconds = time.monotonic() - started
    session = onnx_session(onnx_path)
    started = time.monotonic()
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    onnx_seconds = time.monotonic() - started
    if got.shape != expected.shape:
        raise ModelError(f"{onnx_path}: ONNX output shape {got.shape} differs from Keras {expected.shape}")
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= tolerance:
        raise ModelError(
            f"{onnx_path}: ONNX output differs from Keras by up to {diff:.3g} on a {x.shape} input "
            f"(tolerance {tolerance:g}); do not publish this export"
        )
    return diff, round(keras_seconds, 3), round(onnx_seconds, 3)


def write_model_json(
    path: Path,
    *,
    name: str,
    version: str,
    onnx_path: Path,
    normalisation: Normalisation,
    tile_size_px: int,
    input_multiple_px: int,
    threshold: float,
    metrics: dict[str, Any],
    manifest_sha256: str,
    parity: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
) -> Path:
    """Write the bundle's metadata beside ``model.onnx``.

    ``threshold`` (probability above which a pixel is RTS) and ``metrics`` come from the caller's
    evaluation; the threshold must have been chosen on validation data. ``versions`` defaults to
    :func:`library_versions`.
    """
    session = onnx_session(onnx_path, threads=1)
    meta = {
        "schema_version": MODEL_JSON_SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": PAPER_REFERENCE,
        "onnx": {
            "file": Path(onnx_path).name,
            "sha256": file_sha256(onnx_path),
            "opset": ONNX_OPSET,
            "input_name": session.get_inputs()[0].name,
            "output_name": session.get_outputs()[0].name,
            "layout": "NHWC",
        },
        "input_layers": list(normalisation.layers),
        "normalisation": normalisation.to_dict(),
        "tile_size_px": int(tile_size_px),
        "input_multiple_px": int(input_multiple_px),
        "threshold": float(threshold),
        "metrics": metrics,
        "training_manifest_sha256": manifest_sha256,
        "training": training or {},
        "parity": parity or {},
        "library_versions": versions if versions is not None else library_versions(),
    }
    Path(path).write_text(json.dumps(meta, indent=2, sort_keys=False, default=str))
    return Path(path)


def export_model(
    model: Any,
    out_dir: Path,
    *,
    normalisation: Normalisation,
    name: str,
    version: str,
    threshold: float,
    metrics: dict[str, Any],
    manifest_sha256: str,
    tile_size_px: int = 64,
    training: dict[str, Any] | None = None,
    parity_size_px: int = PARITY_SIZE_PX,
    tolerance: float = PARITY_TOLERANCE,
    opset: int = ONNX_OPSET,
) -> ExportResult:
    """Export ``model`` (a Keras model or a ``model.keras`` path) to ``out_dir/model.onnx`` + ``model.json``.

    Runs the parity check on a ``parity_size_px`` square input and raises :class:`ModelError`
    above ``tolerance`` (nothing is left in ``out_dir`` then but the rejected ONNX file).
    """
    from rtstrain.unet import input_multiple

    if isinstance(model, str | Path):
        model = load_keras_model(Path(model))
    out_dir = Path(out_dir)
    started = time.monotonic()
    onnx_path = export_onnx(model, out_dir / "model.onnx", opset)
    export_seconds = round(time.monotonic() - started, 2)
    x = parity_input(parity_size_px, int(model.inputs[0].shape[-1]))
    diff, keras_s, onnx_s = check_parity(model, onnx_path, x, tolerance)
    parity = {
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "input_shape": list(x.shape),
        "keras_seconds": keras_s,
        "onnxruntime_seconds": onnx_s,
    }
    json_path = write_model_json(
        out_dir / "model.json",
        name=name,
        version=version,
        onnx_path=onnx_path,
        normalisation=normalisation,
        tile_size_px=tile_size_px,
        input_multiple_px=input_multiple(model),
        threshold=threshold,
        metrics=metrics,
        manifest_sha256=manifest_sha256,
        parity=parity,
        training=training,
    )
    return ExportResult(
        onnx_path=onnx_path,
        model_json_path=json_path,
        onnx_sha256=file_sha256(onnx_path),
        max_abs_diff=diff,
        parity_shape=tuple(x.shape),
        keras_seconds=keras_s,
        onnx_seconds=onnx_s,
        export_seconds=export_seconds,
    )


def export_run(
    run_dir: Path,
    out_dir: Path,
    *,
    name: str,
    version: str,
    threshold: float,
    metrics: dict[str, Any],
    parity_size_px: int = PARITY_SIZE_PX,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export the training run in ``run_dir`` (``model.keras``, ``normalisation.json``, ``train.json``)."""
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "train.json").read_text())
        norm = Normalisation.from_dict(json.loads((run_dir / "normalisation.json").read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{run_dir} is not a finished training run (train.json, normalisation.json): {exc}") from exc
    return export_model(
        run_dir / "model.keras",
        out_dir,
        normalisation=norm,
        name=name,
        version=version,
        threshold=threshold,
        metrics=metrics,
        manifest_sha256=str(summary["manifest_sha256"]),
        tile_size_px=int(summary["config"]["tile_size_px"]),
        training={k: summary[k] for k in ("config", "param_count", "train_ids", "val_ids", "tiles", "best_epoch")},
        parity_size_px=parity_size_px,
        tolerance=tolerance,
    )
