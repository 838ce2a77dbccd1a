"""Evaluation as in Rustemeyer et al. 2022: the primary model and regional (leave-one-site-out) models.

- Primary model: trained on all sites, tested on one held-out image per site (Table 2 of the paper).
- Regional cross-validation: one model per site, trained without that site and tested on all of its
  images (Table 3). The paper's models do not generalise to unseen regions; the report shows it.

The split rule is :data:`SPLIT_RULE`. The spectral-threshold baseline (:mod:`rtstrain.baseline`) is
tuned on the same training images.

Each experiment's scores are kept in its folder (``evaluated.json``) as soon as it ends, and each
training run saves its state after every epoch, so ``evaluate(..., resume=True)`` (``rts evaluate
--resume``) continues an interrupted evaluation where it stopped: the paper configuration takes
hours on a laptop. The report gives the compute time of every experiment, summed over attempts.

An evaluation can also outlive the machine it started on: with ``scores_dir`` (``rts evaluate
--scores-dir``) every finished experiment's scores are copied there as ``<experiment>.json``, and an
experiment whose scores are there, for the same dataset, split and config, is not run again.
The leave-one-site-out models run before the primary model, so that when the evaluation ends the
primary model's weights, which :mod:`rtstrain.export` needs, are on the machine that ends it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rtsmonitor.files import write_text_atomically
from rtsmonitor.stack import MASK_LAYER, Stack
from rtsmonitor.tiling import Normalisation, pad_to_multiple, valid_mask
from rtstrain.baseline import fit_spectral_threshold
from rtstrain.metrics import ZERO, Scores, best_threshold, object_scores, pixel_scores
from rtstrain.train import TrainConfig, image_id, load_manifest, read_image, train

EVALUATED_NAME = "evaluated.json"
"""File in an experiment's folder holding its split, config and scores once it has finished."""

SPLIT_RULE = (
    "per site, images are ordered by label date; the latest is the site's test image, the one before it "
    "(for sites with at least three images) a validation image, the rest train. Leave-one-site-out: every "
    "image of the held-out site is a test image; each other site with two or more images gives its latest "
    "to validation. The decision threshold is the one with the best pixel F1 on the validation images, "
    "never on test images. Scores are pooled over all test pixels (micro-average) and given per site."
)
"""How images become training, validation and test sets (deterministic, no seed involved)."""
PAPER_PRIMARY = {"precision": 0.86, "recall": 0.80, "f1": 0.83}
"""Rustemeyer et al. 2022, Table 2: pixel scores of the primary model."""
PAPER_LOSO_F1 = {
    "herschel": 0.10,
    "horton01": 0.02,
    "horton02": 0.07,
    "kolguev01": 0.03,
    "kolguev02": 0.01,
    "lena": 0.04,
}
"""Rustemeyer et al. 2022, Table 3: pixel F1 of each site's leave-one-site-out model."""


@dataclass(frozen=True)
class Split:
    """Image ids of one experiment."""

    train: list[str]
    val: list[str]
    test: list[str]


def images_by_site(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """Image ids per site, in label-date order."""
    sites: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for entry in manifest["images"]:
        sites[str(entry["site_id"])].append((str(entry["label_date"]), image_id(entry)))
    return {site: [i for _, i in sorted(pairs)] for site, pairs in sorted(sites.items())}


def primary_split(manifest: dict[str, Any]) -> Split:
    """Latest image of each site -> test; the one before (sites with >= 3 images) -> validation."""
    split = Split([], [], [])
    for ids in images_by_site(manifest).values():
        split.test.append(ids[-1])
        if len(ids) >= 3:
            split.val.append(ids[-2])
            split.train.extend(ids[:-2])
        else:
            split.train.extend(ids[:-1])
    return split


def loso_split(manifest: dict[str, Any], held_out: str) -> Split:
    """All images of ``held_out`` -> test; validation as :func:`primary_split` on the other sites."""
    by_site = images_by_site(manifest)
    split = Split([], [], list(by_site[held_out]))
    for site, ids in by_site.items():
        if site == held_out:
            continue
        if len(ids) >= 2:
            split.val.append(ids[-1])
            split.train.extend(ids[:-1])
        else:
            split.train.extend(ids)
    return split


def predict_probability(model: Any, norm: Normalisation, stack: Stack, multiple: int) -> NDArray[np.float32]:
    """RTS probability [H, W] of a whole stack (padded to the network's multiple), NaN where unobserved."""
    x = pad_to_multiple(norm.apply_stack(stack), multiple)
    prob = np.asarray(model.predict(x[None], verbose=0))[0, : stack.grid.height, : stack.grid.width, 0]
    observed = valid_mask(np.stack([stack.layer(name) for name in norm.layers]))
    return np.where(observed, prob, np.nan).astype(np.float32)


@dataclass(frozen=True)
class Evaluated:
    """Pooled and per-site scores of one experiment."""

    threshold: float
    pixel: Scores
    objects: Scores
    baseline_pixel: Scores
    per_site: dict[str, dict[str, Any]]
    seconds: float
    training: dict[str, Any]
    host: dict[str, Any]
    finished_utc: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "threshold": self.threshold,
            "pixel": self.pixel.to_dict(),
            "object": self.objects.to_dict(),
            "baseline_pixel": self.baseline_pixel.to_dict(),
            "per_site": self.per_site,
            "seconds": round(self.seconds, 1),
            "training": self.training,
            "host": self.host,
            "finished_utc": self.finished_utc,
        }


def run_experiment(
    dataset_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    split: Split,
    resume: bool = False,
    kept: Path | None = None,
) -> dict[str, Any]:
    """Train on ``split.train``, choose the threshold on ``split.val``, score ``split.test``.

    Returns the split and :meth:`Evaluated.to_dict`, also written to ``out_dir/evaluated.json`` and,
    when given, to ``kept``. An experiment that already finished with this dataset, split and config
    is read back from ``kept`` or, with ``resume``, from ``out_dir``; with ``resume`` an interrupted
    one continues its training (:func:`rtstrain.train.train`).
    """
    done = out_dir / EVALUATED_NAME
    identity = {
        "split": split.__dict__,
        "config": config.model_dump(mode="json"),
        "manifest_sha256": load_manifest(dataset_dir).get("manifest_sha256"),
    }
    for path in [p for p in (kept, done if resume else None) if p is not None and p.is_file()]:
        stored = _read_json_object(path)
        if all(stored.get(key) == value for key, value in identity.items()):
            return {k: v for k, v in stored.items() if k not in ("config", "manifest_sha256")}
    result = {"split": split.__dict__, **_train_and_score(dataset_dir, out_dir, config, split, resume).to_dict()}
    text = json.dumps({**result, **identity}, indent=2)
    for path in [p for p in (done, kept) if p is not None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, text)
    return result


def _read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; an empty dict if it is not one (a file cut short is redone)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _train_and_score(dataset_dir: Path, out_dir: Path, config: TrainConfig, split: Split, resume: bool) -> Evaluated:
    import keras

    manifest = load_manifest(dataset_dir)
    entries = {image_id(e): e for e in manifest["images"]}
    result = train(
        dataset_dir, out_dir, config, train_ids=split.train, val_ids=split.val or None, verbose=2, resume=resume
    )
    scoring_started = time.monotonic()
    model = keras.models.load_model(result.model_path, compile=False)

    def prob_truth(ids: Sequence[str]) -> list[tuple[str, Stack, NDArray[np.float32]]]:
        out = []
        for i in ids:
            stack = read_image(dataset_dir, entries[i])
            out.append((i, stack, predict_probability(model, result.normalisation, stack, result.input_multiple)))
        return out

    if split.val:
        val = prob_truth(split.val)
        probs = np.concatenate([np.nan_to_num(p, nan=0.0).ravel() for _, _, p in val])
        truth = np.concatenate([(s.layer(MASK_LAYER) > 0.5).ravel() for _, s, _ in val])
        valid = np.concatenate([np.isfinite(p).ravel() for _, _, p in val])
        threshold, _ = best_threshold(probs, truth, valid)
    else:
        threshold = 0.5
    baseline, _ = fit_spectral_threshold([read_image(dataset_dir, entries[i]) for i in split.train])
    pixel, objects, base = ZERO, ZERO, ZERO
    per_site: dict[str, dict[str, Any]] = {}
    for i, stack, prob in prob_truth(split.test):
        truth, valid = stack.layer(MASK_LAYER) > 0.5, np.isfinite(prob)
        pred = np.nan_to_num(prob, nan=0.0) >= threshold
        p, o, b = (
            pixel_scores(pred, truth, valid),
            object_scores(pred, truth, valid),
            pixel_scores(baseline.predict(stack), truth, valid),
        )
        pixel, objects, base = pixel + p, objects + o, base + b
        site = str(entries[i]["site_id"])
        pooled = per_site.setdefault(site, {"images": [], "pixel": ZERO, "object": ZERO, "baseline_pixel": ZERO})
        pooled["images"].append(i)
        pooled["pixel"] += p
        pooled["object"] += o
        pooled["baseline_pixel"] += b
    per_site_dicts = {
        site: {
            "images": v["images"],
            "pixel": v["pixel"].to_dict(),
            "object": v["object"].to_dict(),
            "baseline_pixel": v["baseline_pixel"].to_dict(),
        }
        for site, v in per_site.items()
    }
    training = {
        "seconds": result.seconds,
        "attempts": len(result.attempts),
        "epochs_run": len(result.history.get("loss", [])),
        "best_epoch": result.best_epoch,
        "epoch_seconds_median": result.epoch_seconds_median,
    }
    # Training time summed over every attempt; data preparation and scoring of this attempt.
    seconds = result.seconds + (time.monotonic() - scoring_started)
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    return Evaluated(threshold, pixel, objects, base, per_site_dicts, seconds, training, host(), finished)


def host() -> dict[str, Any]:
    """The machine this runs on: CPUs, architecture, Python, TensorFlow and its GPUs."""
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def evaluate(
    dataset_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    loso_sites: Sequence[str] | None = None,
    resume: bool = False,
    scores_dir: Path | None = None,
) -> dict[str, Any]:
    """Primary model plus leave-one-site-out models; writes ``report.json`` and ``report.md``.

    ``loso_sites`` limits the regional cross-validation (default: every site; ``[]``: none).
    ``resume`` continues an interrupted evaluation in ``out_dir``; ``scores_dir`` keeps and reuses
    finished experiments' scores elsewhere (see the module docstring).
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    manifest = load_manifest(dataset_dir)
    sites = list(images_by_site(manifest))
    report: dict[str, Any] = {
        "dataset": {
            "dir": str(dataset_dir),
            "manifest_sha256": manifest.get("manifest_sha256"),
            "synthetic": bool(manifest.get("synthetic", False)),
            "images": len(manifest["images"]),
        },
        "config": config.model_dump(),
        "split_rule": SPLIT_RULE,
        "host": host(),
    }

    def run(name: str, split: Split) -> dict[str, Any]:
        kept = None if scores_dir is None else Path(scores_dir) / f"{name}.json"
        return run_experiment(dataset_dir, out_dir / name, config, split, resume, kept)

    loso = {
        site: run(f"loso-{site}", loso_split(manifest, site)) for site in (sites if loso_sites is None else loso_sites)
    }
    report["primary"] = run("primary", primary_split(manifest))
    report["loso"] = loso
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / "report.json", json.dumps(report, indent=2, default=str))
    write_text_atomically(out_dir / "report.md", markdown_report(report))
    return report


def markdown_report(report: dict[str, Any]) -> str:
    """The paper's Tables 2 and 3 beside ours and the baseline's."""
    data = report["dataset"]
    kind = "SYNTHETIC corpus (invented spectra at the real label geometry)" if data["synthetic"] else "real imagery"
    lines = [
        "# RTS U-Net evaluation",
        "",
        f"Data: {data['images']} images, {kind}; manifest sha256 `{data['manifest_sha256']}`.",
        f"Config: {report['config']['epochs']} epochs, batch {report['config']['batch_size']}, "
        f"base filters {report['config']['base_filters']}, seed {report['config']['seed']}.",
        "",
        f"Split: {report['split_rule']}",
        "",
        "## Primary model (paper Table 2)",
        "",
        "| | precision | recall | F1 |",
        "|---|---|---|---|",
    ]
    primary = report["primary"]
    paper = PAPER_PRIMARY
    lines.append(
        f"| paper (Rustemeyer et al. 2022) | {paper['precision']:.2f} | {paper['recall']:.2f} | {paper['f1']:.2f} |"
    )
    for label, key in (
        ("U-Net, pixels", "pixel"),
        ("U-Net, objects (IoU >= 0.5)", "object"),
        ("spectral-threshold baseline, pixels", "baseline_pixel"),
    ):
        s = primary[key]
        lines.append(f"| {label} | {s['precision']:.2f} | {s['recall']:.2f} | {s['f1']:.2f} |")
    lines += ["", f"Threshold {primary['threshold']:.2f}, chosen on the validation images.", ""]
    if report["loso"]:
        lines += [
            "## Leave-one-site-out models (paper Table 3, pixel F1)",
            "",
            "| held-out site | paper | U-Net pixels | U-Net objects | baseline pixels |",
            "|---|---|---|---|---|",
        ]
        for site, result in report["loso"].items():
            paper_f1 = PAPER_LOSO_F1.get(site)
            lines.append(
                f"| {site} | {'' if paper_f1 is None else f'{paper_f1:.2f}'} | {result['pixel']['f1']:.2f} | "
                f"{result['object']['f1']:.2f} | {result['baseline_pixel']['f1']:.2f} |"
            )
        seen = [primary["per_site"][site]["pixel"]["f1"] for site in report["loso"] if site in primary["per_site"]]
        unseen = [result["pixel"]["f1"] for result in report["loso"].values()]
        lines += [
            "",
            f"Mean pixel F1 on a site the model never saw: {np.mean(unseen):.2f}; the primary model on held-out "
            f"images of the same sites, which it saw other images of: {np.mean(seen) if seen else float('nan'):.2f}.",
            "",
        ]
    lines += _time_table(report)
    return "\n".join(lines) + "\n"


def _time_table(report: dict[str, Any]) -> list[str]:
    """Markdown lines: each experiment's epochs, compute time (summed over attempts) and machine."""
    experiments = {"primary": report["primary"], **{f"leave out {k}": v for k, v in report["loso"].items()}}
    lines = [
        "## Compute time",
        "",
        "Times are training (data preparation and every epoch, summed over the attempts of an interrupted "
        "run) plus scoring, each on the machine that finished the experiment (an evaluation kept in "
        "`--scores-dir` may have run on several).",
        "",
        "| experiment | epochs | best epoch | median s/epoch | attempts | hours | machine | finished (UTC) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in experiments.items():
        t, median, machine = result["training"], result["training"]["epoch_seconds_median"], result["host"]
        lines.append(
            f"| {name} | {t['epochs_run']} | {t['best_epoch']} | {'' if median is None else f'{median:.1f}'} | "
            f"{t['attempts']} | {result['seconds'] / 3600:.2f} | {machine['cpus']} CPUs, {machine['gpus']} GPUs, "
            f"TensorFlow {machine['tensorflow']} | {result['finished_utc']} |"
        )
    total_hours = sum(float(r["seconds"]) for r in experiments.values()) / 3600
    return [*lines, f"| **all** | | | | | **{total_hours:.2f}** | | |", ""]
