"""Normalisation, tiling, undersampling and augmentation of training tiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rtsmonitor.errors import ModelError, RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.stack import INPUT_LAYERS, MASK_LAYER, Stack
from rtsmonitor.tiling import (
    Normalisation,
    fit_normalisation,
    pad_to_multiple,
    positive_fraction,
    positive_tiles,
    tile_origins,
    tiles,
    undersample,
    undersample_indices,
)
from rtstrain.augment import AugmentConfig, augment, gaussian_blur

LAYERS = (*INPUT_LAYERS, MASK_LAYER)


def make_stack(height: int, width: int, seed: int = 0) -> Stack:
    """Reflectance 0..0.5, slope 0..40 degrees, an empty mask."""
    rng = np.random.default_rng(seed)
    data = np.empty((6, height, width), np.float32)
    data[:4] = rng.uniform(0.0, 0.5, (4, height, width))
    data[4] = rng.uniform(0.0, 40.0, (height, width))
    data[5] = 0.0
    grid = SiteGrid(epsg=32608, res_m=10.0, x_min=500_000.0, y_max=7_700_000.0, width=width, height=height)
    return Stack(data, LAYERS, grid)


def test_normalisation_maps_percentiles_to_unit_range_and_nan_to_zero() -> None:
    stack = make_stack(64, 64)
    stack.data[0, 0, 0] = np.nan
    stack.data[1, 5, 5] = 100.0  # a saturated outlier does not stretch the range
    norm = fit_normalisation([stack], INPUT_LAYERS, (0.5, 99.5))
    assert norm.layers == INPUT_LAYERS
    assert norm.high[1] < 0.51
    assert norm.low[4] == pytest.approx(np.percentile(stack.data[4], 0.5), rel=1e-6)
    x = norm.apply_stack(stack)
    assert x.shape == (64, 64, 5) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert x[0, 0, 0] == 0.0  # NaN -> 0
    assert x[5, 5, 1] == 1.0  # clipped
    mid = (norm.low[4] + norm.high[4]) / 2
    probe = stack.data[:5].copy()
    probe[4, 1, 1] = mid
    assert norm.apply(probe)[1, 1, 4] == pytest.approx(0.5, abs=1e-6)


def test_normalisation_round_trips_through_json_and_rejects_bad_input() -> None:
    norm = fit_normalisation([make_stack(32, 32, 1), make_stack(32, 32, 2)])
    again = Normalisation.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm
    with pytest.raises(ModelError, match="low < high"):
        Normalisation(("blue",), (1.0,), (1.0,))
    with pytest.raises(ModelError, match="malformed"):
        Normalisation.from_dict({"layers": ["blue"]})
    with pytest.raises(ModelError, match="does not match"):
        norm.apply(np.zeros((3, 4, 4), np.float32))


def test_constant_layer_gets_unit_span() -> None:
    stack = make_stack(16, 16)
    stack.data[4] = 7.0
    norm = fit_normalisation([stack])
    assert (norm.low[4], norm.high[4]) == (7.0, 8.0)


def test_tiles_exact_counts_labels_and_invalid_handling() -> None:
    stack = make_stack(200, 300)  # 3 x 4 whole 64-px tiles; edge strips dropped
    assert len(tile_origins((200, 300))) == 12
    stack.data[5, 10:20, 70:80] = 1.0  # RTS in tile (0, 1)
    stack.data[5, 130:131, 200:201] = 1.0  # one RTS pixel in tile (2, 3)
    stack.data[0, 64:128, 0:40] = np.nan  # tile (1, 0): 62.5 % cloud -> dropped
    stack.data[2, 0:20, 0:64] = np.nan  # tile (0, 0): 31 % cloud -> kept, pixels invalid
    stack.data[5, 0:5, 0:5] = 1.0  # RTS under the cloud does not count
    norm = fit_normalisation([stack])
    x, y, valid = tiles(stack, norm)
    assert x.shape == (11, 64, 64, 5) and y.shape == valid.shape == (11, 64, 64, 1)
    assert not np.isnan(x).any()
    assert valid[0].mean() == pytest.approx(1 - 20 / 64)
    assert (x[0][valid[0, ..., 0] == 0][:, 2] == 0).all()  # the NaN layer is 0, the others keep their values
    assert y[0].sum() == 0  # the clouded RTS pixels are invalid and not positive
    assert y[1].sum() == 100
    assert y.sum() == 101
    assert positive_tiles(y, valid).tolist() == [False, True] + [False] * 8 + [True]
    assert positive_fraction(y, valid) == pytest.approx(2 / 11)
    strict, _, _ = tiles(stack, norm, min_valid_fraction=1.0)
    assert len(strict) == 10
    overlapping, _, _ = tiles(stack, norm, size=64, stride=32, min_valid_fraction=0.0)
    assert len(overlapping) == 5 * 8


def test_tiles_need_the_mask_layer() -> None:
    stack = make_stack(64, 64)
    bare = Stack(stack.data[:5], INPUT_LAYERS, stack.grid)
    with pytest.raises(RtsError, match="mask"):
        tiles(bare, fit_normalisation([stack]))


def _labels(n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.zeros((n_pos + n_neg, 8, 8, 1), np.float32)
    y[:n_pos, 3, 3, 0] = 1.0
    rng = np.random.default_rng(9)
    order = rng.permutation(len(y))
    y = y[order]
    x = np.arange(len(y), dtype=np.float32)[:, None, None, None] * np.ones((1, 8, 8, 5), np.float32)
    return x, y, np.ones_like(y)


def test_undersample_exact_counts_and_seeded() -> None:
    x, y, valid = _labels(10, 90)
    xs, ys, _ = undersample(x, y, valid, ratio=1.0, seed=3)
    assert len(xs) == 20 and positive_tiles(ys).sum() == 10
    assert undersample_indices(y, valid, 1.0, 3).tolist() == undersample_indices(y, valid, 1.0, 3).tolist()
    assert undersample_indices(y, valid, 1.0, 3).tolist() != undersample_indices(y, valid, 1.0, 4).tolist()
    assert np.all(np.diff(xs[:, 0, 0, 0]) > 0)  # original order kept
    assert len(undersample(x, y, valid, ratio=2.5, seed=0)[0]) == 35
    assert len(undersample(x, y, valid, ratio=20.0, seed=0)[0]) == 100  # all negatives, no more
    assert len(undersample(x, y, valid, ratio=0.0, seed=0)[0]) == 10
    x0, y0, v0 = _labels(0, 5)
    assert len(undersample(x0, y0, v0)[0]) == 0
    invalid = valid.copy()
    invalid[y[..., 0].reshape(len(y), -1).any(axis=1)] = 0.0  # positives hidden under cloud
    assert len(undersample(x, y, invalid, ratio=1.0)[0]) == 0


def test_pad_to_multiple() -> None:
    image = np.ones((1000, 970, 5), np.float32)
    padded = pad_to_multiple(image, 32)
    assert padded.shape == (1024, 992, 5) and padded[1000:].sum() == 0 and padded[:, 970:].sum() == 0
    assert pad_to_multiple(padded, 32) is padded


def test_augment_blur_flips_rot90_seeded() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((6, 16, 16, 5), dtype=np.float32)
    y = (rng.random((6, 16, 16, 1)) > 0.8).astype(np.float32)
    valid = np.ones_like(y)
    valid[0, :4] = 0.0
    x[0, :4] = 0.0
    x[0, 4:] = 0.6
    config = AugmentConfig(copies=2, blur_sigma_px=(1.0, 1.0), flip=False, rot90=False)
    xa, ya, _ = augment(x, y, valid, config, seed=1)
    assert xa.shape == (18, 16, 16, 5)
    np.testing.assert_array_equal(xa[:6], x)
    np.testing.assert_array_equal(ya[6:12], y)  # blur moves no labels
    assert xa[6:].std() < x.std()  # smoother
    assert (xa[6, :4] == 0).all()  # invalid pixels stay 0 ...
    np.testing.assert_allclose(xa[6, 4:], 0.6, rtol=1e-5)  # ... and do not darken their valid neighbours
    again = augment(x, y, valid, config, seed=1)[0]
    np.testing.assert_array_equal(xa, again)
    geo = AugmentConfig(copies=1, gaussian_blur=False, flip=True, rot90=True)
    xg, yg, vg = augment(x, y, valid, geo, seed=5)
    for i in range(6):  # each copy is a rigid transform of its tile, the same for x, y and valid
        matches = [
            k
            for k in range(8)
            if np.array_equal(np.rot90(x[i][:, ::-1] if k >= 4 else x[i], k % 4), xg[6 + i])
            and np.array_equal(np.rot90(y[i][:, ::-1] if k >= 4 else y[i], k % 4), yg[6 + i])
            and np.array_equal(np.rot90(valid[i][:, ::-1] if k >= 4 else valid[i], k % 4), vg[6 + i])
        ]
        assert matches
    assert not np.array_equal(xg[6:], x)
    assert augment(x, y, valid, AugmentConfig(copies=0))[0] is x
    with pytest.raises(ValueError, match="blur_sigma_px"):
        AugmentConfig(blur_sigma_px=(2.0, 1.0))


def test_gaussian_blur_zero_sigma_is_identity() -> None:
    x = np.random.default_rng(1).random((8, 8, 5), dtype=np.float32)
    assert gaussian_blur(x, np.ones((8, 8, 1), np.float32), 0.0) is x
