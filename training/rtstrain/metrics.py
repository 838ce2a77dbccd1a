"""Pixel- and object-level precision, recall and F1 of the RTS class.

Pixel metrics are those of Rustemeyer et al. 2022 (Tables 2 and 3). Object metrics follow the
practice of Nitze et al. 2021: predicted and labelled RTS are connected components (8-connected),
matched one to one by intersection over union (IoU), a match counting as a true positive when its
IoU reaches :data:`OBJECT_IOU_THRESHOLD`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

OBJECT_IOU_THRESHOLD = 0.5
"""IoU at which a predicted object matches a labelled one (the usual object-detection criterion)."""
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 19)) + tuple(
    round(0.95 + 0.01 * k, 2) for k in range(5)
)
"""Probability thresholds tried when the threshold is chosen on validation data: 0.05 .. 0.90 in steps
of 0.05, then 0.95 .. 0.99 in steps of 0.01. The loss weighs each batch's few RTS pixels up
(:mod:`rtstrain.losses`), which pushes probabilities up: the demo model and the paper-configuration
primary model chose the top of a grid that ended at 0.95, hence the finer steps above it. Their
outputs saturate, so the top is often still chosen, but little rides on it: for the paper
configuration's leave-out-herschel model, validation F1 is 0.597 at 0.95, 0.605 at 0.99 and 0.623 at
0.99999, test F1 0.171, 0.174 and 0.175."""
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Scores:
    """Counts and the precision, recall and F1 derived from them (0 where undefined)."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """TP / (TP + FP)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: Scores) -> Scores:
        """Pool the counts of two evaluations (micro-average)."""
        return Scores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict[str, Any]:
        """Counts and rounded scores, for reports."""
        return {
            **asdict(self),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
        }


ZERO = Scores(0, 0, 0)


def pixel_scores(pred: NDArray[np.bool_], truth: NDArray[np.bool_], valid: NDArray[np.bool_]) -> Scores:
    """Pixel counts of the RTS class over ``valid`` pixels."""
    p, t = pred & valid, truth & valid
    return Scores(int(np.count_nonzero(p & t)), int(np.count_nonzero(p & ~t)), int(np.count_nonzero(~p & t)))


def object_scores(
    pred: NDArray[np.bool_],
    truth: NDArray[np.bool_],
    valid: NDArray[np.bool_],
    iou_threshold: float = OBJECT_IOU_THRESHOLD,
) -> Scores:
    """Object counts: components matched one to one, greedily by descending IoU.

    Objects are taken inside ``valid`` only; a labelled object never observed is not counted.
    """
    pred_ids, n_pred = ndimage.label(pred & valid, structure=EIGHT_CONNECTED)
    true_ids, n_true = ndimage.label(truth & valid, structure=EIGHT_CONNECTED)
    tp = len(match_objects(pred_ids, n_pred, true_ids, n_true, iou_threshold))
    return Scores(tp, n_pred - tp, n_true - tp)


def match_objects(
    pred_ids: NDArray[np.integer[Any]],
    n_pred: int,
    true_ids: NDArray[np.integer[Any]],
    n_true: int,
    iou_threshold: float = OBJECT_IOU_THRESHOLD,
) -> dict[int, int]:
    """Predicted object id -> labelled object id of each match (IoU >= ``iou_threshold``).

    ``pred_ids`` and ``true_ids`` are label rasters (0 = background, objects 1..n). Pairs are
    matched one to one, greedily by descending IoU.
    """
    if n_pred == 0 or n_true == 0:
        return {}
    pred_area = np.bincount(pred_ids.ravel(), minlength=n_pred + 1)
    true_area = np.bincount(true_ids.ravel(), minlength=n_true + 1)
    both = (pred_ids > 0) & (true_ids > 0)
    pairs, overlap = np.unique(pred_ids[both].astype(np.int64) * (n_true + 1) + true_ids[both], return_counts=True)
    p_of, t_of = pairs // (n_true + 1), pairs % (n_true + 1)
    iou = overlap / (pred_area[p_of] + true_area[t_of] - overlap)
    matches: dict[int, int] = {}
    matched_t: set[int] = set()
    for k in np.argsort(-iou, kind="stable"):
        if iou[k] < iou_threshold:
            break
        if int(p_of[k]) in matches or int(t_of[k]) in matched_t:
            continue
        matches[int(p_of[k])] = int(t_of[k])
        matched_t.add(int(t_of[k]))
    return matches


def best_threshold(
    prob: NDArray[np.floating[Any]], truth: NDArray[np.bool_], valid: NDArray[np.bool_]
) -> tuple[float, Scores]:
    """The threshold of :data:`THRESHOLD_GRID` with the highest pixel F1 (use on validation data only)."""
    scored = [(t, pixel_scores(prob >= t, truth, valid)) for t in THRESHOLD_GRID]
    return max(scored, key=lambda ts: (ts[1].f1, -abs(ts[0] - 0.5)))
