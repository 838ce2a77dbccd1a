"""The ``rts`` command: a thin click wrapper over the library functions."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

import click

from rtsmonitor.cli_training import register as register_training
from rtsmonitor.demo import run_demo
from rtsmonitor.errors import ConfigError, RtsError
from rtsmonitor.imagery import SceneChoice, choose_summer_scene, closest_clear_scene
from rtsmonitor.labels import rasterise, read_labels
from rtsmonitor.offline.corpus import build_corpus
from rtsmonitor.offline.paper import build_paper_corpus
from rtsmonitor.offline.stacserver import serve
from rtsmonitor.sites import DEFAULT_LABELS_DIR, SiteConfig, load_site_config, paper_sites, validate_paths
from rtsmonitor.stac import PLANETARY_COMPUTER_STAC_URL, open_catalog
from rtsmonitor.stack import build_stack, write_stack
from rtsmonitor.terrain import DemSource, EarthEngineDem, StacDem

log = logging.getLogger("rtsmonitor")

STAC_URL_ENV = "RTS_STAC_URL"
"""Environment variable naming the STAC API (default: Planetary Computer)."""


def default_stac_url() -> str:
    """The STAC API from ``RTS_STAC_URL``, else Planetary Computer."""
    return os.environ.get(STAC_URL_ENV, PLANETARY_COMPUTER_STAC_URL)


def resolve_site(spec: str) -> SiteConfig:
    """A site from a config file path, or the id of a bundled paper site."""
    path = Path(spec)
    if path.suffix.lower() in (".json", ".yaml", ".yml") or path.exists():
        return load_site_config(path)
    by_id = {site.id: site for site in paper_sites()}
    if spec not in by_id:
        raise click.BadParameter(f"{spec!r} is neither a config file nor a bundled site ({', '.join(sorted(by_id))})")
    return by_id[spec]


def dem_source(name: str, stac_url: str) -> DemSource:
    """The DEM source named on the command line."""
    if name == "copernicus":
        return StacDem(stac_url)
    return EarthEngineDem(
        dataset=name.removeprefix("ee-"),
        service_account=os.environ.get("RTS_EE_SERVICE_ACCOUNT"),
        key_file=os.environ.get("RTS_EE_KEY_FILE"),
        project=os.environ.get("RTS_EE_PROJECT"),
    )


def pick_scene(site: SiteConfig, stac_url: str, year: int | None, date: dt.date | None) -> SceneChoice:
    """The summer scene of ``year``, or the clear scene closest to ``date``."""
    client = open_catalog(stac_url)
    grid = site.grid()
    if date is not None:
        return closest_clear_scene(client, grid, date, site.max_cloud_pct)
    if year is None:
        raise click.UsageError("give --year or --date")
    return choose_summer_scene(client, grid, site.season_bounds(year), site.max_cloud_pct, site.min_valid_fraction)


labels_dir_option = click.option(
    "--labels-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_LABELS_DIR,
    show_default=True,
    help="Where the 'labels:NAME' label paths of site configs are found.",
)
stac_url_option = click.option(
    "--stac-url",
    default=default_stac_url,
    show_default=f"${STAC_URL_ENV} or Planetary Computer",
    help="STAC API to search.",
)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """RTS monitor: map retrogressive thaw slumps in Sentinel-2 imagery."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")


@main.group()
def sites() -> None:
    """Site configurations."""


@sites.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def sites_validate(paths: tuple[Path, ...]) -> None:
    """Validate site config files; print one line per problem, exit 1 if any."""
    problems = validate_paths(list(paths))
    for line in problems:
        click.echo(line)
    if problems:
        sys.exit(1)
    click.echo(f"{len(paths)} site config(s) valid")


@sites.command("list")
def sites_list() -> None:
    """List the bundled paper sites (Rustemeyer et al. 2022)."""
    for site in paper_sites():
        grid = site.grid()
        size = f"{grid.width}x{grid.height} px"
        click.echo(f"{site.id:10s} {site.name:18s} EPSG:{grid.epsg} {size} {site.area_km2():.1f} km2")


@main.command()
@click.argument("site")
@click.option("--year", type=int, help="Summer to search (the site's season window).")
@click.option("--date", type=click.DateTime(["%Y-%m-%d"]), help="Closest clear scene to this date instead.")
@stac_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the candidates as JSON.")
def scenes(site: str, year: int | None, date: dt.datetime | None, stac_url: str, as_json: bool) -> None:
    """List candidate scenes for SITE (config path or paper site id) and the choice."""
    config = resolve_site(site)
    choice = pick_scene(config, stac_url, year, date.date() if date else None)
    if as_json:
        payload = {
            "site": config.id,
            "window": [d.isoformat() for d in choice.window],
            "chosen": choice.chosen.acquisition.id if choice.chosen else None,
            "reason": choice.reason,
            "candidates": [c.summary() for c in choice.candidates],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"{len(choice.candidates)} candidate(s) for {config.id} in {choice.window[0]}..{choice.window[1]}:")
    for c in choice.candidates:
        mark = "*" if choice.chosen is c else ("+" if c.acceptable else "-")
        click.echo(f" {mark} {c.describe()}")
    click.echo(f"choice: {choice.reason}")


@main.command()
@click.argument("site")
@click.option("--year", type=int, help="Summer to stack (the site's season window).")
@click.option("--date", type=click.DateTime(["%Y-%m-%d"]), help="Stack the clear scene closest to this date.")
@click.option("--out", type=click.Path(path_type=Path), help="Output COG (default rts-output/stacks/SITE/YEAR.tif).")
@click.option(
    "--dem",
    type=click.Choice(["copernicus", "ee-arcticdem", "ee-glo30"]),
    default="copernicus",
    show_default=True,
    help="DEM source: Copernicus GLO-30 from the STAC API, or Earth Engine (extra 'gee').",
)
@click.option("--with-labels", is_flag=True, help="Add the RTS mask layer from the site's labels of --date.")
@labels_dir_option
@stac_url_option
def stack(
    site: str,
    year: int | None,
    date: dt.datetime | None,
    out: Path | None,
    dem: str,
    with_labels: bool,
    labels_dir: Path,
    stac_url: str,
) -> None:
    """Build the image stack (blue, green, red, nir, slope [, mask]) of SITE for a year or a date."""
    config = resolve_site(site)
    started = time.perf_counter()
    mask = None
    if with_labels:
        if date is None:
            raise click.UsageError("--with-labels needs --date (the labels' image date)")
        labels = [lab for src in config.labels for lab in read_labels(src, labels_dir) if lab.date == date.date()]
        if not labels:
            raise click.BadParameter(f"site {config.id} has no label polygon dated {date.date()}", param_hint="--date")
        mask = rasterise(labels, config.grid())
        click.echo(f"labels: {len(labels)} polygon(s), {int(mask.sum())} RTS pixel(s)")
    choice = pick_scene(config, stac_url, year, date.date() if date else None)
    click.echo(f"scene: {choice.reason}")
    result = build_stack(config.grid(), choice, dem_source(dem, stac_url), mask, meta={"site_id": config.id})
    label = date.date().isoformat() if date else str(year)
    path = write_stack(result, out or Path("rts-output") / "stacks" / config.id / f"{label}.tif")
    click.echo(f"wrote {path} ({result.meta['valid_fraction']:.1%} valid) in {time.perf_counter() - started:.1f} s")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("rts-output"), show_default=True)
@click.option(
    "--labels-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_LABELS_DIR,
    show_default=True,
    help="Real label files; the offline slumps are drawn where they are (random slumps if absent).",
)
def demo(out: Path, labels_dir: Path) -> None:
    """Run the main job on the embedded default: offline scenes, local STAC server, no account."""
    started = time.perf_counter()
    years = run_demo(out, labels_dir, say=click.echo)
    click.echo("")
    click.echo(f"{'year':6s}{'valid':>8s}{'seconds':>9s}{'MB read':>9s}  stack")
    for y in years:
        click.echo(f"{y.year:<6d}{y.valid_fraction:>8.1%}{y.seconds:>9.1f}{y.bytes_read / 1e6:>9.1f}  {y.stack_path}")
    click.echo(f"done in {time.perf_counter() - started:.0f} s; offline corpus in {out / 'offline-stac'}")


@main.group()
def offline() -> None:
    """The offline stand-in for Planetary Computer: synthetic scenes and a local STAC API."""


@offline.command("build")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--site", "site_specs", multiple=True, required=True, help="Config path or paper site id (repeat).")
@click.option("--years", default="2016-2022", show_default=True, help="A year or a range FIRST-LAST.")
@click.option("--scenes-per-year", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def offline_build(root: Path, site_specs: tuple[str, ...], years: str, scenes_per_year: int, seed: int) -> None:
    """Render seeded synthetic Sentinel-2 L2A scenes and GLO-30 DEM tiles for sites into ROOT."""
    first, _, last = years.partition("-")
    try:
        span = list(range(int(first), int(last or first) + 1))
    except ValueError:
        raise click.BadParameter(f"{years!r} is not YEAR or FIRST-LAST", param_hint="--years") from None
    sites = [resolve_site(spec) for spec in site_specs]
    summary = build_corpus(root, [(s.id, s.grid()) for s in sites], span, scenes_per_year, seed)
    click.echo(f"wrote {len(summary.scenes)} acquisitions to {root} in {summary.seconds:.1f} s")


@offline.command("serve")
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
def offline_serve(root: Path, host: str, port: int) -> None:
    """Serve ROOT as a STAC API with COG range requests (use its URL as --stac-url)."""
    click.echo(f"serving {root} at http://{host}:{port} (Ctrl-C stops)")
    serve(root, host, port)


@offline.command("paper")
@click.argument("root", type=click.Path(path_type=Path))
@click.option(
    "--labels-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_LABELS_DIR,
    show_default=True,
    help="The real label files (Nitze et al. 2021); the slumps are drawn at them.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--site", "site_ids", multiple=True, help="Paper site id (repeat; default: all six).")
@click.option("--max-images", type=int, help="Quick variant: at most this many images per site.")
def offline_paper(root: Path, labels_dir: Path, seed: int, site_ids: tuple[str, ...], max_images: int | None) -> None:
    """Render the synthetic corpus that mirrors the paper (six sites, real labels, 41 images) into ROOT.

    Serve ROOT with 'rts offline serve ROOT' and build the dataset with 'rts dataset build
    --labels-dir ROOT/labels --stac-url URL'.
    """
    try:
        summary = build_paper_corpus(
            root, labels_dir, seed, sites=list(site_ids) or None, max_images_per_site=max_images
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    counts = ", ".join(f"{site} {n}" for site, n in summary.expected_counts().items())
    click.echo(f"wrote {len(summary.acquisitions)} acquisitions to {root} in {summary.seconds:.1f} s")
    click.echo(f"images by design: {counts} ({sum(summary.expected_counts().values())} in all)")
    click.echo(f"labels: {summary.labels_dir}; design: {summary.manifest_path}")


@main.group()
def dataset() -> None:
    """Training datasets: label groups paired with Sentinel-2 scenes (Rustemeyer et al. 2022)."""


@dataset.command("build")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset folder (images + manifest).")
@click.option(
    "--site", "site_specs", multiple=True, help="Config path or paper site id (repeat; default: the six paper sites)."
)
@labels_dir_option
@stac_url_option
@click.option("--max-cloud-pct", type=float, default=10.0, show_default=True, help="Cloud limit over the site (%).")
@click.option("--search-days", type=int, default=45, show_default=True, help="Search +- days around a label date.")
def dataset_build(
    out: Path, site_specs: tuple[str, ...], labels_dir: Path, stac_url: str, max_cloud_pct: float, search_days: int
) -> None:
    """Pair each label group with its closest clear scene and write the 6-layer images + manifest.json."""
    from rtstrain.dataset import build_dataset  # imported here: rtsmonitor never imports rtstrain at import time

    configs = [resolve_site(spec) for spec in site_specs] if site_specs else paper_sites()
    started = time.perf_counter()
    manifest = build_dataset(configs, stac_url, out, labels_dir, max_cloud_pct, search_days)
    for config in configs:
        images = [i for i in manifest.images if i.site_id == config.id]
        merged = sum(len(i.merged_label_dates) for i in images)
        dropped = sum(1 for d in manifest.dropped if d.site_id == config.id)
        click.echo(f"{config.id:10s} {len(images):3d} image(s), {merged} group(s) merged, {dropped} dropped")
    for group in manifest.dropped:
        click.echo(f"dropped {group.site_id} {group.label_date} ({group.stage}): {group.reason}")
    click.echo(
        f"{len(manifest.images)} images in {out} in {time.perf_counter() - started:.0f} s; "
        f"manifest sha256 {manifest.manifest_sha256}"
    )


register_training(main)


def run() -> None:
    """Entry point: turn expected errors into one clear line and exit code 2."""
    try:
        main(standalone_mode=True)
    except (ConfigError, RtsError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
