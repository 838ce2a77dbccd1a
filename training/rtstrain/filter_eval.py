"""The false-positive filters and confidence tiers measured on held-out images: precision and recall before and after.

The filters (:mod:`rtsmonitor.filters`) and tiers (:mod:`rtsmonitor.tiers`) are rules applied after
the U-Net of Rustemeyer et al. 2022 (IGARSS, doi:10.1109/IGARSS46834.2022.9884869). This module runs
a model bundle with the monitor's own inference (:func:`rtsmonitor.inference.predict_stack`, ONNX on
the CPU: no TensorFlow) over the test images of a dataset (by default the primary split's test
images, :func:`rtstrain.evaluate.primary_split`) and scores pixels and objects
(:mod:`rtstrain.metrics`) with no filter, each filter alone, and all of them; then the object
precision of each confidence tier after the site config's default filters.

The dataset stacks hold no scene classification (SCL), so here the ``water`` filter uses NDWI
alone; in the monitor it also uses SCL class 6. Predicted objects are 8-connected components of
the thresholded probability, as in the monitor and in the object metrics.

Run ``python -m rtstrain.filter_eval --dataset DATASET --report shared/rtsmonitor/models/demo/report.md``
to print the tables and put them into the demo model's evaluation report.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import pystac
from numpy.typing import NDArray
from scipy import ndimage

from rtsmonitor.errors import RtsError
from rtsmonitor.files import write_text_atomically
from rtsmonitor.filters import (
    FILTER_NAMES,
    FILTERS,
    FLAT_PERCENTILE,
    FLAT_SLOPE_DEG,
    MIN_AREA_M2,
    NDWI_WATER_THRESHOLD,
    WATER_FRACTION,
    context_from_arrays,
    water_pixels,
)
from rtsmonitor.imagery import group_acquisitions, read_scene
from rtsmonitor.inference import Model, predict_stack
from rtsmonitor.modelstore import DEMO_BUNDLE
from rtsmonitor.sites import FilterSwitches
from rtsmonitor.stack import MASK_LAYER, SLOPE_LAYER, Stack, make_stack
from rtsmonitor.tiers import TIER_RULE, TIERS, object_tier, stricter_thresholds
from rtstrain.evaluate import primary_split
from rtstrain.metrics import (
    EIGHT_CONNECTED,
    OBJECT_IOU_THRESHOLD,
    ZERO,
    match_objects,
    object_scores,
    pixel_scores,
)
from rtstrain.train import image_id, load_manifest, read_image

CONFIGURATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("none", ()),
    *((name, (name,)) for name in FILTER_NAMES),
    ("defaults", FilterSwitches().enabled()),
    ("all", FILTER_NAMES),
)
"""The filter sets scored: none, each filter alone, the site config's defaults, all four."""
CLOUDED_VALID_RANGE: tuple[float, float] = (0.3, 0.99)
"""Observed (clear) fraction of the site, lowest and highest, of a corpus scene used as a clouded view."""
SECTION_HEADING = "## False-positive filters and confidence tiers"
"""Heading of the section :func:`update_markdown_report` writes (replaced on a re-run)."""
JSON_KEY = "filters_and_tiers"
"""Key of the results in ``report.json``."""
PAPER_CORPUS_JSON = "paper_corpus.json"
"""The plan of a synthetic paper corpus (:mod:`rtsmonitor.offline.paper`) in its root folder."""
S2_ITEMS = Path("collections") / "sentinel-2-l2a" / "items"
"""Where a corpus keeps its Sentinel-2 items, relative to its root."""


@dataclass(frozen=True)
class EvalImage:
    """An image to score: a stack with the model's input layers and the truth mask, and its SCL if known."""

    image_id: str
    stack: Stack
    scl: NDArray[np.uint8] | None
    scene_id: str


@dataclass
class _Scored:
    """One scored image: prediction, truth and which filters flag which predicted component."""

    image_id: str
    probability: NDArray[np.float32]
    pred: NDArray[np.bool_]
    truth: NDArray[np.bool_]
    valid: NDArray[np.bool_]
    labels: NDArray[np.int32]
    count: int
    flagged: dict[str, set[int]]
    unobserved_fraction: float


def dataset_images(dataset_dir: Path, image_ids: Sequence[str] | None = None) -> list[EvalImage]:
    """The dataset's images ``image_ids`` (default: the primary split's test images); no SCL (stacks lack it)."""
    manifest = load_manifest(dataset_dir)
    entries = {image_id(e): e for e in manifest["images"]}
    ids = list(image_ids) if image_ids is not None else primary_split(manifest).test
    unknown = [i for i in ids if i not in entries]
    if unknown:
        raise RtsError(f"images {unknown} are not in {Path(dataset_dir) / 'manifest.json'}")
    return [EvalImage(i, read_image(dataset_dir, entries[i]), None, str(entries[i]["scene_id"])) for i in ids]


def clouded_images(corpus_root: Path, images: Sequence[EvalImage]) -> list[EvalImage]:
    """The same sites and labels in the partly clouded corpus scene nearest in time to each image's scene.

    For each image, the acquisitions of the paper corpus whose measured clear fraction over the
    image's site lies in :data:`CLOUDED_VALID_RANGE` are candidates; the nearest in time to the
    image's scene, in the same year, is read onto the image's grid (bands and SCL, clouds NaN as in
    the monitor) and stacked with the image's slope and truth mask. Images without such a scene are
    left out.
    """
    corpus_root = Path(corpus_root)
    plan = json.loads((corpus_root / PAPER_CORPUS_JSON).read_text())
    out: list[EvalImage] = []
    for image in images:
        site = image.image_id.rsplit("_", 1)[0]
        when = dt.datetime.fromisoformat(str(image.stack.meta.get("scene", {}).get("datetime"))).date()
        low, high = CLOUDED_VALID_RANGE
        candidates = [
            a
            for a in plan["acquisitions"]
            if site in a.get("measured", {})
            and low <= float(a["measured"][site]["valid_fraction"]) < high
            and a["datetime"][:4] == str(when.year)
        ]
        if not candidates:
            continue
        nearest = min(candidates, key=lambda a: abs((dt.date.fromisoformat(a["datetime"][:10]) - when).days))
        items = []
        for item_id in nearest["item_ids"]:
            item = pystac.Item.from_file(str(corpus_root / S2_ITEMS / f"{item_id}.json"))
            for asset in item.assets.values():
                if "://" not in asset.href and not Path(asset.href).is_absolute():
                    asset.href = str(corpus_root / asset.href)
            items.append(item)
        (acquisition,) = group_acquisitions(items)
        scene = read_scene(acquisition, image.stack.grid, require_data=False)
        mask = image.stack.layer(MASK_LAYER) > 0.5
        stack = make_stack(scene, image.stack.layer(SLOPE_LAYER), mask)
        out.append(EvalImage(f"{image.image_id} @ {acquisition.date}", stack, scene.scl, acquisition.id))
    return out


def _score_image(model: Model, image: EvalImage) -> _Scored:
    """Predict one image and run every filter on each predicted component."""
    stack = image.stack
    prediction = predict_stack(model, stack)
    pred, valid = prediction.mask, prediction.observed
    truth = stack.layer(MASK_LAYER) > 0.5
    water = water_pixels(stack.layer("green"), stack.layer("nir"), image.scl)
    slope = stack.layer(SLOPE_LAYER)
    labels, count = ndimage.label(pred, structure=EIGHT_CONNECTED)
    flagged: dict[str, set[int]] = {name: set() for name in FILTER_NAMES}
    pixel_area = stack.grid.res_m**2
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        ctx = context_from_arrays(box, labels[box] == label, valid, water, slope, pixel_area)
        for name in FILTER_NAMES:
            if FILTERS[name](ctx) is not None:
                flagged[name].add(label)
    return _Scored(
        image.image_id,
        prediction.probability,
        pred,
        truth,
        valid,
        labels.astype(np.int32),
        int(count),
        flagged,
        float(1.0 - valid.mean()),
    )


def _kept(image: _Scored, filters: Sequence[str]) -> NDArray[np.bool_]:
    """The image's prediction with the components flagged by any of ``filters`` removed."""
    dropped = set().union(*(image.flagged[name] for name in filters)) if filters else set()
    if not dropped:
        return image.pred
    keep: NDArray[np.bool_] = image.pred & ~np.isin(image.labels, sorted(dropped))
    return keep


def _tier_counts(image: _Scored, keep: NDArray[np.bool_], threshold: float, pixel_area_m2: float) -> dict[str, Any]:
    """Per tier: objects, objects matched to a label (IoU), pixels and true RTS pixels, of the kept objects."""
    kept_ids = np.where(keep, image.labels, 0)
    true_ids, n_true = ndimage.label(image.truth & image.valid, structure=EIGHT_CONNECTED)
    matches = match_objects(kept_ids, image.count, true_ids, int(n_true), OBJECT_IOU_THRESHOLD)
    counts = {tier: {"objects": 0, "matched": 0, "pixels": 0, "true_pixels": 0} for tier in TIERS}
    for label, box in enumerate(ndimage.find_objects(kept_ids), start=1):
        if box is None:
            continue
        inside = kept_ids[box] == label
        tier = object_tier(image.probability[box], inside, threshold, pixel_area_m2).tier
        counts[tier]["objects"] += 1
        counts[tier]["matched"] += int(label in matches)
        counts[tier]["pixels"] += int(np.count_nonzero(inside))
        counts[tier]["true_pixels"] += int(np.count_nonzero(inside & image.truth[box]))
    return counts


def score_images(model: Model, images: Sequence[EvalImage], *, progress: bool = False) -> dict[str, Any]:
    """Pixel and object scores of ``model`` on ``images`` per filter set (:data:`CONFIGURATIONS`), and tier precision.

    Returns a JSON-ready dict: ``images``, ``unobserved_fraction`` per image, ``configurations``
    (name -> filters, pixel and object :meth:`~rtstrain.metrics.Scores.to_dict`, objects removed)
    and ``tiers`` (after the site config's default filters: per tier objects, matched, object precision, pixels, pixel
    precision).
    """
    scored: list[_Scored] = []
    for image in images:
        scored.append(_score_image(model, image))
        if progress:
            click.echo(f"{image.image_id}: {scored[-1].count} predicted objects", err=True)
    configurations: dict[str, Any] = {}
    for name, filters in CONFIGURATIONS:
        pixel, objects, removed = ZERO, ZERO, 0
        for item in scored:
            keep = _kept(item, filters)
            pixel += pixel_scores(keep, item.truth, item.valid)
            objects += object_scores(keep, item.truth, item.valid)
            removed += len(set().union(*(item.flagged[f] for f in filters))) if filters else 0
        configurations[name] = {
            "filters": list(filters),
            "pixel": pixel.to_dict(),
            "object": objects.to_dict(),
            "removed_objects": removed,
        }
    tiers: dict[str, dict[str, Any]] = {
        tier: {"objects": 0, "matched": 0, "pixels": 0, "true_pixels": 0} for tier in TIERS
    }
    for item, image in zip(scored, images, strict=True):
        pixel_area = image.stack.grid.res_m**2
        kept = _kept(item, FilterSwitches().enabled())
        for tier, counts in _tier_counts(item, kept, model.threshold, pixel_area).items():
            for key, value in counts.items():
                tiers[tier][key] += value
    for counts in tiers.values():
        counts["object_precision"] = round(counts["matched"] / counts["objects"], 4) if counts["objects"] else None
        counts["pixel_precision"] = round(counts["true_pixels"] / counts["pixels"], 4) if counts["pixels"] else None
    return {
        "images": [image.image_id for image in images],
        "scenes": [image.scene_id for image in images],
        "scl": all(image.scl is not None for image in images),
        "unobserved_fraction": {item.image_id: round(item.unobserved_fraction, 4) for item in scored},
        "configurations": configurations,
        "tiers": tiers,
    }


def evaluate_filters(
    dataset_dir: Path,
    bundle_dir: Path = DEMO_BUNDLE,
    image_ids: Sequence[str] | None = None,
    *,
    corpus_root: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score the filters and tiers on the test images of a dataset, and on clouded views of them if a corpus is given.

    Parameters
    ----------
    dataset_dir : a dataset built by ``rts dataset build`` (``manifest.json`` + stacks).
    bundle_dir : the model bundle (default: the demo model).
    image_ids : the images to score (default: the primary split's test images).
    corpus_root : the synthetic paper corpus the dataset was built from (optional): adds the set
        ``clouded`` (:func:`clouded_images`), on which the ``edges`` filter has something to do.
    progress : print one line per image.

    Returns
    -------
    A JSON-ready dict: the model, dataset, thresholds, tier rule and filter constants, ``sets``
    (``test`` and, with a corpus, ``clouded``: :func:`score_images` each) and ``seconds``.

    """
    started = time.monotonic()
    dataset_dir = Path(dataset_dir)
    model = Model.load(Path(bundle_dir))
    images = dataset_images(dataset_dir, image_ids)
    sets = {"test": score_images(model, images, progress=progress)}
    if corpus_root is not None:
        sets["clouded"] = score_images(model, clouded_images(corpus_root, images), progress=progress)
    mid, high = stricter_thresholds(model.threshold)
    return {
        "model": model.summary(),
        "dataset": {"dir": str(dataset_dir), "manifest_sha256": load_manifest(dataset_dir).get("manifest_sha256")},
        "threshold": model.threshold,
        "threshold_mid": mid,
        "threshold_high": high,
        "tier_rule": TIER_RULE,
        "constants": {
            "ndwi_water_threshold": NDWI_WATER_THRESHOLD,
            "water_fraction": WATER_FRACTION,
            "flat_slope_deg": FLAT_SLOPE_DEG,
            "flat_percentile": FLAT_PERCENTILE,
            "min_area_m2": MIN_AREA_M2,
            "object_iou": OBJECT_IOU_THRESHOLD,
        },
        "sets": sets,
        "seconds": round(time.monotonic() - started, 1),
    }


def _scores_cells(s: dict[str, Any]) -> str:
    return f"{s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f}"


def _filters_table(result: dict[str, Any], scored: dict[str, Any]) -> list[str]:
    """The before/after rows of one image set."""
    constants = result["constants"]
    labels = {
        "none": "no filter",
        "water": f"water (≥ {constants['water_fraction']:.0%} water pixels)",
        "edges": "edges (touches unobserved pixels)",
        "mmu": f"mmu (< {constants['min_area_m2']:g} m²)",
        "flat": f"flat (p{constants['flat_percentile']:g} slope < {constants['flat_slope_deg']:g}°)",
        "defaults": f"site-config defaults ({', '.join(FilterSwitches().enabled())})",
        "all": "all four",
    }
    lines = [
        "| filters | pixel precision | pixel recall | pixel F1 | object precision | object recall | object F1 "
        "| objects removed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, conf in scored["configurations"].items():
        lines.append(
            f"| {labels.get(name, name)} | {_scores_cells(conf['pixel'])} | {_scores_cells(conf['object'])} "
            f"| {conf['removed_objects']} |"
        )
    return lines


def _tiers_table(scored: dict[str, Any]) -> list[str]:
    """The tier rows of one image set."""
    lines = [
        "| tier | objects | matched to a label | object precision | pixels | pixel precision |",
        "|---|---|---|---|---|---|",
    ]
    for tier, t in scored["tiers"].items():
        op = "–" if t["object_precision"] is None else f"{t['object_precision']:.3f}"
        pp = "–" if t["pixel_precision"] is None else f"{t['pixel_precision']:.3f}"
        lines.append(f"| {tier} | {t['objects']} | {t['matched']} | {op} | {t['pixels']} | {pp} |")
    return lines


def markdown_section(result: dict[str, Any]) -> str:
    """The before/after tables and the tier tables as a Markdown section (:data:`SECTION_HEADING`)."""
    constants = result["constants"]
    test = result["sets"]["test"]
    clear = sum(1 for v in test["unobserved_fraction"].values() if v == 0)
    lines = [
        SECTION_HEADING,
        "",
        f"Model `{result['model']['name']}/{result['model']['version']}` run with the monitor's ONNX inference "
        f"(`rtsmonitor.inference.predict_stack`, sliding windows; threshold {result['threshold']:g}). Objects are "
        f"8-connected components of the thresholded probability, matched one to one to labelled objects at IoU >= "
        f"{constants['object_iou']:g}. Made by `python -m rtstrain.filter_eval` (`rtsmonitor.filters`, "
        "`rtsmonitor.tiers`); the rows without filter differ slightly from the tables above, which come from "
        "Keras on whole images.",
        "",
        f"Water: NDWI (green - NIR)/(green + NIR) > {constants['ndwi_water_threshold']:g} (McFeeters 1996) or SCL "
        f"class 6 on at least {constants['water_fraction']:.0%} of the object's pixels. Edges: the object touches a "
        "pixel with no clear observation (8-neighbourhood). MMU: area below the minimum mapping unit. Flat: the "
        f"{constants['flat_percentile']:g}th percentile of the slope under the object is below "
        f"{constants['flat_slope_deg']:g}°.",
        "",
        f"### Held-out test images ({', '.join(test['images'])})",
        "",
        *_filters_table(result, test),
        "",
        "The dataset stacks carry no scene classification, so here the water filter used NDWI alone (the monitor also "
        f"uses SCL class 6). {clear} of the {len(test['images'])} test images are fully observed (the dataset keeps "
        "the clearest scene of each label date): "
        + (
            "the edges filter has nothing to act on in this set, so its row shows no effect, neither good nor bad."
            if clear == len(test["images"])
            else "the edges filter acts only on the others."
        ),
        "",
    ]
    clouded = result["sets"].get("clouded")
    if clouded is not None:
        lines += [
            "### The same sites and labels under cloud",
            "",
            "Each test image's site and truth mask, seen in the partly clouded scene of the synthetic corpus nearest "
            "in time to the test scene (same year; clear fraction of the site between "
            f"{CLOUDED_VALID_RANGE[0]:g} and {CLOUDED_VALID_RANGE[1]:g}), read as the monitor reads a scene (SCL "
            "clouds, shadows and snow unobserved; the water filter with SCL and NDWI). Scores count observed pixels "
            "only. Scenes: "
            + ", ".join(
                f"{name} ({100 * (1 - frac):.0f} % observed)" for name, frac in clouded["unobserved_fraction"].items()
            )
            + ".",
            "",
            *_filters_table(result, clouded),
            "",
        ]
    lines += [
        f"### Confidence tiers (after the default filters, held-out test images; thresholds {result['threshold']:g} / "
        f"{result['threshold_mid']:.4g} / {result['threshold_high']:.4g})",
        "",
        f"Rule: {result['tier_rule']}.",
        "",
        *_tiers_table(test),
    ]
    return "\n".join(lines) + "\n"


def update_markdown_report(path: Path, section: str) -> None:
    """Put ``section`` into the Markdown report at ``path``, replacing an earlier one (up to the next ``## ``)."""
    text = path.read_text() if path.exists() else ""
    start = text.find(SECTION_HEADING)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION_HEADING))
        text = text[:start] + section + ("" if end < 0 else "\n" + text[end + 1 :])
    write_text_atomically(path, text)


def update_json_report(path: Path, result: dict[str, Any]) -> None:
    """Put ``result`` into the JSON report at ``path`` under :data:`JSON_KEY`."""
    report = json.loads(path.read_text()) if path.exists() else {}
    report[JSON_KEY] = result
    write_text_atomically(path, json.dumps(report, indent=2, default=str) + "\n")


@click.command()
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=DEMO_BUNDLE,
    show_default=True,
    help="Model bundle (model.onnx + model.json).",
)
@click.option("--image", "image_ids", multiple=True, help="Image id to score (repeatable); default: the test split.")
@click.option(
    "--corpus",
    "corpus_root",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="The synthetic paper corpus the dataset was built from: also score clouded views of the test images.",
)
@click.option(
    "--report",
    "report_md",
    type=click.Path(path_type=Path, dir_okay=False),
    help="report.md to put the section into (report.json beside it gets the numbers).",
)
def main(
    dataset_dir: Path, bundle_dir: Path, image_ids: tuple[str, ...], corpus_root: Path | None, report_md: Path | None
) -> None:
    """Score the filters and tiers on the test images of DATASET and print the Markdown tables."""
    result = evaluate_filters(dataset_dir, bundle_dir, image_ids or None, corpus_root=corpus_root, progress=True)
    section = markdown_section(result)
    click.echo(section)
    if report_md is not None:
        update_markdown_report(report_md, section)
        update_json_report(report_md.with_suffix(".json"), result)
        click.echo(f"written into {report_md} and {report_md.with_suffix('.json')}", err=True)


if __name__ == "__main__":
    main()
