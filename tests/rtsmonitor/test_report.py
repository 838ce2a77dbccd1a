"""Reports of the site-year records: the Figure 3 chart, the terminal table and the Markdown report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from PIL import Image

from rtsmonitor.errors import RtsError
from rtsmonitor.records import SiteYearRecord
from rtsmonitor.report import (
    CHART_DPI,
    CHART_PANEL_SIZE_IN,
    plot_site_years,
    site_years_figure,
    summary_table,
    write_markdown_report,
)

HORTON_COUNTS = {2016: 30, 2017: 34, 2018: 41, 2019: 39, 2020: 45, 2021: 52}
HORTON_AREAS_M2 = {
    2016: 1_412_300.0,
    2017: 1_503_900.0,
    2018: 1_650_000.0,
    2019: 1_700_450.0,
    2020: 1_790_000.0,
    2021: 1_828_000.0,
}


def ok_record(site_id: str, year: int, count: int, area_m2: float) -> SiteYearRecord:
    carbon = (area_m2 * 1553.7 - (100e6 - area_m2) * 10.5) / 1e6
    return SiteYearRecord(
        site_id=site_id,
        year=year,
        status="ok",
        reason="July-August, cloud < 10 %",
        processed=datetime.now(UTC),
        code_version="test",
        scene_id=f"S2B_MSIL2A_{year}0720T211519_N0400_R000_T07WEU",
        scene_datetime=f"{year}-07-20T21:15:19Z",
        valid_fraction=0.9734,
        rts_count=count,
        rts_area_m2=area_m2,
        rts_area_err_m2=0.15 * area_m2,
        results_prefix=f"{site_id}/{year}/r/",
        carbon_t_c_per_yr=carbon,
        carbon_t_c_err_per_yr=abs(0.3 * carbon),
        co2_t_per_yr=carbon * 44 / 12,
        co2_t_err_per_yr=abs(0.3 * carbon * 44 / 12),
        carbon_factors="Turetsky2020",
        model_name="rts-unet",
        model_version="demo-1",
    )


def gap_record(site_id: str, year: int, status: str, reason: str) -> SiteYearRecord:
    return SiteYearRecord(
        site_id=site_id,
        year=year,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        processed=datetime.now(UTC),
        code_version="test",
    )


@pytest.fixture
def records() -> list[SiteYearRecord]:
    """Horton01 with every year ok; Kolguev02 with a no-scene and a failed year, given out of order."""
    horton = [ok_record("Horton01", y, HORTON_COUNTS[y], HORTON_AREAS_M2[y]) for y in HORTON_COUNTS]
    kolguev = [
        ok_record("Kolguev02", 2021, 20, 1_215_000.0),
        gap_record("Kolguev02", 2017, "no-scene", "no summer scene with cloud < 10 % (best 38 %)"),
        ok_record("Kolguev02", 2016, 17, 1_020_000.0),
        gap_record("Kolguev02", 2019, "failed", "inference: model bundle missing | retried 3x"),
        ok_record("Kolguev02", 2018, 18, 1_100_000.0),
        ok_record("Kolguev02", 2020, 19, 1_150_000.0),
    ]
    return kolguev + horton


def bars(ax: Axes) -> dict[int, float]:
    return {round(p.get_x() + p.get_width() / 2): p.get_height() for p in ax.patches if isinstance(p, Rectangle)}


def texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_chart_png_has_one_panel_per_site_plus_co2(records: list[SiteYearRecord], tmp_path: Path) -> None:
    path = plot_site_years(records, tmp_path / "out" / "chart.png", title="RTS 2016-2021")
    assert path == tmp_path / "out" / "chart.png"
    with Image.open(path) as img:
        img.load()
        width, height = img.size
    # 2 sites + CO2 panel = 3 panels in one row
    assert width == pytest.approx(3 * CHART_PANEL_SIZE_IN[0] * CHART_DPI, abs=2)
    assert height == pytest.approx(CHART_PANEL_SIZE_IN[1] * CHART_DPI, abs=2)
    assert sorted(p.name for p in path.parent.iterdir()) == ["chart.png"]  # no temporary file left


def test_chart_wraps_panels_after_three_columns(records: list[SiteYearRecord]) -> None:
    more = records + [ok_record(f"Site{i}", 2020, 1, 1000.0) for i in range(3)]
    fig = site_years_figure(more)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 6
    assert fig.get_size_inches() == pytest.approx((3 * CHART_PANEL_SIZE_IN[0], 2 * CHART_PANEL_SIZE_IN[1]))


def test_all_ok_site_has_a_bar_and_count_per_year(records: list[SiteYearRecord]) -> None:
    fig = site_years_figure(records)
    horton = fig.axes[0]
    assert horton.get_title() == "Horton01"
    assert bars(horton) == pytest.approx({y: a / 1e6 for y, a in HORTON_AREAS_M2.items()})
    counts = {round(t.xy[0]): t.get_text() for t in horton.texts}
    assert counts == {y: str(c) for y, c in HORTON_COUNTS.items()}
    # the count sits above the top of the error bar (area + 15 %)
    label_2021 = next(t for t in horton.texts if t.get_text() == "52")
    assert label_2021.xy == pytest.approx((2021, 1.828 * 1.15))


def test_gap_years_are_labelled_slots_not_zero_bars(records: list[SiteYearRecord]) -> None:
    fig = site_years_figure(records)
    kolguev = fig.axes[1]
    assert kolguev.get_title() == "Kolguev02"
    assert set(bars(kolguev)) == {2016, 2018, 2020, 2021}
    labels = {round(t.get_position()[0]): t.get_text() for t in kolguev.texts if not t.get_text().isdigit()}
    assert labels == {2017: "no scene", 2019: "failed"}
    # every panel spans all years, so Kolguev's gaps line up with Horton's bars
    assert kolguev.get_xlim() == fig.axes[0].get_xlim()


def test_co2_panel_has_a_line_per_site_with_gaps(records: list[SiteYearRecord]) -> None:
    fig = site_years_figure(records)
    co2 = fig.axes[2]
    assert "CO" in co2.get_title()
    series = {c.get_label(): c.lines[0] for c in co2.containers}
    assert set(series) == {"Horton01", "Kolguev02"}
    assert list(series["Kolguev02"].get_xdata()) == list(range(2016, 2022))
    y = series["Kolguev02"].get_ydata()
    expected_2021 = (1_215_000.0 * 1553.7 - (100e6 - 1_215_000.0) * 10.5) / 1e6 * 44 / 12
    assert y[-1] == pytest.approx(expected_2021)
    assert y[1] != y[1] and y[3] != y[3]  # NaN: a gap in the line for 2017 and 2019


def test_site_with_only_gaps_draws_no_bars(tmp_path: Path) -> None:
    gaps = [gap_record("Empty01", 2016 + i, "no-scene", "all cloudy") for i in range(3)]
    fig = site_years_figure(gaps)
    assert bars(fig.axes[0]) == {}
    assert texts(fig.axes[0]) == ["no scene"] * 3
    assert plot_site_years(gaps, tmp_path / "gaps.png").stat().st_size > 0


def test_chart_refuses_empty_and_duplicate_records(records: list[SiteYearRecord], tmp_path: Path) -> None:
    with pytest.raises(RtsError, match="no records"):
        plot_site_years([], tmp_path / "c.png")
    with pytest.raises(RtsError, match="Horton01 year 2018"):
        site_years_figure([*records, ok_record("Horton01", 2018, 1, 1.0)])
    assert not list(tmp_path.iterdir())


def test_summary_table_lists_every_site_year(records: list[SiteYearRecord]) -> None:
    table = summary_table(records)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["site", "year", "status"]
    assert len(lines) == 2 + len(records)
    body = lines[2:]
    assert [ln.split()[:2] for ln in body[:6]] == [["Horton01", str(y)] for y in range(2016, 2022)]
    horton_2021 = body[5].split()
    assert horton_2021[2:6] == ["ok", "2021-07-20", "97.3", "52"]
    assert "1.828 ± 0.274" in body[5]
    kolguev = {int(ln.split()[1]): ln for ln in body[6:]}
    assert kolguev[2017].split()[2] == "no-scene"
    assert "cloud < 10 % (best 38 %)" in kolguev[2017]
    assert kolguev[2019].split()[2] == "failed"
    assert kolguev[2021].split()[5] == "20"
    # fixed width: the count column ends at the same place on every line
    ends = {ln.index("  ", ln.index("97.3") + 4) for ln in body if "97.3" in ln}
    assert len(ends) == 1


def test_markdown_report_tables_link_and_reasons(records: list[SiteYearRecord], tmp_path: Path) -> None:
    chart = plot_site_years(records, tmp_path / "figs" / "chart.png")
    report = write_markdown_report(
        records,
        tmp_path / "report.md",
        chart=chart,
        title="RTS monitor",
        notes=["synthetic offline scenes, demo model"],
    )
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# RTS monitor\n")
    assert "- synthetic offline scenes, demo model" in text
    assert "](figs/chart.png)" in text
    assert text.index("## Horton01") < text.index("## Kolguev02") < text.index("## How to read")
    # Horton01 2021: 1.828 km² ± 15 %; carbon 1809 t C/yr (the paper: 1810) ± 30 %, CO2 = C * 44/12
    assert (
        "| 2021 | ok | S2B_MSIL2A_20210720T211519_N0400_R000_T07WEU (2021-07-20) | 97.3 | 52 "
        "| 1.828 ± 0.274 | 1809 ± 543 | 6634 ± 1990 |  |"
    ) in text
    assert "| 2017 | no-scene | – | – | – | – | – | – | no summer scene with cloud < 10 % (best 38 %) |" in text
    assert "model bundle missing \\| retried 3x" in text  # a pipe in a reason does not break the table
    assert "±15 %" in text and "rtsmonitor.carbon" in text
    assert "Carbon factors: Turetsky2020." in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs", "report.md"]


def test_markdown_report_without_chart_and_small_numbers(tmp_path: Path) -> None:
    small = ok_record("Tiny01", 2020, 2, 4300.0)
    tiny = SiteYearRecord(**{**small.__dict__, "co2_t_per_yr": 12.345, "co2_t_err_per_yr": 3.21})
    text = write_markdown_report([tiny], tmp_path / "r.md", chart=None, title="t").read_text(encoding="utf-8")
    assert "![" not in text
    assert "| 0.004 ± 0.001 |" in text
    assert "| 12.3 ± 3.2 |" in text
