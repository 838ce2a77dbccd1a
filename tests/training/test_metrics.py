"""Pixel and object metrics against hand-counted cases."""

from __future__ import annotations

import numpy as np

from rtstrain.metrics import THRESHOLD_GRID, Scores, best_threshold, object_scores, pixel_scores


def test_pixel_scores_count_only_valid_pixels() -> None:
    truth = np.array([[1, 1, 0, 0]], dtype=bool)
    pred = np.array([[1, 0, 1, 1]], dtype=bool)
    valid = np.array([[1, 1, 1, 0]], dtype=bool)
    s = pixel_scores(pred, truth, valid)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)
    assert s.precision == s.recall == s.f1 == 0.5


def test_undefined_scores_are_zero() -> None:
    assert Scores(0, 0, 0).f1 == 0.0
    assert (Scores(1, 0, 0) + Scores(0, 1, 2)) == Scores(1, 1, 2)


def test_object_matching_by_iou() -> None:
    truth = np.zeros((20, 20), dtype=bool)
    truth[1:5, 1:5] = True  # object A, 16 px
    truth[10:14, 10:14] = True  # object B, 16 px
    truth[17:19, 1:3] = True  # object C, missed
    pred = np.zeros_like(truth)
    pred[1:5, 1:4] = True  # IoU 12/16 with A: match
    pred[10:11, 10:14] = True  # IoU 4/16 with B: too small
    pred[1:3, 15:18] = True  # false alarm
    valid = np.ones_like(truth)
    s = object_scores(pred, truth, valid)
    assert (s.tp, s.fp, s.fn) == (1, 2, 2)
    loose = object_scores(pred, truth, valid, iou_threshold=0.25)
    assert (loose.tp, loose.fp, loose.fn) == (2, 1, 1)


def test_one_prediction_matches_one_label_only() -> None:
    truth = np.zeros((10, 10), dtype=bool)
    truth[2:6, 1:4] = True
    truth[2:6, 5:8] = True
    pred = np.zeros_like(truth)
    pred[2:6, 1:8] = True  # one blob over both labels
    s = object_scores(pred, truth, np.ones_like(truth), iou_threshold=0.3)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)


def test_best_threshold_maximises_f1() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((50, 50)) < 0.2
    prob = np.where(truth, 0.7, 0.2) + rng.normal(0, 0.05, truth.shape)
    threshold, scores = best_threshold(prob, truth, np.ones_like(truth))
    assert 0.3 <= threshold <= 0.6
    assert scores.f1 > 0.99


def test_best_threshold_looks_beyond_095_when_the_model_is_that_sure() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random((60, 60)) < 0.2
    # Background reaches up to 0.965; every RTS pixel is above 0.975: only a cut in (0.965, 0.975] is perfect.
    prob = np.where(truth, rng.uniform(0.975, 1.0, truth.shape), rng.uniform(0.0, 0.965, truth.shape))
    threshold, scores = best_threshold(prob, truth, np.ones_like(truth))
    assert threshold == 0.97 and scores.f1 == 1.0
    assert THRESHOLD_GRID[-1] == 0.99 and list(THRESHOLD_GRID) == sorted(set(THRESHOLD_GRID))
