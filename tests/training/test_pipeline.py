"""The training job's settings come from the environment, with every problem named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtsmonitor.errors import ConfigError
from rtsmonitor.modelstore import CURRENT_BLOB, MODELS_CONTAINER
from rtsmonitor.offline.paper import build_paper_corpus
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.storage import open_storage
from rtstrain.pipeline import LABELS_CONTAINER, JobSettings, fetch_labels, run_job


def test_defaults_and_overrides(tmp_path: Path) -> None:
    env = {"RTS_LABELS_DIR": str(tmp_path), "RTS_STORE": str(tmp_path / "store"), "RTS_SITES": "lena,horton01"}
    settings = JobSettings.from_env(env)
    assert [s.id for s in settings.sites] == ["lena", "horton01"]
    assert settings.preset == "paper" and settings.loso and not settings.resume
    assert JobSettings.from_env({**env, "RTS_RESUME": "1"}).resume
    assert settings.stac_url.startswith("https://planetarycomputer.microsoft.com")
    assert len(JobSettings.from_env({k: v for k, v in env.items() if k != "RTS_SITES"}).sites) == 6


def test_every_problem_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        JobSettings.from_env({"RTS_PRESET": "fast", "RTS_LOSO": "some", "RTS_SITES": "atlantis", "RTS_RESUME": "yes"})
    fields = [field for field, _ in info.value.problems]
    assert fields == ["RTS_LABELS_DIR", "RTS_PRESET", "RTS_LOSO", "RTS_RESUME", "RTS_STORE", "RTS_SITES"]
    assert "'fast'" in str(info.value) and "'atlantis'" in str(info.value)


def test_labels_from_an_empty_or_unnamed_blob_container_are_refused(tmp_path: Path) -> None:
    env = {"RTS_LABELS_DIR": "blob:labels", "RTS_STORE": str(tmp_path / "store"), "RTS_WORK_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="blob container 'labels' is empty"):
        fetch_labels(JobSettings.from_env(env))
    with pytest.raises(ConfigError, match="names no container"):
        JobSettings.from_env({**env, "RTS_LABELS_DIR": "blob:"})


REAL_LABELS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "labels"


def test_the_job_runs_end_to_end_on_a_quick_paper_corpus(tmp_path: Path) -> None:
    """Labels -> dataset -> primary model -> ONNX -> published bundle, as the container runs it."""
    sites = ["kolguev01", "kolguev02"]
    corpus = build_paper_corpus(tmp_path / "corpus", REAL_LABELS, sites=sites, max_images_per_site=2, progress=False)
    store = open_storage(str(tmp_path / "store"))
    for path in corpus.labels_dir.rglob("*"):  # as deployed: the label files are blobs of the store
        if path.is_file():
            store.blobs.write_file(LABELS_CONTAINER, path.relative_to(corpus.labels_dir).as_posix(), path)
    with LocalStacServer(corpus.root) as server:
        env = {
            "RTS_STAC_URL": server.url,
            "RTS_LABELS_DIR": f"blob:{LABELS_CONTAINER}",
            "RTS_SITES": ",".join(sites),
            "RTS_WORK_DIR": str(tmp_path / "work"),
            "RTS_PRESET": "quick",
            "RTS_LOSO": "none",
            "RTS_STORE": str(tmp_path / "store"),
            "RTS_MODEL_VERSION": "job-1",
        }
        published = run_job(JobSettings.from_env(env))
    assert (tmp_path / "work" / "labels").is_dir()
    current = json.loads(store.blobs.read_bytes(MODELS_CONTAINER, CURRENT_BLOB))
    meta = json.loads(store.blobs.read_bytes(MODELS_CONTAINER, published.meta_blob))
    report = json.loads((tmp_path / "work" / "evaluation" / "report.json").read_text())
    assert current["version"] == "job-1" and current["onnx_sha256"] == meta["onnx"]["sha256"]
    assert meta["threshold"] == report["primary"]["threshold"]
    assert meta["training_manifest_sha256"] == report["dataset"]["manifest_sha256"]
    assert report["dataset"]["images"] == 4 and report["dataset"]["synthetic"]
    assert sorted(report["primary"]["per_site"]) == sites
