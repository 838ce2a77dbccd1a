"""Radiometric drift check: a site-year's stable-terrain reflectance against the site's earlier years.

A jump in a site's RTS series should come from the ground, not from the imagery. Before a
site-year is accepted, the median surface reflectance of its *stable terrain* (after baseline
harmonisation, :func:`rtsmonitor.imagery.harmonise`) is compared with the same statistic of the
site's earlier accepted years; a shift beyond the tolerance marks the record *suspect* and keeps
the figures, instead of silently adding a jump to the time series.

**Stable terrain** is every pixel of the site grid that is

- observed: blue, green, red, NIR and slope finite (SCL no data, cloud, shadow, cirrus and snow are
  NaN in the stack, :mod:`rtsmonitor.stack`) and not unobserved in ``mask.tif``;
- not RTS: ``mask.tif`` is not :data:`~rtsmonitor.inference.MASK_RTS` (slumps change from year to
  year by definition);
- not open water: NDWI = (green - NIR) / (green + NIR) < :data:`WATER_NDWI` (McFeeters 1996);
  lake and river reflectance follows sediment load, depth and ice, and thermokarst lakes drain;
- flat: slope < :data:`STABLE_MAX_SLOPE_DEG`. On slopes the illumination depends on the sun's
  position, which differs between a mid-July and a late-August scene; RTS, eroding banks and
  bluffs sit on slopes too.

Per band the statistic is the median over the site, accumulated strip by strip in bounded memory
as a histogram with one bin per L2A digital number (:data:`HISTOGRAM_STEP`), so it equals the exact
median of the DN-quantised values whatever the strip size (:class:`DriftAccumulator`).

**Reference.** The per-band median, over the site's *earlier* years (``year < this year``) whose
record is ``ok``, not suspect, and holds at least :data:`MIN_STABLE_PX` stable pixels, of their
stored statistics (``stable_reflectance`` in the record, so no earlier raster is read again). With
no such year the check passes with reference ``None``. A year processed before its predecessors
(the backfill runs years in parallel) is compared with what exists when it runs.

**Tolerance.** For each band the ratio ``r_b = median_b / reference_b``. Two rules; either makes the
year suspect:

- *brightness*: ``|geometric mean of r_b - 1| > DRIFT_BRIGHTNESS_TOL`` (10 %). A calibration error, a
  missed or doubled baseline offset or an atmospheric-correction bias brightens or darkens every
  band together; the geometric mean of the four ratios measures that common factor, while phenology
  (red up, NIR down as tundra senesces in August) largely cancels in it. 10 % is the sum of the
  5 % absolute radiometric accuracy of each of the two years compared: Sentinel-2 MSI Level-1
  radiometry is calibrated to better than 5 % (target 3 %) in every band (Gascon et al. 2017,
  "Copernicus Sentinel-2A Calibration and Products Validation Status", Remote Sens. 9(6):584,
  doi:10.3390/rs9060584; Revel et al. 2019, "Sentinel-2A and 2B absolute calibration monitoring",
  Eur. J. Remote Sens. 52(1)), S2A and S2B agree within a few per cent (Lamquin et al. 2019, Remote
  Sens. Environ. 233:111369), and the surface-reflectance accuracy commonly specified for
  atmospheric correction is +-(0.005 + 0.05 rho) (Vermote & Kotchenova 2008, J. Geophys. Res.
  113:D23S90). A shift beyond 10 % is thus more than both products' stated accuracy allows.
- *band*: any ``|r_b - 1| > DRIFT_BAND_TOL`` (25 %) *and* ``|median_b - reference_b| >``
  :data:`DRIFT_BAND_MIN_ABS` (0.005, the absolute term of that accuracy, so that a dark band's
  few-thousandths wobble does not count). This catches a single broken band, while leaving room
  for real inter-annual and within-season change of the surface: July-August scenes differ in
  greenness (the project's synthetic tundra, :mod:`rtsmonitor.offline.synthetic`, models NIR
  about 17 % lower and red about 12 % higher at the end of August than at peak season; we know of
  no published figure for the inter-annual spread of stable-tundra median reflectance at the
  paper's sites, so the band rule is deliberately loose).

Baseline harmonisation must have happened before: from processing baseline 04.00 (25 January 2022)
L2A digital numbers carry BOA_ADD_OFFSET = -1000 (ESA, Sentinel-2 L2A Product Specification
S2-PDGS-MPC-L2A-PSD, and the baseline 04.00 note, "Copernicus Sentinel-2: Major Products Upgrade
Upcoming", Sentinel Online, 2021), i.e. +0.1 reflectance. :func:`~rtsmonitor.imagery.harmonise`
removes it; missed, it would shift stable tundra by +40 % (NIR ~0.25) to +300 % (blue ~0.03), far
beyond both rules, so the check also catches a scene whose ``s2:processing_baseline`` is wrong.
A 15 % brightening of every band gives a brightness shift of 15 %: suspect.

**In the record** (:class:`~rtsmonitor.records.SiteYearRecord`): ``stable_reflectance`` (JSON,
:meth:`StableReflectance.to_json`: this year's per-band medians and pixel counts, what later years
compare with), ``drift`` (JSON: reference, reference years, ratios, brightness shift, tolerances,
the flags and the reason) and ``suspect`` (``True``/``False``; ``None`` where no check ran, e.g.
records from before the check or without a scene). A suspect record keeps its status ``ok`` and all
its numbers; ``suspect`` and the reason in ``drift`` say why it should not be read as part of a
consistent series, and suspect years never serve as a reference for later ones.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from rtsmonitor.errors import RtsError
from rtsmonitor.imagery import REFLECTANCE_SCALE_DN, SPECTRAL_LAYERS
from rtsmonitor.inference import MASK_RTS, MASK_UNOBSERVED
from rtsmonitor.stack import SLOPE_LAYER

if TYPE_CHECKING:
    from rtsmonitor.records import SiteYearRecord

log = logging.getLogger(__name__)

DRIFT_BANDS: tuple[str, ...] = SPECTRAL_LAYERS
"""Bands whose stable-terrain reflectance is compared: blue (B02), green (B03), red (B04), NIR (B08)."""

STABLE_MAX_SLOPE_DEG = 5.0
"""Stable terrain is flatter than this, in degrees (see the module docstring)."""
WATER_NDWI = 0.0
"""Pixels with NDWI = (green - NIR) / (green + NIR) at or above this (unitless) are open water and not
stable terrain (McFeeters 1996, Int. J. Remote Sens. 17(7):1425-1432: NDWI > 0 for open water)."""
MIN_STABLE_PX = 2500
"""Fewest stable pixels (0.25 km^2 at 10 m) for a year's statistics to be compared or to serve as a
reference: below it a median reflects a few fields, not the site (e.g. a mostly clouded scene)."""

DRIFT_BRIGHTNESS_TOL = 0.10
"""Largest accepted |geometric mean of the band ratios - 1| (unitless; 10 %): see the module docstring."""
DRIFT_BAND_TOL = 0.25
"""Largest accepted |ratio - 1| of one band (unitless; 25 %): see the module docstring."""
DRIFT_BAND_MIN_ABS = 0.005
"""A band exceeds :data:`DRIFT_BAND_TOL` only if it also moved by more than this reflectance (unitless):
the absolute term of the +-(0.005 + 0.05 rho) surface-reflectance accuracy (Vermote & Kotchenova 2008)."""

HISTOGRAM_STEP = 1.0 / REFLECTANCE_SCALE_DN
"""Width of a histogram bin in reflectance: one L2A digital number (1e-4), so medians of harmonised
L2A reflectance are exact."""
HISTOGRAM_BINS = int(REFLECTANCE_SCALE_DN) + 1
"""Bins for reflectance 0 .. 1 (one per DN, centred on it); brighter values count in the last bin."""

_PRECISION = 6
"""Decimals kept of reflectances and ratios in the stored JSON."""


@dataclass(frozen=True)
class StableReflectance:
    """A site-year's stable-terrain statistics.

    Attributes
    ----------
    median : per band of :data:`DRIFT_BANDS`, the median reflectance of the stable pixels (NaN if none).
    stable_px : number of stable pixels.
    observed_px : number of observed pixels (stable or not).

    """

    median: dict[str, float]
    stable_px: int
    observed_px: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (medians rounded to 1e-6; ``None`` for no value)."""
        return {
            "median": {b: (None if math.isnan(v) else round(v, _PRECISION)) for b, v in self.median.items()},
            "stable_px": self.stable_px,
            "observed_px": self.observed_px,
            "max_slope_deg": STABLE_MAX_SLOPE_DEG,
        }

    def to_json(self) -> str:
        """The text stored in a record's ``stable_reflectance``."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StableReflectance:
        """Inverse of :meth:`to_json`; :class:`RtsError` for text that is not such a document."""
        try:
            data = json.loads(text)
            median = {str(b): math.nan if v is None else float(v) for b, v in data["median"].items()}
            return cls(median, int(data["stable_px"]), int(data["observed_px"]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RtsError(f"stable_reflectance {text[:80]!r} is not a stable-terrain document: {exc}") from None


class DriftAccumulator:
    """Stable-terrain histograms of a site-year, built strip by strip in bounded memory.

    Two ways to feed it:

    - :meth:`add` a strip whose RTS mask is known (a whole stack and its prediction in memory, tests);
    - in the prediction loop, :meth:`stage` each strip the reader returns and :meth:`add_mask` each
      finished strip of ``mask.tif`` (``predict_to_files(..., on_mask=acc.add_mask)``): staged rows
      wait, reduced to DN indices and flags, until their mask arrives. Rows staged twice (the
      reader's windows overlap) are kept once; at most one window of rows waits at a time.

    Both give the same result as one :meth:`add` of the whole site (histograms add up).
    """

    def __init__(self, max_slope_deg: float = STABLE_MAX_SLOPE_DEG) -> None:
        self.max_slope_deg = max_slope_deg
        self.counts = np.zeros((len(DRIFT_BANDS), HISTOGRAM_BINS), dtype=np.int64)
        self.stable_px = 0
        self.observed_px = 0
        # rows staged but not yet masked: rows _row .. _row + len(_flags)
        self._row = 0
        self._width: int | None = None
        self._dn = np.zeros((len(DRIFT_BANDS), 0, 0), dtype=np.uint16)
        self._flags = np.zeros((0, 0), dtype=np.uint8)

    # -- per-pixel preparation ------------------------------------------------------------------

    _OBSERVED = 1
    _CANDIDATE = 2  # observed, not water, flat

    def _prepare(
        self, data: NDArray[np.floating[Any]], layers: Sequence[str]
    ) -> tuple[NDArray[np.uint16], NDArray[np.uint8]]:
        """DN bin indices [4, h, w] and flags [h, w] (observed, candidate) of a strip [L, h, w]."""
        data = np.asarray(data)
        if data.ndim != 3 or data.shape[0] != len(layers):
            raise RtsError(f"drift: strip of shape {data.shape} does not match layers {tuple(layers)} (need [L, H, W])")
        missing = [name for name in (*DRIFT_BANDS, SLOPE_LAYER) if name not in layers]
        if missing:
            raise RtsError(f"drift: the strip lacks layers {missing} (has {tuple(layers)})")
        bands = np.stack([data[list(layers).index(b)] for b in DRIFT_BANDS]).astype(np.float64)
        slope = data[list(layers).index(SLOPE_LAYER)].astype(np.float64)
        observed = np.isfinite(bands).all(axis=0) & np.isfinite(slope)
        green, nir = bands[DRIFT_BANDS.index("green")], bands[DRIFT_BANDS.index("nir")]
        with np.errstate(invalid="ignore", divide="ignore"):
            ndwi = (green - nir) / (green + nir)
            candidate = observed & (ndwi < WATER_NDWI) & (slope < self.max_slope_deg)
        flags = np.where(observed, self._OBSERVED, 0) | np.where(candidate, self._CANDIDATE, 0)
        dn = np.clip(np.rint(np.nan_to_num(bands, nan=0.0) / HISTOGRAM_STEP), 0, HISTOGRAM_BINS - 1)
        return dn.astype(np.uint16), flags.astype(np.uint8)

    def _count(self, dn: NDArray[np.uint16], flags: NDArray[np.uint8], rts_mask: NDArray[Any] | None) -> None:
        """Add pixels that are candidates and neither RTS nor unobserved in ``rts_mask``."""
        observed = (flags & self._OBSERVED) > 0
        stable = (flags & self._CANDIDATE) > 0
        if rts_mask is not None:
            mask = np.asarray(rts_mask)
            if mask.shape != flags.shape:
                raise RtsError(f"drift: RTS mask of shape {mask.shape} does not match the strip's {flags.shape}")
            if mask.dtype == np.bool_:
                stable &= ~mask
            else:
                observed &= mask != MASK_UNOBSERVED
                stable &= (mask != MASK_RTS) & (mask != MASK_UNOBSERVED)
        self.observed_px += int(observed.sum())
        self.stable_px += int(stable.sum())
        for i in range(len(DRIFT_BANDS)):
            self.counts[i] += np.bincount(dn[i][stable], minlength=HISTOGRAM_BINS)

    # -- feeding ----------------------------------------------------------------------------------

    def add(self, data: NDArray[np.floating[Any]], layers: Sequence[str], rts_mask: NDArray[Any] | None = None) -> None:
        """Add a strip ``data`` [L, h, w] (layers named ``layers``, NaN where unobserved).

        ``rts_mask`` [h, w] is either boolean (True = RTS) or ``mask.tif`` values (1 RTS, 0 not, 255
        unobserved); ``None`` counts no pixel as RTS.
        """
        dn, flags = self._prepare(data, layers)
        self._count(dn, flags, rts_mask)

    def stage(self, row_off: int, data: NDArray[np.floating[Any]], layers: Sequence[str]) -> None:
        """Hold rows ``row_off ..`` of a full-width strip ``data`` [L, h, W] until :meth:`add_mask` brings their mask.

        Rows already staged or already masked are skipped (overlapping reads give the same values);
        a strip that starts below the staged rows (a gap) is an :class:`RtsError`.
        """
        dn, flags = self._prepare(data, layers)
        height, width = flags.shape
        if self._width is None:
            self._width = width
            self._dn = np.zeros((len(DRIFT_BANDS), 0, width), dtype=np.uint16)
            self._flags = np.zeros((0, width), dtype=np.uint8)
        elif width != self._width:
            raise RtsError(f"drift: strips must span the full width {self._width} px, got {width} px at row {row_off}")
        staged_end = self._row + len(self._flags)
        if row_off > staged_end:
            raise RtsError(f"drift: rows {staged_end}..{row_off} were never staged (strip at row {row_off})")
        skip = staged_end - row_off
        if skip < height:
            self._dn = np.concatenate([self._dn, dn[:, skip:]], axis=1)
            self._flags = np.concatenate([self._flags, flags[skip:]])

    def add_mask(self, row_off: int, mask: NDArray[np.uint8]) -> None:
        """Count staged rows ``row_off .. row_off + len(mask)`` with their ``mask.tif`` values and drop them.

        Masks must come top to bottom without gaps, for rows already staged (the order in which
        :func:`~rtsmonitor.inference.predict_to_files` hands them to its ``on_mask``).
        """
        height = len(mask)
        if row_off != self._row or height > len(self._flags):
            raise RtsError(
                f"drift: mask rows {row_off}..{row_off + height} do not follow on staged rows "
                f"{self._row}..{self._row + len(self._flags)}"
            )
        self._count(self._dn[:, :height], self._flags[:height], mask)
        self._dn, self._flags = self._dn[:, height:], self._flags[height:]
        self._row += height

    @property
    def pending_rows(self) -> int:
        """Rows staged and still waiting for their mask."""
        return len(self._flags)

    def summary(self) -> StableReflectance:
        """The per-band medians and pixel counts so far (staged rows without a mask are not counted)."""
        return StableReflectance(
            {band: histogram_median(self.counts[i]) for i, band in enumerate(DRIFT_BANDS)},
            self.stable_px,
            self.observed_px,
        )


def histogram_median(counts: NDArray[np.int64]) -> float:
    """Median reflectance of the values counted in ``counts`` (one bin per DN); NaN when empty.

    As :func:`numpy.median`, the mean of the two middle values for an even count.
    """
    n = int(counts.sum())
    if n == 0:
        return math.nan
    cum = np.cumsum(counts)
    low = int(np.searchsorted(cum, (n - 1) // 2 + 1))
    high = int(np.searchsorted(cum, n // 2 + 1))
    return (low + high) / 2 * HISTOGRAM_STEP


def stable_reflectance(
    data: NDArray[np.floating[Any]], layers: Sequence[str], rts_mask: NDArray[Any] | None = None
) -> StableReflectance:
    """The statistics of one whole stack ``data`` [L, H, W] (one :meth:`DriftAccumulator.add`)."""
    acc = DriftAccumulator()
    acc.add(data, layers, rts_mask)
    return acc.summary()


@dataclass(frozen=True)
class DriftCheck:
    """The verdict on a site-year's radiometry.

    Attributes
    ----------
    suspect : True when a shift exceeds the tolerance (see the module docstring).
    reason : one line saying why (or that it is within tolerance, or why nothing was compared).
    figures : the numbers behind it (stored as ``drift`` in the record).
    current : this year's statistics (stored as ``stable_reflectance``).

    """

    suspect: bool
    reason: str
    figures: dict[str, Any]
    current: StableReflectance
    flags: tuple[str, ...] = field(default=())

    def record_fields(self) -> dict[str, Any]:
        """``stable_reflectance``, ``drift`` and ``suspect`` for :class:`~rtsmonitor.records.SiteYearRecord`."""
        return {
            "stable_reflectance": self.current.to_json(),
            "drift": json.dumps(self.figures, sort_keys=True),
            "suspect": self.suspect,
        }


def earlier_statistics(records: Iterable[SiteYearRecord], year: int) -> dict[int, StableReflectance]:
    """Statistics of the years that may serve as reference for ``year``.

    Those before ``year`` with an ``ok``, not suspect record holding ``stable_reflectance`` of at
    least :data:`MIN_STABLE_PX` stable pixels; a malformed document is skipped with a warning.
    """
    out: dict[int, StableReflectance] = {}
    for record in records:
        if record.year >= year or record.status != "ok" or record.suspect or not record.stable_reflectance:
            continue
        try:
            stats = StableReflectance.from_json(record.stable_reflectance)
        except RtsError as exc:
            log.warning("%s %d: skipped as drift reference: %s", record.site_id, record.year, exc)
            continue
        if stats.stable_px >= MIN_STABLE_PX and all(math.isfinite(stats.median.get(b, math.nan)) for b in DRIFT_BANDS):
            out[record.year] = stats
    return out


def compare(current: StableReflectance, earlier: Mapping[int, StableReflectance]) -> DriftCheck:
    """Compare ``current`` with the per-band median of ``earlier`` years' statistics (see the module docstring)."""
    tolerance = {"brightness": DRIFT_BRIGHTNESS_TOL, "band": DRIFT_BAND_TOL, "band_min_abs": DRIFT_BAND_MIN_ABS}
    figures: dict[str, Any] = {
        "current": current.to_dict()["median"],
        "stable_px": current.stable_px,
        "reference": None,
        "reference_years": sorted(earlier),
        "tolerance": tolerance,
    }

    def verdict(suspect: bool, reason: str, flags: Sequence[str] = ()) -> DriftCheck:
        figures["flags"] = list(flags)
        figures["reason"] = reason
        return DriftCheck(suspect, reason, figures, current, tuple(flags))

    if current.stable_px < MIN_STABLE_PX or not all(math.isfinite(current.median[b]) for b in DRIFT_BANDS):
        return verdict(False, f"not compared: {current.stable_px} stable pixels, fewer than {MIN_STABLE_PX}")
    if not earlier:
        return verdict(False, "not compared: no earlier ok, non-suspect year with stable-terrain statistics")
    reference = {b: float(np.median([s.median[b] for s in earlier.values()])) for b in DRIFT_BANDS}
    ratio = {b: current.median[b] / reference[b] for b in DRIFT_BANDS}
    brightness = math.exp(sum(math.log(r) for r in ratio.values()) / len(ratio)) - 1.0
    figures["reference"] = {b: round(v, _PRECISION) for b, v in reference.items()}
    figures["ratio"] = {b: round(v, _PRECISION) for b, v in ratio.items()}
    figures["brightness_shift"] = round(brightness, _PRECISION)
    years = sorted(earlier)
    against = f"against {len(years)} earlier year{'s' if len(years) > 1 else ''} ({', '.join(map(str, years))})"
    flags: list[str] = []
    if abs(brightness) > DRIFT_BRIGHTNESS_TOL:
        flags.append(f"brightness {brightness:+.1%} beyond +-{DRIFT_BRIGHTNESS_TOL:.0%}")
    for b in DRIFT_BANDS:
        if abs(ratio[b] - 1.0) > DRIFT_BAND_TOL and abs(current.median[b] - reference[b]) > DRIFT_BAND_MIN_ABS:
            flags.append(f"{b} {ratio[b] - 1.0:+.1%} beyond +-{DRIFT_BAND_TOL:.0%}")
    if flags:
        return verdict(True, f"radiometric drift {against}: {'; '.join(flags)}", flags)
    worst = max(DRIFT_BANDS, key=lambda b: abs(ratio[b] - 1.0))
    return verdict(
        False,
        f"within tolerance {against}: brightness {brightness:+.1%} (+-{DRIFT_BRIGHTNESS_TOL:.0%}), "
        f"largest band shift {worst} {ratio[worst] - 1.0:+.1%} (+-{DRIFT_BAND_TOL:.0%})",
    )


def check_drift(current: StableReflectance, records: Iterable[SiteYearRecord], year: int) -> DriftCheck:
    """The drift check of site-year ``year`` against the site's earlier ``records`` (e.g. ``read_records``)."""
    return compare(current, earlier_statistics(records, year))
