"""One site-year end to end: scene, stack, inference, objects, carbon, products and the record.

This is what the queue trigger runs (and ``rts monitor`` / ``rts demo`` through
:func:`rtsmonitor.jobs.run_queue`). Products go to ``results/<site>/<year>/<run_id>/``; the record
is written after them, on condition that no other run of the site-year wrote it meanwhile, and names
that run; then the runs that started earlier are deleted (:mod:`rtsmonitor.records`). A crash at any
point leaves the previous record and every blob it names intact, and the next run cleans up after it.
Remote reads are retried by the clients themselves (:mod:`rtsmonitor.retry`).

Objects pass the site's false-positive filters (:mod:`rtsmonitor.filters`, switched by the site
config's ``filters``): removed objects are left out of the counts, areas, carbon, quick-look and the
features of ``rts.geojson``, which lists them with their reasons under its top-level ``filters``
member; the record counts them (``rts_filtered``). Kept objects get a confidence tier
(:mod:`rtsmonitor.tiers`): feature properties ``tier``, ``area_mid_m2``, ``area_high_m2``, the rule
under the collection's ``tiers`` member, and the area per tier in the record. ``mask.tif`` and
``probability.tif`` stay the model's unfiltered output.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from pystac_client import Client
from rasterio.windows import Window

from rtsmonitor import __version__
from rtsmonitor.carbon import AREA_ERROR_FRACTION, site_carbon
from rtsmonitor.catalog import write_site_catalog
from rtsmonitor.drift import DriftAccumulator, check_drift
from rtsmonitor.errors import ConflictError, RtsError, StorageError
from rtsmonitor.filters import (
    MIN_AREA_M2,
    FilterRasters,
    ObjectScreen,
    Removed,
    removal_counts,
    screen_objects,
    small_components,
)
from rtsmonitor.grid import SiteGrid, burn_wgs84
from rtsmonitor.imagery import SceneChoice, choose_summer_scene, read_scene
from rtsmonitor.inference import MASK_RTS, MASK_UNOBSERVED, Model, Reader, predict_to_files
from rtsmonitor.jobs import SiteYearJob
from rtsmonitor.objects import RtsObject, find_objects, object_pixels, objects_geojson, total_area_m2
from rtsmonitor.quicklook import RGB_LAYERS, QuicklookCanvas, write_quicklook
from rtsmonitor.records import (
    RESULTS_CONTAINER,
    SiteYearRecord,
    commit_record,
    delete_run,
    model_mix_note,
    new_run_id,
    prune_runs,
    read_record,
    read_record_versioned,
    read_records,
    results_prefix,
)
from rtsmonitor.redaction import redact
from rtsmonitor.registry import read_site
from rtsmonitor.stac import read_env
from rtsmonitor.stack import SLOPE_LAYER, make_stack
from rtsmonitor.storage import Storage
from rtsmonitor.terrain import DemSource, slope_on_grid
from rtsmonitor.tiers import ObjectTier, object_tier, tier_areas, tier_document
from rtsmonitor.tiling import select_layers
from rtsmonitor.tracking import track_site

log = logging.getLogger(__name__)

CODE_VERSION = __version__
"""Version of this code, stored in every record (the container build may append the git commit)."""

PRODUCT_TYPES = {
    "probability.tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    "mask.tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    "rts.geojson": "application/geo+json",
    "quicklook.png": "image/png",
    "scene.json": "application/json",
}
"""The products of a site-year run and their content types."""
MAX_REASON_CHARS = 4000
"""Longest failure reason stored in a record (an Azure Tables string property holds 32 K characters)."""


@dataclass(frozen=True)
class Services:
    """What processing needs besides storage: the imagery catalogue, the DEM and the model."""

    catalog: Client
    dem: DemSource
    model: Model
    code_version: str = CODE_VERSION


@dataclass
class StageTimes:
    """Wall time of each stage of one site-year, in seconds."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as stage ``name``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class Outcome:
    """The record of a site-year and the wall time of this run's stages (seconds).

    ``superseded``: another run of the same site-year committed first; ``record`` is that run's,
    and this run's products were deleted.
    """

    record: SiteYearRecord
    stage_seconds: dict[str, float]
    superseded: bool = False


def process_site_year(storage: Storage, job: SiteYearJob, services: Services, *, attempts: int = 1) -> Outcome:
    """Process one site-year, write its products and record, and return them.

    A summer with no usable scene gets a ``no-scene`` record with the search's reason. Errors
    propagate after this run's blobs are deleted (the caller retries the job, then records the
    failure: :func:`record_failure`).
    """
    started = time.perf_counter()
    times = StageTimes()
    site = read_site(storage, job.site_id).config
    grid = site.grid()
    previous, etag = read_record_versioned(storage, job.site_id, job.year)
    run_id = new_run_id()  # after the ETag is read: see rtsmonitor.records
    with times.stage("scene search"):
        choice: SceneChoice = choose_summer_scene(
            services.catalog, grid, site.season_bounds(job.year), site.max_cloud_pct, site.min_valid_fraction
        )
    if choice.chosen is None:
        record = SiteYearRecord(
            site_id=job.site_id,
            year=job.year,
            status="no-scene",
            reason=choice.reason,
            processed=datetime.now(UTC),
            code_version=services.code_version,
            site_area_m2=round(site.area_km2() * 1e6, 1),
            model_name=services.model.name,
            model_version=services.model.version,
            model_sha256=services.model.summary()["onnx_sha256"],
            model_members=services.model.members_summary(),
            run_id=run_id,
            seconds=round(time.perf_counter() - started, 2),
            attempts=attempts,
        )
        return _commit(storage, record, etag, previous, times)

    chosen = choice.chosen
    canvas = QuicklookCanvas(grid)
    enabled = site.filters.enabled()
    prefix = results_prefix(site.id, job.year, run_id)
    with (
        _deleted_on_error(storage, site.id, job.year, run_id),
        tempfile.TemporaryDirectory(prefix="rts-siteyear-") as tmp,
        read_env(),  # GDAL cache capped, remote reads retried
    ):
        folder = Path(tmp)
        rasters = FilterRasters(grid, folder)  # what the water and flat filters read, written strip by strip
        drift = DriftAccumulator()  # stable-terrain reflectance, strip by strip
        read = scene_reader(grid, choice, services.dem, services.model.input_layers, canvas, times, rasters, drift)
        with times.stage("inference"), rasters:
            predict_to_files(
                services.model, read, grid, folder / "probability.tif", folder / "mask.tif", on_mask=drift.add_mask
            )
        # reads and filter rasters happen inside the prediction loop
        times.seconds["inference"] -= times.seconds[READ_STAGE] + times.seconds.get(FILTER_RASTER_STAGE, 0.0)
        with times.stage("objects + carbon"):
            inside = None if site.geometry is None else burn_wgs84([site.geometry_wgs84()], grid)
            rts, observed_px, site_px = _read_mask(folder / "mask.tif", inside)
            if not rasters.complete():
                raise RtsError(f"filter rasters cover {rasters.rows_written} of {grid.height} rows")
            found = _site_objects(rts, grid, folder, rasters, enabled, services.model.threshold)
            objects = found.objects
            rts_area = total_area_m2(objects)
            observed_area = observed_px * grid.res_m**2
            carbon = site_carbon(rts_area, max(observed_area, rts_area))
        with times.stage("drift check"):
            check = check_drift(drift.summary(), read_records(storage, site.id), job.year)
            if check.suspect:
                log.warning("%s %d: radiometric drift, record marked suspect: %s", site.id, job.year, check.reason)
        with times.stage("products"):
            for item in found.removed:  # the quick-look outlines what the record counts
                (rows, cols), pixels = object_pixels(item.obj, grid)
                rts[rows, cols] &= ~pixels
            canvas.add_rts(0, rts)
            del rts
            properties = {
                "site_id": site.id,
                "year": job.year,
                "scene_id": chosen.acquisition.id,
                "model": services.model.version,
            }
            collection = objects_geojson(objects, grid, properties, per_object=[t.properties() for t in found.tiers])
            collection["tiers"] = tier_document(services.model.threshold)
            collection["filters"] = {
                "enabled": list(enabled),
                "removed": found.counts,
                "objects": [item.to_dict() for item in found.removed],
            }
            (folder / "rts.geojson").write_text(json.dumps(collection))
            title = f"{site.name} {job.year}: {len(objects)} RTS"
            write_quicklook(canvas.stack(), canvas.rts, folder / "quicklook.png", title=title)
            # Planetary Computer's hrefs carry a SAS token: the stored document keeps them unsigned
            (folder / "scene.json").write_text(redact(json.dumps(_scene_document(choice), indent=2, default=str)))
        with times.stage("upload"):
            for name, content_type in PRODUCT_TYPES.items():
                storage.blobs.write_file(RESULTS_CONTAINER, prefix + name, folder / name, content_type=content_type)
    times.seconds["total"] = time.perf_counter() - started
    record = SiteYearRecord(
        site_id=site.id,
        year=job.year,
        status="ok",
        reason=choice.reason,
        processed=datetime.now(UTC),
        code_version=services.code_version,
        scene_id=chosen.acquisition.id,
        scene_datetime=chosen.acquisition.datetime.isoformat(),
        processing_baseline=",".join(sorted(set(chosen.acquisition.processing_baselines))),
        cloud_pct=round(chosen.cloud_pct, 3),
        valid_fraction=round(observed_px / max(site_px, 1), 5),
        site_area_m2=round(site_px * grid.res_m**2, 1),
        observed_area_m2=round(observed_area, 1),
        rts_count=len(objects),
        rts_area_m2=round(rts_area, 1),
        rts_area_err_m2=round(rts_area * AREA_ERROR_FRACTION, 1),
        rts_area_high_m2=round(found.tier_areas["high"], 1),
        rts_area_medium_m2=round(found.tier_areas["medium"], 1),
        rts_area_low_m2=round(found.tier_areas["low"], 1),
        rts_filtered=json.dumps(found.counts),
        carbon_t_c_per_yr=round(carbon.net_t_c_per_yr, 2),
        carbon_t_c_err_per_yr=round(carbon.net_t_c_err_per_yr, 2),
        co2_t_per_yr=round(carbon.net_t_co2_per_yr, 2),
        co2_t_err_per_yr=round(carbon.net_t_co2_err_per_yr, 2),
        carbon_factors=json.dumps(carbon.factors.to_dict(), sort_keys=True),
        model_name=services.model.name,
        model_version=services.model.version,
        model_sha256=services.model.summary()["onnx_sha256"],
        model_members=services.model.members_summary(),
        threshold=services.model.threshold,
        **check.record_fields(),
        run_id=run_id,
        results_prefix=prefix,
        seconds=round(times.seconds["total"], 2),
        attempts=attempts,
    )
    log.info("%s %d: %s", site.id, job.year, ", ".join(f"{k} {v:.2f} s" for k, v in times.seconds.items()))
    return _commit(storage, record, etag, previous, times)


@contextmanager
def _deleted_on_error(storage: Storage, site_id: str, year: int, run_id: str) -> Iterator[None]:
    """Delete the run's blobs if the ``with`` block fails (best effort: a later run prunes leftovers)."""
    try:
        yield
    except Exception:
        with suppress(Exception):
            delete_run(storage, site_id, year, run_id)
        raise


def _commit(
    storage: Storage,
    record: SiteYearRecord,
    etag: str | None,
    previous: SiteYearRecord | None,
    times: StageTimes,
) -> Outcome:
    """Write ``record`` unless another run committed since ``etag`` was read; prune, track, catalogue.

    ``previous`` is the record ``etag`` belongs to. If the row changed since but still names the
    same run, only derived fields changed (tracking counts of another year's run): the commit is
    tried again on the new ETag. The record notes other models used in the site's series
    (:func:`~rtsmonitor.records.model_mix_note`). After the commit the site's slumps are tracked
    again (:func:`~rtsmonitor.tracking.track_site`) and its STAC collection rewritten
    (:func:`~rtsmonitor.catalog.write_site_catalog`).
    """
    run_id = record.run_id
    if run_id is None:
        raise ValueError(f"record {record.site_id}/{record.year} has no run id to commit")
    with _deleted_on_error(storage, record.site_id, record.year, run_id):
        record = replace(record, model_note=model_mix_note(read_records(storage, record.site_id), record))
    for _ in range(COMMIT_ATTEMPTS):
        error: StorageError | None = None
        try:
            committed = commit_record(storage, record, etag)
        except StorageError as exc:
            committed, error = False, exc
        if committed:
            break
        # A write whose answer was lost, retried by the client, reads as a conflict (or an error):
        # the row says whether it landed.
        current, current_etag = read_record_versioned(storage, record.site_id, record.year)
        if current is not None and current.run_id == run_id:
            break
        if error is None and current is not None and previous is not None and current.run_id == previous.run_id:
            etag = current_etag  # the same run's row, its derived fields updated: commit again
            continue
        delete_run(storage, record.site_id, record.year, run_id)
        if error is not None:
            raise error
        log.warning("%s %d: another run committed first; run %s dropped", record.site_id, record.year, run_id)
        return Outcome(current or record, times.seconds, superseded=True)
    else:
        delete_run(storage, record.site_id, record.year, run_id)
        raise ConflictError(f"{record.site_id} {record.year}: the record kept changing; run {run_id} dropped")
    prune_runs(storage, record.site_id, record.year, keep_run_id=run_id, started_before=run_id)
    with times.stage("tracking + catalog"):
        track_site(storage, record.site_id)
        write_site_catalog(storage, record.site_id)
    return Outcome(read_record(storage, record.site_id, record.year) or record, times.seconds)


COMMIT_ATTEMPTS = 5
"""Commits tried while only derived fields of the same run's row change under this run."""


READ_STAGE = "read bands + slope"
"""Stage name of the scene and DEM reads (they happen strip by strip inside the inference loop)."""
FILTER_RASTER_STAGE = "filter rasters"
"""Stage name of writing the water and slope rasters the filters read (strip by strip, inside the inference loop)."""


def scene_reader(
    grid: SiteGrid,
    choice: SceneChoice,
    dem: DemSource,
    layers: tuple[str, ...],
    canvas: QuicklookCanvas,
    times: StageTimes,
    rasters: FilterRasters | None = None,
    drift: DriftAccumulator | None = None,
) -> Reader:
    """A :data:`~rtsmonitor.inference.Reader` that reads the chosen scene and the slope for each window.

    Each window of the site grid is read from the remote COGs on its own (bands, SCL and the DEM
    with its margin), so no stage holds the whole site. The window's colour layers also go to the
    quick-look ``canvas``, its water flag (SCL water or NDWI) and slope to the filter
    ``rasters``, and its stack to the ``drift`` check (both need full-width windows, as the
    inference loop reads them).
    """
    acquisition = choice.require().acquisition

    def read(row_off: int, col_off: int, height: int, width: int) -> NDArray[np.float32]:
        part = grid.window(row_off, col_off, height, width)
        with times.stage(READ_STAGE):
            scene = read_scene(acquisition, part, require_data=False)
            stack = make_stack(scene, slope_on_grid(dem, part))
        canvas.add_rgb(row_off, select_layers(stack, RGB_LAYERS))
        if (rasters is not None or drift is not None) and (col_off != 0 or width != grid.width):
            raise RtsError(
                f"filter rasters and drift need full-width windows, got columns {col_off}..{col_off + width}"
            )
        if rasters is not None:
            with times.stage(FILTER_RASTER_STAGE):
                rasters.add(row_off, stack.layer("green"), stack.layer("nir"), scene.scl, stack.layer(SLOPE_LAYER))
        if drift is not None:
            drift.stage(row_off, stack.data, stack.layers)
        return select_layers(stack, layers)

    return read


@dataclass(frozen=True)
class SiteObjects:
    """The objects of a site-year after the filters, their tiers, and what the filters removed.

    Attributes
    ----------
    objects : kept objects, numbered 1.. in row-major order of their first pixel.
    tiers : the tier of each kept object (:mod:`rtsmonitor.tiers`), in the same order.
    removed : objects a filter removed (not counting components below the mapping unit).
    counts : :func:`~rtsmonitor.filters.removal_counts` (stored as the record's ``rts_filtered``).
    tier_areas : summed area of the kept objects per tier, in m^2.

    """

    objects: list[RtsObject]
    tiers: list[ObjectTier]
    removed: list[Removed]
    counts: dict[str, int]
    tier_areas: dict[str, float]


def _site_objects(
    rts: NDArray[np.bool_],
    grid: SiteGrid,
    folder: Path,
    rasters: FilterRasters | None,
    enabled: tuple[str, ...],
    threshold: float,
) -> SiteObjects:
    """Objects of the RTS pixels ``rts``, screened by the ``enabled`` filters, with their tiers.

    Reads ``probability.tif`` and ``mask.tif`` in ``folder`` window by window; ``rasters`` None:
    the water and flat filters have nothing to read and keep every object. With the ``mmu``
    filter the minimum mapping unit is applied while the components are traced (smaller ones
    are counted, never vectorised); without it every component is an object.
    """
    mmu = "mmu" in enabled
    pixel_area = grid.res_m**2
    if not rts.any():
        return SiteObjects([], [], [], removal_counts([], enabled), tier_areas([]))
    with rasterio.open(folder / "probability.tif") as src, ObjectScreen(grid, folder / "mask.tif", rasters) as screen:

        def probability(rows: slice, cols: slice) -> NDArray[np.float32]:
            window: NDArray[np.float32] = src.read(1, window=Window.from_slices(rows, cols))
            return window

        found = find_objects(rts, probability, grid, min_area_m2=MIN_AREA_M2 if mmu else 0.0)
        mmu_dropped = small_components(rts, MIN_AREA_M2 / pixel_area) if mmu else 0
        kept, removed = screen_objects(found, screen.context, enabled)
        objects = [replace(obj, id=number) for number, obj in enumerate(kept, start=1)]
        tiers = []
        for obj in objects:
            (rows, cols), pixels = object_pixels(obj, grid)
            tiers.append(object_tier(probability(rows, cols), pixels, threshold, pixel_area))
    return SiteObjects(objects, tiers, removed, removal_counts(removed, enabled, mmu_dropped), tier_areas(tiers))


def _read_mask(path: Path, inside: NDArray[np.bool_] | None) -> tuple[NDArray[np.bool_], int, int]:
    """RTS pixels inside the site, and the counts of observed and of all pixels inside it, from ``mask.tif``."""
    with rasterio.open(path) as src:
        mask = src.read(1)
    if inside is None:
        return mask == MASK_RTS, int(np.count_nonzero(mask != MASK_UNOBSERVED)), mask.size
    observed_px = int(np.count_nonzero((mask != MASK_UNOBSERVED) & inside))
    return (mask == MASK_RTS) & inside, observed_px, int(np.count_nonzero(inside))


def _scene_document(choice: SceneChoice) -> dict[str, Any]:
    """The STAC items used and why they were chosen."""
    chosen = choice.require()
    return {
        "reason": choice.reason,
        "fallback": choice.fallback,
        "window": [d.isoformat() for d in choice.window],
        "assessment": chosen.summary(),
        "items": [item.to_dict() for item in chosen.acquisition.items],
    }


def record_failure(
    storage: Storage, job: SiteYearJob, error: str, *, attempts: int, code_version: str = CODE_VERSION
) -> SiteYearRecord:
    """Record that a site-year failed for good (after the host's retries, or at once if no retry can help).

    A site-year that already has an ``ok`` record keeps it (its products stay valid); the failure is
    logged and the ``failed`` record is returned without being stored. Otherwise the ``failed``
    record is written (unless a run commits meanwhile: then that run's record is returned) and the
    blobs of earlier failed runs are deleted.
    """
    previous, etag = read_record_versioned(storage, job.site_id, job.year)
    record = SiteYearRecord(
        site_id=job.site_id,
        year=job.year,
        status="failed",
        reason=redact(error)[:MAX_REASON_CHARS],
        processed=datetime.now(UTC),
        code_version=code_version,
        run_id=new_run_id(),
        attempts=attempts,
    )
    if previous is not None and previous.status == "ok":
        log.error("%s %d failed again (%s); its earlier ok record stays", job.site_id, job.year, error)
        return record
    if not commit_record(storage, record, etag):
        return read_record(storage, job.site_id, job.year) or record
    prune_runs(storage, job.site_id, job.year, keep_run_id=None, started_before=record.run_id)
    return record
