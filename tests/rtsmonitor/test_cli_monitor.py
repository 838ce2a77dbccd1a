"""``rts monitor``: register sites, run the queue and export the products, on a local store and STAC server."""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from rtsmonitor import jobs, monitor
from rtsmonitor.cli import main
from rtsmonitor.demo import demo_config
from rtsmonitor.errors import ModelError
from rtsmonitor.jobs import POISON_QUEUE, SITE_YEARS_QUEUE, SiteYearJob
from rtsmonitor.modelstore import DEMO_BUNDLE
from rtsmonitor.offline.corpus import build_corpus
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.records import CSV_COLUMNS, RESULTS_CONTAINER, read_records
from rtsmonitor.registry import SITE_ERRORS_CONTAINER
from rtsmonitor.sites import paper_site
from rtsmonitor.storage import LocalStorage

SITE = "horton01"
YEAR = 2021


@dataclass
class Env:
    stac_url: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("cli-monitor")
    corpus = build_corpus(
        root / "stac", [(SITE, paper_site(SITE).grid())], [YEAR], scenes_per_year=1, seed=0, progress=False
    )
    with LocalStacServer(corpus.root) as server:
        yield Env(server.url)


@pytest.fixture(autouse=True)
def fast_local_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the model cache in the test's folder and the local host's retries short (2 deliveries, 1 s)."""
    monkeypatch.setenv("RTS_MODEL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setattr(monitor, "run_queue", functools.partial(jobs.run_queue, idle_wait_s=0.1))
    original = monitor.drain_queue

    def drain(*args: Any, **kwargs: Any) -> monitor.Drained:
        return original(*args, **{**kwargs, "retry_delay_s": 1, "max_dequeue_count": 2})

    monkeypatch.setattr(monitor, "drain_queue", drain)


def config_file(folder: Path, **changes: Any) -> Path:
    data = json.loads(demo_config(paper_site(SITE)))
    data.update({"first_year": YEAR, "last_year": YEAR, **changes})
    path = folder / f"{SITE}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def run_monitor(env: Env, tmp_path: Path, config: Path, *extra: str) -> Result:
    args = [
        "monitor",
        "--store",
        str(tmp_path / "store"),
        "--register",
        str(config),
        "--stac-url",
        env.stac_url,
        "--out",
        str(tmp_path / "out"),
        *extra,
    ]
    result = CliRunner().invoke(main, args)
    print(result.output)
    return result


def csv_rows(path: Path) -> list[dict[str, str]]:
    text = path.read_text()
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    return list(csv.DictReader(io.StringIO(text)))


def test_monitor_registers_processes_and_exports(env: Env, tmp_path: Path) -> None:
    result = run_monitor(env, tmp_path, config_file(tmp_path), "--model", str(DEMO_BUNDLE))
    assert result.exit_code == 0, result.output
    assert "is now current" in result.output
    assert f"site {SITE} active: 1 site-years queued" in result.output
    assert "processed 1 site-years, 0 failed for good" in result.output
    rows = csv_rows(tmp_path / "out" / "records.csv")
    assert [(r["site_id"], r["year"]) for r in rows] == [(SITE, str(YEAR))]
    status = rows[0]["status"]
    print(f"{SITE} {YEAR}: status {status} ({rows[0]['reason']})")
    assert status in ("ok", "no-scene")
    if status == "ok":
        assert rows[0]["scene_id"] and int(rows[0]["rts_count"]) >= 0 and rows[0]["model_version"]
        assert (tmp_path / "out" / "polygons" / SITE / f"{YEAR}.geojson").is_file()
    report = tmp_path / "out" / "report.md"
    chart = tmp_path / "out" / "rts_area_per_year.png"
    assert report.is_file() and chart.is_file() and chart.stat().st_size > 1000
    assert "rts_area_per_year.png" in report.read_text()
    assert json.loads((tmp_path / "out" / "records.json").read_text())[0]["site_id"] == SITE
    storage = LocalStorage(tmp_path / "store")
    assert storage.queues.peek_count(SITE_YEARS_QUEUE) == 0 and storage.queues.peek_count(POISON_QUEUE) == 0
    assert [(r.site_id, r.year, r.status) for r in read_records(storage)] == [(SITE, YEAR, status)]

    # the same command again: the unchanged config queues nothing; --year queues the summer once more
    again = run_monitor(env, tmp_path, config_file(tmp_path), "--year", str(YEAR))
    assert again.exit_code == 0, again.output
    assert f"site {SITE} active: 0 site-years queued" in again.output
    assert f"queued 1 site-years for {YEAR}" in again.output
    assert "processed 1 site-years, 0 failed for good" in again.output
    records = read_records(storage)
    assert [(r.site_id, r.year, r.status) for r in records] == [(SITE, YEAR, status)]
    assert len(csv_rows(tmp_path / "out" / "records.csv")) == 1
    runs = {name.split("/")[2] for name in storage.blobs.list(RESULTS_CONTAINER, f"{SITE}/{YEAR}/")}
    assert runs == ({records[0].run_id} if status == "ok" else set())


def test_monitor_with_an_invalid_config_prints_its_problems_and_processes_nothing(env: Env, tmp_path: Path) -> None:
    config = config_file(tmp_path, max_cloud_pct=500, first_year=2010)
    result = run_monitor(env, tmp_path, config, "--model", str(DEMO_BUNDLE))
    assert result.exit_code == 0, result.output  # registration never fails the job
    assert f"{SITE}.json: max_cloud_pct:" in result.stderr
    assert f"{SITE}.json: first_year:" in result.stderr
    assert "Traceback" not in result.output
    assert "processed 0 site-years, 0 failed for good" in result.output
    assert csv_rows(tmp_path / "out" / "records.csv") == []
    assert not (tmp_path / "out" / "report.md").exists()
    storage = LocalStorage(tmp_path / "store")
    assert storage.blobs.exists(SITE_ERRORS_CONTAINER, f"{SITE}.json")
    assert read_records(storage) == []


def test_monitor_without_a_model_stops_before_processing(env: Env, tmp_path: Path) -> None:
    result = run_monitor(env, tmp_path, config_file(tmp_path))
    assert isinstance(result.exception, ModelError)  # `rts` (cli.run) prints it as one line, exit 2
    assert "no model published" in str(result.exception) and "models/current.json" in str(result.exception)
    storage = LocalStorage(tmp_path / "store")
    assert storage.queues.peek_count(SITE_YEARS_QUEUE) == 1  # the job waits for a model
    assert read_records(storage) == []


def test_monitor_exits_1_when_a_site_year_fails_for_good(env: Env, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    storage.queues.send(SITE_YEARS_QUEUE, SiteYearJob("ghost", YEAR).to_message())  # no such site
    result = run_monitor(env, tmp_path, config_file(tmp_path), "--model", str(DEMO_BUNDLE))
    assert result.exit_code == 1
    assert "1 site-year(s) failed after every retry" in result.output
    records = {r.site_id: r for r in read_records(storage)}
    assert records[SITE].status == "ok"  # the other site-year is processed and exported
    assert records["ghost"].status == "failed" and "ghost" in records["ghost"].reason
    assert storage.queues.peek_count(POISON_QUEUE) == 1
