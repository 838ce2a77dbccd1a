"""Class-balanced binary cross-entropy + Dice loss with a validity mask (Rustemeyer et al. 2022).

The paper trains with "binary cross-entropy + Dice" and per-batch class weights: in each batch the
positive/negative pixel ratio (about 1:30) is computed and the pixels are weighted so that both
classes count equally. Here, with ``P`` and ``N`` the numbers of valid positive and negative
pixels of the batch, a positive pixel weighs ``1 / P`` and a negative pixel ``1 / N``; the weighted
BCE is the weighted mean, i.e. ``(mean BCE over positives + mean BCE over negatives) / 2``. A batch
with only one class present (an all-negative batch can happen) falls back to the plain mean over
that class.

The Dice term is the soft Dice loss ``1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s)`` over all valid
pixels of the batch at once (not per tile: half of the undersampled tiles hold no RTS pixel, and a
per-tile Dice of an empty tile is degenerate), unweighted since Dice is already insensitive to the
number of true negatives; ``s`` = :data:`DICE_SMOOTH`.

Invalid pixels (cloud, snow, no data) carry weight 0 in both terms. Keras passes one ``y_true``
tensor to a loss, so the mask and the validity travel packed as two channels, see :func:`pack_targets`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops
from numpy.typing import NDArray

EPSILON = 1e-7
"""Predictions are clipped to [EPSILON, 1 - EPSILON] inside the BCE."""

DICE_SMOOTH = 1.0
"""Additive smoothing of the soft Dice ratio, in pixels."""


def pack_targets(y: NDArray[np.float32], valid: NDArray[np.float32]) -> NDArray[np.float32]:
    """Stack the RTS mask and the validity mask [N, H, W, 1] into the loss's ``y_true`` [N, H, W, 2]."""
    return np.concatenate([y, valid], axis=-1).astype(np.float32)


def class_weights(y: Any, valid: Any) -> Any:
    """Per-pixel weights: ``1 / P`` for valid positives, ``1 / N`` for valid negatives, 0 where invalid.

    ``P`` and ``N`` are counted over the whole batch; a class absent from the batch gets no weight.
    Works on Keras tensors and numpy arrays alike.
    """
    positive = y * valid
    negative = (1.0 - y) * valid
    n_pos = ops.sum(positive)
    n_neg = ops.sum(negative)
    w_pos = ops.where(n_pos > 0, 1.0 / ops.maximum(n_pos, 1.0), 0.0)
    w_neg = ops.where(n_neg > 0, 1.0 / ops.maximum(n_neg, 1.0), 0.0)
    return positive * w_pos + negative * w_neg


def weighted_bce(y: Any, valid: Any, p: Any) -> Any:
    """Class-balanced BCE of predictions ``p`` against ``y`` over the valid pixels of the batch."""
    p = ops.clip(p, EPSILON, 1.0 - EPSILON)
    bce = -(y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p))
    weights = class_weights(y, valid)
    return ops.sum(weights * bce) / ops.maximum(ops.sum(weights), EPSILON)


def soft_dice(y: Any, valid: Any, p: Any) -> Any:
    """Soft Dice coefficient over all valid pixels of the batch (1 = perfect overlap)."""
    p = p * valid
    y = y * valid
    return (2.0 * ops.sum(p * y) + DICE_SMOOTH) / (ops.sum(p) + ops.sum(y) + DICE_SMOOTH)


def _unpack(y_true: Any, y_pred: Any) -> tuple[Any, Any, Any]:
    y_true = ops.cast(y_true, "float32")
    return y_true[..., 0:1], y_true[..., 1:2], ops.cast(y_pred, "float32")


@keras.saving.register_keras_serializable(package="rtstrain")
class BceDiceLoss(keras.losses.Loss):  # type: ignore[misc]  # keras is untyped
    """``weighted BCE + (1 - soft Dice)`` with ``y_true`` = [mask, valid] channels, ``y_pred`` 1 channel.

    The loss is one number per batch (the class weights are per batch), so Keras' reduction over
    samples does not apply.
    """

    def __init__(self, dice_weight: float = 1.0, name: str = "bce_dice", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.dice_weight = dice_weight

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Loss of one batch."""
        y, valid, p = _unpack(y_true, y_pred)
        return weighted_bce(y, valid, p) + self.dice_weight * (1.0 - soft_dice(y, valid, p))

    def get_config(self) -> dict[str, Any]:
        """Serialisable configuration."""
        config: dict[str, Any] = super().get_config()
        config["dice_weight"] = self.dice_weight
        return config


def dice_metric(y_true: Any, y_pred: Any) -> Any:
    """Soft Dice coefficient of a batch on packed targets, for Keras' metrics list."""
    y, valid, p = _unpack(y_true, y_pred)
    return soft_dice(y, valid, p)


def bce_metric(y_true: Any, y_pred: Any) -> Any:
    """Class-balanced BCE of a batch on packed targets, for Keras' metrics list."""
    y, valid, p = _unpack(y_true, y_pred)
    return weighted_bce(y, valid, p)
