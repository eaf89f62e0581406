"""Small synthetic images for the training and evaluation tests (imported by conftest.py and the tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio


def write_image(path: Path, data: np.ndarray) -> Path:
    """Write (C, H, W) data as a plain (not georeferenced) image; the driver follows the suffix."""
    driver = {".png": "PNG", ".jpg": "JPEG", ".tif": "GTiff"}[path.suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    c, h, w = data.shape
    with rasterio.open(path, "w", driver=driver, width=w, height=h, count=c, dtype=data.dtype) as dst:
        dst.write(data)
    return path


def smooth_image(rng: np.random.Generator, size: int = 64, channels: int = 3) -> np.ndarray:
    """A uint8 image with structure at several scales (so SR has something to learn)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(channels):
        f = rng.uniform(1, 6, size=2)
        phase = rng.uniform(0, 6.28, size=2)
        band = np.sin(2 * np.pi * f[0] * xx + phase[0]) * np.cos(2 * np.pi * f[1] * yy + phase[1])
        band += 0.3 * rng.normal(size=(size, size))
        out.append(np.clip((band + 1.3) / 2.6 * 255, 0, 255))
    return np.stack(out).round().astype(np.uint8)
