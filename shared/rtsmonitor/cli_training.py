"""The ``rts`` training commands: thin wrappers over :mod:`rtstrain` (extra ``train``), imported lazily.

``rtsmonitor`` never imports TensorFlow: these commands import :mod:`rtstrain` when they run, and
say which extra to install when it is missing.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import click

from rtsmonitor.errors import MissingExtraError
from rtsmonitor.modelstore import publish_model
from rtsmonitor.storage import open_storage

PRESETS = ("paper", "demo", "quick")


def _rtstrain(module: str) -> ModuleType:
    """Import ``rtstrain.<module>``, or explain how to install the training extra."""
    try:
        return importlib.import_module(f"rtstrain.{module}")
    except ImportError as exc:
        raise MissingExtraError(
            f"training needs TensorFlow and tf2onnx ({exc.name} is missing): pip install -e '.[train]'"
        ) from exc


def _config(preset: str, epochs: int | None, base_filters: int | None, seed: int | None) -> object:
    config = _rtstrain("train").PRESETS[preset]
    update = {k: v for k, v in (("epochs", epochs), ("base_filters", base_filters), ("seed", seed)) if v is not None}
    return config.model_copy(update=update)


preset_option = click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="paper",
    show_default=True,
    help="paper: 100 epochs, batch 32 (Rustemeyer et al. 2022); demo: the bundled model; quick: seconds.",
)
epochs_option = click.option("--epochs", type=int, help="Override the preset's epochs.")
filters_option = click.option("--base-filters", type=int, help="Override the U-Net width (filters of level 1).")
seed_option = click.option("--seed", type=int, help="Override the preset's seed.")
resume_option = click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted run in --out (same dataset, ids and config; --epochs may grow).",
)


def run_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options ``train`` and ``evaluate`` share: dataset, output folder and the configuration."""
    for option in reversed(
        (
            click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path, exists=True), required=True),
            click.option("--out", type=click.Path(path_type=Path), required=True),
            preset_option,
            epochs_option,
            filters_option,
            seed_option,
            resume_option,
        )
    ):
        command = option(command)
    return command


def register(main: click.Group) -> None:
    """Add ``train``, ``evaluate``, ``export-onnx`` and ``publish-model`` to ``main``."""

    @main.command("train")
    @run_options
    @click.option("--train-ids", help="Comma-separated image ids to train on (default: all but --val-ids).")
    @click.option("--val-ids", help="Comma-separated image ids to validate on.")
    def train_command(
        dataset_dir: Path,
        out: Path,
        preset: str,
        epochs: int | None,
        base_filters: int | None,
        seed: int | None,
        resume: bool,
        train_ids: str | None,
        val_ids: str | None,
    ) -> None:
        """Train the U-Net on a dataset built by `rts dataset build`."""
        train = _rtstrain("train")
        result = train.train(
            dataset_dir,
            out,
            _config(preset, epochs, base_filters, seed),
            train_ids=train_ids.split(",") if train_ids else None,
            val_ids=val_ids.split(",") if val_ids else None,
            resume=resume,
        )
        click.echo(f"parameters: {result.param_count:,}; tiles: {result.tile_stats}")
        click.echo(
            f"best epoch {result.best_epoch} ({result.monitor} {result.best_loss:.4f}) in {result.seconds:.0f} s"
            f" ({len(result.attempts)} attempt{'s' if len(result.attempts) != 1 else ''})"
        )
        click.echo(f"run written to {out}")

    @main.command("evaluate")
    @run_options
    @click.option("--loso-sites", help="Comma-separated sites for leave-one-site-out (default all; 'none' for none).")
    @click.option(
        "--scores-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Keep each finished experiment's scores here as <experiment>.json, and do not run again an experiment "
        "whose scores are here for the same dataset, split and config (an evaluation spread over machines).",
    )
    def evaluate_command(
        dataset_dir: Path,
        out: Path,
        preset: str,
        epochs: int | None,
        base_filters: int | None,
        seed: int | None,
        resume: bool,
        loso_sites: str | None,
        scores_dir: Path | None,
    ) -> None:
        """Primary model + leave-one-site-out models as the paper; writes report.json and report.md."""
        evaluate = _rtstrain("evaluate")
        sites = None if loso_sites is None else ([] if loso_sites == "none" else loso_sites.split(","))
        config = _config(preset, epochs, base_filters, seed)
        report = evaluate.evaluate(dataset_dir, out, config, loso_sites=sites, resume=resume, scores_dir=scores_dir)
        click.echo((out / "report.md").read_text())
        click.echo(f"primary model pixel F1 {report['primary']['pixel']['f1']:.3f}; reports in {out}")

    @main.command("export-onnx")
    @click.option(
        "--run",
        "run_dir",
        type=click.Path(path_type=Path, exists=True),
        required=True,
        help="A training run folder (rts train --out), e.g. EVAL/primary.",
    )
    @click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder to write.")
    @click.option("--name", default="rts-unet", show_default=True)
    @click.option("--version", "version", required=True)
    @click.option(
        "--report",
        type=click.Path(path_type=Path, exists=True),
        help="report.json of `rts evaluate`: its primary threshold and metrics go into model.json.",
    )
    @click.option("--threshold", type=float, help="Decision threshold when no --report is given.")
    def export_command(
        run_dir: Path, out: Path, name: str, version: str, report: Path | None, threshold: float | None
    ) -> None:
        """Export a trained run to ONNX (parity-checked against Keras) with its model.json."""
        if report is not None:
            primary = json.loads(report.read_text())["primary"]
            threshold = float(primary["threshold"])
            metrics = {k: primary[k] for k in ("pixel", "object", "baseline_pixel")}
        elif threshold is None:
            raise click.UsageError("give --report (threshold chosen on validation data) or --threshold")
        else:
            metrics = {}
        export = _rtstrain("export")
        result = export.export_run(run_dir, out, name=name, version=version, threshold=threshold, metrics=metrics)
        click.echo(
            f"wrote {result.onnx_path} and {result.model_json_path}; ONNX vs Keras max |diff| "
            f"{result.max_abs_diff:.2e} on {result.parity_shape}"
        )

    @main.command("publish-model")
    @click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))
    @click.option(
        "--store",
        default="rts-output/store",
        show_default=True,
        help="Storage: a local folder, 'azure:' (connection string env) or 'azure://ACCOUNT'.",
    )
    @click.option("--no-current", is_flag=True, help="Upload without pointing models/current.json at it.")
    def publish_command(bundle: Path, store: str, no_current: bool) -> None:
        """Upload a model bundle to models/<name>/<version>/ and make it current."""
        published = publish_model(open_storage(store), bundle, make_current=not no_current)
        click.echo(
            f"published {published.name} {published.version} to models/{published.onnx_blob}"
            f"{' (current)' if published.current else ''}"
        )
