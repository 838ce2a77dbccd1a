"""Reports of the site-year records: the RTS area/count chart, a terminal table and a Markdown report.

The chart follows Figure 3 of Rustemeyer et al. 2022 (IGARSS, doi:10.1109/IGARSS46834.2022.9884869):
RTS area per year as bars with the +-15 % area error as error bars and the RTS count printed on each
bar, one panel per site, plus a panel of the net CO2 emission per site and year (Turetsky et al. 2020,
see :mod:`rtsmonitor.carbon`). Every uncertainty shown is the ``*_err`` field of the record, computed
upstream; nothing here recomputes it.

Figures are drawn with matplotlib's Agg canvas on a private :class:`~matplotlib.figure.Figure`
(no pyplot), so drawing is thread-safe and never opens a window.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rtsmonitor.errors import RtsError
from rtsmonitor.files import write_atomically, write_text_atomically
from rtsmonitor.records import SiteYearRecord

M2_PER_KM2 = 1e6
"""Square metres per square kilometre."""
CHART_MAX_COLUMNS = 3
"""Most panels side by side in the chart; more panels wrap to further rows."""
CHART_PANEL_SIZE_IN = (4.8, 3.2)
"""(width, height) of one chart panel in inches."""
CHART_DPI = 120
"""Resolution of the chart PNG in dots per inch (a panel is 576 x 384 px)."""
BAR_COLOUR = "#a0522d"
"""Fill colour of the RTS area bars (sienna: bare, slumped ground)."""
TIER_COLOURS = {"high": "#6b2f12", "medium": "#c07040", "low": "#ecc9a8"}
"""Fill colours of the confidence tiers in a tiered bar (dark: confident, light: doubtful)."""
TIER_LABELS = {"high": "high tier", "medium": "medium tier", "low": "low tier"}
"""Legend labels of the tiers."""
MISSING = "–"
TABLE_REASON_CHARS = 70
"""Longest reason shown in the terminal table (the report and the records keep it whole)."""
"""Shown in tables where a record has no value."""
STATUS_LABELS = {"no-scene": "no scene", "failed": "failed"}
"""Label of an empty chart slot, by record status."""
HOW_TO_READ = (
    "Bars are the RTS area detected in the year's summer scene, with the RTS count printed above each bar; "
    "the error bars and the ± ranges of the area are the ±15 % area error from the model's precision and "
    "recall (Rustemeyer et al. 2022). Where a record carries confidence tiers, each bar is split into its "
    "high, medium and low tier (dark to light, `rtsmonitor.tiers`): the RTS area then lies in the band from "
    "the top of the high tier (the objects the model is surest of) to the top of the bar (all objects). "
    "Carbon is the site's net loss to the atmosphere (positive = source, "
    "negative = net uptake), with pixels not classified RTS counted as undisturbed tundra (Turetsky et al. "
    "2020); its ± range combines the area error with the ranges of the flux parameters (see "
    "`rtsmonitor.carbon`). Years marked no-scene had no usable summer scene and years marked failed could "
    "not be processed: they are gaps, not zero RTS. Valid % is the share of the site observed clear of "
    "cloud, shadow and snow; RTS under unobserved pixels are missed, so a low value means a lower bound."
)
"""The "how to read" paragraph of the Markdown report."""


def plot_site_years(records: Sequence[SiteYearRecord], path: Path, *, title: str | None = None) -> Path:
    """Draw the RTS area/count chart of the records (Rustemeyer et al. 2022, Figure 3) as a PNG.

    One panel per site (site ids sorted, up to :data:`CHART_MAX_COLUMNS` per row) with the RTS area in
    km^2 per year as bars, ``rts_area_err_m2`` as error bars and the RTS count above each bar; then one
    panel of t CO2/yr per site and year with ``co2_t_err_per_yr`` as error bars. Every panel spans the
    same years, those of all records.

    Parameters
    ----------
    records : the site-year records, any order; at most one per site and year.
    path : where to write the PNG (written under a temporary name in the same folder, then renamed).
    title : optional title above all panels.

    Returns
    -------
    ``path``.

    Raises
    ------
    RtsError
        If ``records`` is empty or holds two records of one site-year.

    Notes
    -----
    A year with status ``no-scene`` or ``failed`` is an empty slot labelled "no scene" or "failed",
    never a zero bar: no observation is not the same as no RTS. A year with no record at all is left
    blank. The figure is that of :func:`site_years_figure`.

    """
    fig = site_years_figure(records, title=title)
    write_atomically(path, lambda out: fig.savefig(out, format="png", dpi=CHART_DPI))
    return path


def site_years_figure(records: Sequence[SiteYearRecord], *, title: str | None = None) -> Figure:
    """The chart of :func:`plot_site_years` as a matplotlib figure on an Agg canvas (not yet saved).

    Axes ``fig.axes[:n_sites]`` are the sites' area panels in site-id order and ``fig.axes[n_sites]``
    is the CO2 panel; panels left over in the last row are hidden.

    Raises
    ------
    RtsError
        If ``records`` is empty or holds two records of one site-year.

    """
    by_site = _by_site(records)
    if not by_site:
        raise RtsError("no records to plot")
    years = sorted({r.year for r in records})
    n_panels = len(by_site) + 1
    n_cols = min(CHART_MAX_COLUMNS, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    width_in, height_in = CHART_PANEL_SIZE_IN
    fig = Figure(figsize=(n_cols * width_in, n_rows * height_in), dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (site_id, site_records) in zip(axes, by_site.items(), strict=False):
        _area_panel(ax, site_id, site_records, years)
    _co2_panel(axes[len(by_site)], by_site, years)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def summary_table(records: Sequence[SiteYearRecord]) -> str:
    """The records as a fixed-width text table for a terminal, one line per site-year.

    Columns: site, year, status, scene date, valid %, RTS count, RTS area km^2 +- error, t CO2/yr +-
    error, and the reason of a year that is not ``ok``.
    """
    header = ("site", "year", "status", "scene date", "valid %", "count", "area km²", "t CO2/yr", "reason")
    rows = [
        (
            r.site_id,
            str(r.year),
            r.status,
            _scene_date(r),
            _fmt_pct(r.valid_fraction),
            _fmt_count(r.rts_count),
            _fmt_area(r.rts_area_m2, r.rts_area_err_m2),
            _fmt_mass(r.co2_t_per_yr, r.co2_t_err_per_yr),
            "" if r.status == "ok" else _clip(_one_line(r.reason), TABLE_REASON_CHARS),
        )
        for site_records in _by_site(records).values()
        for r in site_records
    ]
    right = {1, 4, 5, 6, 7}
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    out = [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]
    return "\n".join(out) + "\n"


def write_markdown_report(
    records: Sequence[SiteYearRecord],
    path: Path,
    *,
    chart: Path | None,
    title: str,
    notes: Sequence[str] = (),
) -> Path:
    """Write a Markdown report of the records: notes, the chart, one table per site, how to read it.

    Parameters
    ----------
    records : the site-year records, any order; at most one per site and year.
    path : where to write the report (written under a temporary name in the same folder, then renamed).
    chart : the chart PNG (e.g. from :func:`plot_site_years`), linked by its path relative to the
        report's folder; ``None`` for no chart.
    title : the report's heading.
    notes : lines listed under the heading, e.g. where the scenes and the model came from.

    Returns
    -------
    ``path``.

    """
    lines = [f"# {_one_line(title)}", ""]
    if notes:
        lines += [f"- {_one_line(note)}" for note in notes] + [""]
    if chart is not None:
        link = Path(os.path.relpath(os.path.abspath(chart), os.path.abspath(path.parent))).as_posix()
        target = f"<{link}>" if " " in link else link
        lines += [f"![RTS area, count and CO₂ per site and year]({target})", ""]
    header = ("Year", "Status", "Scene", "Valid %", "RTS count", "RTS area km²", "t C/yr", "t CO₂/yr", "Reason")
    align = ("---:", ":---", ":---", "---:", "---:", "---:", "---:", "---:", ":---")
    for site_id, site_records in _by_site(records).items():
        lines += [f"## {site_id}", "", _md_row(header), _md_row(align)]
        for r in site_records:
            scene = MISSING
            if r.scene_id:
                date = _scene_date(r)
                scene = f"{r.scene_id} ({date})" if date != MISSING else r.scene_id
            lines.append(
                _md_row(
                    (
                        str(r.year),
                        r.status,
                        scene,
                        _fmt_pct(r.valid_fraction),
                        _fmt_count(r.rts_count),
                        _fmt_area(r.rts_area_m2, r.rts_area_err_m2),
                        _fmt_mass(r.carbon_t_c_per_yr, r.carbon_t_c_err_per_yr),
                        _fmt_mass(r.co2_t_per_yr, r.co2_t_err_per_yr),
                        "" if r.status == "ok" else r.reason,
                    )
                )
            )
        lines.append("")
    factors = sorted({r.carbon_factors for r in records if r.carbon_factors})
    models = sorted({f"{r.model_name or 'model'} {r.model_version}" for r in records if r.model_version})
    lines += ["## How to read", "", HOW_TO_READ, ""]
    if models:
        lines += [f"Model: {', '.join(models)}.", ""]
    if factors:
        lines += [f"Carbon factors: {'; '.join(factors)}.", ""]
    text = "\n".join(lines)
    write_text_atomically(path, text)
    return path


def _by_site(records: Sequence[SiteYearRecord]) -> dict[str, list[SiteYearRecord]]:
    """The records grouped by site (ids sorted), each site's ordered by year; duplicates raise."""
    by_site: dict[str, list[SiteYearRecord]] = {}
    seen: set[tuple[str, int]] = set()
    for record in sorted(records, key=lambda r: (r.site_id, r.year)):
        key = (record.site_id, record.year)
        if key in seen:
            raise RtsError(f"two records of site {record.site_id} year {record.year}: pass one per site-year")
        seen.add(key)
        by_site.setdefault(record.site_id, []).append(record)
    return by_site


def tier_areas_km2(record: SiteYearRecord) -> tuple[float, float, float] | None:
    """(high, medium, low) tier areas of a record in km^2, or None when it has no tiers (older records)."""
    values = (record.rts_area_high_m2, record.rts_area_medium_m2, record.rts_area_low_m2)
    if any(v is None for v in values):
        return None
    high, medium, low = (float(v or 0.0) / M2_PER_KM2 for v in values)
    return high, medium, low


def _area_panel(ax: Axes, site_id: str, records: Sequence[SiteYearRecord], years: Sequence[int]) -> None:
    """Bars of RTS area (km^2) with error bars and counts; labelled gaps for years without a result.

    A record with tier areas gets a bar stacked from its high, medium and low tiers (the band from
    the high-tier area to the area of all tiers); one without gets a plain bar.
    """
    ok = [r for r in records if r.status == "ok" and r.rts_area_m2 is not None]
    areas = [float(r.rts_area_m2 or 0.0) / M2_PER_KM2 for r in ok]
    errors = [float(r.rts_area_err_m2 or 0.0) / M2_PER_KM2 for r in ok]
    plain = [i for i, r in enumerate(ok) if tier_areas_km2(r) is None]
    tiered = [i for i, r in enumerate(ok) if tier_areas_km2(r) is not None]
    if plain:
        ax.bar(
            [ok[i].year for i in plain],
            [areas[i] for i in plain],
            width=0.7,
            color=BAR_COLOUR,
            yerr=[errors[i] for i in plain],
            capsize=3,
            ecolor="black",
        )
    if tiered:
        parts = [tier_areas_km2(ok[i]) or (0.0, 0.0, 0.0) for i in tiered]
        bottom = np.zeros(len(tiered))
        for k, tier in enumerate(("high", "medium", "low")):
            heights = np.array([p[k] for p in parts])
            ax.bar(
                [ok[i].year for i in tiered],
                heights,
                bottom=bottom,
                width=0.7,
                color=TIER_COLOURS[tier],
                edgecolor=BAR_COLOUR,
                linewidth=0.5,
                label=TIER_LABELS[tier],
            )
            bottom = bottom + heights
        ax.errorbar(
            [ok[i].year for i in tiered],
            [areas[i] for i in tiered],
            yerr=[errors[i] for i in tiered],
            fmt="none",
            capsize=3,
            ecolor="black",
        )
        ax.legend(fontsize=7, loc="upper left")
    for r, area, err in zip(ok, areas, errors, strict=True):
        ax.annotate(
            _fmt_count(r.rts_count),
            (r.year, area + err),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    for r in records:
        if r.status != "ok":
            ax.text(
                r.year,
                0.03,
                STATUS_LABELS.get(r.status, r.status),
                transform=ax.get_xaxis_transform(),
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=7,
                color="dimgrey",
                style="italic",
            )
    top = max((a + e for a, e in zip(areas, errors, strict=True)), default=0.0)
    ax.set_ylim(0.0, top * 1.2 if top > 0 else 1.0)
    ax.set_title(site_id, fontsize=10)
    ax.set_ylabel("RTS area (km$^2$)")
    _year_axis(ax, years)


def _co2_panel(ax: Axes, by_site: dict[str, list[SiteYearRecord]], years: Sequence[int]) -> None:
    """Markers and lines of t CO2/yr per site and year, with error bars; gaps where there is no value."""
    drawn = False
    for site_id, records in by_site.items():
        by_year = {r.year: r for r in records if r.status == "ok" and r.co2_t_per_yr is not None}
        if not by_year:
            continue
        values = [float(by_year[y].co2_t_per_yr or 0.0) if y in by_year else np.nan for y in years]
        errors = [float(by_year[y].co2_t_err_per_yr or 0.0) if y in by_year else np.nan for y in years]
        ax.errorbar(years, values, yerr=errors, marker="o", markersize=4, capsize=3, label=site_id)
        drawn = True
    if drawn:
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no CO$_2$ estimates", transform=ax.transAxes, ha="center", va="center", color="dimgrey")
    ax.set_title("Net CO$_2$ emission", fontsize=10)
    ax.set_ylabel("t CO$_2$ yr$^{-1}$")
    _year_axis(ax, years)


def _year_axis(ax: Axes, years: Sequence[int]) -> None:
    """One tick per year, the same span on every panel."""
    ax.set_xticks(list(years), [str(y) for y in years], fontsize=8, rotation=45 if len(years) > 7 else 0)
    ax.set_xlim(min(years) - 0.6, max(years) + 0.6)


def _scene_date(record: SiteYearRecord) -> str:
    """The date part of the record's scene datetime (ISO 8601), or :data:`MISSING`."""
    return record.scene_datetime[:10] if record.scene_datetime else MISSING


def _fmt_pct(fraction: float | None) -> str:
    """A 0..1 fraction as a percentage with one decimal."""
    return MISSING if fraction is None else f"{100.0 * fraction:.1f}"


def _fmt_count(count: int | None) -> str:
    """An RTS count."""
    return MISSING if count is None else str(count)


def _fmt_area(area_m2: float | None, err_m2: float | None) -> str:
    """An area in km^2 to 0.001 km^2 (1000 m^2, ten 10 m pixels), with its +- error if known."""
    if area_m2 is None:
        return MISSING
    text = f"{area_m2 / M2_PER_KM2:.3f}"
    return text if err_m2 is None else f"{text} ± {err_m2 / M2_PER_KM2:.3f}"


def _fmt_mass(value_t: float | None, err_t: float | None) -> str:
    """A mass flux in t/yr: whole tonnes from 100 t on, else one decimal; the error to the same decimals."""
    if value_t is None:
        return MISSING
    decimals = 0 if abs(value_t) >= 100.0 else 1
    text = f"{value_t:.{decimals}f}"
    return text if err_t is None else f"{text} ± {err_t:.{decimals}f}"


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    """``text`` with line breaks replaced by spaces."""
    return " ".join(text.split())


def _md_row(cells: Sequence[str]) -> str:
    """One Markdown table row; pipes in cells are escaped."""
    return "| " + " | ".join(_one_line(c).replace("|", "\\|") for c in cells) + " |"
