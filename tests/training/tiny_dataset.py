"""Tiny synthetic training datasets for the training tests (seeded; no network, no STAC)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rtsmonitor.grid import SiteGrid
from rtsmonitor.stack import INPUT_LAYERS, MASK_LAYER, Stack, write_stack

SIZE_PX = 256
VEGETATION = np.array([0.03, 0.05, 0.04, 0.30], np.float32)  # tundra: dark visible, bright NIR
BARE_SOIL = np.array([0.10, 0.13, 0.15, 0.20], np.float32)  # slump floor: bright visible, dull NIR


def synthetic_stack(seed: int) -> Stack:
    """A 256 x 256 tundra scene with a dozen bright, steep discs ("slumps") and one cloud."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE_PX, 0:SIZE_PX]
    mask = np.zeros((SIZE_PX, SIZE_PX), bool)
    for _ in range(12):
        r, c, radius = rng.integers(8, SIZE_PX - 8), rng.integers(8, SIZE_PX - 8), rng.integers(4, 9)
        mask |= (rows - r) ** 2 + (cols - c) ** 2 <= radius**2
    spectral = np.where(mask, BARE_SOIL[:, None, None], VEGETATION[:, None, None])
    spectral = spectral + rng.normal(0, 0.01, spectral.shape)
    slope = rng.gamma(2.0, 2.0, (SIZE_PX, SIZE_PX)) + 12.0 * mask
    data = np.concatenate([spectral, slope[None], mask[None]]).astype(np.float32)
    data[:4, 200:240, 10:60] = np.nan  # a cloud
    grid = SiteGrid(epsg=32608, res_m=10.0, x_min=580_000.0, y_max=7_720_000.0 - seed * 5_000, width=256, height=256)
    return Stack(data, (*INPUT_LAYERS, MASK_LAYER), grid, {"seed": seed})


def write_dataset(folder: Path, seeds: tuple[int, ...] = (1, 2, 3), sites: Sequence[str] | None = None) -> Path:
    """A dataset folder (manifest.json + 6-layer stacks); image k belongs to ``sites[k]`` (default site<seed>)."""
    images = []
    for k, seed in enumerate(seeds):
        stack = synthetic_stack(seed)
        site = sites[k] if sites else f"site{seed}"
        rel = f"images/{site}_2019-07-{seed:02d}.tif"
        write_stack(stack, folder / rel)
        images.append(
            {
                "site_id": site,
                "label_date": f"2019-07-{seed:02d}",
                "scene_id": f"S2_{seed}",
                "scene_date": f"2019-08-{seed:02d}",
                "path": rel,
                "rts_pixels": int(stack.layer(MASK_LAYER).sum()),
                "sha256": hashlib.sha256((folder / rel).read_bytes()).hexdigest(),
            }
        )
    body = json.dumps({"images": images}, sort_keys=True)
    manifest = {"images": images, "manifest_sha256": hashlib.sha256(body.encode()).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder
