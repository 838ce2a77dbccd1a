"""Normalisation, tiling and undersampling of image stacks for the U-Net (numpy only).

Pre-processing of Rustemeyer et al. 2022 ("Tracking rapid permafrost thaw through time", IGARSS
2022, doi:10.1109/IGARSS46834.2022.9884869): every input layer is normalised to [0, 1] with
constants fitted on the training images, the images are cut into 64 x 64 tiles (only 7.9 % of the
paper's tiles hold an RTS pixel) and the tiles are undersampled to 1:1 positive : negative tiles.

Training and inference share this module, so that inference applies exactly the transform the
model was trained with (the constants travel in ``model.json``, see :meth:`Normalisation.to_dict`).

Unobserved pixels (NaN: no data, cloud, shadow, snow) become 0 after normalisation, and a
``valid`` mask marks them so the loss and the metrics can leave them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rtsmonitor.errors import ModelError, RtsError
from rtsmonitor.stack import INPUT_LAYERS, MASK_LAYER, Stack

DEFAULT_PERCENTILES: tuple[float, float] = (0.5, 99.5)
"""Percentiles (in %) of each layer's finite training pixels mapped to 0 and 1: robust min/max."""

MAX_FIT_SAMPLES_PER_STACK = 250_000
"""At most this many finite pixels per layer and stack enter the percentile fit (an even stride)."""

TILE_SIZE_PX = 64
"""Tile edge in pixels (Rustemeyer et al. 2022)."""

MIN_VALID_FRACTION = 0.5
"""Tiles with less than this fraction of valid pixels (all input layers and the mask finite) are dropped."""


@dataclass(frozen=True)
class Normalisation:
    """Per-layer linear map of ``[low, high]`` onto ``[0, 1]``, clipped; NaN becomes 0.

    Attributes
    ----------
    layers : layer names, in the model's channel order.
    low, high : values mapped to 0 and 1, one per layer, in the layer's unit
        (reflectance 0..1 for the spectral layers, degrees for slope).
    percentiles : the percentiles (in %) ``low`` and ``high`` were fitted at, kept as provenance.

    """

    layers: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES

    def __post_init__(self) -> None:
        """Check that there is one finite, increasing pair per layer."""
        if not (len(self.layers) == len(self.low) == len(self.high)) or not self.layers:
            raise ModelError(f"normalisation needs one low and high per layer, got {self!r}")
        for name, lo, hi in zip(self.layers, self.low, self.high, strict=True):
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise ModelError(f"normalisation of layer {name!r}: need finite low < high, got {lo}, {hi}")

    def apply(self, data: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Normalise ``data`` [L, H, W] (layers in ``self.layers`` order) to channels-last [H, W, L].

        Values are clipped to [0, 1]; a NaN (unobserved) value becomes 0 in its own layer, while the
        pixel's other layers keep their values (a cloud pixel has spectral 0 and its real slope).
        Use :func:`valid_mask` on the same ``data`` to know which pixels were fully observed.
        """
        if data.ndim != 3 or data.shape[0] != len(self.layers):
            raise ModelError(f"data of shape {data.shape} does not match the {len(self.layers)} layers {self.layers}")
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        span = (np.asarray(self.high, dtype=np.float32) - np.asarray(self.low, dtype=np.float32))[:, None, None]
        scaled = np.clip((data.astype(np.float32) - low) / span, 0.0, 1.0)
        scaled = np.nan_to_num(scaled, nan=0.0)
        return np.ascontiguousarray(np.moveaxis(scaled, 0, -1), dtype=np.float32)

    def apply_stack(self, stack: Stack) -> NDArray[np.float32]:
        """Normalise the layers of ``stack`` named in ``self.layers`` (any order in the stack) to [H, W, L]."""
        return self.apply(select_layers(stack, self.layers))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in ``model.json``."""
        return {
            "method": "percentile-minmax",
            "layers": list(self.layers),
            "low": [float(v) for v in self.low],
            "high": [float(v) for v in self.high],
            "percentiles": [float(p) for p in self.percentiles],
            "clip": [0.0, 1.0],
            "nan_to": 0.0,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalisation:
        """Inverse of :meth:`to_dict`; raises :class:`ModelError` on a malformed dict."""
        try:
            return cls(
                layers=tuple(str(v) for v in data["layers"]),
                low=tuple(float(v) for v in data["low"]),
                high=tuple(float(v) for v in data["high"]),
                percentiles=(float(data["percentiles"][0]), float(data["percentiles"][1])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"malformed normalisation in model metadata: {exc!r} in {data!r}") from exc


def select_layers(stack: Stack, layers: Sequence[str]) -> NDArray[np.float32]:
    """The layers ``layers`` of ``stack``, in that order, as [L, H, W]."""
    missing = [name for name in layers if name not in stack.layers]
    if missing:
        raise RtsError(f"stack lacks layers {missing} (has {stack.layers}); the model needs {tuple(layers)}")
    return np.stack([stack.layer(name) for name in layers])


def valid_mask(data: NDArray[np.floating[Any]]) -> NDArray[np.bool_]:
    """Pixels [H, W] where every layer of ``data`` [L, H, W] is finite."""
    finite: NDArray[np.bool_] = np.all(np.isfinite(data), axis=0)
    return finite


def fit_normalisation(
    stacks: Sequence[Stack],
    layers: Sequence[str] = INPUT_LAYERS,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> Normalisation:
    """Fit per-layer constants on the finite pixels of the training ``stacks``.

    ``low`` and ``high`` are the ``percentiles`` (default 0.5 % and 99.5 %) of each layer's finite
    pixels pooled over all stacks: a robust min/max, so a few saturated or broken pixels do not
    squash the range. Each stack contributes at most :data:`MAX_FIT_SAMPLES_PER_STACK` pixels per
    layer (an even stride over its finite pixels, so the fit is deterministic). A layer whose two
    percentiles coincide (a constant layer) gets ``high = low + 1``.

    Fit on training images only: validation and test images must not leak into the constants.
    """
    if not stacks:
        raise RtsError("fit_normalisation needs at least one stack")
    lo_p, hi_p = percentiles
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise RtsError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    lows: list[float] = []
    highs: list[float] = []
    for name in layers:
        samples = []
        for stack in stacks:
            values = select_layers(stack, [name])[0].ravel()
            values = values[np.isfinite(values)]
            step = max(1, -(-values.size // MAX_FIT_SAMPLES_PER_STACK))
            samples.append(values[::step])
        pooled = np.concatenate(samples)
        if pooled.size == 0:
            raise RtsError(f"layer {name!r} has no finite pixel in any training stack")
        lo, hi = (float(v) for v in np.percentile(pooled, [lo_p, hi_p]))
        lows.append(lo)
        highs.append(hi if hi > lo else lo + 1.0)
    return Normalisation(tuple(layers), tuple(lows), tuple(highs), (float(lo_p), float(hi_p)))


def tile_origins(shape: tuple[int, int], size: int = TILE_SIZE_PX, stride: int = TILE_SIZE_PX) -> list[tuple[int, int]]:
    """(row, col) of the top-left corner of every whole tile in an image of ``shape`` (H, W).

    Only tiles that fit entirely are produced: with size = stride = 64, a 1000-px edge gives 15
    tiles and its last 40 pixels are not tiled.
    """
    if size < 1 or stride < 1:
        raise RtsError(f"tile size and stride must be positive, got {size}, {stride}")
    height, width = shape
    return [(r, c) for r in range(0, height - size + 1, stride) for c in range(0, width - size + 1, stride)]


def tiles(
    stack: Stack,
    normalisation: Normalisation,
    size: int = TILE_SIZE_PX,
    stride: int = TILE_SIZE_PX,
    min_valid_fraction: float = MIN_VALID_FRACTION,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Cut a labelled ``stack`` into normalised tiles.

    Returns
    -------
    x : [N, size, size, L] float32 in [0, 1], layers in ``normalisation.layers`` order, 0 where invalid.
    y : [N, size, size, 1] float32, 1 for RTS and 0 otherwise (also 0 where invalid).
    valid : [N, size, size, 1] float32, 1 where every input layer and the mask are finite.

    Tiles whose valid fraction is below ``min_valid_fraction`` (default 0.5) are dropped, as are
    the edge strips that do not fill a whole tile (see :func:`tile_origins`). The mask layer
    counts as RTS where it is > 0.5.
    """
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise RtsError(f"min_valid_fraction must lie in [0, 1], got {min_valid_fraction}")
    inputs = select_layers(stack, normalisation.layers)
    mask = select_layers(stack, [MASK_LAYER])[0]
    valid = valid_mask(inputs) & np.isfinite(mask)
    x_full = normalisation.apply(inputs)
    y_full = np.where(valid, np.nan_to_num(mask, nan=0.0) > 0.5, False)
    keep = [
        (r, c)
        for r, c in tile_origins(stack.data.shape[1:], size, stride)
        if valid[r : r + size, c : c + size].mean() >= min_valid_fraction
    ]
    n_layers = len(normalisation.layers)
    x = np.empty((len(keep), size, size, n_layers), dtype=np.float32)
    y = np.empty((len(keep), size, size, 1), dtype=np.float32)
    v = np.empty((len(keep), size, size, 1), dtype=np.float32)
    for i, (r, c) in enumerate(keep):
        x[i] = x_full[r : r + size, c : c + size]
        y[i, ..., 0] = y_full[r : r + size, c : c + size]
        v[i, ..., 0] = valid[r : r + size, c : c + size]
    return x, y, v


def positive_tiles(y: NDArray[np.floating[Any]], valid: NDArray[np.floating[Any]] | None = None) -> NDArray[np.bool_]:
    """Per tile [N]: True where the tile holds at least one (valid) RTS pixel."""
    hits = y > 0.5 if valid is None else (y > 0.5) & (valid > 0.5)
    return np.asarray(hits.reshape(len(y), -1).any(axis=1))


def positive_fraction(y: NDArray[np.floating[Any]], valid: NDArray[np.floating[Any]] | None = None) -> float:
    """Fraction of tiles with at least one RTS pixel (7.9 % in the paper); 0 for no tiles.

    This is a fraction of *tiles*, not of pixels (the pixel ratio is about 1:30 in the paper).
    """
    return float(positive_tiles(y, valid).mean()) if len(y) else 0.0


def undersample_indices(
    y: NDArray[np.floating[Any]],
    valid: NDArray[np.floating[Any]] | None = None,
    ratio: float = 1.0,
    seed: int = 0,
) -> NDArray[np.int64]:
    """Indices of the tiles kept by :func:`undersample`, ascending."""
    if ratio < 0:
        raise RtsError(f"undersampling ratio must be >= 0, got {ratio}")
    positive = positive_tiles(y, valid)
    pos = np.flatnonzero(positive)
    neg = np.flatnonzero(~positive)
    n_neg = min(len(neg), round(ratio * len(pos)))
    chosen = np.random.default_rng(seed).choice(neg, size=n_neg, replace=False)
    return np.sort(np.concatenate([pos, chosen])).astype(np.int64)


def undersample(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    valid: NDArray[np.float32],
    ratio: float = 1.0,
    seed: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Keep every positive tile and ``round(ratio * n_positive)`` randomly chosen all-negative tiles.

    ``ratio`` is negatives per positive: 1.0 is the paper's 1:1 (positive = at least one valid
    RTS pixel). When there are fewer negatives than asked for, all of them are kept; with no
    positive tile nothing is kept. The choice depends only on ``seed`` and the tiles; kept tiles
    stay in their original order (shuffle when batching).
    """
    keep = undersample_indices(y, valid, ratio, seed)
    return x[keep], y[keep], valid[keep]


def pad_to_multiple(image: NDArray[np.float32], multiple: int) -> NDArray[np.float32]:
    """Zero-pad ``image`` [H, W, C] at the bottom and right so H and W are multiples of ``multiple``.

    The U-Net accepts any H and W that are multiples of its input multiple (``2 ** levels``, 32 for
    five poolings). Crop the prediction back with ``pred[:H, :W]``.
    """
    if multiple < 1:
        raise RtsError(f"multiple must be positive, got {multiple}")
    height, width = image.shape[:2]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
