"""Augmentation of training tiles: Gaussian blur (the best in Rustemeyer et al. 2022), flips, rot90.

The paper augments the training tiles and reports Gaussian blur as the augmentation that worked
best (rotation and flips were tried too). Augmentation here is offline and seeded: every training
tile is kept and ``copies`` augmented copies of it are appended, each blurred with a sigma drawn
uniformly from ``blur_sigma_px`` and, where enabled, flipped and/or rotated by a multiple of 90
degrees (the masks move with the image; blur touches the input layers only).

Blur respects the validity mask: it is a normalised convolution, ``G*(x v) / G*v`` on valid pixels,
so unobserved pixels (0 after normalisation) do not darken their neighbours and stay 0.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.ndimage import gaussian_filter


class AugmentConfig(BaseModel):
    """Which augmentations make the extra training tiles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    copies: int = Field(1, ge=0, description="Augmented copies appended per training tile (0 = no augmentation).")
    gaussian_blur: bool = Field(True, description="Blur the input layers of each copy (the paper's best).")
    blur_sigma_px: tuple[float, float] = Field(
        (0.5, 1.5), description="Range of the Gaussian sigma, in pixels, drawn uniformly per copy."
    )
    flip: bool = Field(False, description="Flip each copy left-right and/or up-down at random.")
    rot90: bool = Field(False, description="Rotate each copy by a random multiple of 90 degrees.")

    @model_validator(mode="after")
    def _check_sigma(self) -> AugmentConfig:
        low, high = self.blur_sigma_px
        if not 0.0 <= low <= high:
            raise ValueError(f"blur_sigma_px must satisfy 0 <= low <= high, got {self.blur_sigma_px}")
        return self


def gaussian_blur(x: NDArray[np.float32], valid: NDArray[np.float32], sigma_px: float) -> NDArray[np.float32]:
    """Blur one tile ``x`` [H, W, C] in H and W with ``sigma_px``, as a normalised convolution over ``valid`` [H, W, 1].

    Invalid pixels stay 0. ``sigma_px = 0`` returns ``x`` unchanged.
    """
    if sigma_px <= 0:
        return x
    sigma = (sigma_px, sigma_px, 0.0)
    weight = gaussian_filter(valid.astype(np.float32), sigma, mode="nearest")
    blurred = gaussian_filter(x * valid, sigma, mode="nearest")
    out = np.where(valid > 0.5, blurred / np.maximum(weight, 1e-6), 0.0)
    return out.astype(np.float32)


def _geometric(a: NDArray[np.float32], flip_lr: bool, flip_ud: bool, k: int) -> NDArray[np.float32]:
    if flip_lr:
        a = a[:, ::-1]
    if flip_ud:
        a = a[::-1]
    return np.ascontiguousarray(np.rot90(a, k, axes=(0, 1)))


def augment(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    valid: NDArray[np.float32],
    config: AugmentConfig,
    seed: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Return the tiles followed by ``config.copies`` augmented copies of each (same order per copy).

    ``x`` [N, H, W, C], ``y`` and ``valid`` [N, H, W, 1]. The result depends only on the inputs,
    ``config`` and ``seed``. With rot90 the tiles must be square.
    """
    if config.copies == 0 or len(x) == 0:
        return x, y, valid
    rng = np.random.default_rng(seed)
    xs, ys, vs = [x], [y], [valid]
    for _ in range(config.copies):
        xa = np.empty_like(x)
        ya = np.empty_like(y)
        va = np.empty_like(valid)
        for i in range(len(x)):
            sigma = float(rng.uniform(*config.blur_sigma_px))
            flip_lr, flip_ud = (bool(b) for b in rng.integers(0, 2, size=2))
            k = int(rng.integers(0, 4))
            flip_lr, flip_ud = flip_lr and config.flip, flip_ud and config.flip
            k = k if config.rot90 else 0
            xi = gaussian_blur(x[i], valid[i], sigma) if config.gaussian_blur else x[i]
            xa[i] = _geometric(xi, flip_lr, flip_ud, k)
            ya[i] = _geometric(y[i], flip_lr, flip_ud, k)
            va[i] = _geometric(valid[i], flip_lr, flip_ud, k)
        xs.append(xa)
        ys.append(ya)
        vs.append(va)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(vs)
