"""The image stack: named float32 layers on a site grid, written as a Cloud-Optimised GeoTIFF.

Layer order follows Rustemeyer et al. 2022: blue, green, red, NIR (Sentinel-2 L2A reflectance),
slope (degrees), and, for training images, the ground-truth RTS mask. Spectral pixels that SCL
marks as no data, cloud, shadow, cirrus or snow are NaN, so every later stage sees them as
unobserved. A JSON sidecar beside the COG records where the data came from.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from numpy.typing import NDArray
from rasterio.io import DatasetReader

from rtsmonitor.errors import RtsError
from rtsmonitor.grid import SiteGrid
from rtsmonitor.imagery import SPECTRAL_LAYERS, SceneChoice, SceneData, read_scene
from rtsmonitor.terrain import DemSource, slope_on_grid

SLOPE_LAYER = "slope"
MASK_LAYER = "mask"
INPUT_LAYERS: tuple[str, ...] = (*SPECTRAL_LAYERS, SLOPE_LAYER)
"""The model's input layers, in order: reflectance of blue, green, red, NIR (0..1) and slope (degrees)."""

COG_BLOCK_PX = 512
"""Internal tile size of written COGs, in pixels."""


@dataclass
class Stack:
    """Layers ``data[i]`` named ``layers[i]`` on ``grid``; ``meta`` is the sidecar's content."""

    data: NDArray[np.float32]
    layers: tuple[str, ...]
    grid: SiteGrid
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check that shapes and names agree."""
        if self.data.ndim != 3 or self.data.shape[0] != len(self.layers):
            raise RtsError(f"stack data of shape {self.data.shape} does not match layers {self.layers}")
        if self.data.shape[1:] != self.grid.shape:
            raise RtsError(f"stack data of shape {self.data.shape} does not match grid {self.grid.shape}")

    def layer(self, name: str) -> NDArray[np.float32]:
        """One layer by name."""
        if name not in self.layers:
            raise RtsError(f"stack has no layer {name!r} (has {self.layers})")
        layer: NDArray[np.float32] = self.data[self.layers.index(name)]
        return layer


def make_stack(
    scene: SceneData,
    slope_deg: NDArray[np.float32],
    mask: NDArray[np.bool_] | None = None,
    meta: dict[str, Any] | None = None,
) -> Stack:
    """Stack a scene's reflectance (NaN where not clear), slope and an optional RTS mask."""
    clear = scene.clear
    spectral = np.where(clear, scene.reflectance, np.nan).astype(np.float32)
    layers = [*spectral, slope_deg.astype(np.float32)]
    names: tuple[str, ...] = INPUT_LAYERS
    if mask is not None:
        layers.append(mask.astype(np.float32))
        names = (*names, MASK_LAYER)
    info = {
        "scene": scene.acquisition.summary(),
        "valid_fraction": round(float(clear.mean()), 5),
        "grid": scene.grid.to_dict(),
        "layers": list(names),
        **(meta or {}),
    }
    return Stack(np.stack(layers), names, scene.grid, info)


def sidecar_path(path: Path) -> Path:
    """Where the JSON sidecar of the stack COG ``path`` lives."""
    return path.with_suffix(".json")


def write_stack(stack: Stack, path: Path) -> Path:
    """Write ``stack`` as a float32 COG (DEFLATE, NaN nodata, named bands) plus its JSON sidecar.

    Both files are written under temporary names in the target folder and renamed into place,
    the COG first and the sidecar last, so a reader never sees a half-written stack.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {**stack.grid.gtiff_profile(len(stack.layers)), "dtype": "float32", "nodata": np.nan}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".stack-") as tmp:
        plain = Path(tmp) / "plain.tif"
        with rasterio.open(plain, "w", **profile) as dst:
            dst.write(stack.data)
            for i, name in enumerate(stack.layers, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(**{"layers": ",".join(stack.layers)})
        cog = copy_as_cog(plain, Path(tmp) / "stack.tif", "average")
        side = Path(tmp) / "stack.json"
        side.write_text(json.dumps(stack.meta, indent=2, sort_keys=True, default=str))
        os.replace(cog, path)
        os.replace(side, sidecar_path(path))
    return path


def copy_as_cog(plain: Path, cog: Path, overview_resampling: str) -> Path:
    """Copy the GeoTIFF ``plain`` to ``cog`` as a DEFLATE Cloud-Optimised GeoTIFF; return ``cog``."""
    rasterio.shutil.copy(
        plain,
        cog,
        driver="COG",
        compress="DEFLATE",
        predictor="YES",
        blocksize=COG_BLOCK_PX,
        overview_resampling=overview_resampling,
    )
    return cog


def dataset_grid(src: DatasetReader) -> SiteGrid:
    """The :class:`SiteGrid` of an open rasterio dataset (north-up, square pixels, EPSG CRS)."""
    transform = src.transform
    epsg = src.crs.to_epsg() if src.crs is not None else None
    if epsg is None or transform.b != 0 or transform.d != 0 or abs(transform.e) != transform.a:
        raise RtsError(f"{src.name}: not a north-up grid with square pixels in an EPSG CRS")
    return SiteGrid(
        epsg=int(epsg),
        res_m=float(transform.a),
        x_min=float(transform.c),
        y_max=float(transform.f),
        width=src.width,
        height=src.height,
    )


def read_stack(path: Path) -> Stack:
    """Read a stack COG and its sidecar back (layer names from the band descriptions)."""
    with rasterio.open(path) as src:
        data = src.read().astype(np.float32)
        layers = tuple(d or f"band{i}" for i, d in enumerate(src.descriptions, start=1))
        grid = dataset_grid(src)
    side = sidecar_path(path)
    meta = json.loads(side.read_text()) if side.exists() else {}
    return Stack(data, layers, grid, meta)


def build_stack(
    grid: SiteGrid,
    choice: SceneChoice,
    dem: DemSource,
    mask: NDArray[np.bool_] | None = None,
    meta: dict[str, Any] | None = None,
) -> Stack:
    """Read the chosen scene and the slope onto ``grid`` and stack them.

    Raises :class:`~rtsmonitor.errors.NoSceneError` when ``choice`` holds no scene.
    """
    chosen = choice.require()
    scene = read_scene(chosen.acquisition, grid)
    slope = slope_on_grid(dem, grid)
    info = {"choice": {"reason": choice.reason, "fallback": choice.fallback, **chosen.summary()}, **(meta or {})}
    return make_stack(scene, slope, mask, info)
