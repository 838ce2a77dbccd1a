"""A spectral-threshold baseline for the U-Net: RTS where vegetation is sparse and the ground bright.

Active slump floors are bare, wet mineral soil: low NDVI and higher visible reflectance than the
tundra around them. The baseline labels a pixel RTS when NDVI <= ``max_ndvi`` and the mean of blue,
green and red >= ``min_brightness``, both tuned on training pixels for the best pixel F1. If it
scores close to the U-Net, the data set is too easy to say anything about the network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rtsmonitor.stack import MASK_LAYER, Stack
from rtstrain.metrics import Scores, pixel_scores

NDVI_GRID = tuple(round(-0.1 + 0.025 * k, 3) for k in range(29))
"""NDVI thresholds tried (-0.1 .. 0.6)."""
BRIGHTNESS_QUANTILES = tuple(round(0.02 * k, 2) for k in range(1, 50))
"""Quantiles of training brightness tried as the brightness threshold."""
FIT_SAMPLE_PX = 2_000_000
"""Training pixels sampled (seeded) to tune the thresholds."""


@dataclass(frozen=True)
class SpectralThreshold:
    """RTS = NDVI <= max_ndvi and mean(blue, green, red) >= min_brightness (reflectance)."""

    max_ndvi: float
    min_brightness: float

    def predict(self, stack: Stack) -> NDArray[np.bool_]:
        """Boolean RTS map of ``stack`` (False where not observed)."""
        ndvi, brightness = features(stack)
        return (ndvi <= self.max_ndvi) & (brightness >= self.min_brightness)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def features(stack: Stack) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """NDVI and visible brightness of a stack (NaN where not observed)."""
    red, nir = stack.layer("red"), stack.layer("nir")
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = ((nir - red) / (nir + red)).astype(np.float32)
    brightness = ((stack.layer("blue") + stack.layer("green") + red) / 3).astype(np.float32)
    return ndvi, brightness


def observed(stack: Stack) -> NDArray[np.bool_]:
    """Pixels with every spectral layer observed."""
    valid: NDArray[np.bool_] = np.asarray(np.isfinite(stack.data[:4]).all(axis=0), dtype=bool)
    return valid


def fit_spectral_threshold(stacks: list[Stack], seed: int = 0) -> tuple[SpectralThreshold, Scores]:
    """Tune the two thresholds on the training stacks' labelled pixels for the best pixel F1."""
    ndvi_all, bright_all, truth_all = [], [], []
    for stack in stacks:
        ndvi, brightness = features(stack)
        valid = observed(stack)
        ndvi_all.append(ndvi[valid])
        bright_all.append(brightness[valid])
        truth_all.append(stack.layer(MASK_LAYER)[valid] > 0.5)
    ndvi_v, bright_v, truth_v = np.concatenate(ndvi_all), np.concatenate(bright_all), np.concatenate(truth_all)
    if ndvi_v.size > FIT_SAMPLE_PX:
        pick = np.random.default_rng(seed).choice(ndvi_v.size, FIT_SAMPLE_PX, replace=False)
        ndvi_v, bright_v, truth_v = ndvi_v[pick], bright_v[pick], truth_v[pick]
    everywhere = np.ones_like(truth_v)
    best: tuple[SpectralThreshold, Scores] | None = None
    for b in np.unique(np.quantile(bright_v, BRIGHTNESS_QUANTILES)):
        bright_enough = bright_v >= b
        for n in NDVI_GRID:
            scores = pixel_scores(bright_enough & (ndvi_v <= n), truth_v, everywhere)
            if best is None or scores.f1 > best[1].f1:
                best = (SpectralThreshold(max_ndvi=float(n), min_brightness=float(b)), scores)
    if best is None:
        raise ValueError("no training pixels to fit the spectral-threshold baseline")
    return best
