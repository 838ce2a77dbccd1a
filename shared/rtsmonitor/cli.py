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
from rtsmonitor.redaction import install_redaction
from rtsmonitor.sites import DEFAULT_LABELS_DIR, SiteConfig, load_site_config, paper_sites, validate_paths
from rtsmonitor.stac import PLANETARY_COMPUTER_STAC_URL, STAC_URL_ENV, open_catalog
from rtsmonitor.stack import build_stack, write_stack
from rtsmonitor.terrain import DemSource, EarthEngineDem, StacDem

log = logging.getLogger("rtsmonitor")


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


STORE_OPTION = click.option(
    "--store",
    "storage_spec",
    default="rts-output/store",
    show_default=True,
    help="Storage: a local folder, 'azure:' (connection string from $RTS_STORAGE_CONNECTION_STRING or "
    "$AzureWebJobsStorage) or 'azure://ACCOUNT' (Entra ID).",
)
"""The ``--store`` option of the commands that read or write a store (monitor, report, export)."""


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """RTS monitor: map retrogressive thaw slumps in Sentinel-2 imagery."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    install_redaction()  # no SAS token, account key or auth header in what the command logs


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
    """Run the main job on the embedded default: offline scenes, local STAC server, local store, demo model."""
    result = run_demo(out, labels_dir, say=click.echo)
    click.echo("")
    click.echo(f"done in {result.seconds:.0f} s. Records: {result.exported.records_csv}")
    click.echo(f"chart: {result.exported.chart}; report: {result.exported.report}; polygons: {out / 'polygons'}")
    click.echo(f"everything the Functions would store in Azure is under {out / 'store'}")


@main.command()
@STORE_OPTION
@click.option(
    "--register",
    "configs",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Upload and register this site config (repeat); its backfill is queued.",
)
@click.option("--year", "years", type=int, multiple=True, help="Also queue this summer for every active site (repeat).")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Publish this model bundle and make it current first (default: the store's current model).",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("rts-output/monitor"), show_default=True)
@stac_url_option
def monitor(
    storage_spec: str,
    configs: tuple[Path, ...],
    years: tuple[int, ...],
    model_dir: Path | None,
    out: Path,
    stac_url: str,
) -> None:
    """Run the Functions' orchestration here: register sites, process the queue, export the products.

    Against Planetary Computer and an Azure storage account this is the production job, run by hand.
    """
    from rtsmonitor.handlers import LiveServices
    from rtsmonitor.jobs import POISON_QUEUE, SITE_YEARS_QUEUE, enqueue, yearly_jobs
    from rtsmonitor.modelstore import current_model, publish_model
    from rtsmonitor.monitor import drain_queue, export_products, upload_configs
    from rtsmonitor.registry import active_sites
    from rtsmonitor.report import summary_table
    from rtsmonitor.storage import open_storage

    storage = open_storage(storage_spec)
    if model_dir is not None:
        published = publish_model(storage, model_dir)
        click.echo(f"model {published.name} {published.version} is now current")
    for registration in upload_configs(storage, [(path.name, path.read_bytes()) for path in configs]):
        if registration.status == "invalid":
            for field, message in registration.problems:
                click.echo(f"{registration.blob_name}: {field}: {message}", err=True)
        else:
            click.echo(f"site {registration.key} {registration.status}: {len(registration.queued)} site-years queued")
    if years:
        sites = active_sites(storage)
        jobs = [job for year in years for job in yearly_jobs(sites, year)]
        enqueue(storage, jobs)
        click.echo(f"queued {len(jobs)} site-years for {', '.join(map(str, years))}")
    if storage.queues.peek_count(SITE_YEARS_QUEUE):
        current_model(storage)  # fail now, jobs still queued, when no model is published
    services = LiveServices(storage, {**os.environ, "RTS_STAC_URL": stac_url})
    drained = drain_queue(storage, services, say=click.echo)
    click.echo(f"processed {len(drained.queue.succeeded)} site-years, {len(drained.queue.poisoned)} failed for good")
    records, exported = export_products(storage, out, title="RTS area per year")
    if records:
        click.echo(summary_table(records))
    click.echo(f"records: {exported.records_csv}; chart: {exported.chart}; report: {exported.report}")
    for path in exported.site_reports:
        click.echo(f"report (open in a browser): {path}")
    if drained.queue.poisoned:
        raise click.ClickException(
            f"{len(drained.queue.poisoned)} site-year(s) failed after every retry (their records say why; "
            f"the messages are in {POISON_QUEUE})"
        )


@main.command()
@click.argument("site")
@STORE_OPTION
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="HTML file to write (default rts-output/reports/SITE.html).",
)
def report(site: str, storage_spec: str, out: Path | None) -> None:
    """Write SITE's report as one self-contained HTML page: chart, map with a year slider, slump table.

    The page needs no network: open it from disk in any browser. An unknown site, or one without
    records, writes nothing and exits 1.
    """
    from rtsmonitor.errors import NotFoundError
    from rtsmonitor.htmlreport import write_site_report
    from rtsmonitor.sites import is_site_id
    from rtsmonitor.storage import open_storage

    if not is_site_id(site):
        raise click.ClickException(f"{site!r} is not a site id: 1-63 lowercase letters, digits and hyphens")
    if not storage_spec.startswith("azure") and not Path(storage_spec.removeprefix("local:")).is_dir():
        raise click.ClickException(f"no store at {storage_spec}: give the folder 'rts monitor' or 'rts demo' wrote")
    path = out or Path("rts-output") / "reports" / f"{site}.html"
    try:
        written = write_site_report(open_storage(storage_spec), site, path)
    except NotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    for year, reason in written.broken_years.items():
        click.echo(f"warning: {year} is broken: {reason}", err=True)
    if written.tracking_note:
        click.echo(f"note: {written.tracking_note}", err=True)
    years = [r.year for r in written.records]
    click.echo(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {site} {min(years)}-{max(years)}, "
        f"{len(written.slumps)} tracked slump(s); open it in a browser"
    )


@main.command()
@click.option("--year", type=int, required=True, help="Summer whose slumps to export.")
@click.option("--sites", "site_list", help="Comma-separated site ids (default: every site with an ok record then).")
@click.option("--format", "fmt", required=True, help="File format: gpkg (GeoPackage), parquet (GeoParquet) or geojson.")
@STORE_OPTION
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="File to write (default rts-output/exports/rts-inventory-YEAR.EXT); replaced atomically.",
)
@click.option("--operator", help="Who runs the monitor (person or lab): added to CreatorLab, so it changes the UIDs.")
def export(
    year: int, site_list: str | None, fmt: str, storage_spec: str, out: Path | None, operator: str | None
) -> None:
    """Write the year's RTS inventory across sites in the ARTS community format (EPSG:4326).

    One row per slump: the ARTS fields (UID, centroid, base map, relationships from the tracking),
    the slump's tracking and its probability statistics. Bad input, or a site-year that cannot be
    exported, writes nothing and exits 1.
    """
    from rtsmonitor.arts import arts_problems
    from rtsmonitor.inventory import FORMATS, InventoryInputError, check_format, write_inventory, year_inventory
    from rtsmonitor.storage import open_storage

    options = {"year": "--year", "site_ids": "--sites", "format": "--format"}
    try:
        check_format(fmt)
        path = out or Path("rts-output") / "exports" / f"rts-inventory-{year}{FORMATS[fmt][1]}"
        if path.suffix.lower() != FORMATS[fmt][1]:
            raise click.ClickException(f"--out: {str(path)!r} does not end in {FORMATS[fmt][1]} (--format {fmt})")
        if path.is_dir():
            raise click.ClickException(f"--out: {str(path)!r} is a folder; give a file name")
        if not storage_spec.startswith("azure") and not Path(storage_spec.removeprefix("local:")).is_dir():
            raise click.ClickException(
                f"--store: no store at {storage_spec!r}: give the folder 'rts monitor' or 'rts demo' wrote"
            )
        site_ids = None if site_list is None else [s.strip() for s in site_list.split(",") if s.strip()]
        frame = year_inventory(open_storage(storage_spec), year, site_ids, operator=operator)
        problems = arts_problems(frame)
        if problems:
            raise click.ClickException("the inventory breaks the ARTS format: " + "; ".join(problems[:5]))
        write_inventory(frame, path, fmt)
    except InventoryInputError as exc:
        option = options.get(exc.parameter, exc.parameter)
        raise click.ClickException(f"{option} {exc.value}: {exc}") from None
    except RtsError as exc:
        raise click.ClickException(str(exc)) from None
    sites_written = sorted(set(frame["site_id"]))
    click.echo(
        f"wrote {path}: {len(frame)} slump(s) of {year} from {len(sites_written)} site(s) "
        f"({', '.join(sites_written) or 'none'}) in the ARTS format"
    )


@main.command()
@click.option("--rts-area-km2", type=float, required=True, help="Mapped active RTS area (km2).")
@click.option("--site-area-km2", type=float, required=True, help="Observed (valid) site area, RTS included (km2).")
@click.option(
    "--area-error-pct", type=float, default=15.0, show_default=True, help="Relative error of the RTS area (%)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the estimate and the factors as JSON.")
def carbon(rts_area_km2: float, site_area_km2: float, area_error_pct: float, as_json: bool) -> None:
    """Net carbon loss of a site from its RTS area, with uncertainty (Turetsky et al. 2020 factors)."""
    from rtsmonitor.carbon import CarbonInputError, site_carbon

    given = {
        "rts_area_m2": ("--rts-area-km2", rts_area_km2),
        "site_area_m2": ("--site-area-km2", site_area_km2),
        "area_error_fraction": ("--area-error-pct", area_error_pct),
    }
    try:
        estimate = site_carbon(rts_area_km2 * 1e6, site_area_km2 * 1e6, area_error_fraction=area_error_pct / 100.0)
    except CarbonInputError as exc:
        hint, value = given[exc.parameter]
        raise click.BadParameter(f"{value:g} ({exc})", param_hint=hint) from None
    click.echo(json.dumps(estimate.to_dict(), indent=2) if as_json else estimate.explain())


@main.command()
@click.argument("stack_or_site")
@click.option("--year", type=int, help="Summer to stack and predict when STACK_OR_SITE is a site (required then).")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Model bundle folder (model.onnx + model.json); default: the bundled demo model.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Output folder (default rts-output/predictions/SITE/YEAR)."
)
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime threads (default: cores, at most 4).")
@click.option("--window-px", type=click.IntRange(min=1), help="Sliding-window edge in pixels (default 512).")
@click.option(
    "--overlap-px", type=click.IntRange(min=0), help="Overlap of neighbouring windows in pixels (default 64)."
)
@stac_url_option
def predict(
    stack_or_site: str,
    year: int | None,
    model_dir: Path | None,
    out: Path | None,
    threads: int | None,
    window_px: int | None,
    overlap_px: int | None,
    stac_url: str,
) -> None:
    """Map RTS in a stack COG, or in SITE's summer --year (stacked first): probability.tif and mask.tif."""
    from rtsmonitor import inference
    from rtsmonitor.modelstore import DEMO_BUNDLE

    started = time.perf_counter()
    window_px = inference.DEFAULT_WINDOW_PX if window_px is None else window_px
    overlap_px = inference.DEFAULT_OVERLAP_PX if overlap_px is None else overlap_px
    path = Path(stack_or_site)
    is_stack = path.suffix.lower() in (".tif", ".tiff")
    if is_stack and not path.is_file():
        raise click.BadParameter(f"stack file {path} does not exist", param_hint="STACK_OR_SITE")
    if not is_stack and year is None:
        raise click.UsageError("give --year: the summer of the site to stack and predict")
    try:
        model = inference.Model.load(model_dir or DEMO_BUNDLE, threads or inference.DEFAULT_THREADS)
        click.echo(f"model: {model.label} (threshold {model.threshold})")
        if is_stack:
            side = path.with_suffix(".json")
            meta = json.loads(side.read_text()) if side.is_file() else {}
            label = str(year or meta.get("year") or str(meta.get("scene", {}).get("datetime", ""))[:4] or "undated")
            folder = out or Path("rts-output") / "predictions" / str(meta.get("site_id") or path.stem) / label
            with click.progressbar(length=1, label="predicting") as bar:

                def advance(done: int, total: int) -> None:
                    bar.length = total
                    bar.update(done - bar.pos)

                summary = inference.predict_file(
                    model,
                    path,
                    folder / "probability.tif",
                    folder / "mask.tif",
                    window_px=window_px,
                    overlap_px=overlap_px,
                    progress=advance,
                )
            observed_fraction, rts_px, grid = summary.observed_fraction, summary.rts_px, summary.grid
            paths = (summary.probability_path, summary.mask_path)
        else:
            config = resolve_site(stack_or_site)
            choice = pick_scene(config, stac_url, year, None)
            click.echo(f"scene: {choice.reason}")
            stacked = build_stack(
                config.grid(), choice, dem_source("copernicus", stac_url), meta={"site_id": config.id, "year": year}
            )
            folder = out or Path("rts-output") / "predictions" / config.id / str(year)
            prediction = inference.predict_stack(model, stacked, window_px=window_px, overlap_px=overlap_px)
            paths = (folder / "probability.tif", folder / "mask.tif")
            inference.write_prediction(prediction, *paths)
            observed_fraction, rts_px, grid = prediction.observed_fraction, prediction.rts_px, prediction.grid
    except RtsError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"observed: {observed_fraction:.1%} of {grid.width}x{grid.height} px")
    click.echo(f"RTS: {rts_px} px = {rts_px * grid.res_m**2:.0f} m2 (probability >= {model.threshold})")
    click.echo(f"wrote {paths[0]} and {paths[1]} in {time.perf_counter() - started:.1f} s")


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
