"""Tests of the paper corpus (rtsmonitor.offline.paper) and of the hillslopes under given slumps."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from shapely.geometry import Point

from rtsmonitor.cli import main
from rtsmonitor.grid import SiteGrid
from rtsmonitor.labels import by_date, read_labels
from rtsmonitor.offline.corpus import REGION_MARGIN_M
from rtsmonitor.offline.paper import (
    PAPER_IMAGE_COUNTS,
    SEARCH_DAYS,
    image_label_date,
    label_slumps,
    place_clear_dates,
    site_labels,
    split_dates,
)
from rtsmonitor.offline.synthetic import Slump, World, seeded_rng
from rtsmonitor.sites import SiteConfig, paper_site, paper_sites
from rtsmonitor.terrain import slope_degrees

REAL_LABELS = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "labels"
QUICK_SITE = "kolguev02"


def _region(grid: SiteGrid) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = grid.bounds
    return (x0 - REGION_MARGIN_M, y0 - REGION_MARGIN_M, x1 + REGION_MARGIN_M, y1 + REGION_MARGIN_M)


def _slope_under(world: World, grid: SiteGrid, year: int) -> tuple[float, float]:
    """Mean slope (degrees, Horn, no smoothing) under the world's slumps and over the whole grid."""
    xs = grid.x_min + (np.arange(grid.width) + 0.5) * grid.res_m
    ys = grid.y_max - (np.arange(grid.height) + 0.5) * grid.res_m
    slope = slope_degrees(world.elevation_m(xs[None, :], ys[:, None]), grid.res_m)
    mask = world.slump_mask(grid, year)
    assert mask.sum() > 0
    return float(slope[mask].mean()), float(slope.mean())


@pytest.mark.parametrize("site_id", list(PAPER_IMAGE_COUNTS))
def test_slumps_at_real_labels_sit_on_slopes(site_id: str) -> None:
    site = paper_site(site_id)
    grid = site.grid()
    slumps = label_slumps(site_labels(site, REAL_LABELS), grid, seed=0)
    world = World.generate(grid.epsg, [_region(grid)], seed=5, slumps=slumps, slumps_per_km2=0.0)
    assert world.given_slumps == len(slumps) and world.slumps == tuple(slumps)
    under, overall = _slope_under(world, grid, 2019)
    assert under >= 4.0, f"{site_id}: mean slope under the slumps {under:.1f} deg"
    assert under <= 20.0 and overall < under


def test_a_given_slump_on_flat_ground_gets_a_hillslope_deterministically() -> None:
    grid = SiteGrid(32609, 10.0, 600_000.0, 7_700_000.0, 200, 200)
    centre = (grid.x_min + 1000.0, grid.y_max - 1000.0)
    slump = Slump(Point(*centre).buffer(40.0), first_year=2010, ref_year=2019)
    flat = World.generate(grid.epsg, [grid.bounds], seed=1, slumps_per_km2=0.0)
    given = World.generate(grid.epsg, [grid.bounds], seed=1, slumps=[slump], slumps_per_km2=0.0)
    again = World.generate(grid.epsg, [grid.bounds], seed=1, slumps=[slump], slumps_per_km2=0.0)
    under, _ = _slope_under(given, grid, 2019)
    assert 5.0 <= under <= 16.0
    ring_x = centre[0] + 40.0 * np.cos(np.linspace(0, 2 * np.pi, 16))
    ring_y = centre[1] + 40.0 * np.sin(np.linspace(0, 2 * np.pi, 16))
    np.testing.assert_array_equal(given.elevation_m(ring_x, ring_y), again.elevation_m(ring_x, ring_y))
    # far from the slump the terrain is the slump-free world's (the hillslope is compact)
    far_x, far_y = np.array([grid.x_min + 50.0]), np.array([grid.y_max - grid.height * 10.0 + 50.0])
    np.testing.assert_allclose(given.elevation_m(far_x, far_y), flat.elevation_m(far_x, far_y))


@pytest.mark.parametrize("site", paper_sites(), ids=lambda s: s.id)
def test_clusters_and_clear_days_give_the_paper_counts(site: SiteConfig) -> None:
    dates = list(by_date(site_labels(site, REAL_LABELS)))
    clusters = split_dates(dates, PAPER_IMAGE_COUNTS[site.id])
    assert len(clusters) == PAPER_IMAGE_COUNTS[site.id]
    assert [d for c in clusters for d in c] == dates
    days = place_clear_dates(clusters, seeded_rng("test", site.id))
    assert days == sorted(days) and len(set(days)) == len(days)
    for k, cluster in enumerate(clusters):
        for date in cluster:
            distances = [abs((date - day).days) for day in days]
            assert distances[k] == min(distances) and distances.count(distances[k]) == 1
            assert distances[k] <= SEARCH_DAYS - 2
    # the dataset builder applies the same rule: one image per clear scene
    assert len({(tuple(c), d) for c, d in zip(clusters, days, strict=True)}) == PAPER_IMAGE_COUNTS[site.id]


def test_split_dates_cuts_the_widest_gaps() -> None:
    d = [dt.date(2019, 7, day) for day in (1, 2, 10, 11, 30)]
    assert split_dates(d, 3) == [tuple(d[:2]), tuple(d[2:4]), (d[4],)]
    assert split_dates(d, 1) == [tuple(d)]
    with pytest.raises(ValueError, match="cannot split"):
        split_dates(d, 6)
    assert image_label_date(d[:2], dt.date(2019, 7, 3)) == d[1]
    assert image_label_date([dt.date(2019, 9, 5), dt.date(2019, 9, 7)], dt.date(2019, 9, 6)) == dt.date(2019, 9, 5)


@pytest.fixture(scope="module")
def quick_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick paper corpus of one site (two images), built through the CLI."""
    root = tmp_path_factory.mktemp("paper") / "corpus"
    result = CliRunner().invoke(
        main,
        ["offline", "paper", str(root), "--labels-dir", str(REAL_LABELS), "--site", QUICK_SITE, "--max-images", "2"],
    )
    assert result.exit_code == 0, result.output
    assert f"images by design: {QUICK_SITE} 2 (2 in all)" in result.output
    return root


def test_quick_corpus_structure(quick_corpus: Path) -> None:
    manifest = json.loads((quick_corpus / "paper_corpus.json").read_text())
    assert manifest["expected_images"] == {QUICK_SITE: 2}
    site = manifest["sites"][QUICK_SITE]
    assert site["paper_images"] == PAPER_IMAGE_COUNTS[QUICK_SITE] and site["expected_images"] == 2
    acquisitions = manifest["acquisitions"]
    kinds = [a["kind"] for a in acquisitions]
    assert kinds.count("clear") == 2 and len(kinds) > 2  # distractors too
    for cluster in site["clusters"]:
        clear = acquisitions[cluster["clear_acquisition"]]
        assert clear["kind"] == "clear" and clear["clear_over"] == [QUICK_SITE]
        measured = clear["measured"][QUICK_SITE]
        assert measured["cloud_pct"] <= 3.0 and measured["valid_fraction"] >= 0.7
        assert clear["datetime"].startswith(cluster["clear_date"])
        clear_day = dt.date.fromisoformat(cluster["clear_date"])
        for index in cluster["distractors"]:
            distractor = acquisitions[index]
            measured = distractor["measured"][QUICK_SITE]
            assert measured["cloud_pct"] >= 20.0 or measured["valid_fraction"] <= 0.4
            day = dt.date.fromisoformat(distractor["datetime"][:10])
            nearest = min(abs((day - dt.date.fromisoformat(d)).days) for d in cluster["label_dates"])
            assert nearest < min(abs((clear_day - dt.date.fromisoformat(d)).days) for d in cluster["label_dates"])
        for item_id in clear["item_ids"]:
            assert (quick_corpus / "collections" / "sentinel-2-l2a" / "items" / f"{item_id}.json").is_file()
    assert any(c["merged_label_dates"] for c in site["clusters"])
    assert manifest["dem_item_ids"]
    # the labels folder holds the real file, filtered to the kept label dates
    config = paper_site(QUICK_SITE)
    labels = read_labels(config.labels[0], quick_corpus / "labels")
    assert sorted({lab.date.isoformat() for lab in labels}) == site["label_dates"]
    real = [lab for lab in read_labels(config.labels[0], REAL_LABELS) if lab.date.isoformat() in site["label_dates"]]
    assert [lab.geometry.wkb for lab in labels] == [lab.geometry.wkb for lab in real]
