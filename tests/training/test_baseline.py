"""The spectral-threshold baseline finds bright bare ground and nothing else."""

from __future__ import annotations

import numpy as np

from rtsmonitor.grid import grid_for_centre
from rtsmonitor.stack import INPUT_LAYERS, MASK_LAYER, Stack
from rtstrain.baseline import fit_spectral_threshold


def tundra_with_bare_patch(seed: int) -> Stack:
    rng = np.random.default_rng(seed)
    grid = grid_for_centre(-126.75, 69.75, 0.6)
    h, w = grid.shape
    data = np.empty((6, h, w), dtype=np.float32)
    data[0], data[1], data[2], data[3] = 0.03, 0.05, 0.04, 0.30  # tundra
    mask = np.zeros((h, w), dtype=bool)
    mask[20:35, 20:40] = True
    data[0:4, mask] = np.array([0.10, 0.13, 0.15, 0.20])[:, None]  # bare slump floor
    data[:4] += rng.normal(0, 0.005, (4, h, w)).astype(np.float32)
    data[4] = 8.0
    data[5] = mask
    data[:4, :5, :] = np.nan  # an unobserved strip
    return Stack(data, (*INPUT_LAYERS, MASK_LAYER), grid)


def test_fit_finds_the_bare_patch() -> None:
    train = [tundra_with_bare_patch(s) for s in range(2)]
    rule, scores = fit_spectral_threshold(train)
    assert scores.f1 > 0.98
    test = tundra_with_bare_patch(5)
    pred = rule.predict(test)
    assert pred[20:35, 20:40].mean() > 0.95
    assert pred[40:, :].mean() < 0.01
    assert not pred[:5].any()  # NaN compares False: unobserved pixels are never RTS
