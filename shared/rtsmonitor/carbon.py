"""Carbon released by active RTS of a site, with uncertainty, from the Turetsky et al. 2020 factors.

Source of the factors: Turetsky, M.R. et al. 2020, "Carbon release through abrupt permafrost thaw",
Nature Geoscience 13:138-143, doi:10.1038/s41561-019-0526-0; their model code "Abrupt-thaw-carbon-
model" (github.com/mturetsky/Abrupt-thaw-carbon-model, ``upland-thermokarst_July10_2019_fme.Rmd``,
hillslope upland model: ``undisturbed_NEE``, ``young_NEE``, ``young_DOC``, ``young_DOCmin``).
Rustemeyer et al. 2022 (IGARSS, doi:10.1109/IGARSS46834.2022.9884869) apply them to mapped RTS area:
pixels classified RTS are active abrupt thaw, all other observed pixels undisturbed tundra. Methane
(``*_CH4``) and the small undisturbed DOC export are left out, as in Rustemeyer et al. 2022.

Sign conventions: the fluxes are in g C m^-2 yr^-1 with positive = uptake by the land (as in the
model code); the estimate is a *loss* to the atmosphere in t C yr^-1, positive = source.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rtsmonitor.errors import RtsError

TURETSKY_2020 = (
    "Turetsky, M.R. et al. 2020, Carbon release through abrupt permafrost thaw, Nature Geoscience 13:138-143, "
    "doi:10.1038/s41561-019-0526-0 (model code: Abrupt-thaw-carbon-model, hillslope upland model)"
)
"""Citation of the carbon fluxes."""

OSCAR_RANGES = (
    "OSCAR permafrost abrupt-thaw parameter ranges: NEE about +-50 %, lateral DOC+POC flux +-15..30 % (upper end used)"
)
"""Where the flux uncertainties come from."""

RUSTEMEYER_2022 = (
    "Rustemeyer et al. 2022, Tracking rapid permafrost thaw through time, IGARSS 2022, pp. 3838-3841, "
    "doi:10.1109/IGARSS46834.2022.9884869 (+-15 % RTS area error)"
)
"""Citation of the area error."""

TUNDRA_NEE_G_C_PER_M2_YR = 10.5
"""Net ecosystem exchange of undisturbed upland tundra, g C m^-2 yr^-1 (uptake).

Turetsky et al. 2020, model parameter ``undisturbed_NEE``.
"""

RTS_NEE_G_C_PER_M2_YR = -95.0
"""Net ecosystem exchange of active RTS (1-10 years after thaw), g C m^-2 yr^-1 (release).

Turetsky et al. 2020, model parameter ``young_NEE``.
"""

RTS_LATERAL_LOSS_G_C_PER_M2_YR = -2188.0
"""Lateral export of dissolved + particulate organic carbon from active RTS, g C m^-2 yr^-1.

Turetsky et al. 2020, model parameter ``young_DOC``.
"""

LATERAL_MINERALISED_FRACTION = 0.6667
"""Fraction of the lateral DOC+POC loss mineralised to CO2 (the rest is reburied), dimensionless.

Turetsky et al. 2020, model parameter ``young_DOCmin`` (2/3). CH4 is neglected for hillslope
thermokarst, so all of it counts as CO2-C.
"""

RTS_EMISSION_G_C_PER_M2_YR = -RTS_NEE_G_C_PER_M2_YR - LATERAL_MINERALISED_FRACTION * RTS_LATERAL_LOSS_G_C_PER_M2_YR
"""Carbon emitted by one m^2 of active RTS: 95 + 0.6667 * 2188 = 1553.74 g C m^-2 yr^-1 (derived)."""

CO2_PER_C_MASS_RATIO = 44.0 / 12.0
"""Mass of CO2 per mass of C, g CO2 / g C (44/12, as in the mission; 44.0095/12.011 differs by 1e-4)."""

NEE_REL_UNCERTAINTY = 0.5
"""Relative uncertainty (+-) of both NEE fluxes (tundra and RTS): +-50 % (OSCAR ranges)."""

LATERAL_REL_UNCERTAINTY = 0.3
"""Relative uncertainty (+-) of the lateral DOC+POC flux: +-30 %, upper end of OSCAR's 15..30 %."""

AREA_ERROR_FRACTION = 0.15
"""Relative error of the mapped RTS area: +-15 % (Rustemeyer et al. 2022, from precision/recall)."""

G_PER_T = 1e6
"""Grams per tonne."""


class CarbonInputError(RtsError, ValueError):
    """An input of the carbon estimate is invalid; ``parameter`` and ``value`` name it."""

    def __init__(self, parameter: str, value: object, requirement: str) -> None:
        self.parameter = parameter
        self.value = value
        super().__init__(f"{parameter} = {value!r} {requirement}")


def _check_finite(name: str, value: object) -> float:
    """``value`` as a float, if it is a finite number."""
    try:
        number = float(value)  # type: ignore[arg-type]  # any object: non-numbers are reported below
    except (TypeError, ValueError):
        raise CarbonInputError(name, value, "is not a number") from None
    if not math.isfinite(number):
        raise CarbonInputError(name, value, "must be finite")
    return number


@dataclass(frozen=True)
class CarbonFactors:
    """The flux factors and their relative uncertainties used for an estimate.

    Attributes
    ----------
    tundra_nee_g_c_per_m2_yr : undisturbed tundra NEE, positive = uptake.
    rts_nee_g_c_per_m2_yr : active RTS NEE, negative = release.
    rts_lateral_loss_g_c_per_m2_yr : active RTS lateral DOC+POC flux, negative = loss.
    lateral_mineralised_fraction : share of the lateral loss emitted as CO2.
    nee_rel_uncertainty : relative uncertainty of both NEE fluxes.
    lateral_rel_uncertainty : relative uncertainty of the lateral flux.
    co2_per_c_mass_ratio : g CO2 per g C.
    source : citation of the fluxes and the uncertainty ranges.

    """

    tundra_nee_g_c_per_m2_yr: float = TUNDRA_NEE_G_C_PER_M2_YR
    rts_nee_g_c_per_m2_yr: float = RTS_NEE_G_C_PER_M2_YR
    rts_lateral_loss_g_c_per_m2_yr: float = RTS_LATERAL_LOSS_G_C_PER_M2_YR
    lateral_mineralised_fraction: float = LATERAL_MINERALISED_FRACTION
    nee_rel_uncertainty: float = NEE_REL_UNCERTAINTY
    lateral_rel_uncertainty: float = LATERAL_REL_UNCERTAINTY
    co2_per_c_mass_ratio: float = CO2_PER_C_MASS_RATIO
    source: str = field(default=f"{TURETSKY_2020}; {OSCAR_RANGES}")

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "source":
                _check_finite(name, value)
        if not 0.0 <= self.lateral_mineralised_fraction <= 1.0:
            raise CarbonInputError(
                "lateral_mineralised_fraction", self.lateral_mineralised_fraction, "must be within [0, 1]"
            )
        for name in ("nee_rel_uncertainty", "lateral_rel_uncertainty"):
            if getattr(self, name) < 0:
                raise CarbonInputError(name, getattr(self, name), "must be >= 0")
        if self.co2_per_c_mass_ratio <= 0:
            raise CarbonInputError("co2_per_c_mass_ratio", self.co2_per_c_mass_ratio, "must be > 0")

    @property
    def rts_lateral_emission_g_c_per_m2_yr(self) -> float:
        """Mineralised part of the lateral loss, emitted: 0.6667 * 2188 = 1458.74 g C m^-2 yr^-1."""
        return -self.lateral_mineralised_fraction * self.rts_lateral_loss_g_c_per_m2_yr

    @property
    def rts_emission_g_c_per_m2_yr(self) -> float:
        """Emission of one m^2 of active RTS: -NEE_rts + mineralised lateral loss (1553.74 by default)."""
        return -self.rts_nee_g_c_per_m2_yr + self.rts_lateral_emission_g_c_per_m2_yr

    @property
    def rts_emission_err_g_c_per_m2_yr(self) -> float:
        """Absolute uncertainty of the RTS emission factor: NEE and lateral terms in quadrature.

        With the defaults: sqrt((0.5 * 95)^2 + (0.3 * 1458.74)^2) = sqrt(47.5^2 + 437.62^2)
        = 440.19 g C m^-2 yr^-1, i.e. 440.19 / 1553.74 = 28.3 % of the factor (the "about +-28 %" of
        the mission brief).
        """
        return math.hypot(
            self.nee_rel_uncertainty * self.rts_nee_g_c_per_m2_yr,
            self.lateral_rel_uncertainty * self.rts_lateral_emission_g_c_per_m2_yr,
        )

    @property
    def rts_emission_rel_uncertainty(self) -> float:
        """Relative uncertainty of the RTS emission factor (0.283 by default)."""
        return self.rts_emission_err_g_c_per_m2_yr / abs(self.rts_emission_g_c_per_m2_yr)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record of the factors: name -> {value, unit}, plus the citation."""
        flux = "g C m-2 yr-1 (positive = uptake by land)"
        return {
            "tundra_nee": {"value": self.tundra_nee_g_c_per_m2_yr, "unit": flux},
            "rts_nee": {"value": self.rts_nee_g_c_per_m2_yr, "unit": flux},
            "rts_lateral_loss": {"value": self.rts_lateral_loss_g_c_per_m2_yr, "unit": flux},
            "lateral_mineralised_fraction": {"value": self.lateral_mineralised_fraction, "unit": "1"},
            "rts_emission": {"value": self.rts_emission_g_c_per_m2_yr, "unit": "g C m-2 yr-1 (positive = emission)"},
            "nee_rel_uncertainty": {"value": self.nee_rel_uncertainty, "unit": "1"},
            "lateral_rel_uncertainty": {"value": self.lateral_rel_uncertainty, "unit": "1"},
            "rts_emission_rel_uncertainty": {"value": self.rts_emission_rel_uncertainty, "unit": "1"},
            "co2_per_c_mass_ratio": {"value": self.co2_per_c_mass_ratio, "unit": "g CO2 / g C"},
            "source": self.source,
        }


DEFAULT_FACTORS = CarbonFactors()
"""Turetsky et al. 2020 fluxes with the OSCAR-range uncertainties."""


@dataclass(frozen=True)
class CarbonEstimate:
    """Net carbon loss of a site in one year, with its uncertainty (positive = source).

    Attributes
    ----------
    rts_area_m2 : mapped active RTS area.
    site_area_m2 : observed (valid) site area, RTS included.
    tundra_area_m2 : site area minus RTS area.
    net_t_c_per_yr, net_t_c_err_per_yr : net C loss and its uncertainty (+-), t C yr^-1.
    net_t_co2_per_yr, net_t_co2_err_per_yr : the same as CO2 mass, t CO2 yr^-1.
    err_from_area_t_c : part of the uncertainty due to the RTS area error, t C yr^-1.
    err_from_flux_t_c : part due to the flux uncertainties (all three in quadrature), t C yr^-1.
    area_error_fraction : relative RTS area error used.
    factors : the flux factors used.

    """

    rts_area_m2: float
    site_area_m2: float
    tundra_area_m2: float
    net_t_c_per_yr: float
    net_t_c_err_per_yr: float
    net_t_co2_per_yr: float
    net_t_co2_err_per_yr: float
    err_from_area_t_c: float
    err_from_flux_t_c: float
    area_error_fraction: float
    factors: CarbonFactors

    @property
    def rts_emission_t_c_per_yr(self) -> float:
        """Gross emission of the RTS area, t C yr^-1."""
        return self.rts_area_m2 * self.factors.rts_emission_g_c_per_m2_yr / G_PER_T

    @property
    def tundra_uptake_t_c_per_yr(self) -> float:
        """Uptake of the tundra area, t C yr^-1."""
        return self.tundra_area_m2 * self.factors.tundra_nee_g_c_per_m2_yr / G_PER_T

    @property
    def flux_error_terms_t_c(self) -> dict[str, float]:
        """The three flux uncertainty terms (RTS NEE, RTS lateral, tundra NEE), t C yr^-1."""
        f = self.factors
        return {
            "rts_nee": abs(self.rts_area_m2 * f.nee_rel_uncertainty * f.rts_nee_g_c_per_m2_yr) / G_PER_T,
            "rts_lateral": abs(self.rts_area_m2 * f.lateral_rel_uncertainty * f.rts_lateral_emission_g_c_per_m2_yr)
            / G_PER_T,
            "tundra_nee": abs(self.tundra_area_m2 * f.nee_rel_uncertainty * f.tundra_nee_g_c_per_m2_yr) / G_PER_T,
        }

    @property
    def net_t_c_low(self) -> float:
        """Net C loss minus its uncertainty, t C yr^-1."""
        return self.net_t_c_per_yr - self.net_t_c_err_per_yr

    @property
    def net_t_c_high(self) -> float:
        """Net C loss plus its uncertainty, t C yr^-1."""
        return self.net_t_c_per_yr + self.net_t_c_err_per_yr

    @property
    def net_t_co2_low(self) -> float:
        """Net CO2 loss minus its uncertainty, t CO2 yr^-1."""
        return self.net_t_co2_per_yr - self.net_t_co2_err_per_yr

    @property
    def net_t_co2_high(self) -> float:
        """Net CO2 loss plus its uncertainty, t CO2 yr^-1."""
        return self.net_t_co2_per_yr + self.net_t_co2_err_per_yr

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record: areas, net loss, uncertainty parts, low/high and the factors."""
        return {
            "rts_area_m2": self.rts_area_m2,
            "site_area_m2": self.site_area_m2,
            "tundra_area_m2": self.tundra_area_m2,
            "rts_emission_t_c_per_yr": self.rts_emission_t_c_per_yr,
            "tundra_uptake_t_c_per_yr": self.tundra_uptake_t_c_per_yr,
            "net_t_c_per_yr": self.net_t_c_per_yr,
            "net_t_c_err_per_yr": self.net_t_c_err_per_yr,
            "net_t_c_low": self.net_t_c_low,
            "net_t_c_high": self.net_t_c_high,
            "net_t_co2_per_yr": self.net_t_co2_per_yr,
            "net_t_co2_err_per_yr": self.net_t_co2_err_per_yr,
            "net_t_co2_low": self.net_t_co2_low,
            "net_t_co2_high": self.net_t_co2_high,
            "err_from_area_t_c": self.err_from_area_t_c,
            "err_from_flux_t_c": self.err_from_flux_t_c,
            "flux_error_terms_t_c": self.flux_error_terms_t_c,
            "area_error_fraction": self.area_error_fraction,
            "area_error_source": RUSTEMEYER_2022,
            "factors": self.factors.to_dict(),
        }

    def explain(self) -> str:
        """The computation step by step, with the numbers, for people."""
        f = self.factors
        e = f.rts_emission_g_c_per_m2_yr
        n = f.tundra_nee_g_c_per_m2_yr
        terms = self.flux_error_terms_t_c
        km2 = 1e6
        lines = [
            "Net carbon loss of the site (Turetsky et al. 2020 factors; loss > 0 means a source)",
            f"  site area observed     A_site   = {self.site_area_m2 / km2:.4f} km2",
            f"  RTS area               A_rts    = {self.rts_area_m2 / km2:.4f} km2",
            f"  tundra area            A_tundra = A_site - A_rts = {self.tundra_area_m2 / km2:.4f} km2",
            f"  RTS emission factor    E = -NEE_rts + f_min * |L| = {-f.rts_nee_g_c_per_m2_yr:g} + "
            f"{f.lateral_mineralised_fraction:g} * {abs(f.rts_lateral_loss_g_c_per_m2_yr):g} = {e:.2f} g C m-2 yr-1",
            f"  tundra uptake factor   NEE_t = {n:g} g C m-2 yr-1",
            f"  RTS emission           A_rts * E        = {self.rts_emission_t_c_per_yr:.1f} t C/yr",
            f"  tundra uptake          A_tundra * NEE_t = {self.tundra_uptake_t_c_per_yr:.1f} t C/yr",
            f"  net C loss             {self.rts_emission_t_c_per_yr:.1f} - {self.tundra_uptake_t_c_per_yr:.1f}"
            f" = {self.net_t_c_per_yr:.1f} t C/yr",
            f"  net CO2 loss           C * {f.co2_per_c_mass_ratio:.4f} (44/12) = {self.net_t_co2_per_yr:.1f} t CO2/yr",
            "Uncertainty (+- ranges propagated to first order, independent terms added in quadrature)",
            f"  RTS area +-{self.area_error_fraction:.0%}      (E + NEE_t) * {self.area_error_fraction:g} * A_rts"
            f" = {self.err_from_area_t_c:.1f} t C/yr",
            f"  RTS NEE +-{f.nee_rel_uncertainty:.0%}       A_rts * {f.nee_rel_uncertainty:g} * "
            f"{abs(f.rts_nee_g_c_per_m2_yr):g} = {terms['rts_nee']:.1f} t C/yr",
            f"  lateral flux +-{f.lateral_rel_uncertainty:.0%}  A_rts * {f.lateral_rel_uncertainty:g} * "
            f"{f.rts_lateral_emission_g_c_per_m2_yr:.2f} = {terms['rts_lateral']:.1f} t C/yr"
            f"  (E itself: +-{f.rts_emission_rel_uncertainty:.1%})",
            f"  tundra NEE +-{f.nee_rel_uncertainty:.0%}    A_tundra * {f.nee_rel_uncertainty:g} * {abs(n):g}"
            f" = {terms['tundra_nee']:.1f} t C/yr",
            f"  flux total             sqrt(sum of squares) = {self.err_from_flux_t_c:.1f} t C/yr",
            f"  total                  sqrt(area^2 + flux^2) = {self.net_t_c_err_per_yr:.1f} t C/yr",
            f"Result: {self.net_t_c_per_yr:.1f} +- {self.net_t_c_err_per_yr:.1f} t C/yr "
            f"({self.net_t_c_low:.1f} .. {self.net_t_c_high:.1f})",
            f"        {self.net_t_co2_per_yr:.1f} +- {self.net_t_co2_err_per_yr:.1f} t CO2/yr "
            f"({self.net_t_co2_low:.1f} .. {self.net_t_co2_high:.1f})",
            f"Sources: {f.source}; area error: {RUSTEMEYER_2022}",
        ]
        return "\n".join(lines)


def site_carbon(
    rts_area_m2: float,
    site_area_m2: float,
    *,
    area_error_fraction: float = AREA_ERROR_FRACTION,
    factors: CarbonFactors = DEFAULT_FACTORS,
) -> CarbonEstimate:
    """Net carbon loss of a site from its active RTS area and its observed area.

    ``net [t C/yr] = (A_rts * E - (A_site - A_rts) * NEE_t) / 1e6`` with E = 1553.74 and
    NEE_t = 10.5 g C m^-2 yr^-1 by default. Uncertainty, to first order with independent terms in
    quadrature: the area term ``(E + NEE_t) * area_error_fraction * A_rts`` (an RTS area error moves
    the same area from or to tundra, as the observed site area is fixed) and the flux terms
    ``A_rts * 0.5 * 95``, ``A_rts * 0.3 * 1458.74`` and ``A_tundra * 0.5 * 10.5``.

    Parameters
    ----------
    rts_area_m2 : mapped active RTS area in m^2.
    site_area_m2 : observed (valid, cloud-free) site area in m^2, RTS included.
    area_error_fraction : relative error of the RTS area (0.15 = +-15 %).
    factors : the fluxes and their uncertainties.

    Raises
    ------
    CarbonInputError
        For a negative or non-finite area or error, or an RTS area larger than the site.

    """
    rts = _check_finite("rts_area_m2", rts_area_m2)
    site = _check_finite("site_area_m2", site_area_m2)
    err_frac = _check_finite("area_error_fraction", area_error_fraction)
    if rts < 0:
        raise CarbonInputError("rts_area_m2", rts_area_m2, "must be >= 0")
    if site < 0:
        raise CarbonInputError("site_area_m2", site_area_m2, "must be >= 0")
    if err_frac < 0:
        raise CarbonInputError("area_error_fraction", area_error_fraction, "must be >= 0")
    if rts > site:
        raise CarbonInputError("rts_area_m2", rts_area_m2, f"must not exceed site_area_m2 = {site_area_m2!r}")
    tundra = site - rts
    e = factors.rts_emission_g_c_per_m2_yr
    n = factors.tundra_nee_g_c_per_m2_yr
    net = (rts * e - tundra * n) / G_PER_T
    err_area = abs(e + n) * err_frac * rts / G_PER_T
    err_flux = (
        math.hypot(
            rts * factors.rts_emission_err_g_c_per_m2_yr,
            tundra * factors.nee_rel_uncertainty * n,
        )
        / G_PER_T
    )
    err = math.hypot(err_area, err_flux)
    return CarbonEstimate(
        rts_area_m2=rts,
        site_area_m2=site,
        tundra_area_m2=tundra,
        net_t_c_per_yr=net,
        net_t_c_err_per_yr=err,
        net_t_co2_per_yr=net * factors.co2_per_c_mass_ratio,
        net_t_co2_err_per_yr=err * factors.co2_per_c_mass_ratio,
        err_from_area_t_c=err_area,
        err_from_flux_t_c=err_flux,
        area_error_fraction=err_frac,
        factors=factors,
    )
