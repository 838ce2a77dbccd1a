"""The embedded default: the main job offline, with no account and no network.

It validates the bundled paper site configs, renders an offline Sentinel-2 L2A + Copernicus DEM
corpus for one paper site (slumps drawn where the real Nitze et al. 2021 labels are, when the
label files are at hand), serves it with the local STAC API, and runs the same search, ranking and
stack code that runs against Planetary Computer, writing one stack per summer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pystac_client import Client

from rtsmonitor.errors import ConfigError
from rtsmonitor.imagery import choose_summer_scene
from rtsmonitor.offline.corpus import build_corpus
from rtsmonitor.offline.paper import label_slumps, site_labels
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.offline.synthetic import Slump
from rtsmonitor.sites import DEFAULT_LABELS_DIR, SiteConfig, paper_site, paper_site_paths, validate_paths
from rtsmonitor.stack import Stack, build_stack, write_stack
from rtsmonitor.terrain import StacDem

DEMO_SITE = "horton01"
"""The paper site the demo runs on (Rustemeyer et al. 2022, Fig. 3 shows Horton 01)."""
DEMO_YEARS = (2021, 2022)
"""Summers of the demo: 2021 (processing baseline 03.01) and 2022 (04.00, +1000 DN offset)."""
DEMO_SEED = 0
"""Seed of the offline corpus: the demo's numbers are the same on every machine."""


@dataclass(frozen=True)
class DemoYear:
    """What the demo did for one summer."""

    year: int
    reason: str
    stack_path: Path
    valid_fraction: float
    seconds: float
    bytes_read: int


def demo_slumps(site: SiteConfig, labels_dir: Path) -> list[Slump]:
    """The site's real label polygons as synthetic slumps, one per physical slump (empty if absent).

    The same rule as the paper corpus (:func:`rtsmonitor.offline.paper.label_slumps`): the labels
    redraw a slump on every image date, so each slump is taken once, in its latest drawing.
    """
    if not any(source.resolved_path(labels_dir).exists() for source in site.labels):
        return []
    return label_slumps(site_labels(site, labels_dir), site.grid(), DEMO_SEED)


def run_demo(out: Path, labels_dir: Path = DEFAULT_LABELS_DIR, say: Callable[[str], None] = print) -> list[DemoYear]:
    """Run the offline main job into ``out`` and return one :class:`DemoYear` per summer."""
    configs = paper_site_paths()
    problems = validate_paths(configs)
    if problems:
        raise ConfigError("bundled paper sites", [("(file)", line) for line in problems])
    say(f"1/3 site configs: the {len(configs)} bundled paper sites are valid")

    site = paper_site(DEMO_SITE)
    grid = site.grid()
    slumps = demo_slumps(site, labels_dir)
    origin = f"{len(slumps)} slumps at the real label polygons" if slumps else "random slumps (no label files found)"
    corpus = build_corpus(
        out / "offline-stac",
        [(site.id, grid)],
        list(DEMO_YEARS),
        seed=DEMO_SEED,
        slumps={site.id: slumps} if slumps else None,
    )
    say(f"2/3 offline corpus: {len(corpus.scenes)} acquisitions of {site.id}, {origin}, in {corpus.seconds:.1f} s")

    results = []
    with LocalStacServer(corpus.root) as server:
        client = Client.open(server.url)
        dem = StacDem(server.url)
        for year in DEMO_YEARS:
            server.reset_stats()
            started = time.perf_counter()
            choice = choose_summer_scene(
                client, grid, site.season_bounds(year), site.max_cloud_pct, site.min_valid_fraction
            )
            stack: Stack = build_stack(grid, choice, dem, meta={"site_id": site.id, "year": year})
            path = write_stack(stack, out / "stacks" / site.id / f"{year}.tif")
            results.append(
                DemoYear(
                    year=year,
                    reason=choice.reason,
                    stack_path=path,
                    valid_fraction=float(stack.meta["valid_fraction"]),
                    seconds=time.perf_counter() - started,
                    bytes_read=server.stats().bytes_total,
                )
            )
            say(f"3/3 {site.id} {year}: {choice.reason}")
    return results
