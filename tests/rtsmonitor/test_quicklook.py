"""Quick-look PNG of a site-year: size, stretch, unobserved grey, RTS outline, degenerate scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from rtsmonitor.errors import RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.quicklook import RGB_LAYERS, RTS_RGB, TITLE_STRIP_PX, UNOBSERVED_RGB, QuicklookCanvas, write_quicklook
from rtsmonitor.stack import INPUT_LAYERS, Stack

HEIGHT, WIDTH = 200, 300
CLOUD = (slice(0, 40), slice(0, 50))
RTS = (slice(100, 120), slice(150, 180))


def make_stack(height: int = HEIGHT, width: int = WIDTH, *, all_nan: bool = False) -> Stack:
    grid = SiteGrid(epsg=32607, res_m=10.0, x_min=500_000.0, y_max=7_700_000.0, width=width, height=height)
    rng = np.random.default_rng(7)
    base = rng.uniform(0.03, 0.25, size=(height, width))  # tundra-like: the bands rise and fall together
    blue, green = 0.8 * base, base
    red = 0.95 * base + rng.normal(0.0, 0.005, size=(height, width))
    nir = 2.0 * base
    slope = rng.uniform(0.0, 20.0, size=(height, width))  # degrees
    data = np.stack([blue, green, red, nir, slope]).astype(np.float32)
    data[:4][(slice(None), *CLOUD)] = np.nan
    if all_nan:
        data[:4] = np.nan
    return Stack(data, INPUT_LAYERS, grid)


def rts_mask(height: int = HEIGHT, width: int = WIDTH) -> NDArray[np.bool_]:
    mask = np.zeros((height, width), dtype=bool)
    mask[RTS] = True
    return mask


def read_rgb(path: Path) -> NDArray[np.uint8]:
    with Image.open(path) as img:
        assert img.mode == "RGB"
        return np.asarray(img.convert("RGB"))


def is_colour(pixels: NDArray[np.uint8], colour: tuple[int, int, int]) -> NDArray[np.bool_]:
    return np.all(pixels == np.array(colour, dtype=np.uint8), axis=-1)


def test_size_grey_unobserved_and_rts_outline(tmp_path: Path) -> None:
    path = write_quicklook(make_stack(), rts_mask(), tmp_path / "ql" / "2020.png")
    assert path == tmp_path / "ql" / "2020.png"
    rgb = read_rgb(path)
    assert rgb.shape == (HEIGHT, WIDTH, 3)
    assert is_colour(rgb[CLOUD], UNOBSERVED_RGB).all()
    rts = rgb[RTS]
    edge = np.ones(rts.shape[:2], dtype=bool)
    edge[1:-1, 1:-1] = False
    assert is_colour(rts[edge], RTS_RGB).all()
    # inside the outline the scene shows through, tinted towards the RTS colour (magenta: red and blue up)
    inside = rts[1:-1, 1:-1].astype(int)
    assert not is_colour(rts[1:-1, 1:-1], RTS_RGB).any()
    assert (inside[..., 0] - inside[..., 1]).mean() > 50
    # elsewhere: no RTS colour, no unobserved grey
    elsewhere = np.ones((HEIGHT, WIDTH), dtype=bool)
    elsewhere[CLOUD] = False
    elsewhere[RTS] = False
    assert not is_colour(rgb[elsewhere], RTS_RGB).any()
    assert sorted(p.name for p in path.parent.iterdir()) == ["2020.png"]  # no temporary file left


def test_contrast_stretch_spans_the_observed_range(tmp_path: Path) -> None:
    rgb = read_rgb(write_quicklook(make_stack(), np.zeros((HEIGHT, WIDTH), dtype=bool), tmp_path / "q.png"))
    observed = rgb[40:, :]
    # the 2 and 98 % points of all observed values of the three bands: about 2 % clip at each end
    assert 0.01 < (observed == 0).mean() < 0.03
    assert 0.01 < (observed == 255).mean() < 0.03
    # one range for all bands keeps the colour balance: blue stays darker than green
    red, green, blue = (observed[..., band].mean() for band in range(3))
    assert blue < red < green
    assert green - blue > 20


def test_all_nan_scene_is_grey(tmp_path: Path) -> None:
    rgb = read_rgb(write_quicklook(make_stack(all_nan=True), np.zeros((HEIGHT, WIDTH), dtype=bool), tmp_path / "q.png"))
    assert is_colour(rgb, UNOBSERVED_RGB).all()
    # an RTS over an unobserved scene is still outlined
    rgb = read_rgb(write_quicklook(make_stack(all_nan=True), rts_mask(), tmp_path / "q.png"))
    assert is_colour(rgb[100, 150:180], RTS_RGB).all()


def test_empty_mask_draws_no_outline(tmp_path: Path) -> None:
    rgb = read_rgb(write_quicklook(make_stack(), np.zeros((HEIGHT, WIDTH), dtype=bool), tmp_path / "q.png"))
    assert not is_colour(rgb, RTS_RGB).any()


def test_large_site_is_reduced_and_small_rts_stay_visible(tmp_path: Path) -> None:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[101, 151] = True  # one 10 m pixel
    rgb = read_rgb(write_quicklook(make_stack(), mask, tmp_path / "q.png", max_px=100))
    assert rgb.shape == (67, 100, 3)  # reduced 3x: ceil(200 / 3) x 300 / 3
    assert np.argwhere(is_colour(rgb, RTS_RGB)).tolist() == [[33, 50]]
    assert is_colour(rgb[:13, :16], UNOBSERVED_RGB).all()  # blocks wholly under the cloud
    # a 1000 px site at the default max_px keeps its size
    big = write_quicklook(make_stack(1000, 10), np.zeros((1000, 10), dtype=bool), tmp_path / "big.png")
    assert read_rgb(big).shape == (1000, 10, 3)


def test_title_adds_a_strip_above_the_image(tmp_path: Path) -> None:
    path = write_quicklook(make_stack(), rts_mask(), tmp_path / "q.png", title="Horton01 2020")
    rgb = read_rgb(path)
    assert rgb.shape == (HEIGHT + TITLE_STRIP_PX, WIDTH, 3)
    assert is_colour(rgb[TITLE_STRIP_PX:][CLOUD], UNOBSERVED_RGB).all()
    assert (rgb[:TITLE_STRIP_PX] < 100).any()  # some dark title text
    with Image.open(path) as img:
        assert img.info["Title"] == "Horton01 2020"
        assert "percentiles" in img.info["Description"]


def test_mask_of_another_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RtsError, match=r"\(10, 10\).*\(200, 300\)"):
        write_quicklook(make_stack(), np.zeros((10, 10), dtype=bool), tmp_path / "q.png")
    assert not (tmp_path / "q.png").exists()


@pytest.mark.parametrize(("height", "width", "max_px"), [(300, 200, 1024), (301, 257, 64), (130, 97, 40)])
def test_canvas_filled_by_overlapping_strips_equals_the_whole_image(
    tmp_path: Path, height: int, width: int, max_px: int
) -> None:
    stack = make_stack(height, width)
    mask = rts_mask(height, width)
    canvas = QuicklookCanvas(stack.grid, max_px)
    rgb = np.stack([stack.layer(name) for name in RGB_LAYERS])
    for row in range(0, height, 48):  # strips of 64 rows overlapping by 16, as the reader hands them over
        canvas.add_rgb(row, rgb[:, row : row + 64])
    for row in range(0, height, 50):
        canvas.add_rts(row, mask[row : row + 50])
    whole = write_quicklook(stack, mask, tmp_path / "whole.png", max_px=max_px)
    strips = write_quicklook(canvas.stack(), canvas.rts, tmp_path / "strips.png", max_px=max_px)
    assert canvas.stack().grid.shape == (-(-height // canvas.factor), -(-width // canvas.factor))
    np.testing.assert_array_equal(read_rgb(strips), read_rgb(whole))


def test_canvas_reduces_a_whole_site_mask_in_row_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import rtsmonitor.quicklook as quicklook

    stack = make_stack(301, 257)
    mask = np.zeros((301, 257), dtype=bool)
    mask[[0, 17, 150, 299, 300], [3, 100, 256, 0, 128]] = True
    whole = QuicklookCanvas(stack.grid, 64)
    whole.add_rts(0, mask)
    monkeypatch.setattr(quicklook, "BLOCK_ROWS", 7)  # many row blocks, not a multiple of the factor
    blocks = QuicklookCanvas(stack.grid, 64)
    blocks.add_rts(0, mask)
    np.testing.assert_array_equal(blocks.rts, whole.rts)
    rows, cols = np.nonzero(mask)
    expected = np.zeros_like(whole.rts)
    expected[rows // whole.factor, cols // whole.factor] = True
    np.testing.assert_array_equal(whole.rts, expected)
