"""ONNX inference: a stack's RTS probability by overlapping, blended sliding windows (onnxruntime, CPU).

The U-Net of Rustemeyer et al. 2022 (IGARSS 2022, doi:10.1109/IGARSS46834.2022.9884869) was trained
on 64 x 64 tiles but is fully convolutional, so it runs on larger windows of any size that is a
multiple of ``2 ** levels`` (``input_multiple_px`` in ``model.json``). A site is cut into windows
of :data:`DEFAULT_WINDOW_PX` that overlap by :data:`DEFAULT_OVERLAP_PX`; each window's output is
weighted by a ramp that rises over the overlap, so neighbouring windows fade into each other and
no seam shows where one ends (see :func:`blend_weights`). Every window starts on a multiple of
``input_multiple_px``, the pooling lattice of the whole image (see :func:`window_spans`).

One core, :func:`iter_prediction_strips`, serves both entry points: it walks the raster in
horizontal strips one window high, reads each strip through a callable, and yields rows as soon as
no later window touches them, carrying only the overlap rows to the next strip. Memory is thus
O(width x window), not O(site): :func:`predict_file` reads the stack COG and writes the outputs
strip by strip; :func:`predict_stack` does the same on an in-memory :class:`~rtsmonitor.stack.Stack`.

A bundle may be an *ensemble* of several ONNX members (e.g. seeds; schema in
:mod:`rtsmonitor.modelstore`): every window goes through each member and the probabilities are
averaged before blending and thresholding, so an ensemble of n members costs n times the inference
time of one. :meth:`Model.summary` and :meth:`Model.members_summary` name every member.

Pixels where any input layer is NaN (no data, cloud, shadow, snow) are *unobserved*: their
probability is NaN and they never count as RTS. The outputs are two COGs on the stack's grid:
``probability.tif`` (float32, nodata NaN) and ``mask.tif`` (uint8: :data:`MASK_RTS`,
:data:`MASK_NOT_RTS`, :data:`MASK_UNOBSERVED`, the latter also its nodata).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import onnxruntime
import rasterio
import rasterio.shutil
from numpy.typing import NDArray
from rasterio.windows import Window

from rtsmonitor.errors import ModelError, RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.modelstore import BundleMember, bundle_digest, bundle_members, is_ensemble, read_bundle_meta
from rtsmonitor.stack import COG_BLOCK_PX, Stack, copy_as_cog, dataset_grid
from rtsmonitor.tiling import Normalisation, valid_mask

DEFAULT_WINDOW_PX: int = 512
"""Edge of a sliding window in pixels (5.12 km at 10 m); a multiple of 32, so inner windows need no
padding. The U-Net's theoretical receptive field spans a few hundred pixels (five poolings), so
small windows lose context: on seeded synthetic tundra, 256 px windows differed from one whole
300 px window by 0.0006 on average (max 0.34), 128 px windows by 0.003 (max 0.97). 544 px would
put a 100 km^2 (1000 px) site into 2 x 2 windows instead of 3 x 3 and run 1.7-1.9x faster
(bench/inference_engines.py), but it changed the demo model's RTS areas by 1-6 % in the offline
demo and took one Horton 01 summer from +13 % to +19 % of the synthetic truth, beyond the +-15 %
the records state: the window stays at 512 until a model is evaluated with the tiling it runs with."""

DEFAULT_OVERLAP_PX: int = 64
"""Overlap of neighbouring windows in pixels: the width of the blending ramp. The outermost
~32 px of a window (one block of the deepest pooling) see padded context and are the least
reliable; a 64 px ramp gives them little weight where a neighbour covers them."""

DEFAULT_THREADS: int = min(os.cpu_count() or 1, 4)
"""onnxruntime intra-op threads: the machine's cores, at most 4. On the 2-core development machine
2 threads ran the demo U-Net 1.4x faster than 1 (163 vs 233 ns per pixel on 512 px windows); the
cap leaves cores to other workers of a shared host."""

DEFAULT_BATCH_WINDOWS: int = 1
"""Windows per onnxruntime call. Measured on the demo model (2-core machine, best of 5): single calls
on batches of 1, 2, 4 and 8 windows of 512 px took 163, 152, 149 and 140 ns per pixel with 2 threads
and 233, 241, 247 and 250 with 1 thread; a whole 2000 x 2000 px stack took 1.23 s with batches of 1
and 1.19 s with batches of 4 (2 threads), 1.7 s and 1.8-1.9 s (1 thread). At most a few per cent
faster, sometimes slower, while peak memory grows with the batch: one window per call by default."""

MASK_NOT_RTS = 0
"""``mask.tif`` value of an observed pixel below the threshold."""
MASK_RTS = 1
"""``mask.tif`` value of an observed pixel at or above the threshold."""
MASK_UNOBSERVED = 255
"""``mask.tif`` value (and nodata) of a pixel where an input layer is NaN (cloud, snow, no data)."""

PADDING_MODE: Literal["reflect"] = "reflect"
"""How a window is padded at its bottom and right up to a multiple of ``input_multiple_px``
(numpy ``np.pad`` mode). Padding only happens where a window is cut by the raster's edge (or the
window size is not a multiple itself); mirrored image content there looks like more landscape to
the U-Net, whereas zeros look like a dark, flat, unobserved edge. Measured on the demo model and
seeded synthetic tundra (5 seeds, 290 and 300 px crops of a 320 px image): in the outermost 32 px
the mean difference from the uncropped prediction was 0.0001-0.021 with reflect against
0.0003-0.026 with zeros (0.0034 vs 0.0097 for seed 0); zeros gave more false RTS pixels there in
6 of the 10 crops (e.g. 112 vs 38), reflect in 2 (by one pixel)."""

Reader = Callable[[int, int, int, int], NDArray[np.float32]]
"""``read(row_off, col_off, height, width) -> [L, height, width]``: the model's input layers, in
``Model.input_layers`` order, NaN where unobserved."""


Progress = Callable[[int, int], None]
"""``progress(rows_done, rows_total)``, called after each finished strip (e.g. to drive a progress bar)."""

MaskSink = Callable[[int, NDArray[np.uint8]], None]
"""``sink(row_off, mask_rows)``: the ``mask.tif`` values [h, W] of finished rows, top to bottom, each row
once (e.g. :meth:`rtsmonitor.drift.DriftAccumulator.add_mask`)."""


def _meta_field(meta: dict[str, Any], dotted: str) -> Any:
    """``meta["a"]["b"]`` for ``"a.b"``, or a :class:`ModelError` naming the missing key."""
    value: Any = meta
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ModelError(f"model.json lacks {dotted!r}; re-export the bundle")
        value = value[key]
    return value


@dataclass(frozen=True, eq=False)
class ModelMember:
    """One ONNX graph of a model: the only one of a single-file bundle, or one ensemble member."""

    info: BundleMember
    session: onnxruntime.InferenceSession

    @property
    def label(self) -> str:
        """``member 'name' (file)``, for messages."""
        return f"member {self.info.name!r} ({self.info.file})"


def _dims_agree(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether two ONNX input shapes agree: same rank, equal wherever both dims are fixed integers."""
    return len(a) == len(b) and all(
        not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a, b, strict=True)
    )


@dataclass(frozen=True, eq=False)
class Model:
    """An ONNX U-Net (or an ensemble of them) and its ``model.json``, ready to run on stacks.

    Attributes
    ----------
    session : the onnxruntime session (CPU) of the first member.
    meta : the bundle's ``model.json``.
    normalisation : the per-layer transform the model was trained with (shared by all members).
    input_layers : the layer names the model reads, in channel order.
    threshold : probability at or above which a pixel is RTS (chosen on validation data); for an
        ensemble it applies to the members' mean probability.
    members : every ONNX graph with its identity; filled from ``session`` for a single-file bundle.

    """

    session: onnxruntime.InferenceSession
    meta: dict[str, Any]
    normalisation: Normalisation
    input_layers: tuple[str, ...]
    threshold: float
    members: tuple[ModelMember, ...] = ()

    def __post_init__(self) -> None:
        """Check the metadata against itself and every member's ONNX graph."""
        if not self.members:
            if is_ensemble(self.meta):
                raise ModelError(f"model {self.label}: an ensemble's sessions come from Model.load(bundle_dir)")
            object.__setattr__(self, "members", (ModelMember(bundle_members(self.meta)[0], self.session),))
        elif self.members[0].session is not self.session:
            raise ModelError(f"model {self.label}: session must be the first member's session")
        if tuple(self.normalisation.layers) != tuple(self.input_layers):
            raise ModelError(
                f"model {self.label}: normalisation layers {self.normalisation.layers} differ from input_layers "
                f"{self.input_layers} in model.json; the bundle is inconsistent, re-export it"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ModelError(f"model {self.label}: threshold {self.threshold} is not a probability in [0, 1]")
        layout = _meta_field(self.meta, "onnx.layout")
        if layout != "NHWC":
            raise ModelError(f"model {self.label}: onnx.layout {layout!r} is not supported (only 'NHWC')")
        known_shape: list[Any] | None = None
        for member in self.members:
            where = f"model {self.label}" + (f" {member.label}" if self.is_ensemble else "")
            inputs = {i.name: i for i in member.session.get_inputs()}
            outputs = {o.name for o in member.session.get_outputs()}
            if self.input_name not in inputs or self.output_name not in outputs:
                raise ModelError(
                    f"{where}: model.json names input {self.input_name!r} and output {self.output_name!r}, "
                    f"the ONNX graph has inputs {sorted(inputs)} and outputs {sorted(outputs)}"
                )
            shape = list(inputs[self.input_name].shape)
            channels = shape[-1] if shape else None
            if isinstance(channels, int) and channels != len(self.input_layers):
                raise ModelError(
                    f"{where}: the ONNX input has {channels} channels, model.json names "
                    f"{len(self.input_layers)} input layers {self.input_layers}"
                )
            if known_shape is None:
                known_shape = shape
            elif not _dims_agree(known_shape, shape):
                raise ModelError(
                    f"{where}: its ONNX input shape {shape} differs from the earlier members' {known_shape}; "
                    "every member must take the same input"
                )
            else:  # fixed dims of any member bind the later ones
                known_shape = [k if isinstance(k, int) else d for k, d in zip(known_shape, shape, strict=True)]
        if self.input_multiple_px < 1:
            raise ModelError(f"model {self.label}: input_multiple_px must be positive, got {self.input_multiple_px}")

    @classmethod
    def load(cls, bundle_dir: Path, threads: int = DEFAULT_THREADS) -> Model:
        """Open a local bundle (``model.onnx`` + ``model.json``, sha256 checked) on the CPU.

        Parameters
        ----------
        bundle_dir : folder holding the bundle, e.g. :data:`~rtsmonitor.modelstore.DEMO_BUNDLE`.
        threads : onnxruntime intra-op threads (see :data:`DEFAULT_THREADS`).

        """
        if threads < 1:
            raise ModelError(f"threads must be at least 1, got {threads}")
        meta = read_bundle_meta(bundle_dir)  # checks every ONNX file's sha256
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Memory-pattern planning pre-allocates per input shape; off, the paper-size U-Net peaked
        # 110 MiB lower at the same speed (bench/inference_engines.py).
        options.enable_mem_pattern = False
        members: list[ModelMember] = []
        for info in bundle_members(meta):
            label = f"member {info.name!r} ({info.file})" if is_ensemble(meta) else info.file
            try:
                session = onnxruntime.InferenceSession(
                    str(Path(bundle_dir) / info.file), sess_options=options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own untyped exceptions for broken graphs
                raise ModelError(f"{bundle_dir}: onnxruntime cannot load {label}: {exc}") from exc
            members.append(ModelMember(info, session))
        try:
            threshold = float(_meta_field(meta, "threshold"))
            input_layers = tuple(str(v) for v in _meta_field(meta, "input_layers"))
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{bundle_dir}: malformed threshold or input_layers in model.json: {exc}") from exc
        normalisation = Normalisation.from_dict(_meta_field(meta, "normalisation"))
        return cls(members[0].session, meta, normalisation, input_layers, threshold, tuple(members))

    @property
    def name(self) -> str:
        """The bundle's name (``model.json`` ``name``)."""
        return str(self.meta.get("name", ""))

    @property
    def version(self) -> str:
        """The bundle's version (``model.json`` ``version``)."""
        return str(self.meta.get("version", ""))

    @property
    def label(self) -> str:
        """``name/version``, for messages."""
        return f"{self.name}/{self.version}"

    @property
    def is_ensemble(self) -> bool:
        """Whether ``model.json`` lists ensemble members (even a single one)."""
        return is_ensemble(self.meta)

    @property
    def input_multiple_px(self) -> int:
        """Window heights and widths must be multiples of this (``2 ** levels`` of the U-Net)."""
        return int(_meta_field(self.meta, "input_multiple_px"))

    @property
    def input_name(self) -> str:
        """Name of the ONNX graph's input tensor [N, H, W, L]."""
        return str(_meta_field(self.meta, "onnx.input_name"))

    @property
    def output_name(self) -> str:
        """Name of the ONNX graph's output tensor [N, H, W, 1] (RTS probability)."""
        return str(_meta_field(self.meta, "onnx.output_name"))

    def check_layers(self, layers: Sequence[str], source: str = "stack") -> None:
        """Raise :class:`ModelError` unless ``layers`` include every input layer (their order does not matter)."""
        if tuple(self.normalisation.layers) != tuple(self.input_layers):
            raise ModelError(
                f"model {self.label}: normalisation layers {self.normalisation.layers} differ from input_layers "
                f"{self.input_layers}"
            )
        missing = [name for name in self.input_layers if name not in layers]
        if missing:
            raise ModelError(
                f"{source} lacks layers {missing} that model {self.label} needs (it has {tuple(layers)}, "
                f"the model reads {self.input_layers})"
            )

    def summary(self) -> dict[str, Any]:
        """What a result records about the model: name, version, identity sha256 and threshold.

        ``onnx_sha256`` is :func:`~rtsmonitor.modelstore.bundle_digest`: the ONNX file's sha256, or
        for an ensemble the digest of its members' sha256s; an ensemble's summary also lists
        ``members`` (name, version, sha256, file, seed) in order.
        """
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "onnx_sha256": bundle_digest(self.meta),
            "threshold": self.threshold,
        }
        if self.is_ensemble:
            out["members"] = [member.info.summary() for member in self.members]
        return out

    def members_summary(self) -> str | None:
        """Every ensemble member as JSON text, for a record's ``model_members``; ``None`` for a single file.

        The text is a list of ``{"name", "version", "sha256", "file"[, "seed"]}`` in member order. A
        single-file bundle's identity is in :meth:`summary` alone.
        """
        if not self.is_ensemble:
            return None
        return json.dumps([member.info.summary() for member in self.members], sort_keys=True)

    def predict_normalised(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """RTS probability [N, H, W] of normalised windows ``x`` [N, H, W, L] of any H and W.

        Windows are padded at the bottom and right to a multiple of :attr:`input_multiple_px`
        (:data:`PADDING_MODE`) and the output cropped back. An ensemble returns the mean of its
        members' probabilities (summed in float64), each member run on the same padded input.
        """
        if x.ndim != 4 or x.shape[-1] != len(self.input_layers):
            raise ModelError(f"model {self.label} expects [N, H, W, {len(self.input_layers)}], got {x.shape}")
        height, width = int(x.shape[1]), int(x.shape[2])
        multiple = self.input_multiple_px
        pad = ((0, 0), (0, -height % multiple), (0, -width % multiple), (0, 0))
        padded = np.pad(x, pad, mode=PADDING_MODE) if any(p[1] for p in pad) else x
        feed = {self.input_name: np.ascontiguousarray(padded, np.float32)}
        if len(self.members) == 1:
            (out,) = self.session.run([self.output_name], feed)
            probability: NDArray[np.float32] = np.asarray(out, dtype=np.float32)[:, :height, :width, 0]
            return probability
        total: NDArray[np.float64] | None = None
        for member in self.members:
            (out,) = member.session.run([self.output_name], feed)
            part = np.asarray(out, dtype=np.float64)[:, :height, :width, 0]
            total = part if total is None else total + part
        assert total is not None
        mean: NDArray[np.float32] = (total / len(self.members)).astype(np.float32)
        return mean


@dataclass
class Prediction:
    """A model's output on a stack's grid.

    Attributes
    ----------
    probability : [H, W] RTS probability, NaN where unobserved.
    observed : [H, W] True where every input layer is finite.
    threshold : the model's decision threshold.
    grid : the stack's grid.
    model : :meth:`Model.summary` of the model that made it (written into the output tags).

    """

    probability: NDArray[np.float32]
    observed: NDArray[np.bool_]
    threshold: float
    grid: SiteGrid
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def mask(self) -> NDArray[np.bool_]:
        """[H, W] True where observed and ``probability >= threshold``."""
        with np.errstate(invalid="ignore"):
            mask: NDArray[np.bool_] = self.observed & (self.probability >= self.threshold)
        return mask

    @property
    def observed_fraction(self) -> float:
        """Fraction of the grid's pixels that were observed."""
        return float(self.observed.mean()) if self.observed.size else 0.0

    @property
    def rts_px(self) -> int:
        """Number of RTS pixels."""
        return int(self.mask.sum())


@dataclass(frozen=True)
class PredictionSummary:
    """What :func:`predict_file` wrote.

    Attributes
    ----------
    probability_path, mask_path : the two COGs.
    grid : their grid (the stack's).
    observed_px : pixels where every input layer is finite.
    rts_px : observed pixels with probability >= ``threshold``.
    threshold : the model's decision threshold.
    model : :meth:`Model.summary`.

    """

    probability_path: Path
    mask_path: Path
    grid: SiteGrid
    observed_px: int
    rts_px: int
    threshold: float
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def observed_fraction(self) -> float:
        """Observed pixels over all pixels of the grid."""
        total = self.grid.width * self.grid.height
        return self.observed_px / total if total else 0.0

    @property
    def rts_area_m2(self) -> float:
        """Area of the RTS pixels in square metres."""
        return self.rts_px * self.grid.res_m**2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "probability_path": str(self.probability_path),
            "mask_path": str(self.mask_path),
            "grid": self.grid.to_dict(),
            "observed_px": self.observed_px,
            "observed_fraction": round(self.observed_fraction, 6),
            "rts_px": self.rts_px,
            "rts_area_m2": self.rts_area_m2,
            "threshold": self.threshold,
            "model": self.model,
        }


# --- windows and blending --------------------------------------------------------------------------


def check_windows(window_px: int, overlap_px: int, multiple_px: int = 1) -> None:
    """Raise :class:`RtsError` unless ``0 <= 2 * overlap_px <= window_px`` and the stride is at least ``multiple_px``.

    The stride, ``window_px - overlap_px``, is rounded down to a multiple of ``multiple_px`` (see
    :func:`window_spans`), so it must be at least one multiple.
    """
    if overlap_px < 0 or 2 * overlap_px > window_px or window_px - overlap_px < multiple_px:
        raise RtsError(
            f"window {window_px} px with overlap {overlap_px} px: need 0 <= overlap <= window / 2 and "
            f"window - overlap >= {multiple_px} px (the model's input multiple)"
        )


def window_spans(length: int, window_px: int, overlap_px: int, multiple_px: int = 1) -> list[tuple[int, int]]:
    """``(start, size)`` of the windows along an axis of ``length`` pixels.

    One window ``(0, length)`` if the axis fits in a window. Otherwise windows of ``window_px``
    start every ``stride`` pixels, ``stride`` being ``window_px - overlap_px`` rounded down to a
    multiple of ``multiple_px``, until one reaches the end; that last one starts at the largest
    multiple of ``multiple_px`` that leaves it at least ``window_px`` long (so it is between
    ``window_px`` and ``window_px + multiple_px - 1`` long and ends at ``length``).

    Every start is thus a multiple of ``multiple_px``: all windows sit on the same pooling lattice
    as the whole image would. A U-Net is shift-equivariant only for shifts by multiples of
    ``2 ** levels``; windows off that lattice change its output by up to ~0.9 in probability at
    slump edges (measured on the demo model), far more than the loss of context at a window edge.
    Neighbours overlap by at least ``overlap_px``.
    """
    check_windows(window_px, overlap_px, multiple_px)
    if length <= window_px:
        return [(0, length)]
    stride = (window_px - overlap_px) // multiple_px * multiple_px
    starts = list(range(0, length - window_px, stride))
    last = (length - window_px) // multiple_px * multiple_px
    if starts[-1] == last:
        starts.pop()
    return [(start, window_px) for start in starts] + [(last, length - last)]


def blend_weights(size: int, start: int, length: int, overlap_px: int) -> NDArray[np.float32]:
    """Blending weight [size] of a window at ``start`` along an axis of ``length`` pixels.

    The weight rises linearly, ``(i + 0.5) / overlap_px`` for ``i`` in ``0 .. overlap_px - 1``, over
    the first and last ``overlap_px`` pixels of the window and is 1 elsewhere. It is positive
    everywhere (every pixel gets a defined weighted mean) and is *not* lowered at the raster's own
    edges (``start == 0`` or ``start + size == length``), where no neighbour takes over. Where two
    windows overlap by exactly ``overlap_px`` the two ramps sum to 1; larger overlaps (see
    :func:`window_spans`) have a plateau of equal weights between the ramps. A window's 2-D
    weight is the outer product of its row and column weights.

    A window's outermost pixels are its least reliable (the U-Net sees zero-padded convolutions
    there); the ramp gives them ``0.5 / overlap_px`` of the weight of its neighbour's interior.
    """
    weights = np.ones(size, dtype=np.float32)
    ramp_len = min(overlap_px, size)
    if ramp_len > 0:
        ramp = ((np.arange(ramp_len, dtype=np.float32) + 0.5) / overlap_px).astype(np.float32)
        if start > 0:
            weights[:ramp_len] = np.minimum(weights[:ramp_len], ramp)
        if start + size < length:
            weights[size - ramp_len :] = np.minimum(weights[size - ramp_len :], ramp[::-1])
    return weights


@dataclass(frozen=True)
class PredictionStrip:
    """Finished rows ``row_off .. row_off + h`` of a prediction, all columns.

    Attributes
    ----------
    row_off : first row.
    probability : [h, W] float32, NaN where unobserved.
    observed : [h, W] True where every input layer is finite.

    """

    row_off: int
    probability: NDArray[np.float32]
    observed: NDArray[np.bool_]


def iter_prediction_strips(
    model: Model,
    read: Reader,
    shape: tuple[int, int],
    *,
    window_px: int = DEFAULT_WINDOW_PX,
    overlap_px: int = DEFAULT_OVERLAP_PX,
    batch_windows: int = DEFAULT_BATCH_WINDOWS,
) -> Iterator[PredictionStrip]:
    """Predict a raster of ``shape`` (H, W) strip by strip: the core of :func:`predict_stack` and :func:`predict_file`.

    For each row of windows, ``read`` is called once for the full-width strip the windows cover
    (``window_px`` rows, fewer if the raster is smaller); the strip is normalised, cut into the
    row's windows, run through the model (``batch_windows`` windows per call) and accumulated as
    weighted sums (:func:`blend_weights`). Rows that no later window touches are yielded in order,
    top to bottom, covering the raster exactly once; the rest (the overlap with the next strip) is
    carried over, so memory stays O(W x ``window_px``).
    """
    multiple = model.input_multiple_px
    check_windows(window_px, overlap_px, multiple)
    if batch_windows < 1:
        raise RtsError(f"batch_windows must be at least 1, got {batch_windows}")
    height, width = shape
    if height < 1 or width < 1:
        raise RtsError(f"cannot predict an empty raster of shape {shape}")
    row_spans = window_spans(height, window_px, overlap_px, multiple)
    col_spans = window_spans(width, window_px, overlap_px, multiple)
    col_weights = [blend_weights(size, start, width, overlap_px) for start, size in col_spans]
    # runs of consecutive column windows of one size, at most batch_windows long: one model call each
    batches: list[list[int]] = []
    for i, (_, size) in enumerate(col_spans):
        if batches and len(batches[-1]) < batch_windows and col_spans[batches[-1][0]][1] == size:
            batches[-1].append(i)
        else:
            batches.append([i])
    # accumulators of rows acc_row .. acc_row + len(acc_sum); only the overlap rows carry over
    acc_row = 0
    acc_sum = np.zeros((0, width), dtype=np.float32)
    acc_weight = np.zeros((0, width), dtype=np.float32)
    acc_observed = np.zeros((0, width), dtype=bool)
    for index, (row, win_h) in enumerate(row_spans):
        raw = np.asarray(read(row, 0, win_h, width), dtype=np.float32)
        expected = (len(model.input_layers), win_h, width)
        if raw.shape != expected:
            raise RtsError(f"read({row}, 0, {win_h}, {width}) returned shape {raw.shape}, expected {expected}")
        grow = row + win_h - acc_row - len(acc_sum)
        if grow > 0:
            acc_sum = np.concatenate([acc_sum, np.zeros((grow, width), dtype=np.float32)])
            acc_weight = np.concatenate([acc_weight, np.zeros((grow, width), dtype=np.float32)])
            acc_observed = np.concatenate([acc_observed, np.zeros((grow, width), dtype=bool)])
        rows = slice(row - acc_row, row - acc_row + win_h)
        acc_observed[rows] = valid_mask(raw)
        x = model.normalisation.apply(raw)  # [win_h, W, L], NaN -> 0
        row_weight = blend_weights(win_h, row, height, overlap_px)
        for batch in batches:
            windows = [col_spans[i] for i in batch]
            probability = model.predict_normalised(np.stack([x[:, c : c + w] for c, w in windows]))
            for (col, win_w), p, i in zip(windows, probability, batch, strict=True):
                weight = row_weight[:, None] * col_weights[i][None, :]
                acc_sum[rows, col : col + win_w] += p * weight
                acc_weight[rows, col : col + win_w] += weight
        done_to = row_spans[index + 1][0] if index + 1 < len(row_spans) else height
        n_done = done_to - acc_row
        if n_done > 0:
            observed = acc_observed[:n_done].copy()
            blended = acc_sum[:n_done] / acc_weight[:n_done]
            blended[~observed] = np.nan
            yield PredictionStrip(acc_row, blended.astype(np.float32), observed)
            acc_sum, acc_weight, acc_observed = acc_sum[n_done:], acc_weight[n_done:], acc_observed[n_done:]
            acc_row = done_to


def predict_stack(
    model: Model,
    stack: Stack,
    *,
    window_px: int = DEFAULT_WINDOW_PX,
    overlap_px: int = DEFAULT_OVERLAP_PX,
    batch_windows: int = DEFAULT_BATCH_WINDOWS,
    progress: Progress | None = None,
) -> Prediction:
    """RTS probability of an in-memory ``stack`` (its layers in any order; extra layers are ignored).

    Raises :class:`ModelError` when the stack lacks one of the model's input layers. ``progress``
    is called with (rows done, rows in all) after each strip.
    """
    model.check_layers(stack.layers)
    indexes = [stack.layers.index(name) for name in model.input_layers]

    def read(row_off: int, col_off: int, height: int, width: int) -> NDArray[np.float32]:
        window: NDArray[np.float32] = stack.data[:, row_off : row_off + height, col_off : col_off + width][indexes]
        return window

    probability = np.empty(stack.grid.shape, dtype=np.float32)
    observed = np.empty(stack.grid.shape, dtype=bool)
    for strip in iter_prediction_strips(
        model, read, stack.grid.shape, window_px=window_px, overlap_px=overlap_px, batch_windows=batch_windows
    ):
        rows = slice(strip.row_off, strip.row_off + len(strip.probability))
        probability[rows] = strip.probability
        observed[rows] = strip.observed
        if progress is not None:
            progress(rows.stop, stack.grid.height)
    return Prediction(probability, observed, model.threshold, stack.grid, model.summary())


# --- writing ---------------------------------------------------------------------------------------


def _publish_cog(plain: Path, target: Path, resampling: str) -> None:
    """Convert ``plain`` to a DEFLATE COG beside ``target`` and rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".cog-") as tmp:
        os.replace(copy_as_cog(plain, Path(tmp) / target.name, resampling), target)


class _PredictionWriter:
    """Writes prediction strips into two plain tiled GeoTIFFs, then publishes them as COGs.

    The plain files live in a temporary folder beside ``probability_path``; the COGs replace the
    targets only when every row was written and the block exited without an error, so a target
    path never holds a half-written file.
    """

    def __init__(
        self, grid: SiteGrid, probability_path: Path, mask_path: Path, threshold: float, model: dict[str, Any]
    ) -> None:
        self.grid = grid
        self.probability_path = Path(probability_path)
        self.mask_path = Path(mask_path)
        self.threshold = threshold
        self.model = model
        self.observed_px = 0
        self.rts_px = 0
        self.rows_written = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._probability: Any = None
        self._mask: Any = None

    def __enter__(self) -> _PredictionWriter:
        self.probability_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(dir=self.probability_path.parent, prefix=".prediction-")
        profile = {**self.grid.gtiff_profile(), "tiled": True, "blockxsize": COG_BLOCK_PX, "blockysize": COG_BLOCK_PX}
        tags = {
            "model": json.dumps(self.model, sort_keys=True),
            "threshold": repr(self.threshold),
        }
        tmp = Path(self._tmp.name)
        self._probability = rasterio.open(tmp / "probability.tif", "w", dtype="float32", nodata=np.nan, **profile)
        self._probability.set_band_description(1, "rts_probability")
        self._probability.update_tags(**tags, unobserved="NaN")
        self._mask = rasterio.open(tmp / "mask.tif", "w", dtype="uint8", nodata=MASK_UNOBSERVED, **profile)
        self._mask.set_band_description(1, "rts_mask")
        self._mask.update_tags(**tags, values=f"{MASK_RTS}=RTS,{MASK_NOT_RTS}=not RTS,{MASK_UNOBSERVED}=unobserved")
        return self

    def write(self, strip: PredictionStrip) -> NDArray[np.uint8]:
        """Write one strip (strips must come top to bottom without gaps); return its ``mask.tif`` values."""
        height = len(strip.probability)
        if strip.row_off != self.rows_written or strip.probability.shape != (height, self.grid.width):
            raise RtsError(f"prediction strip at row {strip.row_off} of shape {strip.probability.shape} out of order")
        with np.errstate(invalid="ignore"):
            rts = strip.observed & (strip.probability >= self.threshold)
        mask = np.where(strip.observed, np.where(rts, MASK_RTS, MASK_NOT_RTS), MASK_UNOBSERVED).astype(np.uint8)
        window = Window(0, strip.row_off, self.grid.width, height)
        self._probability.write(strip.probability, 1, window=window)
        self._mask.write(mask, 1, window=window)
        self.observed_px += int(strip.observed.sum())
        self.rts_px += int(rts.sum())
        self.rows_written += height
        return mask

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tmp is not None
        try:
            self._probability.close()
            self._mask.close()
            if exc_type is None:
                if self.rows_written != self.grid.height:
                    raise RtsError(f"prediction wrote {self.rows_written} of {self.grid.height} rows")
                tmp = Path(self._tmp.name)
                _publish_cog(tmp / "probability.tif", self.probability_path, "average")
                _publish_cog(tmp / "mask.tif", self.mask_path, "mode")
        finally:
            self._tmp.cleanup()

    def summary(self) -> PredictionSummary:
        """What was written."""
        return PredictionSummary(
            self.probability_path,
            self.mask_path,
            self.grid,
            self.observed_px,
            self.rts_px,
            self.threshold,
            self.model,
        )


def write_prediction(prediction: Prediction, probability_path: Path, mask_path: Path) -> None:
    """Write ``prediction`` as ``probability.tif`` (float32, nodata NaN) and ``mask.tif`` (uint8) COGs.

    ``mask.tif`` holds :data:`MASK_RTS` (1), :data:`MASK_NOT_RTS` (0) or :data:`MASK_UNOBSERVED`
    (255, its nodata). Both are DEFLATE COGs on the prediction's grid, renamed into place once
    complete.
    """
    strip = PredictionStrip(
        0, np.where(prediction.observed, prediction.probability, np.nan).astype(np.float32), prediction.observed
    )
    writer = _PredictionWriter(prediction.grid, probability_path, mask_path, prediction.threshold, prediction.model)
    with writer:
        writer.write(strip)


def predict_file(
    model: Model,
    stack_path: Path,
    probability_path: Path,
    mask_path: Path,
    *,
    window_px: int = DEFAULT_WINDOW_PX,
    overlap_px: int = DEFAULT_OVERLAP_PX,
    batch_windows: int = DEFAULT_BATCH_WINDOWS,
    progress: Progress | None = None,
) -> PredictionSummary:
    """Predict a stack COG window by window and write the probability and mask COGs.

    The stack is never read whole: each strip of windows reads only the model's input layers
    (found by band description, in any order) for ``window_px`` rows, and finished rows go straight
    to the output files (see :func:`iter_prediction_strips`). The outputs are the same as
    :func:`write_prediction` of :func:`predict_stack` on the same stack.
    """
    check_windows(window_px, overlap_px, model.input_multiple_px)  # before any output folder is made
    with rasterio.open(stack_path) as src:
        layers = tuple(d or f"band{i}" for i, d in enumerate(src.descriptions, start=1))
        model.check_layers(layers, source=str(stack_path))
        indexes = [layers.index(name) + 1 for name in model.input_layers]
        grid = dataset_grid(src)

        def read(row_off: int, col_off: int, height: int, width: int) -> NDArray[np.float32]:
            data = src.read(indexes, window=Window(col_off, row_off, width, height), masked=True)
            window: NDArray[np.float32] = np.ma.filled(data.astype(np.float32), np.nan)
            return window

        return predict_to_files(
            model,
            read,
            grid,
            probability_path,
            mask_path,
            window_px=window_px,
            overlap_px=overlap_px,
            batch_windows=batch_windows,
            progress=progress,
        )


def predict_to_files(
    model: Model,
    read: Reader,
    grid: SiteGrid,
    probability_path: Path,
    mask_path: Path,
    *,
    window_px: int = DEFAULT_WINDOW_PX,
    overlap_px: int = DEFAULT_OVERLAP_PX,
    batch_windows: int = DEFAULT_BATCH_WINDOWS,
    progress: Progress | None = None,
    on_mask: MaskSink | None = None,
) -> PredictionSummary:
    """Predict the raster that ``read`` returns strip by strip, writing the probability and mask COGs.

    ``read`` gives the model's input layers for a window of ``grid`` (see :data:`Reader`): a stack
    file (:func:`predict_file`) or the remote scene itself, so that no stage ever holds the whole
    site. Memory is O(width x ``window_px``). ``on_mask`` receives each finished strip's mask values
    as written (see :data:`MaskSink`), e.g. for the radiometric drift check (:mod:`rtsmonitor.drift`).
    """
    check_windows(window_px, overlap_px, model.input_multiple_px)
    writer = _PredictionWriter(grid, probability_path, mask_path, model.threshold, model.summary())
    with writer:
        for strip in iter_prediction_strips(
            model, read, grid.shape, window_px=window_px, overlap_px=overlap_px, batch_windows=batch_windows
        ):
            mask = writer.write(strip)
            if on_mask is not None:
                on_mask(strip.row_off, mask)
            if progress is not None:
                progress(writer.rows_written, grid.height)
    return writer.summary()
