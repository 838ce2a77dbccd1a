"""Quick-look PNG of one site-year: the true-colour scene with the detected RTS outlined.

One image pixel is one grid pixel (10 m) or, for a site larger than ``max_px`` pixels, the mean of a
square block of them, so the picture can be compared with the stack pixel for pixel. Drawn with
numpy and Pillow only (no matplotlib figure), which is thread-safe and opens no window.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from rtsmonitor.errors import RtsError
from rtsmonitor.files import write_atomically
from rtsmonitor.grid import SiteGrid
from rtsmonitor.stack import Stack

RGB_LAYERS: tuple[str, str, str] = ("red", "green", "blue")
"""Stack layers shown as the red, green and blue channels (reflectance, 0..1)."""
STRETCH_PERCENTILES: tuple[float, float] = (2.0, 98.0)
"""Lower and upper percentile (in %) of the observed reflectance mapped to black and white.

One range for all three bands, so colours keep their balance; values outside it are clipped.
"""
MIN_STRETCH_SPAN = 0.01
"""Smallest reflectance range of the stretch (unitless reflectance), so a flat scene does not divide by 0."""
UNOBSERVED_RGB: tuple[int, int, int] = (128, 128, 128)
"""Colour (8-bit RGB) of pixels with no clear observation (NaN in any of :data:`RGB_LAYERS`)."""
RTS_RGB: tuple[int, int, int] = (255, 0, 255)
"""Colour (8-bit RGB) of the RTS outline and fill: magenta, which tundra, water and bare soil never are."""
RTS_FILL_ALPHA = 0.35
"""Opacity (0..1) of the RTS colour over the inside of an RTS; the outline is opaque."""
TITLE_STRIP_PX = 22
"""Height in pixels of the white strip above the image that holds the title and the legend."""
TITLE_FONT_PX = 14
"""Font size of the title and the legend in pixels."""
QUICKLOOK_MAX_PX = 1024
"""Longest side of a quick-look image in pixels (a 100 km^2 site at 10 m is 1000 px: full resolution)."""


BLOCK_ROWS = 1024
"""Rows of a whole-site RTS mask reduced at once by :meth:`QuicklookCanvas.add_rts` (bounds its copies)."""


class QuicklookCanvas:
    """A site's reduced true-colour image and RTS mask, filled strip by strip as the site is processed.

    The site-year pipeline never holds a whole site; it hands each strip it reads (:meth:`add_rgb`,
    strips may overlap) and each finished mask strip (:meth:`add_rts`) to the canvas, which keeps
    only block sums on the reduced grid (``factor`` x ``factor`` pixels per image pixel, as
    :func:`write_quicklook` would reduce them). :meth:`stack` and :attr:`rts` then feed
    :func:`write_quicklook`.
    """

    def __init__(self, grid: SiteGrid, max_px: int = QUICKLOOK_MAX_PX) -> None:
        if max_px < 1:
            raise RtsError(f"quick-look max_px must be at least 1, got {max_px}")
        self.grid = grid
        self.factor = max(1, math.ceil(max(grid.shape) / max_px))
        self.coarse = grid.coarsened(self.factor)
        self._sum = np.zeros((len(RGB_LAYERS), *self.coarse.shape), dtype=np.float64)
        self._count = np.zeros((len(RGB_LAYERS), *self.coarse.shape), dtype=np.int64)
        self._rgb_rows = 0
        self.rts = np.zeros(self.coarse.shape, dtype=bool)

    def add_rgb(self, row_off: int, rgb: NDArray[np.float32]) -> None:
        """Add [3, h, W] reflectance (red, green, blue; NaN unobserved) of grid rows from ``row_off``.

        Rows added before (where strips overlap) are skipped.
        """
        start = max(self._rgb_rows - row_off, 0)
        if start >= rgb.shape[1]:
            return
        data = rgb[:, start:]
        finite = np.isfinite(data)
        rows = self._block_rows(row_off + start, data.shape[1])
        sums = self._block_sum(np.where(finite, data, 0.0), rows)
        counts = self._block_sum(finite.astype(np.int64), rows)
        index = np.unique(rows)
        self._sum[:, index] += sums
        self._count[:, index] += counts
        self._rgb_rows = row_off + rgb.shape[1]

    def add_rts(self, row_off: int, rts: NDArray[np.bool_]) -> None:
        """Add [h, W] RTS pixels of grid rows ``row_off``..: an image pixel is RTS if any of its block is.

        Works through ``rts`` a few rows at a time, in booleans, so a whole site's mask can be given.
        """
        step = BLOCK_ROWS - BLOCK_ROWS % self.factor or self.factor
        for start in range(0, rts.shape[0], step):
            part = rts[start : start + step]
            rows = self._block_rows(row_off + start, part.shape[0])
            pad = self.coarse.width * self.factor - part.shape[1]
            if pad:
                part = np.pad(part, ((0, 0), (0, pad)))
            by_column = part.reshape(part.shape[0], self.coarse.width, self.factor).any(axis=2)
            starts = np.flatnonzero(np.diff(rows, prepend=-1))
            self.rts[np.unique(rows)] |= np.logical_or.reduceat(by_column, starts, axis=0)

    def stack(self) -> Stack:
        """The reduced image as a stack of :data:`RGB_LAYERS` (block means; NaN where a block has none)."""
        means = np.divide(self._sum, self._count, out=np.full(self._sum.shape, np.nan), where=self._count > 0)
        return Stack(means.astype(np.float32), RGB_LAYERS, self.coarse)

    def _block_rows(self, row_off: int, height: int) -> NDArray[np.intp]:
        return np.arange(row_off, row_off + height) // self.factor

    def _block_sum(self, data: NDArray[Any], rows: NDArray[np.intp]) -> NDArray[Any]:
        """[C, h, W] summed over ``factor`` columns and over the rows of each image row in ``rows``."""
        channels, height, width = data.shape
        pad = self.coarse.width * self.factor - width
        if pad:
            data = np.pad(data, ((0, 0), (0, 0), (0, pad)))
        by_column = data.reshape(channels, height, self.coarse.width, self.factor).sum(axis=3)
        starts = np.flatnonzero(np.diff(rows, prepend=-1))
        summed: NDArray[Any] = np.add.reduceat(by_column, starts, axis=1)
        return summed


def write_quicklook(
    stack: Stack,
    rts_mask: NDArray[np.bool_],
    path: Path,
    *,
    title: str | None = None,
    max_px: int = 1024,
) -> Path:
    """Write a true-colour PNG of ``stack`` with ``rts_mask`` outlined.

    Parameters
    ----------
    stack : a stack with the layers of :data:`RGB_LAYERS` (reflectance, NaN where unobserved).
    rts_mask : [H, W] RTS pixels on the stack's grid.
    path : where to write the PNG (written under a temporary name in the same folder, then renamed).
    title : optional title; if given, a strip of :data:`TITLE_STRIP_PX` pixels above the image holds it
        and a legend.
    max_px : longest side of the image in pixels. A larger stack is reduced by the smallest whole
        factor that fits, each image pixel the mean of the observed pixels of its block; a block is RTS
        if any of its pixels is.

    Returns
    -------
    ``path``.

    Raises
    ------
    RtsError
        If the mask's shape is not the grid's, ``max_px`` is below 1 or the stack lacks a colour layer.

    Notes
    -----
    The contrast stretch maps the :data:`STRETCH_PERCENTILES` of all observed values of the three bands
    to 0 and 255, one range for all bands. Unobserved pixels are :data:`UNOBSERVED_RGB`; RTS pixels on
    the edge of the (reduced) mask are :data:`RTS_RGB`, inner ones are tinted with it. An all-NaN scene
    gives a grey image, an empty mask no outline.

    """
    if max_px < 1:
        raise RtsError(f"quick-look max_px must be at least 1, got {max_px}")
    mask = np.asarray(rts_mask, dtype=bool)
    if mask.shape != stack.grid.shape:
        raise RtsError(f"RTS mask of shape {mask.shape} does not match the stack grid {stack.grid.shape}")
    factor = max(1, math.ceil(max(stack.grid.shape) / max_px))
    rgb = _block_mean(np.stack([stack.layer(name) for name in RGB_LAYERS], axis=-1), factor)
    rts = _block_any(mask, factor)
    finite = np.isfinite(rgb)
    observed = finite[..., 0] & finite[..., 1] & finite[..., 2]
    values = rgb[observed]
    lo, hi = (float(v) for v in np.percentile(values, STRETCH_PERCENTILES)) if values.size else (0.0, 1.0)
    span = max(hi - lo, MIN_STRETCH_SPAN)
    scaled = np.clip((np.where(observed[..., None], rgb, lo) - lo) / span, 0.0, 1.0)
    image = np.rint(scaled * 255.0).astype(np.uint8)
    image[~observed] = UNOBSERVED_RGB
    colour = np.array(RTS_RGB, dtype=np.float64)
    image[rts] = np.rint((1.0 - RTS_FILL_ALPHA) * image[rts] + RTS_FILL_ALPHA * colour).astype(np.uint8)
    image[_edge(rts)] = RTS_RGB
    picture = Image.fromarray(image)
    if title is not None:
        picture = _with_title(picture, title)
    info = PngImagePlugin.PngInfo()
    if title is not None:
        info.add_text("Title", title)
    info.add_text(
        "Description",
        f"true colour ({', '.join(RGB_LAYERS)}), reflectance {lo:.4f}..{lo + span:.4f} stretched to 0..255 "
        f"({STRETCH_PERCENTILES[0]:g}-{STRETCH_PERCENTILES[1]:g} percentiles of observed pixels); "
        f"{factor * stack.grid.res_m:g} m per pixel; grey = unobserved; magenta = RTS",
    )
    write_atomically(path, lambda out: picture.save(out, format="PNG", pnginfo=info))
    return path


def _block_mean(data: NDArray[np.float32], factor: int) -> NDArray[np.float64]:
    """[H, W, C] means of the finite values of ``factor`` x ``factor`` blocks; NaN where a block has none."""
    if factor == 1:
        return data.astype(np.float64)
    height, width, channels = data.shape
    rows, cols = math.ceil(height / factor), math.ceil(width / factor)
    padded = np.full((rows * factor, cols * factor, channels), np.nan)
    padded[:height, :width] = data
    blocks = padded.reshape(rows, factor, cols, factor, channels)
    finite = np.isfinite(blocks)
    sums = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
    counts = finite.sum(axis=(1, 3))
    means: NDArray[np.float64] = np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)
    return means


def _block_any(mask: NDArray[np.bool_], factor: int) -> NDArray[np.bool_]:
    """[H, W] whether any pixel of each ``factor`` x ``factor`` block is set."""
    if factor == 1:
        return mask
    height, width = mask.shape
    rows, cols = math.ceil(height / factor), math.ceil(width / factor)
    padded = np.zeros((rows * factor, cols * factor), dtype=bool)
    padded[:height, :width] = mask
    result: NDArray[np.bool_] = np.asarray(padded.reshape(rows, factor, cols, factor).any(axis=(1, 3)), dtype=bool)
    return result


def _edge(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Pixels of ``mask`` with a 4-neighbour outside it (the image border counts as outside)."""
    p = np.pad(mask, 1, constant_values=False)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def _with_title(picture: Image.Image, title: str) -> Image.Image:
    """``picture`` below a white strip with ``title`` on the left and a legend on the right if it fits."""
    width, height = picture.size
    out = Image.new("RGB", (width, height + TITLE_STRIP_PX), (255, 255, 255))
    out.paste(picture, (0, TITLE_STRIP_PX))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=TITLE_FONT_PX)
    top = (TITLE_STRIP_PX - TITLE_FONT_PX) // 2
    title_end = 4 + draw.textlength(title, font=font)
    draw.text((4, top), title, fill=(0, 0, 0), font=font)
    keys = (("RTS", RTS_RGB), ("unobserved", UNOBSERVED_RGB))
    box = TITLE_FONT_PX - 2
    legend = sum(box + 4 + draw.textlength(label, font=font) + 10 for label, _ in keys)
    x = width - legend
    if x > title_end + 10:
        for label, colour in keys:
            draw.rectangle((x, top + 1, x + box, top + 1 + box), fill=colour)
            x += box + 4
            draw.text((x, top), label, fill=(0, 0, 0), font=font)
            x += draw.textlength(label, font=font) + 10
    return out
