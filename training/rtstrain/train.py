"""Training of the RTS U-Net on a tiled, undersampled, augmented dataset (Rustemeyer et al. 2022).

The paper's recipe: 64 x 64 tiles, 1:1 undersampling of positive : all-negative tiles, Gaussian-blur
augmentation, [0, 1] normalisation, class-balanced BCE + Dice, Adam with learning rate 1e-4, 100
epochs, batch size 32 (:data:`PAPER`). :data:`QUICK` is a seconds-long version for tests.

Which images train and which validate is the caller's decision (primary model, leave-one-site-out):
pass explicit image ids. An image's id is its manifest entry's ``image_id``, or, without one, the
file stem of its ``path`` (see :func:`image_id`).

Everything a run produces lands in ``out_dir``:

``model.keras``
    the model with the best weights (lowest validation loss; lowest training loss without validation);
``best.weights.h5``
    the best weights (with the optimizer's variables), written at the end;
``normalisation.json``
    the constants fitted on the training images (:class:`rtsmonitor.tiling.Normalisation`);
``history.json``, ``training_curve.png``
    per-epoch losses and metrics, and their plot;
``train.json``
    the config, image ids, tile counts, parameter count, manifest hash and timings;
``state.npz``
    the run so far, rewritten atomically after every epoch (see :func:`train`'s ``resume``).

**Resuming.** Every epoch is a pure function of the state after the previous one: the tile order of
epoch ``e`` is drawn from ``(seed, e)``, and the state holds every model variable (weights,
batch-norm statistics, the dropout layers' random-generator states), the optimizer's variables,
the history and the best weights so far. A run killed at any point and resumed with
``resume=True`` therefore ends with the same weights, bit for bit, as one that was never
interrupted (on the same machine and library versions); ``train.json`` lists each attempt.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from rtsmonitor.errors import MissingExtraError, RtsError
from rtsmonitor.files import write_atomically
from rtsmonitor.stack import INPUT_LAYERS, MASK_LAYER, Stack, read_stack
from rtsmonitor.tiling import (
    DEFAULT_PERCENTILES,
    MIN_VALID_FRACTION,
    Normalisation,
    fit_normalisation,
    positive_fraction,
    tiles,
    undersample,
)
from rtstrain.augment import AugmentConfig, augment

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
"""File name of a dataset's manifest inside the dataset folder."""
STATE_NAME = "state.npz"
"""File name of a run's resumable state inside its output folder (written after every epoch)."""
RESUMABLE_CHANGES = frozenset({"epochs", "early_stopping_patience"})
"""Config fields a resumed run may change (to train longer or stop differently); any other change
would make the resumed run a different experiment."""


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run; defaults follow Rustemeyer et al. 2022 where it says."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(1, description="Version of this config's schema.")
    epochs: int = Field(100, ge=1, description="Passes over the training tiles (paper: 100).")
    batch_size: int = Field(32, ge=1, description="Tiles per batch (paper: 32); class weights are per batch.")
    learning_rate: float = Field(1e-4, gt=0, description="Adam learning rate (paper: 1e-4).")
    base_filters: int = Field(16, ge=1, description="U-Net filters at full resolution, doubling per level.")
    levels: int = Field(5, ge=1, le=8, description="U-Net 2x2 poolings; inputs must be multiples of 2**levels px.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout rate at the end of every U-Net block.")
    dice_weight: float = Field(1.0, ge=0, description="Weight of the Dice term next to the BCE term.")
    seed: int = Field(0, description="Seed of Python, numpy and TensorFlow, undersampling, augmentation, splits.")
    deterministic: bool = Field(True, description="Ask TensorFlow for deterministic ops (slightly slower).")
    tile_size_px: int = Field(64, ge=8, description="Tile edge in pixels (paper: 64).")
    tile_stride_px: int = Field(64, ge=1, description="Step between tiles in pixels (64 = no overlap).")
    min_valid_fraction: float = Field(
        MIN_VALID_FRACTION, ge=0, le=1, description="Tiles with a smaller fraction of valid pixels are dropped."
    )
    normalisation_percentiles: tuple[float, float] = Field(
        DEFAULT_PERCENTILES, description="Percentiles (in %) of the training pixels mapped to 0 and 1, per layer."
    )
    undersample_ratio: float | None = Field(
        1.0, ge=0, description="All-negative tiles kept per positive tile (paper: 1.0); None keeps all tiles."
    )
    undersample_validation: bool = Field(
        False, description="Undersample validation tiles too; by default they keep their natural class balance."
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Augmentation of training tiles.")
    validation_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of the training images' tiles held out for validation when no val_ids are given.",
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without a better validation loss; None trains all epochs."
    )


PAPER = TrainConfig()
"""The paper's configuration: 100 epochs, batch 32, Adam 1e-4, 64-px tiles, 1:1 undersampling, blur."""

QUICK = TrainConfig(
    epochs=2,
    batch_size=8,
    learning_rate=1e-3,
    base_filters=4,
    dropout=0.0,
    augment=AugmentConfig(copies=1),
    validation_fraction=0.2,
)
"""A seconds-long configuration for tests and smoke runs (tiny width, higher learning rate)."""

DEMO = PAPER.model_copy(update={"epochs": 20, "base_filters": 4, "learning_rate": 1e-3})
"""The bundled demo model: the paper's recipe at a quarter of the width, 20 epochs, Adam 1e-3 (so it
learns in minutes on 2 CPU cores and stays a few MB); not a substitute for :data:`PAPER`."""

PRESETS: dict[str, TrainConfig] = {"paper": PAPER, "demo": DEMO, "quick": QUICK}
"""Named configurations for the command line and the training job."""


@dataclass
class TileStats:
    """How many tiles each stage left, for the report."""

    tiles_total: int
    positive_fraction: float
    tiles_undersampled: int
    tiles_train: int
    tiles_val: int


@dataclass
class TrainResult:
    """What :func:`train` produced (files in ``out_dir``) and how it went."""

    out_dir: Path
    model_path: Path
    normalisation: Normalisation
    history: dict[str, list[float]]
    best_epoch: int
    best_loss: float
    monitor: str
    param_count: int
    input_multiple: int
    tile_stats: TileStats
    train_ids: list[str]
    val_ids: list[str]
    manifest_sha256: str
    seconds: float
    config: TrainConfig
    files: dict[str, Path] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def epoch_seconds_median(self) -> float | None:
        """Median wall time of an epoch (training and validation), None before the first."""
        return float(np.median(self.epoch_seconds)) if self.epoch_seconds else None


# --- dataset -------------------------------------------------------------------------------------


def image_id(entry: dict[str, Any]) -> str:
    """The id of a manifest image: its ``image_id``, else the file stem of its ``path``."""
    if "image_id" in entry:
        return str(entry["image_id"])
    return Path(str(entry["path"])).stem


def load_manifest(dataset_dir: Path) -> dict[str, Any]:
    """Read ``manifest.json`` of a dataset folder."""
    path = Path(dataset_dir) / MANIFEST_NAME
    if not path.is_file():
        raise RtsError(f"no dataset manifest at {path}: build the dataset first (rts dataset build)")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if not isinstance(manifest.get("images"), list):
        raise RtsError(f"{path}: 'images' must be a list of image entries")
    return manifest


def manifest_sha256(dataset_dir: Path, manifest: dict[str, Any] | None = None) -> str:
    """The manifest's own ``manifest_sha256``, else the sha256 of the manifest file's bytes."""
    manifest = manifest if manifest is not None else load_manifest(dataset_dir)
    if manifest.get("manifest_sha256"):
        return str(manifest["manifest_sha256"])
    return hashlib.sha256((Path(dataset_dir) / MANIFEST_NAME).read_bytes()).hexdigest()


def _select(entries: dict[str, dict[str, Any]], ids: Sequence[str], what: str) -> list[str]:
    unknown = [i for i in ids if i not in entries]
    if unknown:
        raise RtsError(f"{what} ids {unknown} are not in the manifest (known: {sorted(entries)})")
    return list(dict.fromkeys(ids))


def read_image(dataset_dir: Path, entry: dict[str, Any]) -> Stack:
    """One dataset image stack, checked for the input and mask layers."""
    stack = read_stack(Path(dataset_dir) / str(entry["path"]))
    missing = [name for name in (*INPUT_LAYERS, MASK_LAYER) if name not in stack.layers]
    if missing:
        raise RtsError(f"dataset image {entry['path']} lacks layers {missing} (has {stack.layers})")
    return stack


def _tiles_of(
    stacks: Sequence[Stack], norm: Normalisation, config: TrainConfig
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    parts = [tiles(s, norm, config.tile_size_px, config.tile_stride_px, config.min_valid_fraction) for s in stacks]
    if not parts:
        size, n_layers = config.tile_size_px, len(norm.layers)
        empty = np.empty((0, size, size, 1), np.float32)
        return np.empty((0, size, size, n_layers), np.float32), empty, empty.copy()
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


# --- resumable state -----------------------------------------------------------------------------


@dataclass
class RunState:
    """A run after ``len(history["loss"])`` epochs: what ``state.npz`` holds.

    ``identity`` is what a resumed run must share (:func:`_identity`); ``model``, ``optimizer`` and
    ``best`` are the values of ``model.variables`` (weights, batch-norm statistics, dropout
    random-generator states), of ``optimizer.variables``, and of ``model.variables`` at the best
    epoch. ``attempts`` lists each call of :func:`train` that worked on the run; ``epoch_seconds`` the
    wall time of each epoch (training and validation).
    """

    identity: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    best_value: float = float("inf")
    attempts: list[dict[str, Any]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    model: list[NDArray[Any]] = field(default_factory=list)
    optimizer: list[NDArray[Any]] = field(default_factory=list)
    best: list[NDArray[Any]] = field(default_factory=list)

    @property
    def epochs_done(self) -> int:
        """Epochs finished so far."""
        return len(self.history.get("loss", []))

    def save(self, path: Path) -> None:
        """Write the state to ``path`` in one atomic replace (numpy ``.npz``, no pickles)."""
        keys = ("identity", "history", "best_epoch", "best_value", "attempts", "epoch_seconds")
        meta = {k: getattr(self, k) for k in keys}
        arrays = {"meta": np.array(json.dumps(meta))}
        for group in ("model", "optimizer", "best"):
            arrays.update({f"{group}_{i}": v for i, v in enumerate(getattr(self, group))})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        write_atomically(path, lambda out: out.write(buffer.getbuffer()))

    @classmethod
    def load(cls, path: Path) -> RunState:
        """Read a state written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                groups = {
                    g: [data[f"{g}_{i}"] for i in range(sum(k.startswith(f"{g}_") for k in data.files))]
                    for g in ("model", "optimizer", "best")
                }
            return cls(
                identity=meta["identity"],
                history=meta["history"],
                best_epoch=int(meta["best_epoch"]),
                best_value=float(meta["best_value"]),
                attempts=meta["attempts"],
                epoch_seconds=[float(v) for v in meta["epoch_seconds"]],
                model=groups["model"],
                optimizer=groups["optimizer"],
                best=groups["best"],
            )
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise RtsError(f"{path} is not a readable training state ({exc!r}); remove it to start over") from exc


def _identity(config: TrainConfig, train_ids: list[str], val_ids: list[str], sha: str) -> dict[str, Any]:
    """What makes a run the same experiment: config (less :data:`RESUMABLE_CHANGES`), images, data."""
    fixed = config.model_dump(mode="json", exclude=set(RESUMABLE_CHANGES))
    return {"config": fixed, "train_ids": train_ids, "val_ids": val_ids, "manifest_sha256": sha}


def _load_state(out_dir: Path, identity: dict[str, Any]) -> RunState | None:
    """The state in ``out_dir`` (None if there is none), refused if it belongs to another experiment."""
    path = out_dir / STATE_NAME
    if not path.exists():
        return None
    state = RunState.load(path)
    for key, value in identity.items():
        stored = state.identity.get(key)
        if key == "config":
            stored = stored or {}
            changed = sorted(k for k in {*value, *stored} if value.get(k) != stored.get(k))
            if changed:
                field_name = changed[0]
                raise RtsError(
                    f"cannot resume {path}: config field {field_name!r} was {stored.get(field_name)!r}, now "
                    f"{value.get(field_name)!r} (only {sorted(RESUMABLE_CHANGES)} may change)"
                )
        elif stored != value:
            raise RtsError(f"cannot resume {path}: {key} was {stored!r}, now {value!r}")
    return state


def _assign(variables: Sequence[Any], values: Sequence[NDArray[Any]]) -> None:
    """Give Keras variables the stored values, checking that they line up."""
    if len(variables) != len(values):
        raise RtsError(f"training state holds {len(values)} values for {len(variables)} variables")
    for variable, value in zip(variables, values, strict=True):
        if tuple(variable.shape) != value.shape:
            raise RtsError(f"training state: {variable.path} has shape {tuple(variable.shape)}, stored {value.shape}")
        variable.assign(value)


def _should_stop(state: RunState, config: TrainConfig) -> bool:
    """All epochs done, or (with early stopping) ``patience`` epochs without a better monitor value."""
    if state.epochs_done >= config.epochs:
        return True
    patience = config.early_stopping_patience
    return patience is not None and state.epochs_done - state.best_epoch >= patience


def _batches(n_tiles: int, batch_size: int, seed: int, first_epoch: int, epochs: int) -> Iterator[NDArray[np.int64]]:
    """Tile indices of every batch of epochs ``first_epoch`` .. ``epochs - 1``, in training order.

    Epoch ``e`` visits the tiles in the permutation drawn from ``(seed, e)``: the order does not
    depend on where a run was interrupted.
    """
    for epoch in range(first_epoch, epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n_tiles)
        for start in range(0, n_tiles, batch_size):
            yield order[start : start + batch_size]


def _fit_epochs(
    model: Any,
    train_data: tuple[NDArray[np.float32], NDArray[np.float32]],
    val_data: tuple[NDArray[np.float32], NDArray[np.float32]] | None,
    config: TrainConfig,
    monitor: str,
    out_dir: Path,
    state: RunState,
    started: float,
    verbose: int | str,
) -> RunState:
    """Train from ``state`` to the end, saving the state after every epoch; return the final state.

    One ``model.fit`` call runs every remaining epoch (``initial_epoch`` = epochs done), fed by
    :func:`_batches`; validation follows each epoch. The best epoch is the one with the lowest
    ``monitor`` value (ties: the first).
    """
    import keras
    import tensorflow as tf

    if _should_stop(state, config) and state.best:
        return state  # a finished run: nothing to train
    if state.model:
        model.optimizer.build(model.trainable_variables)
        _assign(model.variables, state.model)
        _assign(model.optimizer.variables, state.optimizer)
    attempt = {
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "from_epoch": state.epochs_done,
        "to_epoch": state.epochs_done,
        "seconds": round(time.monotonic() - started, 2),
    }
    state.attempts.append(attempt)

    class SaveEveryEpoch(keras.callbacks.Callback):  # type: ignore[misc]
        """Record the epoch's history and time, keep the best weights, save the state, stop early."""

        epoch_started = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch_started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            for key, value in (logs or {}).items():
                name = key.replace("dice_metric", "dice").replace("bce_metric", "bce")
                state.history.setdefault(name, []).append(float(value))
            state.epoch_seconds.append(round(time.monotonic() - self.epoch_started, 2))
            state.model = [np.array(v) for v in model.variables]
            state.optimizer = [np.array(v) for v in model.optimizer.variables]
            value = state.history[monitor][-1]
            if value < state.best_value:
                state.best_epoch, state.best_value, state.best = epoch + 1, value, state.model
            attempt["to_epoch"] = state.epochs_done
            attempt["seconds"] = round(time.monotonic() - started, 2)
            state.save(out_dir / STATE_NAME)
            model.stop_training = _should_stop(state, config)

    x, targets = train_data
    x_tensor, target_tensor = tf.constant(x), tf.constant(targets)
    batches = tf.data.Dataset.from_generator(
        lambda: _batches(len(x), config.batch_size, config.seed, state.epochs_done, config.epochs),
        output_signature=tf.TensorSpec([None], tf.int64),
    )
    dataset = batches.map(lambda i: (tf.gather(x_tensor, i), tf.gather(target_tensor, i))).prefetch(2)
    model.fit(
        dataset,
        initial_epoch=state.epochs_done,
        epochs=config.epochs,
        steps_per_epoch=-(-len(x) // config.batch_size),
        validation_data=val_data,
        validation_batch_size=config.batch_size,
        callbacks=[SaveEveryEpoch()],
        shuffle=False,  # the order comes from _batches
        verbose=verbose,
    )
    if not state.best:
        raise RtsError(f"no epoch of the run in {out_dir} gave a finite {monitor} (diverged?)")
    return state


# --- training ------------------------------------------------------------------------------------


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and TensorFlow; optionally ask TensorFlow for deterministic ops."""
    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "the training curve needs matplotlib: install the 'train' extra (pip install rtsmonitor[train])"
        ) from exc


def plot_history(history: dict[str, list[float]], path: Path, title: str = "") -> Path:
    """Plot losses (left) and Dice (right) per epoch, training and validation, to a PNG."""
    _require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "loss", "BCE + Dice loss"), (axes[1], "dice", "soft Dice")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o", ms=3, label="validation" if prefix else "training")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train(
    dataset_dir: Path,
    out_dir: Path,
    config: TrainConfig = PAPER,
    train_ids: Sequence[str] | None = None,
    val_ids: Sequence[str] | None = None,
    verbose: int | str = "auto",
    resume: bool = False,
) -> TrainResult:
    """Train the U-Net on the images of ``dataset_dir`` and write the run's files to ``out_dir``.

    Parameters
    ----------
    dataset_dir : folder with ``manifest.json`` and the 6-layer image stacks it lists.
    out_dir : where the model, checkpoint, normalisation, history, plot and ``train.json`` go.
    config : hyper-parameters (:data:`PAPER`, :data:`QUICK` or your own).
    train_ids : image ids to train on; default every manifest image not in ``val_ids``.
        Test images must be left out by the caller.
    val_ids : image ids to validate on (natural class balance unless
        ``config.undersample_validation``); default: ``config.validation_fraction`` of the training
        tiles, drawn with the seed; with neither, no validation and the best epoch is the one with
        the lowest training loss.
    verbose : Keras ``fit`` verbosity: 1 or "auto" is a progress bar, 2 one line per epoch, 0 silent.
    resume : continue the run whose ``state.npz`` is in ``out_dir`` (a finished run is only
        rewritten). Its config, image ids and dataset manifest must be this call's; only
        :data:`RESUMABLE_CHANGES` may differ. Without ``resume`` a folder holding a state is refused,
        so no run is overwritten by accident.

    The normalisation is fitted on the training images only. Tiles are cut, the training tiles
    undersampled (positive : negative = 1 : ``undersample_ratio``) and augmented; the validation
    tiles are not augmented.

    """
    _require_matplotlib()
    import keras

    from rtstrain.losses import BceDiceLoss, bce_metric, dice_metric, pack_targets
    from rtstrain.unet import build_unet, input_multiple

    started = time.monotonic()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    manifest = load_manifest(dataset_dir)
    entries = {image_id(e): e for e in manifest["images"]}
    val_list = _select(entries, val_ids or [], "validation")
    if train_ids is None:
        train_list = [i for i in entries if i not in val_list]
    else:
        train_list = _select(entries, train_ids, "training")
    overlap = sorted(set(train_list) & set(val_list))
    if overlap:
        raise RtsError(f"images {overlap} are in both the training and the validation ids")
    if not train_list:
        raise RtsError("no training images selected")
    sha = manifest_sha256(dataset_dir, manifest)
    identity = _identity(config, train_list, val_list, sha)
    state = _load_state(out_dir, identity) if resume else None
    if state is None and (out_dir / STATE_NAME).exists():
        raise RtsError(
            f"{out_dir} already holds a training run ({out_dir / STATE_NAME}): pass resume "
            "(rts train/evaluate --resume) to continue it, or choose another output folder"
        )

    seed_everything(config.seed, config.deterministic)
    train_stacks = [read_image(dataset_dir, entries[i]) for i in train_list]
    norm = fit_normalisation(train_stacks, INPUT_LAYERS, config.normalisation_percentiles)
    x, y, valid = _tiles_of(train_stacks, norm, config)
    del train_stacks
    tiles_total, pos_frac = len(x), positive_fraction(y, valid)
    log.info("%d training tiles from %d images, %.1f %% with RTS", tiles_total, len(train_list), 100 * pos_frac)

    if val_list:
        xv, yv, vv = _tiles_of([read_image(dataset_dir, entries[i]) for i in val_list], norm, config)
    else:
        order = np.random.default_rng(config.seed + 1).permutation(len(x))
        n_val = round(config.validation_fraction * len(x))
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        xv, yv, vv = x[val_idx], y[val_idx], valid[val_idx]
        x, y, valid = x[train_idx], y[train_idx], valid[train_idx]
    if config.undersample_ratio is not None:
        x, y, valid = undersample(x, y, valid, config.undersample_ratio, config.seed)
        if config.undersample_validation:
            xv, yv, vv = undersample(xv, yv, vv, config.undersample_ratio, config.seed + 2)
    tiles_undersampled = len(x)
    if tiles_undersampled == 0:
        raise RtsError(f"no training tile left after undersampling ({tiles_total} tiles, none with an RTS pixel?)")
    x, y, valid = augment(x, y, valid, config.augment, config.seed)
    has_val = len(xv) > 0
    stats = TileStats(tiles_total, pos_frac, tiles_undersampled, len(x), len(xv))
    log.info("tiles: %s", stats)

    model = build_unet(len(INPUT_LAYERS), config.base_filters, config.levels, config.dropout)
    param_count = int(model.count_params())
    log.info("U-Net %s: %d parameters", model.name, param_count)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=BceDiceLoss(config.dice_weight),
        metrics=[dice_metric, bce_metric],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    monitor = "val_loss" if has_val else "loss"
    weights_path = out_dir / "best.weights.h5"
    state = _fit_epochs(
        model,
        (x, pack_targets(y, valid)),
        (xv, pack_targets(yv, vv)) if has_val else None,
        config,
        monitor,
        out_dir,
        state or RunState(identity),
        started,
        verbose,
    )
    history, best_epoch = state.history, state.best_epoch
    _assign(model.variables, state.best)
    model.save_weights(weights_path)
    model_path = out_dir / "model.keras"
    model.save(model_path)

    files = {
        "model": model_path,
        "checkpoint": weights_path,
        "normalisation": out_dir / "normalisation.json",
        "history": out_dir / "history.json",
        "curve": out_dir / "training_curve.png",
        "summary": out_dir / "train.json",
    }
    files["normalisation"].write_text(json.dumps(norm.to_dict(), indent=2))
    files["history"].write_text(json.dumps(history, indent=2))
    plot_history(history, files["curve"], f"{model.name}, {param_count:,} parameters, best epoch {best_epoch}")
    result = TrainResult(
        out_dir=out_dir,
        model_path=model_path,
        normalisation=norm,
        history=history,
        best_epoch=best_epoch,
        best_loss=float(history[monitor][best_epoch - 1]),
        monitor=monitor,
        param_count=param_count,
        input_multiple=input_multiple(model),
        tile_stats=stats,
        train_ids=train_list,
        val_ids=val_list,
        manifest_sha256=sha,
        seconds=round(sum(float(a["seconds"]) for a in state.attempts), 2),
        config=config,
        files=files,
        attempts=state.attempts,
        epoch_seconds=state.epoch_seconds,
    )
    files["summary"].write_text(json.dumps(summary(result), indent=2))
    return result


def summary(result: TrainResult) -> dict[str, Any]:
    """JSON-ready summary of a run (what ``train.json`` holds)."""
    return {
        "config": result.config.model_dump(mode="json"),
        "train_ids": result.train_ids,
        "val_ids": result.val_ids,
        "manifest_sha256": result.manifest_sha256,
        "param_count": result.param_count,
        "input_multiple_px": result.input_multiple,
        "tiles": vars(result.tile_stats),
        "best_epoch": result.best_epoch,
        "best_loss": result.best_loss,
        "monitor": result.monitor,
        "epochs_run": len(result.history.get("loss", [])),
        "seconds": result.seconds,
        "attempts": result.attempts,
        "epoch_seconds_median": result.epoch_seconds_median,
        "normalisation": result.normalisation.to_dict(),
        "files": {k: v.name for k, v in result.files.items()},
    }
