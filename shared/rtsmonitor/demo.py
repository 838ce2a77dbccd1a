"""The embedded default: the monitoring job offline, with no account and no network.

It renders an offline Sentinel-2 L2A + Copernicus DEM corpus for the six paper sites and the
paper's summers 2016-2021 (slumps drawn where the real Nitze et al. 2021 labels are, when the label
files are at hand), serves it with the local STAC API, publishes the bundled demo model to a local
folder store, and then runs the Functions' orchestration: each paper site's config is uploaded and
registered (the blob trigger), its backfill is queued, and every site-year is processed by the
queue handler (which also tracks each slump through the years and writes the results' STAC
catalog). It ends with the records CSV, per-year polygons, the paper's Figure 3 as a chart, a
Markdown report and one HTML report per site.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rtsmonitor.catalog import CATALOG_BLOB
from rtsmonitor.errors import ConfigError
from rtsmonitor.inference import Model
from rtsmonitor.modelstore import DEMO_BUNDLE, fetch_current_bundle, publish_model
from rtsmonitor.monitor import Drained, Exported, drain_queue, export_products, upload_configs
from rtsmonitor.offline.corpus import CorpusSummary, build_corpus
from rtsmonitor.offline.paper import label_slumps, site_labels
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.offline.synthetic import Slump
from rtsmonitor.records import RESULTS_CONTAINER, SiteYearRecord
from rtsmonitor.report import summary_table
from rtsmonitor.sites import (
    DEFAULT_LABELS_DIR,
    PAPER_SITE_IDS,
    SiteConfig,
    paper_site,
    paper_site_paths,
    validate_paths,
)
from rtsmonitor.siteyear import Services
from rtsmonitor.stac import open_catalog
from rtsmonitor.storage import LocalStorage
from rtsmonitor.terrain import StacDem

DEMO_YEARS = (2016, 2021)
"""First and last summer of the demo: the period of Rustemeyer et al. 2022, Fig. 3."""
DEMO_SCENES_PER_YEAR = 2
"""Offline acquisitions per site and summer: one clear (most years) and one of another kind
(cloudy, snow, swath edge...), enough for the scene choice to matter, few enough for a 2-core laptop."""
DEMO_SEED = 0
"""Seed of the offline corpus: the demo's numbers are the same on every machine."""
DEMO_TODAY = dt.date(DEMO_YEARS[1] + 1, 1, 1)
"""The date the demo registers its sites on: every demo summer has ended by then."""


@dataclass(frozen=True)
class DemoResult:
    """What the demo did."""

    corpus: CorpusSummary
    drained: Drained
    records: list[SiteYearRecord]
    exported: Exported
    seconds: float


def demo_slumps(site: SiteConfig, labels_dir: Path) -> list[Slump]:
    """The site's real label polygons as synthetic slumps, one per physical slump (empty if absent).

    The same rule as the paper corpus (:func:`rtsmonitor.offline.paper.label_slumps`): the labels
    redraw a slump on every image date, so each slump is taken once, in its latest drawing.
    """
    if not any(source.resolved_path(labels_dir).exists() for source in site.labels):
        return []
    return label_slumps(site_labels(site, labels_dir), site.grid(), DEMO_SEED)


def demo_config(site: SiteConfig) -> bytes:
    """The site's config as uploaded by the demo: the paper site, limited to the demo's summers."""
    limited = site.model_copy(update={"first_year": DEMO_YEARS[0], "last_year": DEMO_YEARS[1], "labels": []})
    return limited.model_dump_json(indent=2).encode()


def run_demo(
    out: Path,
    labels_dir: Path = DEFAULT_LABELS_DIR,
    say: Callable[[str], None] = print,
    site_ids: tuple[str, ...] = PAPER_SITE_IDS,
) -> DemoResult:
    """Run the offline monitoring job into ``out``."""
    started = time.perf_counter()
    problems = validate_paths(paper_site_paths())
    if problems:
        raise ConfigError("bundled paper sites", [("(file)", line) for line in problems])
    sites = [paper_site(site_id) for site_id in site_ids]
    years = list(range(DEMO_YEARS[0], DEMO_YEARS[1] + 1))
    slumps = {site.id: found for site in sites if (found := demo_slumps(site, labels_dir))}
    corpus = build_corpus(
        out / "offline-stac",
        [(site.id, site.grid()) for site in sites],
        years,
        scenes_per_year=DEMO_SCENES_PER_YEAR,
        seed=DEMO_SEED,
        slumps=slumps,
        progress=False,
    )
    origin = f"slumps at the real label polygons for {len(slumps)} of {len(sites)} sites"
    say(f"1/4 offline corpus: {len(corpus.scenes)} acquisitions, {origin}, in {corpus.seconds:.0f} s")

    storage = LocalStorage(out / "store")
    published = publish_model(storage, DEMO_BUNDLE)
    model = Model.load(fetch_current_bundle(storage, out / "model-cache"))
    say(f"2/4 model {published.name} {published.version} published to the local store (threshold {model.threshold})")

    with LocalStacServer(corpus.root) as server:
        services = Services(open_catalog(server.url), StacDem(server.url), model)
        registrations = upload_configs(storage, [(f"{s.id}.json", demo_config(s)) for s in sites], today=DEMO_TODAY)
        queued = sum(len(r.queued) for r in registrations)
        say(f"3/4 registered {len(registrations)} sites; {queued} site-years queued; processing:")
        drained = drain_queue(storage, lambda: services, say=say)

    records, exported = export_products(
        storage,
        out,
        title=f"RTS area per year, {DEMO_YEARS[0]}-{DEMO_YEARS[1]} (offline demo)",
        notes=(
            "Synthetic offline scenes (slumps at the real label polygons; spectra invented) and the bundled "
            "demo model trained on the synthetic paper corpus: the numbers show the system working, "
            "not the real Arctic.",
        ),
        site_ids=[s.id for s in sites],
    )
    files = f"{exported.records_csv}, {exported.chart}, {exported.report}"
    say(f"4/4 wrote {files} and {len(exported.polygons)} polygon files")
    say(f"    STAC catalog of the results: {storage.root / 'blobs' / RESULTS_CONTAINER / CATALOG_BLOB}")
    for path in exported.site_reports:
        say(f"    report (open in a browser): {path}")
    say("")
    say(summary_table(records))
    return DemoResult(corpus, drained, records, exported, time.perf_counter() - started)
