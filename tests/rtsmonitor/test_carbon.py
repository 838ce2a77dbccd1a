"""Carbon of a site: the Turetsky et al. 2020 factors, the paper's numbers and the uncertainty."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from rtsmonitor.carbon import (
    AREA_ERROR_FRACTION,
    CO2_PER_C_MASS_RATIO,
    DEFAULT_FACTORS,
    LATERAL_MINERALISED_FRACTION,
    LATERAL_REL_UNCERTAINTY,
    NEE_REL_UNCERTAINTY,
    RTS_EMISSION_G_C_PER_M2_YR,
    RTS_LATERAL_LOSS_G_C_PER_M2_YR,
    RTS_NEE_G_C_PER_M2_YR,
    TUNDRA_NEE_G_C_PER_M2_YR,
    CarbonFactors,
    CarbonInputError,
    site_carbon,
)
from rtsmonitor.cli import main
from rtsmonitor.errors import RtsError

KM2 = 1e6
SITE_M2 = 100 * KM2  # the paper's sites are 10 km x 10 km


def test_factors_are_turetsky_2020() -> None:
    assert TUNDRA_NEE_G_C_PER_M2_YR == 10.5
    assert RTS_NEE_G_C_PER_M2_YR == -95.0
    assert RTS_LATERAL_LOSS_G_C_PER_M2_YR == -2188.0
    assert LATERAL_MINERALISED_FRACTION == 0.6667
    assert abs(RTS_EMISSION_G_C_PER_M2_YR - 1553.7) < 0.05  # 95 + 0.6667 * 2188 = 1553.7396
    assert DEFAULT_FACTORS.rts_emission_g_c_per_m2_yr == RTS_EMISSION_G_C_PER_M2_YR
    assert CO2_PER_C_MASS_RATIO == 44 / 12
    assert AREA_ERROR_FRACTION == 0.15


@pytest.mark.parametrize(
    ("site", "rts_km2", "paper_t_c"),
    [("horton01", 1.828, 1810), ("kolguev02", 1.215, 850)],
)
def test_paper_values_are_reproduced(site: str, rts_km2: float, paper_t_c: float) -> None:
    """Rustemeyer et al. 2022 report 1810 (Horton01) and 850 t C/yr (Kolguev02) for 100 km2 sites."""
    estimate = site_carbon(rts_km2 * KM2, SITE_M2)
    assert estimate.net_t_c_per_yr == pytest.approx(paper_t_c, abs=1.0), site  # within rounding
    by_hand = (rts_km2 * KM2 * 1553.7 - (SITE_M2 - rts_km2 * KM2) * 10.5) / 1e6
    assert estimate.net_t_c_per_yr == pytest.approx(by_hand, abs=0.1)


def test_horton01_exact_value() -> None:
    estimate = site_carbon(1.828 * KM2, SITE_M2)
    assert estimate.net_t_c_per_yr == pytest.approx(1809.43, abs=0.01)
    assert estimate.tundra_area_m2 == pytest.approx(98.172 * KM2)


def test_emission_factor_uncertainty_is_about_28_percent() -> None:
    """sqrt((0.5 * 95)^2 + (0.3 * 0.6667 * 2188)^2) / 1553.74 = 440.19 / 1553.74 = 0.283."""
    nee = NEE_REL_UNCERTAINTY * 95.0
    lateral = LATERAL_REL_UNCERTAINTY * 0.6667 * 2188.0
    assert (nee, lateral) == (pytest.approx(47.5), pytest.approx(437.62, abs=0.01))
    assert DEFAULT_FACTORS.rts_emission_err_g_c_per_m2_yr == pytest.approx(math.hypot(nee, lateral))
    assert DEFAULT_FACTORS.rts_emission_rel_uncertainty == pytest.approx(0.283, abs=0.001)
    assert round(DEFAULT_FACTORS.rts_emission_rel_uncertainty * 100) == 28


def test_flux_error_terms_add_in_quadrature() -> None:
    estimate = site_carbon(1.828 * KM2, SITE_M2)
    terms = estimate.flux_error_terms_t_c
    assert terms["rts_nee"] == pytest.approx(1.828 * 0.5 * 95)
    assert terms["rts_lateral"] == pytest.approx(1.828 * 0.3 * 0.6667 * 2188)
    assert terms["tundra_nee"] == pytest.approx(98.172 * 0.5 * 10.5)
    assert estimate.err_from_flux_t_c == pytest.approx(math.sqrt(sum(t**2 for t in terms.values())))
    # an RTS area error of 15 % moves area between RTS (emits E) and tundra (takes up NEE_t)
    assert estimate.err_from_area_t_c == pytest.approx(0.15 * 1.828 * (1553.7396 + 10.5))
    assert estimate.net_t_c_err_per_yr == pytest.approx(
        math.hypot(estimate.err_from_area_t_c, estimate.err_from_flux_t_c)
    )
    assert estimate.net_t_c_low == pytest.approx(estimate.net_t_c_per_yr - estimate.net_t_c_err_per_yr)
    assert estimate.net_t_c_high == pytest.approx(estimate.net_t_c_per_yr + estimate.net_t_c_err_per_yr)


def test_error_grows_with_area_error() -> None:
    errors = [site_carbon(1.5 * KM2, SITE_M2, area_error_fraction=f) for f in (0.0, 0.1, 0.15, 0.3)]
    totals = [e.net_t_c_err_per_yr for e in errors]
    assert totals == sorted(totals) and len(set(totals)) == 4
    assert errors[0].err_from_area_t_c == 0.0
    assert errors[0].net_t_c_err_per_yr == pytest.approx(errors[0].err_from_flux_t_c)
    assert errors[3].err_from_area_t_c == pytest.approx(2 * errors[2].err_from_area_t_c)
    assert {e.net_t_c_per_yr for e in errors} == {errors[0].net_t_c_per_yr}  # the value itself is unchanged


def test_co2_is_c_times_44_over_12() -> None:
    estimate = site_carbon(1.215 * KM2, SITE_M2)
    assert estimate.net_t_co2_per_yr == pytest.approx(estimate.net_t_c_per_yr * 44 / 12)
    assert estimate.net_t_co2_err_per_yr == pytest.approx(estimate.net_t_c_err_per_yr * 44 / 12)
    assert estimate.net_t_co2_high == pytest.approx(estimate.net_t_c_high * 44 / 12)


def test_no_rts_is_net_tundra_uptake() -> None:
    estimate = site_carbon(0.0, SITE_M2)
    assert estimate.net_t_c_per_yr == pytest.approx(-10.5 * SITE_M2 / 1e6)  # -1050 t C/yr: a sink
    assert estimate.err_from_area_t_c == 0.0
    assert estimate.net_t_c_err_per_yr == pytest.approx(0.5 * 10.5 * SITE_M2 / 1e6)


def test_loss_grows_with_rts_area() -> None:
    values = [site_carbon(a * KM2, SITE_M2).net_t_c_per_yr for a in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values)
    # every m2 turned from tundra to RTS adds E + NEE_t
    assert values[3] - values[2] == pytest.approx(1.0 * (1553.7396 + 10.5), rel=1e-6)


def test_whole_site_is_rts() -> None:
    estimate = site_carbon(SITE_M2, SITE_M2)
    assert estimate.tundra_area_m2 == 0.0
    assert estimate.net_t_c_per_yr == pytest.approx(1553.7396 * 100)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rts_area_m2": -1.0}, r"rts_area_m2 = -1.0 must be >= 0"),
        ({"site_area_m2": -5.0, "rts_area_m2": 0.0}, r"site_area_m2 = -5.0 must be >= 0"),
        ({"rts_area_m2": 2e8}, r"rts_area_m2 = 200000000.0 must not exceed site_area_m2 = 100000000.0"),
        ({"rts_area_m2": math.nan}, r"rts_area_m2 = nan must be finite"),
        ({"site_area_m2": math.inf}, r"site_area_m2 = inf must be finite"),
        ({"area_error_fraction": -0.1}, r"area_error_fraction = -0.1 must be >= 0"),
        ({"area_error_fraction": math.nan}, r"area_error_fraction = nan must be finite"),
    ],
)
def test_bad_inputs_are_named(kwargs: dict[str, float], match: str) -> None:
    args = {"rts_area_m2": 1e6, "site_area_m2": SITE_M2, **kwargs}
    with pytest.raises(CarbonInputError, match=match) as info:
        site_carbon(args.pop("rts_area_m2"), args.pop("site_area_m2"), **args)
    assert isinstance(info.value, RtsError)
    assert info.value.parameter in match


def test_bad_factors_are_named() -> None:
    with pytest.raises(CarbonInputError, match=r"lateral_mineralised_fraction = 1\.5"):
        CarbonFactors(lateral_mineralised_fraction=1.5)
    with pytest.raises(CarbonInputError, match="nee_rel_uncertainty"):
        CarbonFactors(nee_rel_uncertainty=-0.5)
    with pytest.raises(CarbonInputError, match="tundra_nee_g_c_per_m2_yr = nan"):
        CarbonFactors(tundra_nee_g_c_per_m2_yr=math.nan)


def test_other_factors_are_used_and_recorded() -> None:
    factors = CarbonFactors(lateral_mineralised_fraction=1.0, lateral_rel_uncertainty=0.15)
    estimate = site_carbon(1.0 * KM2, SITE_M2, factors=factors)
    assert factors.rts_emission_g_c_per_m2_yr == pytest.approx(95 + 2188)
    assert estimate.net_t_c_per_yr == pytest.approx((1e6 * 2283 - 99e6 * 10.5) / 1e6)
    record = estimate.to_dict()
    assert record["factors"]["lateral_mineralised_fraction"]["value"] == 1.0
    assert record["factors"]["lateral_rel_uncertainty"]["value"] == 0.15


def test_record_is_json_with_factors_units_and_citation() -> None:
    estimate = site_carbon(1.828 * KM2, SITE_M2)
    record = json.loads(json.dumps(estimate.to_dict(), allow_nan=False))
    assert record["net_t_c_per_yr"] == pytest.approx(estimate.net_t_c_per_yr)
    assert record["net_t_co2_err_per_yr"] == pytest.approx(estimate.net_t_co2_err_per_yr)
    assert record["err_from_area_t_c"] == pytest.approx(estimate.err_from_area_t_c)
    assert record["area_error_fraction"] == 0.15
    factors = record["factors"]
    assert factors["tundra_nee"] == {"value": 10.5, "unit": "g C m-2 yr-1 (positive = uptake by land)"}
    assert factors["rts_emission"]["value"] == pytest.approx(1553.74, abs=0.01)
    assert "doi:10.1038/s41561-019-0526-0" in factors["source"]
    assert "Rustemeyer" in record["area_error_source"]


def test_explain_shows_each_step_with_numbers() -> None:
    text = site_carbon(1.828 * KM2, SITE_M2).explain()
    for expected in (
        "A_rts    = 1.8280 km2",
        "A_tundra = A_site - A_rts = 98.1720 km2",
        "95 + 0.6667 * 2188 = 1553.74",
        "2840.2 - 1030.8 = 1809.4 t C/yr",
        "6634.6 t CO2/yr",
        "+-28.3%",
        "1809.4 +- 1047.4 t C/yr",
        "Turetsky",
    ):
        assert expected in text, expected


@pytest.mark.parametrize(
    ("rts_km2", "shown"), [("1.828", "1809.4 +- 1047.4 t C/yr"), ("1.215", "850.6 +- 797.7 t C/yr")]
)
def test_cli_explains_the_paper_sites(rts_km2: str, shown: str) -> None:
    result = CliRunner().invoke(main, ["carbon", "--rts-area-km2", rts_km2, "--site-area-km2", "100"])
    assert result.exit_code == 0, result.output
    assert shown in result.output
    assert "1553.74" in result.output and "t CO2/yr" in result.output


def test_cli_json_uses_the_area_error() -> None:
    args = ["carbon", "--rts-area-km2", "1.828", "--site-area-km2", "100", "--json"]
    default = json.loads(CliRunner().invoke(main, args).output)
    wider = json.loads(CliRunner().invoke(main, [*args, "--area-error-pct", "30"]).output)
    assert default["net_t_c_per_yr"] == pytest.approx(1809.43, abs=0.01)
    assert default["area_error_fraction"] == 0.15 and wider["area_error_fraction"] == 0.30
    assert wider["err_from_area_t_c"] == pytest.approx(2 * default["err_from_area_t_c"])
    assert wider["net_t_c_err_per_yr"] > default["net_t_c_err_per_yr"]
    assert default["factors"]["tundra_nee"]["value"] == 10.5


@pytest.mark.parametrize(
    ("args", "option", "value"),
    [
        (["--rts-area-km2", "-1", "--site-area-km2", "100"], "--rts-area-km2", "-1"),
        (["--rts-area-km2", "120", "--site-area-km2", "100"], "--rts-area-km2", "120"),
        (["--rts-area-km2", "1", "--site-area-km2", "inf"], "--site-area-km2", "inf"),
        (["--rts-area-km2", "1", "--site-area-km2", "100", "--area-error-pct", "-5"], "--area-error-pct", "-5"),
        (["--rts-area-km2", "abc", "--site-area-km2", "100"], "--rts-area-km2", "abc"),
    ],
)
def test_cli_bad_values_name_option_and_value(args: list[str], option: str, value: str) -> None:
    result = CliRunner().invoke(main, ["carbon", *args])
    assert result.exit_code == 2
    assert option in result.output and value in result.output
