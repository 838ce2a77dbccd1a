"""Confidence tiers of RTS objects: each object's area at two stricter thresholds, and a tier from them.

The U-Net of Rustemeyer et al. 2022 (IGARSS, doi:10.1109/IGARSS46834.2022.9884869) gives an RTS
probability per pixel; the model's threshold ``t`` (``model.json``, chosen on validation images)
makes the objects. One cut hides how sure the model was: an object whose every pixel barely passes
``t`` counts as much as one the model is certain of. So each object also carries its area at two
stricter cuts (:func:`stricter_thresholds`), counted over its own pixels in ``probability.tif``:

- ``t_mid = 1 - (1 - t) / 2`` and ``t_high = 1 - (1 - t) / 4``: each cut halves the probability
  margin ``1 - t`` left above the one before, i.e. asks for at least twice the odds p / (1 - p) of
  RTS. The cuts follow the model's own calibration (for the demo model, t = 0.95: 0.975 and
  0.9875; for t = 0.5: 0.75 and 0.875) rather than fixed numbers that a model with a high ``t``
  would never reach or always pass.

The tier (:data:`TIER_RULE`) asks how much of the object stays at a stricter cut:

- ``high``: at least :data:`TIER_SHARE` of its area, and at least one minimum mapping unit
  (:data:`TIER_CORE_M2`), is at or above ``t_high``;
- ``medium``: otherwise, the same holds at ``t_mid``;
- ``low``: otherwise (also every object smaller than the unit when the unit filter is off).

The share, not an absolute core area, decides: on the validation images of the demo model's
primary split (205 objects after the default filters), the share of an object's pixels at
``t_high`` told objects matched to a label from the others apart better than the area above
``t_high`` (ROC AUC 0.79 against 0.71), and a share of 0.9 (tried: 0.5, 0.75, 0.8, 0.9) gave the
clearest ladder there: object precision 0.66 / 0.35 / 0.09 and pixel precision 0.80 / 0.29 / 0.21
for high / medium / low. The held-out test images' numbers are in the demo model's report.

Records carry the summed area of each tier (``rts_area_high_m2``, ``rts_area_medium_m2``,
``rts_area_low_m2``; they add up to ``rts_area_m2``), and the Fig. 3 chart shows the tiers as a band
from the high-tier area to the area of all tiers (:mod:`rtsmonitor.report`). Object precision per
tier on the held-out evaluation images is in the demo model's ``report.md``
(``python -m rtstrain.filter_eval``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from rtsmonitor.errors import RtsError
from rtsmonitor.objects import DEFAULT_MIN_AREA_M2

Tier = Literal["high", "medium", "low"]
TIERS: tuple[str, ...] = get_args(Tier)
"""The tiers, most confident first."""

TIER_SHARE = 0.9
"""Share (0..1) of an object's area that must stay at a stricter cut for that cut's tier (chosen on
the validation images of the demo model's primary split, see the module docstring)."""
TIER_CORE_M2 = DEFAULT_MIN_AREA_M2
"""Area in m^2 an object must also keep at a stricter cut for that cut's tier: one minimum mapping
unit (0.1 ha, ten 10 m pixels), so a tier also means "still a mappable object at this cut"."""

TIER_RULE = (
    "thresholds t (the model's, chosen on validation images), t_mid = 1 - (1 - t)/2, t_high = 1 - (1 - t)/4; "
    f"tier high if at least {TIER_SHARE:.0%} of the object's area, and at least {TIER_CORE_M2:g} m^2, is at "
    "or above t_high, else medium if that holds at t_mid, else low"
)
"""The tier rule in one line (written into ``rts.geojson``)."""


def stricter_thresholds(threshold: float) -> tuple[float, float]:
    """``(t_mid, t_high)`` of a model threshold ``t``: ``1 - (1 - t)/2`` and ``1 - (1 - t)/4``."""
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise RtsError(f"threshold {threshold} is not a probability in [0, 1]")
    return 1.0 - (1.0 - threshold) / 2.0, 1.0 - (1.0 - threshold) / 4.0


@dataclass(frozen=True)
class ObjectTier:
    """An object's areas at the stricter cuts and its tier.

    Attributes
    ----------
    area_m2 : its area at the model's threshold (all its pixels).
    area_mid_m2, area_high_m2 : area of its pixels with probability >= ``t_mid`` and >= ``t_high``.
    tier : by :data:`TIER_RULE`.

    """

    area_m2: float
    area_mid_m2: float
    area_high_m2: float
    tier: Tier

    def properties(self) -> dict[str, Any]:
        """GeoJSON feature properties: ``area_mid_m2``, ``area_high_m2`` and ``tier``."""
        return {
            "area_mid_m2": round(self.area_mid_m2, 2),
            "area_high_m2": round(self.area_high_m2, 2),
            "tier": self.tier,
        }


def tier_of(
    area_m2: float, area_mid_m2: float, area_high_m2: float, *, share: float = TIER_SHARE, core_m2: float = TIER_CORE_M2
) -> Tier:
    """The tier of an object of ``area_m2`` with these areas at the stricter cuts (:data:`TIER_RULE`)."""

    def holds(area_at_cut: float) -> bool:
        return area_at_cut >= core_m2 and area_at_cut >= share * area_m2

    if holds(area_high_m2):
        return "high"
    if holds(area_mid_m2):
        return "medium"
    return "low"


def object_tier(
    probability: NDArray[np.floating[Any]],
    inside: NDArray[np.bool_],
    threshold: float,
    pixel_area_m2: float,
) -> ObjectTier:
    """The tier of the object ``inside`` (booleans on a window) from the window's RTS ``probability``.

    NaN probabilities (unobserved) count below every cut.
    """
    if probability.shape != inside.shape:
        raise RtsError(f"probability window {probability.shape} and object window {inside.shape} differ")
    mid, high = stricter_thresholds(threshold)
    values = np.asarray(probability[inside], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        n_mid = int(np.count_nonzero(values >= mid))
        n_high = int(np.count_nonzero(values >= high))
    area = int(np.count_nonzero(inside)) * pixel_area_m2
    area_mid, area_high = n_mid * pixel_area_m2, n_high * pixel_area_m2
    return ObjectTier(
        area_m2=area, area_mid_m2=area_mid, area_high_m2=area_high, tier=tier_of(area, area_mid, area_high)
    )


def tier_areas(tiers: Sequence[ObjectTier]) -> dict[str, float]:
    """Summed object area (at the model's threshold) per tier, every tier present, in :data:`TIERS` order."""
    areas = dict.fromkeys(TIERS, 0.0)
    for item in tiers:
        areas[item.tier] += item.area_m2
    return areas


def tier_document(threshold: float) -> Mapping[str, Any]:
    """The thresholds and rule of the tiers, as written into ``rts.geojson`` (member ``tiers``)."""
    mid, high = stricter_thresholds(threshold)
    return {
        "threshold": threshold,
        "threshold_mid": round(mid, 6),
        "threshold_high": round(high, 6),
        "share": TIER_SHARE,
        "core_m2": TIER_CORE_M2,
        "rule": TIER_RULE,
    }
