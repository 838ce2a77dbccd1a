"""The training job: dataset -> evaluation (trains the models) -> ONNX export -> publish, from env vars.

The entry point of the training container (an Azure Container Apps Job). Settings:

``RTS_STAC_URL``
    STAC API with ``sentinel-2-l2a`` and ``cop-dem-glo-30`` (default: Planetary Computer).
``RTS_LABELS_DIR``
    folder holding the label files the site configs name as ``labels:NAME`` (required), or
    ``blob:CONTAINER`` to download them first from that blob container of ``RTS_STORE``
    (Terraform sets ``blob:labels``: upload the label files to the ``labels`` container).
``RTS_SITES``
    comma-separated paper-site ids or site-config paths (default: the six paper sites).
``RTS_WORK_DIR``
    scratch folder for the dataset and runs (default ``/work``).
``RTS_RESUME``
    ``1`` continues the evaluation already in ``RTS_WORK_DIR`` (a retried job on a mounted volume
    picks up after its last finished epoch); ``0`` (default) refuses a work dir holding runs.
``RTS_PRESET``
    ``paper`` (default), ``demo`` or ``quick``; ``RTS_LOSO`` ``all`` (default) or ``none``.
``RTS_STORE``
    where the bundle is published: a folder, ``azure:`` (``RTS_STORAGE_CONNECTION_STRING``) or
    ``azure://ACCOUNT`` (managed identity through ``DefaultAzureCredential``).
``RTS_MODEL_NAME`` / ``RTS_MODEL_VERSION``
    bundle name (default ``rts-unet``) and version (default: UTC time ``YYYYMMDDTHHMMSSZ``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rtsmonitor.errors import ConfigError
from rtsmonitor.modelstore import PublishedModel, publish_model
from rtsmonitor.sites import SiteConfig, load_site_config, paper_site, paper_sites
from rtsmonitor.stac import PLANETARY_COMPUTER_STAC_URL
from rtsmonitor.storage import open_storage
from rtstrain.dataset import build_dataset
from rtstrain.evaluate import evaluate
from rtstrain.export import export_run
from rtstrain.train import PRESETS

log = logging.getLogger(__name__)

BLOB_LABELS_PREFIX = "blob:"
"""``RTS_LABELS_DIR`` of the form ``blob:CONTAINER``: the label files are blobs of ``RTS_STORE``."""
LABELS_CONTAINER = "labels"
"""The blob container the deployed training job reads its label files from (``blob:labels``)."""


@dataclass(frozen=True)
class JobSettings:
    """The job's settings, read once from the environment."""

    stac_url: str
    labels: str
    sites: list[SiteConfig]
    work_dir: Path
    preset: str
    loso: bool
    store: str
    model_name: str
    model_version: str
    resume: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JobSettings:
        """Parse the settings; every problem is reported at once, naming the variable."""
        problems = []
        labels = env.get("RTS_LABELS_DIR", "")
        if not labels:
            problems.append(("RTS_LABELS_DIR", "is required: the folder with the label files, or blob:CONTAINER"))
        elif labels.startswith(BLOB_LABELS_PREFIX) and not labels.removeprefix(BLOB_LABELS_PREFIX):
            problems.append(("RTS_LABELS_DIR", f"{labels!r} names no container: use blob:CONTAINER"))
        preset = env.get("RTS_PRESET", "paper")
        if preset not in PRESETS:
            problems.append(("RTS_PRESET", f"{preset!r} is not one of {sorted(PRESETS)}"))
        loso = env.get("RTS_LOSO", "all")
        if loso not in ("all", "none"):
            problems.append(("RTS_LOSO", f"{loso!r} is not 'all' or 'none'"))
        resume = env.get("RTS_RESUME", "0")
        if resume not in ("0", "1"):
            problems.append(("RTS_RESUME", f"{resume!r} is not '0' or '1'"))
        store = env.get("RTS_STORE", "")
        if not store:
            problems.append(("RTS_STORE", "is required: where to publish the model (folder, azure:, azure://ACCOUNT)"))
        sites = []
        for spec in filter(None, env.get("RTS_SITES", "").split(",")):
            try:
                sites.append(load_site_config(Path(spec)) if Path(spec).suffix else paper_site(spec))
            except (KeyError, ConfigError) as exc:
                problems.append(("RTS_SITES", f"{spec!r}: {exc}"))
        if problems:
            raise ConfigError("training job environment", problems)
        return cls(
            stac_url=env.get("RTS_STAC_URL", PLANETARY_COMPUTER_STAC_URL),
            labels=labels,
            sites=sites or paper_sites(),
            work_dir=Path(env.get("RTS_WORK_DIR", "/work")),
            preset=preset,
            loso=loso == "all",
            store=store,
            model_name=env.get("RTS_MODEL_NAME", "rts-unet"),
            model_version=env.get("RTS_MODEL_VERSION", datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")),
            resume=resume == "1",
        )


def fetch_labels(settings: JobSettings) -> Path:
    """The folder with the label files: ``RTS_LABELS_DIR``, or the blobs it names downloaded into the work dir."""
    if not settings.labels.startswith(BLOB_LABELS_PREFIX):
        return Path(settings.labels)
    container = settings.labels.removeprefix(BLOB_LABELS_PREFIX)
    storage = open_storage(settings.store)
    target = settings.work_dir / "labels"
    names = storage.blobs.list(container)
    if not names:
        raise ConfigError("training job environment", [("RTS_LABELS_DIR", f"blob container {container!r} is empty")])
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        storage.blobs.read_to_file(container, name, target / name)
    log.info("downloaded %d label files from blob container %s", len(names), container)
    return target


def run_job(settings: JobSettings) -> PublishedModel:
    """Build the dataset, evaluate (primary + leave-one-site-out), export the primary model, publish it."""
    dataset_dir = settings.work_dir / "dataset"
    eval_dir = settings.work_dir / "evaluation"
    bundle_dir = settings.work_dir / "bundle"
    labels_dir = fetch_labels(settings)
    log.info("building the dataset of %d sites from %s", len(settings.sites), settings.stac_url)
    build_dataset(settings.sites, settings.stac_url, dataset_dir, labels_dir)
    config = PRESETS[settings.preset]
    report = evaluate(dataset_dir, eval_dir, config, loso_sites=None if settings.loso else [], resume=settings.resume)
    primary = report["primary"]
    export_run(
        eval_dir / "primary",
        bundle_dir,
        name=settings.model_name,
        version=settings.model_version,
        threshold=float(primary["threshold"]),
        metrics={k: primary[k] for k in ("pixel", "object", "baseline_pixel")},
    )
    published = publish_model(open_storage(settings.store), bundle_dir)
    log.info("published %s %s", published.name, published.version)
    return published


def main() -> None:
    """Container entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_job(JobSettings.from_env(os.environ))


if __name__ == "__main__":
    main()
