"""Class-balanced BCE + Dice against a plain numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from rtstrain.losses import BceDiceLoss, class_weights, dice_metric, pack_targets


def reference_loss(y: np.ndarray, valid: np.ndarray, p: np.ndarray) -> float:
    """Mean BCE over valid positives and over valid negatives, averaged; plus 1 - soft Dice on valid pixels."""
    y, valid, p = (a.astype(np.float64).ravel() for a in (y, valid, p))
    p = np.clip(p, 1e-7, 1 - 1e-7)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    pos = (y == 1) & (valid == 1)
    neg = (y == 0) & (valid == 1)
    class_means = [bce[m].mean() for m in (pos, neg) if m.any()]
    weighted = float(np.mean(class_means))
    pv, yv = p[valid == 1], y[valid == 1]
    dice = (2 * (pv * yv).sum() + 1) / (pv.sum() + yv.sum() + 1)
    return weighted + 1 - dice


def batch(seed: int, pos_rate: float = 1 / 31, invalid_rate: float = 0.1) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    shape = (4, 16, 16, 1)
    y = (rng.random(shape) < pos_rate).astype(np.float32)
    valid = (rng.random(shape) >= invalid_rate).astype(np.float32)
    p = rng.random(shape).astype(np.float32)
    return y, valid, p


@pytest.mark.parametrize(("seed", "pos_rate"), [(0, 1 / 31), (1, 0.5), (2, 0.0), (3, 1.0)])
def test_loss_matches_numpy_reference(seed: int, pos_rate: float) -> None:
    y, valid, p = batch(seed, pos_rate)
    got = float(BceDiceLoss()(pack_targets(y, valid), p))
    assert got == pytest.approx(reference_loss(y, valid, p), rel=1e-5)


def test_both_classes_weigh_equally_and_invalid_pixels_weigh_nothing() -> None:
    y, valid, _ = batch(4)
    w = np.asarray(class_weights(y, valid))
    pos, neg = (y == 1) & (valid == 1), (y == 0) & (valid == 1)
    assert 0 < pos.sum() < neg.sum() / 10  # about 1:30, as in the paper
    assert w[pos].sum() == pytest.approx(1.0) and w[neg].sum() == pytest.approx(1.0)
    assert np.ptp(w[pos]) == 0 and np.ptp(w[neg]) == 0
    assert w[pos][0] / w[neg][0] == pytest.approx(neg.sum() / pos.sum())
    assert (w[valid == 0] == 0).all()


def test_invalid_pixels_do_not_change_the_loss() -> None:
    y, valid, p = batch(5)
    loss = BceDiceLoss()
    base = float(loss(pack_targets(y, valid), p))
    p2, y2 = p.copy(), y.copy()
    p2[valid == 0] = 1 - p2[valid == 0]
    y2[valid == 0] = 1 - y2[valid == 0]
    assert float(loss(pack_targets(y2, valid), p2)) == pytest.approx(base, rel=1e-6)


def test_perfect_prediction_scores_near_zero_and_dice_metric() -> None:
    y, valid, _ = batch(6, 0.2)
    targets = pack_targets(y, valid)
    assert float(BceDiceLoss()(targets, y)) < 1e-3
    assert float(dice_metric(targets, y)) == pytest.approx(1.0)
    assert float(BceDiceLoss(dice_weight=0.0)(targets, 1 - y)) > 10
