"""Ensemble bundles: several ONNX members in one model.json, their mean probability, publish and fetch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtsmonitor.errors import ModelError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.inference import Model, predict_stack
from rtsmonitor.modelstore import (
    CURRENT_BLOB,
    DEMO_BUNDLE,
    META_NAME,
    MODELS_CONTAINER,
    ONNX_NAME,
    bundle_digest,
    current_model,
    fetch_current_bundle,
    file_sha256,
    publish_model,
    read_bundle_meta,
)
from rtsmonitor.stack import INPUT_LAYERS, Stack
from rtsmonitor.storage import LocalStorage

onnx = pytest.importorskip("onnx", reason="building test members needs the onnx package (extra 'train')")
from onnx import TensorProto, helper  # noqa: E402  (after the importorskip)

DEMO_META: dict[str, Any] = json.loads((DEMO_BUNDLE / META_NAME).read_text())
OUTPUT = DEMO_META["onnx"]["output_name"]


def squared_member(path: Path) -> Path:
    """The demo U-Net with its output squared: a second member that differs from the first (p^2 < p)."""
    graph_model = onnx.load(str(DEMO_BUNDLE / ONNX_NAME))
    raw = OUTPUT + "_raw"
    for node in graph_model.graph.node:
        node.output[:] = [raw if name == OUTPUT else name for name in node.output]
    graph_model.graph.node.append(helper.make_node("Mul", [raw, raw], [OUTPUT], name="square_probability"))
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(path))
    return path


def tiny_member(path: Path, channels: int, size: int | str = "h") -> Path:
    """A two-node graph: the sigmoid of the channel mean, on ``channels`` input channels (NHWC).

    ``size``: the input's height and width, symbolic (a name) or fixed (pixels).
    """
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[3], keepdims=1),
            helper.make_node("Sigmoid", ["mean"], [OUTPUT]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", size, size, channels])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["n", size, size, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_ensemble(folder: Path, members: list[tuple[Path, dict[str, Any]]], version: str = "ens-1") -> Path:
    """A bundle folder whose model.json lists ``members`` (file, extra member keys) beside the demo's metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = json.loads(json.dumps(DEMO_META))
    meta["version"] = version
    meta["onnx"] = {k: v for k, v in meta["onnx"].items() if k not in ("file", "sha256")}
    meta["members"] = []
    for source, extra in members:
        target = folder / source.name
        if source != target:
            shutil.copyfile(source, target)
        meta["members"].append({"file": target.name, "sha256": file_sha256(target), **extra})
    (folder / META_NAME).write_text(json.dumps(meta, indent=2))
    return folder


def single_bundle(folder: Path, onnx_file: Path, version: str) -> Path:
    """A single-file bundle around ``onnx_file`` with the demo's metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_file, folder / ONNX_NAME)
    meta = {**DEMO_META, "version": version, "onnx": {**DEMO_META["onnx"], "sha256": file_sha256(folder / ONNX_NAME)}}
    (folder / META_NAME).write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("members")
    first = folder / "member1.onnx"
    shutil.copyfile(DEMO_BUNDLE / ONNX_NAME, first)
    return first, squared_member(folder / "member2.onnx")


@pytest.fixture(scope="module")
def ensemble_dir(members: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    first, second = members
    return write_ensemble(
        tmp_path_factory.mktemp("ensemble") / "bundle",
        [(first, {"name": "seed-1", "seed": 1}), (second, {"name": "seed-2", "seed": 2, "version": "demo-sq"})],
    )


@pytest.fixture(scope="module")
def models(
    members: tuple[Path, Path], ensemble_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Model]:
    alone = single_bundle(tmp_path_factory.mktemp("alone") / "bundle", members[1], "demo-sq")
    return {
        "ensemble": Model.load(ensemble_dir, threads=1),
        "first": Model.load(DEMO_BUNDLE, threads=1),
        "second": Model.load(alone, threads=1),
    }


def test_ensemble_predicts_the_mean_of_its_members(models: dict[str, Model]) -> None:
    x = np.random.default_rng(0).random((2, 70, 45, len(INPUT_LAYERS)), dtype=np.float32)  # padded to 96 x 64
    first = models["first"].predict_normalised(x)
    second = models["second"].predict_normalised(x)
    assert float(np.abs(first - second).max()) > 0.05  # the members really differ
    mean = models["ensemble"].predict_normalised(x)
    assert mean.shape == (2, 70, 45) and mean.dtype == np.float32
    assert float(np.abs(mean - (first + second) / 2).max()) < 1e-6


def test_ensemble_stack_prediction_is_the_mean_of_the_members_blended(models: dict[str, Model]) -> None:
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.uniform(0.02, 0.3, (4, 150, 130)), rng.uniform(0.0, 20.0, (1, 150, 130))])
    data[:, 10:30, 40:90] = np.nan
    stack = Stack(data.astype(np.float32), INPUT_LAYERS, SiteGrid(32608, 10.0, 500_000.0, 7_700_000.0, 130, 150))
    runs = {name: predict_stack(model, stack, window_px=96, overlap_px=32) for name, model in models.items()}
    expected = (runs["first"].probability + runs["second"].probability) / 2
    np.testing.assert_allclose(runs["ensemble"].probability, expected, atol=1e-6)  # blending is linear
    np.testing.assert_array_equal(np.isnan(runs["ensemble"].probability), np.isnan(expected))


def test_summary_and_record_text_name_every_member(models: dict[str, Model], ensemble_dir: Path) -> None:
    ensemble = models["ensemble"]
    meta = read_bundle_meta(ensemble_dir)
    listed = [(m["name"], m["sha256"]) for m in meta["members"]]
    summary = ensemble.summary()
    assert summary["onnx_sha256"] == bundle_digest(meta) not in {sha for _, sha in listed}
    assert [(m["name"], m["sha256"]) for m in summary["members"]] == listed
    assert [m["version"] for m in summary["members"]] == ["ens-1", "demo-sq"]  # default: the bundle's version
    assert [m["seed"] for m in summary["members"]] == [1, 2]
    assert json.loads(ensemble.members_summary() or "") == summary["members"]
    assert ensemble.session is ensemble.members[0].session and ensemble.is_ensemble
    # a single-file bundle is unchanged: no members in its summary, no member text for the record
    single = models["first"]
    assert single.members_summary() is None and not single.is_ensemble
    assert single.summary() == {
        "name": DEMO_META["name"],
        "version": DEMO_META["version"],
        "onnx_sha256": DEMO_META["onnx"]["sha256"],
        "threshold": DEMO_META["threshold"],
    }


def test_a_corrupted_member_fails_to_load_naming_it(ensemble_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "bundle"
    shutil.copytree(ensemble_dir, broken)
    with open(broken / "member2.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match=r"member 'seed-2' \(member2\.onnx\) does not match model\.json"):
        Model.load(broken)
    (broken / "member2.onnx").unlink()
    with pytest.raises(ModelError, match=r"member 'seed-2' \(member2\.onnx\) is missing"):
        Model.load(broken)


def test_members_that_read_other_inputs_are_refused_naming_them(members: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = members
    four = tiny_member(tmp_path / "four.onnx", channels=4)
    bundle = write_ensemble(tmp_path / "channels", [(first, {}), (four, {"name": "four-bands"})])
    with pytest.raises(ModelError, match=r"member 'four-bands' \(four\.onnx\): the ONNX input has 4 channels"):
        Model.load(bundle)
    layers = write_ensemble(tmp_path / "layers", [(first, {}), (second, {"input_layers": ["blue", "green"]})])
    with pytest.raises(ModelError, match=r"members\[1\] \('member2\.onnx'\): its input_layers"):
        Model.load(layers)
    fixed = [tiny_member(tmp_path / f"fixed{n}.onnx", channels=5, size=n) for n in (64, 32)]
    shapes = write_ensemble(tmp_path / "shapes", [(first, {}), (fixed[0], {}), (fixed[1], {"name": "small"})])
    with pytest.raises(ModelError, match=r"member 'small' \(fixed32\.onnx\): its ONNX input shape .* differs"):
        Model.load(shapes)
    norm = {**DEMO_META["normalisation"], "high": [1.0] * 5}
    other = write_ensemble(tmp_path / "norm", [(first, {}), (second, {"normalisation": norm})])
    with pytest.raises(ModelError, match=r"member2\.onnx'\): its normalisation"):
        read_bundle_meta(other)


def test_a_tiny_member_that_fits_joins_the_ensemble(members: tuple[Path, Path], tmp_path: Path) -> None:
    five = tiny_member(tmp_path / "five.onnx", channels=5)
    model = Model.load(write_ensemble(tmp_path / "bundle", [(members[0], {}), (five, {})]), threads=1)
    x = np.random.default_rng(2).random((1, 64, 64, 5), dtype=np.float32)
    expected = (Model.load(DEMO_BUNDLE, threads=1).predict_normalised(x) + 1 / (1 + np.exp(-x.mean(axis=-1)))) / 2
    np.testing.assert_allclose(model.predict_normalised(x), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["members"][0].update(extra=1), r"unknown keys \['extra'\]"),
        (lambda m: m["members"][0].update(file="../x.onnx"), "plain file name"),
        (lambda m: m["members"][0].update(sha256="abc"), "64 lower-case hex"),
        (lambda m: m["members"][1].update(file=m["members"][0]["file"]), r"share the file \['member1\.onnx'\]"),
        (lambda m: m["members"][1].update(name=m["members"][0]["name"]), "share the name"),
        (lambda m: m["members"][0].update(seed="one"), "'seed' must be an integer"),
        (lambda m: m["onnx"].update(sha256="0" * 64), "remove onnx.file and onnx.sha256"),
        (lambda m: m.update(members=[]), "non-empty list"),
    ],
)
def test_malformed_member_lists_are_refused(ensemble_dir: Path, tmp_path: Path, change: Any, message: str) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(ensemble_dir, bundle)
    meta = json.loads((bundle / META_NAME).read_text())
    change(meta)
    (bundle / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=message):
        read_bundle_meta(bundle)


def test_publish_and_fetch_copy_every_member(
    ensemble_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "store")
    published = publish_model(storage, ensemble_dir)
    meta = read_bundle_meta(ensemble_dir)
    prefix = f"{meta['name']}/{meta['version']}/"
    assert published.onnx_blobs == (prefix + "member1.onnx", prefix + "member2.onnx")
    assert published.onnx_sha256 == bundle_digest(meta)
    assert sorted(storage.blobs.list(MODELS_CONTAINER, prefix)) == [
        prefix + n for n in ("member1.onnx", "member2.onnx", META_NAME)
    ]
    pointer = current_model(storage)
    assert pointer["onnx_sha256"] == bundle_digest(meta)
    assert [m["sha256"] for m in pointer["members"]] == [m["sha256"] for m in meta["members"]]

    cache = tmp_path / "cache"
    folder = fetch_current_bundle(storage, cache)
    assert sorted(p.name for p in folder.iterdir()) == ["member1.onnx", "member2.onnx", META_NAME]
    for name in ("member1.onnx", "member2.onnx", META_NAME):
        assert (folder / name).read_bytes() == (ensemble_dir / name).read_bytes()
    x = np.random.default_rng(3).random((1, 64, 64, 5), dtype=np.float32)
    np.testing.assert_array_equal(
        Model.load(folder, threads=1).predict_normalised(x), Model.load(ensemble_dir, threads=1).predict_normalised(x)
    )

    # the cached copy is used again; a corrupted member in the cache is downloaded again
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached bundle should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(storage.blobs, "read_to_file", no_download)
        assert fetch_current_bundle(storage, cache) == folder
    (folder / "member2.onnx").write_bytes(b"not a model")
    assert fetch_current_bundle(storage, cache) == folder
    assert (folder / "member2.onnx").read_bytes() == (ensemble_dir / "member2.onnx").read_bytes()


def test_fetch_refuses_a_bundle_missing_a_member_blob(ensemble_dir: Path, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    publish_model(storage, ensemble_dir)
    pointer = current_model(storage)
    storage.blobs.delete(MODELS_CONTAINER, f"{pointer['name']}/{pointer['version']}/member2.onnx")
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match=r"ens-1/member2\.onnx is missing"):
        fetch_current_bundle(storage, cache)
    assert not (cache / pointer["name"] / pointer["version"]).exists()
    # a pointer that does not match the members' digest is refused too
    publish_model(storage, ensemble_dir)
    storage.blobs.write_bytes(MODELS_CONTAINER, CURRENT_BLOB, json.dumps({**pointer, "onnx_sha256": "0" * 64}).encode())
    with pytest.raises(ModelError, match="sha256 differs"):
        fetch_current_bundle(storage, cache)
