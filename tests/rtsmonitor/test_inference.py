"""ONNX inference with the bundled demo model: blended windows, masks, COG outputs and `rts predict`."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.io
from click.testing import CliRunner
from numpy.typing import NDArray
from rio_cogeo.cogeo import cog_validate

from rtsmonitor.cli import main
from rtsmonitor.errors import ModelError, RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.inference import (
    MASK_UNOBSERVED,
    Model,
    blend_weights,
    predict_file,
    predict_stack,
    window_spans,
    write_prediction,
)
from rtsmonitor.modelstore import DEMO_BUNDLE
from rtsmonitor.offline.synthetic import SceneSpec, World
from rtsmonitor.stack import INPUT_LAYERS, MASK_LAYER, Stack, write_stack
from rtsmonitor.terrain import slope_degrees

EPSG = 32608
"""UTM 8N: the Mackenzie delta region, where the synthetic tundra is plausible."""
MULTIPLE = 32
"""The demo model's input multiple (five poolings)."""


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.load(DEMO_BUNDLE, threads=2)


def landscape(height: int, width: int, seed: int = 0) -> tuple[Stack, NDArray[np.bool_]]:
    """A seeded synthetic tundra stack (clear July scene, slope from the same world) and its slump mask."""
    grid = SiteGrid(EPSG, 10.0, 500_000.0 + 10_000.0 * seed, 7_700_000.0, width, height)
    world = World.generate(EPSG, [grid.bounds], seed=seed, slumps_per_km2=20.0)
    scene = SceneSpec(
        datetime=dt.datetime(2021, 7, 20, 20, tzinfo=dt.UTC),
        platform="Sentinel-2A",
        processing_baseline="03.01",
        relative_orbit=43,
        aoi_bounds=grid.bounds,
        seed=seed,
    )
    reflectance = world.reflectance(grid, scene)
    margin = 2  # slope needs neighbours: sample the DEM with a margin and crop
    xs = grid.x_min + grid.res_m * (np.arange(-margin, width + margin) + 0.5)
    ys = grid.y_max - grid.res_m * (np.arange(-margin, height + margin) + 0.5)
    dem = world.elevation_m(*np.meshgrid(xs, ys))
    slope = slope_degrees(dem, grid.res_m)[margin:-margin, margin:-margin]
    data = np.concatenate([reflectance, slope[None]]).astype(np.float32)
    return Stack(data, INPUT_LAYERS, grid, {"site_id": "synthetic", "year": 2021}), world.slump_mask(grid, 2021)


def random_stack(height: int, width: int, seed: int = 0) -> Stack:
    """Random but plausible layers: reflectance 0.02..0.3, slope 0..20 degrees."""
    rng = np.random.default_rng(seed)
    data = np.concatenate([rng.uniform(0.02, 0.3, (4, height, width)), rng.uniform(0.0, 20.0, (1, height, width))])
    return Stack(data.astype(np.float32), INPUT_LAYERS, SiteGrid(EPSG, 10.0, 500_000.0, 7_700_000.0, width, height))


@pytest.fixture(scope="module")
def tundra() -> tuple[Stack, NDArray[np.bool_]]:
    return landscape(300, 300)


# --- windows ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 31, 77, 131, 300, 513, 960, 1000, 2049])
@pytest.mark.parametrize(("window", "overlap"), [(512, 64), (256, 64), (96, 32), (64, 16)])
def test_window_spans_cover_the_axis_on_the_model_lattice(length: int, window: int, overlap: int) -> None:
    spans = window_spans(length, window, overlap, MULTIPLE)
    assert spans[0][0] == 0 and sum(spans[-1]) == length
    for (start, size), (next_start, _) in itertools.pairwise(spans):
        assert next_start > start
        assert start + size - next_start >= overlap  # neighbours overlap at least as asked
    for start, size in spans:
        assert start % MULTIPLE == 0  # the same pooling lattice as the whole image
        assert min(window, length) <= size < window + MULTIPLE


def test_window_spans_refuse_impossible_windows() -> None:
    with pytest.raises(RtsError, match="overlap <= window / 2"):
        window_spans(100, 128, 65, MULTIPLE)
    with pytest.raises(RtsError, match="window - overlap >= 32"):
        window_spans(100, 40, 16, MULTIPLE)


def test_blend_weights_ramp_sums_to_one_and_keep_the_raster_edge() -> None:
    length, overlap = 960, 64
    spans = window_spans(length, 512, overlap, MULTIPLE)
    assert spans == [(0, 512), (448, 512)]  # an exact 64 px overlap
    total = np.zeros(length, dtype=np.float64)
    for start, size in spans:
        weights = blend_weights(size, start, length, overlap)
        assert weights.min() > 0
        total[start : start + size] += weights
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # a partition of unity: no bump, no dip
    first = blend_weights(512, 0, length, overlap)
    last = blend_weights(512, 448, length, overlap)
    assert first[0] == 1.0 and last[-1] == 1.0  # not lowered at the raster's own edges
    assert first[-1] == pytest.approx(0.5 / overlap) and last[0] == pytest.approx(0.5 / overlap)
    assert np.all(np.diff(last[:overlap]) > 0)
    np.testing.assert_array_equal(blend_weights(300, 0, 300, overlap), 1.0)  # a lone window: all 1


# --- predict_stack ---------------------------------------------------------------------------------


def test_blended_windows_match_one_whole_image_window(model: Model, tundra: tuple[Stack, NDArray[np.bool_]]) -> None:
    stack, truth = tundra
    whole = predict_stack(model, stack, window_px=320, overlap_px=64)  # one window: 300 px padded to 320
    blended = predict_stack(model, stack, window_px=256, overlap_px=64)  # windows at 0 and 32, each axis
    # the landscape is realistic enough that the demo model finds its slumps
    assert (whole.mask & truth).sum() > 0.6 * truth.sum() > 0
    # Pixels that only the top-left (bottom-right) window covers are exactly that window's output:
    # windows sit where they should and a lone window's weight cancels.
    x = model.normalisation.apply(stack.data)
    top_left = model.predict_normalised(x[None, :256, :256])[0]
    bottom_right = model.predict_normalised(x[None, 32:, 32:])[0]
    np.testing.assert_allclose(blended.probability[:32, :32], top_left[:32, :32], atol=1e-6)
    np.testing.assert_allclose(blended.probability[256:, 256:], bottom_right[224:, 224:], atol=1e-6)
    # Elsewhere the blend differs from the whole image only where a window lacks context. The
    # U-Net's receptive field (a few hundred px: five poolings) exceeds a 256 px window, so no pixel
    # is exact; the differences sit on slump edges, where the probability goes from 0 to 1 within
    # 2-3 px and a sub-pixel shift of the edge moves a pixel by up to ~0.5. Measured: mean 0.0006,
    # 0.2 % of pixels above 0.1, max 0.34. Windows off the 32 px pooling lattice gave mean 0.003
    # and max 0.98, and a seam (unnormalised or missing weights) moves whole window edges.
    diff = np.abs(blended.probability - whole.probability)
    assert diff.mean() < 0.002
    assert (diff > 0.1).mean() < 0.005
    assert diff.max() < 0.6
    assert (blended.mask != whole.mask).sum() < 0.05 * whole.mask.sum()


def test_reflect_padding_keeps_the_raster_edge_close_to_full_context(model: Model) -> None:
    stack, _ = landscape(320, 320)
    x = model.normalisation.apply(stack.data)
    full_context = model.predict_normalised(x[None])[0, :300, :300]  # 320 = 10 x 32: no padding
    reflected = model.predict_normalised(x[None, :300, :300])[0]  # 20 px of reflect padding
    zeros = model.predict_normalised(np.pad(x[None, :300, :300], ((0, 0), (0, 20), (0, 20), (0, 0))))[0, :300, :300]
    edge = np.zeros((300, 300), dtype=bool)
    edge[-MULTIPLE:], edge[:, -MULTIPLE:] = True, True
    # measured 0.0034 (reflect) and 0.0097 (zeros): mirrored landscape is the better guess
    assert np.abs(reflected - full_context)[edge].mean() < 0.6 * np.abs(zeros - full_context)[edge].mean()


@pytest.mark.parametrize(("height", "width"), [(131, 77), (5, 3), (40, 600)])
def test_output_has_the_grid_shape_for_any_size(model: Model, height: int, width: int) -> None:
    stack = random_stack(height, width)
    prediction = predict_stack(model, stack, window_px=64, overlap_px=16)
    assert prediction.probability.shape == prediction.observed.shape == (height, width)
    assert prediction.probability.dtype == np.float32
    assert prediction.observed.all() and prediction.observed_fraction == 1.0
    assert np.all((prediction.probability >= 0) & (prediction.probability <= 1))
    assert prediction.grid == stack.grid and prediction.threshold == model.threshold


def test_unobserved_pixels_are_nan_and_never_rts(model: Model, tundra: tuple[Stack, NDArray[np.bool_]]) -> None:
    stack, _ = tundra
    clear = predict_stack(model, stack, window_px=256, overlap_px=64)
    rts_rows, rts_cols = np.nonzero(clear.mask)
    r, c = int(rts_rows[len(rts_rows) // 2]), int(rts_cols[len(rts_cols) // 2])
    data = stack.data.copy()
    data[:4, r - 5 : r + 5, c - 5 : c + 5] = np.nan  # a small cloud over a detected slump
    data[4, 0, 0] = np.nan  # one pixel without slope
    cloudy = predict_stack(model, Stack(data, stack.layers, stack.grid), window_px=256, overlap_px=64)
    unobserved = np.zeros(stack.grid.shape, dtype=bool)
    unobserved[r - 5 : r + 5, c - 5 : c + 5] = True
    unobserved[0, 0] = True
    np.testing.assert_array_equal(np.isnan(cloudy.probability), unobserved)
    np.testing.assert_array_equal(cloudy.observed, ~unobserved)
    assert not cloudy.mask[unobserved].any()
    assert cloudy.observed_fraction == pytest.approx(1 - 101 / 300**2)


def test_layers_are_taken_by_name_and_missing_ones_refused(
    model: Model, tundra: tuple[Stack, NDArray[np.bool_]]
) -> None:
    stack, truth = tundra
    reference = predict_stack(model, stack, window_px=256, overlap_px=64)
    order = [4, 2, 0, 3, 1]
    shuffled = Stack(
        np.concatenate([stack.data[order], truth[None].astype(np.float32)]),
        (*(stack.layers[i] for i in order), MASK_LAYER),
        stack.grid,
    )
    again = predict_stack(model, shuffled, window_px=256, overlap_px=64)
    np.testing.assert_array_equal(again.probability, reference.probability)
    no_nir = Stack(stack.data[[0, 1, 2, 4]], ("blue", "green", "red", "slope"), stack.grid)
    with pytest.raises(ModelError, match=r"lacks layers \['nir'\] that model rts-unet-demo/demo-1 needs"):
        predict_stack(model, no_nir)


# --- the model bundle ------------------------------------------------------------------------------


def test_tampered_normalisation_layers_are_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, bundle)
    meta_path = bundle / "model.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    layers = meta["normalisation"]["layers"]
    layers[0], layers[1] = layers[1], layers[0]  # blue's constants now claim to be green's
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"normalisation layers .* differ from input_layers"):
        Model.load(bundle)
    meta["normalisation"]["layers"] = meta["input_layers"]
    meta["onnx"]["output_name"] = "logits"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="output 'logits'"):
        Model.load(bundle)


def test_threads_reach_the_session_options() -> None:
    for threads in (1, 3):
        model = Model.load(DEMO_BUNDLE, threads=threads)
        assert model.session.get_session_options().intra_op_num_threads == threads
        assert model.session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ModelError, match="threads must be at least 1"):
        Model.load(DEMO_BUNDLE, threads=0)
    summary = model.summary()
    assert summary["name"] == "rts-unet-demo" and summary["threshold"] == 0.95
    assert summary["onnx_sha256"] == json.loads((DEMO_BUNDLE / "model.json").read_text())["onnx"]["sha256"]


# --- files -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloudy_stack_file(tmp_path_factory: pytest.TempPathFactory, tundra: tuple[Stack, NDArray[np.bool_]]) -> Path:
    stack, truth = tundra
    data = stack.data.copy()
    data[:4, 100:140, 20:90] = np.nan
    order = [3, 0, 4, 2, 1]  # a file whose bands are not in the model's order, plus the mask
    shuffled = Stack(
        np.concatenate([data[order], truth[None].astype(np.float32)]),
        (*(stack.layers[i] for i in order), MASK_LAYER),
        stack.grid,
        stack.meta,
    )
    return write_stack(shuffled, tmp_path_factory.mktemp("stacks") / "synthetic.tif")


def test_predict_file_equals_predict_stack_and_writes_cogs(
    model: Model, cloudy_stack_file: Path, tmp_path: Path
) -> None:
    from rtsmonitor.stack import read_stack

    stack = read_stack(cloudy_stack_file)
    expected = predict_stack(model, stack, window_px=256, overlap_px=64)
    out = tmp_path / "out"
    summary = predict_file(
        model, cloudy_stack_file, out / "probability.tif", out / "mask.tif", window_px=256, overlap_px=64
    )
    assert sorted(p.name for p in out.iterdir()) == ["mask.tif", "probability.tif"]  # no temporary left
    assert summary.observed_px == int(expected.observed.sum()) < 300**2
    assert summary.rts_px == expected.rts_px > 0
    assert summary.rts_area_m2 == expected.rts_px * 100.0 and summary.threshold == 0.95
    for path in (summary.probability_path, summary.mask_path):
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
    with rasterio.open(summary.probability_path) as src:
        assert src.dtypes == ("float32",) and np.isnan(src.nodata)
        assert src.crs.to_epsg() == EPSG and src.transform == stack.grid.transform
        assert src.compression.name == "deflate"
        probability = src.read(1)
        assert json.loads(src.tags()["model"])["version"] == "demo-1"
    with rasterio.open(summary.mask_path) as src:
        assert src.dtypes == ("uint8",) and src.nodata == MASK_UNOBSERVED
        assert src.transform == stack.grid.transform
        mask = src.read(1)
    np.testing.assert_array_equal(probability, expected.probability)
    np.testing.assert_array_equal(mask == 1, expected.mask)
    np.testing.assert_array_equal(mask == MASK_UNOBSERVED, ~expected.observed)
    assert set(np.unique(mask)) == {0, 1, MASK_UNOBSERVED}
    # write_prediction of the in-memory result gives the same files
    write_prediction(expected, tmp_path / "p.tif", tmp_path / "m.tif")
    with rasterio.open(tmp_path / "p.tif") as p, rasterio.open(tmp_path / "m.tif") as m:
        np.testing.assert_array_equal(p.read(1), probability)
        np.testing.assert_array_equal(m.read(1), mask)


def test_predict_file_reads_window_by_window(
    model: Model, cloudy_stack_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtsmonitor.stack import read_stack

    expected = predict_stack(model, read_stack(cloudy_stack_file), window_px=96, overlap_px=32)
    reads: list[Any] = []
    original = rasterio.io.DatasetReader.read

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("window"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    summary = predict_file(
        model, cloudy_stack_file, tmp_path / "p.tif", tmp_path / "m.tif", window_px=96, overlap_px=32
    )
    monkeypatch.undo()
    rows = window_spans(300, 96, 32, MULTIPLE)
    assert len(reads) == len(rows) > 3
    assert [(w.row_off, w.height) for w in reads] == rows  # one strip per row of windows, never the whole raster
    with rasterio.open(summary.probability_path) as src:
        np.testing.assert_array_equal(src.read(1), expected.probability)


def test_failed_prediction_leaves_no_file(model: Model, cloudy_stack_file: Path, tmp_path: Path) -> None:
    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_file(
            model,
            cloudy_stack_file,
            tmp_path / "p.tif",
            tmp_path / "m.tif",
            window_px=96,
            overlap_px=32,
            progress=interrupt,
        )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RtsError, match="window - overlap >= 32"):
        predict_file(model, cloudy_stack_file, tmp_path / "out" / "p.tif", tmp_path / "out" / "m.tif", window_px=40)
    assert list(tmp_path.iterdir()) == []


# --- the command -----------------------------------------------------------------------------------


def test_cli_predict_on_a_stack_file(cloudy_stack_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "pred"
    args = ["predict", str(cloudy_stack_file), "--out", str(out), "--threads", "1", "--window-px", "256"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    with rasterio.open(out / "mask.tif") as src:
        mask = src.read(1)
    rts_px = int((mask == 1).sum())
    observed = (mask != MASK_UNOBSERVED).mean()
    assert "model: rts-unet-demo/demo-1 (threshold 0.95)" in result.output
    assert f"observed: {observed:.1%} of 300x300 px" in result.output
    assert f"RTS: {rts_px} px = {rts_px * 100} m2 (probability >= 0.95)" in result.output
    assert f"wrote {out / 'probability.tif'} and {out / 'mask.tif'}" in result.output
    # a stack without NIR: exit 1 with one line naming what is missing
    stack_dir = tmp_path / "bad"
    stack = random_stack(40, 40)
    write_stack(Stack(stack.data[[0, 1, 2, 4]], ("blue", "green", "red", "slope"), stack.grid), stack_dir / "s.tif")
    bad = runner.invoke(main, ["predict", str(stack_dir / "s.tif"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines()[-1].startswith("Error: ") and "lacks layers ['nir']" in bad.output
    no_year = runner.invoke(main, ["predict", "horton01"])
    assert no_year.exit_code == 2 and "give --year" in no_year.output


def test_cli_predict_default_output_folder(
    cloudy_stack_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["predict", str(cloudy_stack_file), "--window-px", "320"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "rts-output" / "predictions" / "synthetic" / "2021"
    assert sorted(p.name for p in folder.iterdir()) == ["mask.tif", "probability.tif"]
