"""The training dataset: RTS label groups (site, label date) paired with Sentinel-2 scenes, as 6-layer stacks.

Rustemeyer et al. 2022, IGARSS, doi:10.1109/IGARSS46834.2022.9884869: the RTS polygons of Nitze et
al. 2021 (ARTS data set, CC0 1.0) are grouped by site and label date; each group gets the Sentinel-2
L2A acquisition closest in time to its date with cloud cover < 10 %, and becomes one image of six
layers: blue, green, red, NIR (B02, B03, B04, B08), slope (boxcar-smoothed DEM) and the ground-truth
mask. Images with missing bands or broken data are dropped. The paper made 41 images.

The surprising part: several label dates of a site often pick the *same* scene (the labels redraw
the same slumps on PlanetScope images days apart, while a clear Sentinel-2 scene is rarer), and the
paper does not say what it did then. :data:`GROUP_RULE` is what this builder does, and the manifest
records it, together with every merged and every dropped group and why.

Output under ``out``::

    images/<site>_<label date>.tif     the stack (COG, float32, band descriptions = layer names)
    images/<site>_<label date>.json    its sidecar (scene, choice, labels)
    manifest.json                      :class:`DatasetManifest`

This module does not import TensorFlow.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from rtsmonitor.errors import ConfigError, DemError, RtsError, SceneError
from rtsmonitor.imagery import (
    LABEL_SEARCH_DAYS,
    S2_COLLECTION,
    SPECTRAL_ASSETS,
    SPECTRAL_LAYERS,
    SceneAssessment,
    closest_clear_scene,
    read_scene,
)
from rtsmonitor.labels import Label, by_date, rasterise, read_labels
from rtsmonitor.modelstore import file_sha256
from rtsmonitor.sites import SiteConfig
from rtsmonitor.stac import open_catalog
from rtsmonitor.stack import INPUT_LAYERS, MASK_LAYER, make_stack, write_stack
from rtsmonitor.terrain import DemSource, StacDem, slope_on_grid

MANIFEST_NAME = "manifest.json"
"""File name of the manifest inside the dataset folder."""
IMAGES_DIR = "images"
"""Folder of the image stacks inside the dataset folder."""
MANIFEST_SCHEMA_VERSION = 1
"""Version of the manifest layout written here."""
DATASET_LAYERS: tuple[str, ...] = (*INPUT_LAYERS, MASK_LAYER)
"""The six layers of a dataset image, in order (Rustemeyer et al. 2022)."""
PAPER_MAX_CLOUD_PCT = 10.0
"""The paper's cloud limit for a label group's scene, in % (here: cloud over the site, from SCL)."""
DEFAULT_MIN_VALID_FRACTION = 0.5
"""Least fraction of the site observed clear (not cloud, shadow, snow or no data) for a scene to be
chosen, and for an image to be kept (the site configs' default ``min_valid_fraction``)."""

GROUP_RULE = (
    "One image per site and Sentinel-2 scene. Each label group (site, label date) is paired with the scene "
    "closest in time to its date, within +-{search_days} days, with cloud over the site <= {max_cloud_pct:g} % "
    "and at least {min_valid_fraction:g} of the site observed clear (scene classification; ties in distance go "
    "to the clearer scene). When several groups of a site pick the same scene, the image's mask is rasterised "
    "from the polygons of the group closest in time to the scene (ties: the earlier label date) and the image "
    "is named after that date; the other groups are recorded as merged into it and add no polygons (they redraw "
    "the same slumps on other dates). A group with no such scene is dropped with the search's reason; an image "
    "whose data are broken (a band without data over the site, clear fraction below {min_valid_fraction:g}, "
    "slope not finite everywhere) is dropped with its groups and the reason."
)
"""The rule that turns label groups into images (formatted with the build's settings in the manifest)."""


class DatasetError(RtsError):
    """A dataset manifest is missing, malformed, or does not match its images."""


@dataclass(frozen=True)
class DatasetImage:
    """One image of the dataset, as recorded in the manifest.

    Attributes
    ----------
    site_id : the site.
    label_date : the label date whose polygons make the mask (ISO date).
    merged_label_dates : other label dates of the site that picked the same scene (ISO dates).
    scene_id : the Sentinel-2 acquisition (item ids joined with '+').
    scene_date : its date (ISO, UTC).
    processing_baselines : ``s2:processing_baseline`` of its items.
    site_cloud_pct : cloud, shadow and cirrus over the site, in % of the observed part (20 m SCL).
    valid_fraction : fraction of the site observed clear in the stack (10 m).
    rts_pixels : pixels of the mask layer that are RTS.
    label_polygons : polygons of the group rasterised into the mask.
    days_from_label : scene date minus label date, in days.
    path : the stack COG, relative to the dataset folder (POSIX separators).
    sha256 : sha256 of the COG's bytes.
    """

    site_id: str
    label_date: str
    merged_label_dates: tuple[str, ...]
    scene_id: str
    scene_date: str
    processing_baselines: tuple[str, ...]
    site_cloud_pct: float
    valid_fraction: float
    rts_pixels: int
    label_polygons: int
    days_from_label: int
    path: str
    sha256: str

    @property
    def image_id(self) -> str:
        """``<site>_<label date>``: the id training and evaluation use."""
        return f"{self.site_id}_{self.label_date}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (lists for tuples), with ``image_id``."""
        return {
            "image_id": self.image_id,
            "site_id": self.site_id,
            "label_date": self.label_date,
            "merged_label_dates": list(self.merged_label_dates),
            "scene_id": self.scene_id,
            "scene_date": self.scene_date,
            "processing_baselines": list(self.processing_baselines),
            "site_cloud_pct": self.site_cloud_pct,
            "valid_fraction": self.valid_fraction,
            "rts_pixels": self.rts_pixels,
            "label_polygons": self.label_polygons,
            "days_from_label": self.days_from_label,
            "path": self.path,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetImage:
        """Inverse of :meth:`to_dict`."""
        return cls(
            site_id=str(data["site_id"]),
            label_date=str(data["label_date"]),
            merged_label_dates=tuple(str(d) for d in data.get("merged_label_dates", [])),
            scene_id=str(data["scene_id"]),
            scene_date=str(data["scene_date"]),
            processing_baselines=tuple(str(b) for b in data.get("processing_baselines", [])),
            site_cloud_pct=float(data["site_cloud_pct"]),
            valid_fraction=float(data["valid_fraction"]),
            rts_pixels=int(data["rts_pixels"]),
            label_polygons=int(data["label_polygons"]),
            days_from_label=int(data["days_from_label"]),
            path=str(data["path"]),
            sha256=str(data["sha256"]),
        )


@dataclass(frozen=True)
class DroppedGroup:
    """A label group that made no image, and why.

    Attributes
    ----------
    site_id, label_date : the group.
    stage : where it was dropped: ``scene`` (no clear scene), ``read`` (the scene could not be read),
        ``data`` (broken data), ``slope`` (no DEM/slope for the site).
    reason : the reason, in words.
    scene_id : the scene it had picked, if any.
    """

    site_id: str
    label_date: str
    stage: str
    reason: str
    scene_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "site_id": self.site_id,
            "label_date": self.label_date,
            "stage": self.stage,
            "reason": self.reason,
            "scene_id": self.scene_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DroppedGroup:
        """Inverse of :meth:`to_dict`."""
        scene = data.get("scene_id")
        return cls(
            site_id=str(data["site_id"]),
            label_date=str(data["label_date"]),
            stage=str(data["stage"]),
            reason=str(data["reason"]),
            scene_id=None if scene is None else str(scene),
        )


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (sorted keys, no spaces, ASCII) that hashes are taken of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def images_hash(images: Sequence[DatasetImage]) -> str:
    """sha256 of the canonical JSON of the images list: the dataset's identity (goes into model.json)."""
    return hashlib.sha256(canonical_json([image.to_dict() for image in images])).hexdigest()


@dataclass
class DatasetManifest:
    """What :func:`build_dataset` made: the images, the dropped groups, the rule and the settings.

    ``manifest_sha256`` (:func:`images_hash` of ``images``) identifies the dataset; :meth:`load`
    refuses a manifest whose stored hash does not match its images.
    """

    images: list[DatasetImage]
    dropped: list[DroppedGroup]
    rule: str
    settings: dict[str, Any] = field(default_factory=dict)
    synthetic: bool = False
    schema_version: int = MANIFEST_SCHEMA_VERSION

    @property
    def manifest_sha256(self) -> str:
        """sha256 of the canonical JSON of the images list."""
        return images_hash(self.images)

    def counts(self) -> dict[str, int]:
        """Images per site."""
        out: dict[str, int] = {}
        for image in self.images:
            out[image.site_id] = out.get(image.site_id, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, as written to ``manifest.json``."""
        return {
            "schema_version": self.schema_version,
            "builder": "rtstrain.dataset",
            "paper": "Rustemeyer et al. 2022, IGARSS, doi:10.1109/IGARSS46834.2022.9884869",
            "synthetic": self.synthetic,
            "layers": list(DATASET_LAYERS),
            "rule": self.rule,
            "settings": self.settings,
            "counts": self.counts(),
            "images": [image.to_dict() for image in self.images],
            "dropped": [group.to_dict() for group in self.dropped],
            "manifest_sha256": self.manifest_sha256,
        }

    def save(self, path: Path) -> Path:
        """Write the manifest as JSON (atomically, by rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> DatasetManifest:
        """Read a manifest written by :meth:`save` (a dataset folder means its ``manifest.json``).

        Raises :class:`DatasetError` when the file is missing or malformed, or when its stored
        ``manifest_sha256`` does not match its images (the images list was edited).
        """
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            manifest = cls(
                images=[DatasetImage.from_dict(d) for d in data["images"]],
                dropped=[DroppedGroup.from_dict(d) for d in data.get("dropped", [])],
                rule=str(data["rule"]),
                settings=dict(data.get("settings", {})),
                synthetic=bool(data.get("synthetic", False)),
                schema_version=int(data.get("schema_version", MANIFEST_SCHEMA_VERSION)),
            )
        except FileNotFoundError:
            raise DatasetError(f"no dataset manifest at {path}: build the dataset first (rts dataset build)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}: not a dataset manifest ({type(exc).__name__}: {exc})") from None
        stored = data.get("manifest_sha256")
        if stored != manifest.manifest_sha256:
            raise DatasetError(
                f"{path}: manifest_sha256 {stored} does not match its images ({manifest.manifest_sha256}); "
                "the images list was edited: rebuild the dataset"
            )
        return manifest

    def verify_files(self, root: Path) -> list[str]:
        """Problems with the image files under the dataset folder ``root`` (missing, sha256 mismatch)."""
        problems = []
        for image in self.images:
            path = Path(root) / image.path
            if not path.is_file():
                problems.append(f"{image.path}: missing")
            elif file_sha256(path) != image.sha256:
                problems.append(f"{image.path}: sha256 differs from the manifest")
        return problems


def group_rule(max_cloud_pct: float, search_days: int, min_valid_fraction: float) -> str:
    """:data:`GROUP_RULE` filled in with a build's settings."""
    return GROUP_RULE.format(
        max_cloud_pct=max_cloud_pct, search_days=search_days, min_valid_fraction=min_valid_fraction
    )


def representative_date(dates: Sequence[dt.date], scene_date: dt.date) -> dt.date:
    """The label date whose polygons make an image: closest to the scene, ties to the earlier."""
    return min(dates, key=lambda d: (abs((d - scene_date).days), d))


def broken_data(
    reflectance: NDArray[np.float32], valid_fraction: float, slope: NDArray[np.float32], min_valid_fraction: float
) -> list[str]:
    """Why an image's data are broken (empty list: usable).

    A band without any data over the site, less than ``min_valid_fraction`` of the site observed
    clear, or a slope that is not finite everywhere (DEM gaps) break an image.
    """
    problems = [
        f"band {asset} ({name}) has no data over the site"
        for b, (asset, name) in enumerate(zip(SPECTRAL_ASSETS, SPECTRAL_LAYERS, strict=True))
        if not np.isfinite(reflectance[b]).any()
    ]
    if valid_fraction < min_valid_fraction:
        problems.append(f"only {valid_fraction:.1%} of the site is observed clear (< {min_valid_fraction:.0%})")
    bad = int(np.count_nonzero(~np.isfinite(slope)))
    if bad:
        problems.append(f"slope is not finite in {bad} pixel(s) (gaps in the DEM)")
    return problems


@dataclass
class _Pick:
    """The label groups of one site that picked one scene."""

    site: SiteConfig
    chosen: SceneAssessment
    reason: str
    groups: dict[dt.date, list[Label]]


def _is_synthetic(client: Any) -> bool:
    """True when the STAC API's Sentinel-2 collection says it is synthetic (the offline stand-in)."""
    try:
        collection = client.get_collection(S2_COLLECTION)
    except Exception:  # any failure (no such collection, API error) means: not known to be synthetic
        return False
    return "synthetic" in str(collection.description or "").lower()


def build_dataset(
    sites: Sequence[SiteConfig],
    stac_url: str,
    out: Path,
    labels_dir: Path,
    max_cloud_pct: float = PAPER_MAX_CLOUD_PCT,
    search_days: int = LABEL_SEARCH_DAYS,
    progress: bool = True,
    *,
    min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
    dem: DemSource | None = None,
) -> DatasetManifest:
    """Build the training images of ``sites`` from their labels and write ``out/manifest.json``.

    Parameters
    ----------
    sites : site configs with ``labels`` (GeoPackage, Shapefile or GeoJSON; any CRS).
    stac_url : the STAC API with ``sentinel-2-l2a`` and ``cop-dem-glo-30`` (Planetary Computer, or
        the local stand-in serving a synthetic corpus).
    out : the dataset folder (created); images go to ``out/images/<site>_<label date>.tif``.
    labels_dir : where ``labels:NAME`` label paths of the configs are found.
    max_cloud_pct : cloud limit over the site for a group's scene, in % (the paper: 10).
    search_days : half-width of the search window around a label date, in days.
    progress : show progress bars.
    min_valid_fraction : least fraction of the site observed clear, for choosing a scene and for
        keeping an image.
    dem : elevation source for the slope (default: Copernicus GLO-30 from ``stac_url``).

    Returns
    -------
    The manifest (also saved to ``out/manifest.json``), with the images in site order, then
    scene date, and the dropped groups with their reasons. See :data:`GROUP_RULE`.

    Raises
    ------
    ConfigError
        When a site has no label source or a label file cannot be read.
    """
    out = Path(out)
    labels_dir = Path(labels_dir)
    client = open_catalog(stac_url)
    dem = dem or StacDem(stac_url)
    rule = group_rule(max_cloud_pct, search_days, min_valid_fraction)
    dropped: list[DroppedGroup] = []

    site_groups: list[tuple[SiteConfig, dict[dt.date, list[Label]]]] = []
    for site in sites:
        if not site.labels:
            raise ConfigError(site.id, [("labels", "the site has no label source: a training site needs labels")])
        labels = [label for source in site.labels for label in read_labels(source, labels_dir)]
        site_groups.append((site, by_date(labels)))

    picks: list[_Pick] = []
    total = sum(len(groups) for _, groups in site_groups)
    with tqdm(total=total, desc="scene search", unit="group", disable=not progress) as bar:
        for site, groups in site_groups:
            grid = site.grid()
            by_scene: dict[str, _Pick] = {}
            for date, group in groups.items():
                choice = closest_clear_scene(client, grid, date, max_cloud_pct, search_days, min_valid_fraction)
                bar.update(1)
                if choice.chosen is None:
                    dropped.append(DroppedGroup(site.id, date.isoformat(), "scene", choice.reason))
                    continue
                key = choice.chosen.acquisition.id
                pick = by_scene.setdefault(key, _Pick(site, choice.chosen, choice.reason, {}))
                pick.groups[date] = group
            picks.extend(
                sorted(by_scene.values(), key=lambda p: (p.chosen.acquisition.datetime, p.chosen.acquisition.id))
            )

    images: list[DatasetImage] = []
    slopes: dict[str, NDArray[np.float32] | str] = {}
    with tqdm(total=len(picks), desc="images", unit="image", disable=not progress) as bar:
        for pick in picks:
            image = _make_image(pick, dem, slopes, out, min_valid_fraction, dropped)
            if image is not None:
                images.append(image)
            bar.update(1)

    manifest = DatasetManifest(
        images=images,
        dropped=sorted(dropped, key=lambda g: ([s.id for s in sites].index(g.site_id), g.label_date)),
        rule=rule,
        settings={
            "stac_url": stac_url,
            "labels_dir": str(labels_dir),
            "sites": [site.id for site in sites],
            "max_cloud_pct": max_cloud_pct,
            "search_days": search_days,
            "min_valid_fraction": min_valid_fraction,
            "dem": type(dem).__name__,
        },
        synthetic=_is_synthetic(client),
    )
    manifest.save(out / MANIFEST_NAME)
    return manifest


def _make_image(
    pick: _Pick,
    dem: DemSource,
    slopes: dict[str, NDArray[np.float32] | str],
    out: Path,
    min_valid_fraction: float,
    dropped: list[DroppedGroup],
) -> DatasetImage | None:
    """Read, check and write one image; on failure record its groups in ``dropped`` and return None."""
    site, chosen = pick.site, pick.chosen
    acquisition = chosen.acquisition
    dates = sorted(pick.groups)
    label_date = representative_date(dates, acquisition.date)
    merged = [d for d in dates if d != label_date]
    grid = site.grid()

    def drop(stage: str, reason: str) -> None:
        for date in dates:
            why = (
                reason if date == label_date else f"merged into the image of {label_date}, which was dropped: {reason}"
            )
            dropped.append(DroppedGroup(site.id, date.isoformat(), stage, why, acquisition.id))

    if site.id not in slopes:
        try:
            slopes[site.id] = slope_on_grid(dem, grid)
        except (DemError, SceneError, OSError) as exc:
            slopes[site.id] = f"no slope for the site: {exc}"
    slope = slopes[site.id]
    if isinstance(slope, str):
        drop("slope", slope)
        return None
    try:
        scene = read_scene(acquisition, grid)
    except (SceneError, OSError) as exc:
        drop("read", f"scene {acquisition.id} could not be read: {exc}")
        return None
    valid_fraction = scene.valid_fraction
    problems = broken_data(scene.reflectance, valid_fraction, slope, min_valid_fraction)
    if problems:
        drop("data", f"scene {acquisition.id}: " + "; ".join(problems))
        return None
    group = pick.groups[label_date]
    mask = rasterise(group, grid)
    rts_pixels = int(mask.sum())
    meta = {
        "site_id": site.id,
        "label_date": label_date.isoformat(),
        "merged_label_dates": [d.isoformat() for d in merged],
        "label_polygons": len(group),
        "rts_pixels": rts_pixels,
        "choice": {"reason": pick.reason, **chosen.summary()},
    }
    stack = make_stack(scene, slope, mask, meta)
    relative = f"{IMAGES_DIR}/{site.id}_{label_date.isoformat()}.tif"
    path = write_stack(stack, out / relative)
    return DatasetImage(
        site_id=site.id,
        label_date=label_date.isoformat(),
        merged_label_dates=tuple(d.isoformat() for d in merged),
        scene_id=acquisition.id,
        scene_date=acquisition.date.isoformat(),
        processing_baselines=tuple(acquisition.processing_baselines),
        site_cloud_pct=round(chosen.cloud_pct, 3),
        valid_fraction=round(valid_fraction, 5),
        rts_pixels=rts_pixels,
        label_polygons=len(group),
        days_from_label=(acquisition.date - label_date).days,
        path=relative,
        sha256=file_sha256(path),
    )
