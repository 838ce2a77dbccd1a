"""The embedded default (the README's first command) and the CLI around it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rtsmonitor.catalog import validate_catalog
from rtsmonitor.cli import main
from rtsmonitor.demo import DEMO_YEARS, demo_slumps, run_demo
from rtsmonitor.labels import rasterise, read_labels
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.records import read_records
from rtsmonitor.sites import paper_site, paper_site_paths
from rtsmonitor.stack import INPUT_LAYERS, MASK_LAYER, read_stack
from rtsmonitor.storage import LocalStorage
from rtsmonitor.tracking import read_slump_rows

REAL_LABELS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "labels"


def test_demo_runs_the_monitoring_job_offline(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(tmp_path, REAL_LABELS, say=lines.append, site_ids=("horton01",))
    assert "slumps at the real label polygons for 1 of 1 sites" in lines[0]
    assert "rts-unet-demo demo-1 published" in lines[1]
    assert "registered 1 sites; 6 site-years queued" in lines[2]
    years = list(range(DEMO_YEARS[0], DEMO_YEARS[1] + 1))
    assert [(r.site_id, r.year) for r in result.records] == [("horton01", y) for y in years]
    world, grid = result.corpus.worlds["horton01"], paper_site("horton01").grid()
    for record in result.records:
        if record.status != "ok":
            assert record.status == "no-scene" and record.reason.startswith("no scene")
            continue
        truth = float(world.slump_mask(grid, record.year).sum()) * grid.res_m**2
        assert record.rts_area_m2 == pytest.approx(truth, rel=0.15)  # the records' own area error
    # the products a user opens
    csv_lines = result.exported.records_csv.read_text().splitlines()
    assert csv_lines[0].startswith("site_id,year,status") and len(csv_lines) == 1 + len(years)
    ok = [r for r in result.records if r.status == "ok"]
    assert len(result.exported.polygons) == len(ok) >= 4
    polygons = json.loads((tmp_path / "polygons" / "horton01" / f"{ok[0].year}.geojson").read_text())
    assert len(polygons["features"]) == ok[0].rts_count
    assert result.exported.chart is not None and result.exported.chart.stat().st_size > 10_000
    assert result.exported.report is not None and "rts_area_per_year.png" in result.exported.report.read_text()
    assert "\nhorton01  2016  " in "\n".join(lines)  # the summary table
    # tracking, the STAC catalog and the HTML report, written by the queue handler and the export
    store = LocalStorage(tmp_path / "store")
    slumps = read_slump_rows(store, "horton01")
    assert {row.year for row in slumps} == {r.year for r in ok}
    assert all(r.rts_new is not None for r in read_records(store, "horton01") if r.status == "ok")
    assert validate_catalog(store) == {}
    assert [p.name for p in result.exported.site_reports] == ["horton01.html"]
    assert any(line.endswith("reports/horton01.html") and "open in a browser" in line for line in lines)
    assert any("STAC catalog" in line and line.endswith("_stac/catalog.json") for line in lines)


def test_demo_without_label_files_uses_random_slumps(tmp_path: Path) -> None:
    site = paper_site("lena")
    assert demo_slumps(site, tmp_path / "no-labels") == []
    assert len(demo_slumps(site, REAL_LABELS)) > 0


def test_sites_validate_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["sites", "validate", *map(str, paper_site_paths())])
    assert ok.exit_code == 0 and "6 site config(s) valid" in ok.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": "Bad/Id", "name": "x", "centre": {"lon": 0, "lat": 0, "size_km": -1}}')
    result = runner.invoke(main, ["sites", "validate", str(bad), str(paper_site_paths()[0])])
    assert result.exit_code == 1
    problems = result.output.strip().splitlines()
    assert len(problems) == 2
    assert problems[0].startswith(f"{bad}: id: 'Bad/Id'")
    assert problems[1].startswith(f"{bad}: centre.size_km: -1")


def test_offline_build_then_scenes(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "stac"
    result = runner.invoke(
        main, ["offline", "build", str(root), "--site", "lena", "--years", "2019", "--scenes-per-year", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 2 acquisitions" in result.output
    assert len(list((root / "collections" / "sentinel-2-l2a" / "items").glob("*.json"))) >= 2
    bad = runner.invoke(main, ["offline", "build", str(root), "--site", "lena", "--years", "2019-x"])
    assert bad.exit_code == 2 and "'2019-x' is not YEAR or FIRST-LAST" in bad.output


def test_stack_cli_with_labels_adds_the_mask(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "stac"
    built = runner.invoke(main, ["offline", "build", str(root), "--site", "horton01", "--years", "2019"])
    assert built.exit_code == 0, built.output
    out = tmp_path / "h.tif"
    with LocalStacServer(root) as server:
        args = ["stack", "horton01", "--date", "2019-07-14", "--with-labels", "--labels-dir", str(REAL_LABELS)]
        result = runner.invoke(main, [*args, "--out", str(out), "--stac-url", server.url])
        assert result.exit_code == 0, result.output
        no_labels = runner.invoke(main, [*args[:3], "2019-07-15", *args[4:], "--stac-url", server.url])
    assert "labels: 43 polygon(s)" in result.output
    stack = read_stack(out)
    assert stack.layers == (*INPUT_LAYERS, MASK_LAYER)
    site = paper_site("horton01")
    labels = [lab for lab in read_labels(site.labels[0], REAL_LABELS) if lab.date == dt.date(2019, 7, 14)]
    np.testing.assert_array_equal(stack.layer(MASK_LAYER) == 1, rasterise(labels, site.grid()))
    assert no_labels.exit_code == 2 and "no label polygon dated 2019-07-15" in no_labels.output
