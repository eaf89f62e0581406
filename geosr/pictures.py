"""Pictures for a person to look at: image values as uint8, side-by-side crops, and images written as PNG or GeoTIFF.

``geosr evaluate --preview`` and ``--save-images`` draw and write with these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch

from geosr.datasets import REMEDY
from geosr.errors import DataError
from geosr.evaluation import Outputs, Pair
from geosr.radiometry import integer_range, round_half_away
from geosr.raster import open_raster, quiet_georeferencing


def to_uint8_image(x: torch.Tensor, pair: Pair) -> np.ndarray:
    """Image values (C, H, W) -> uint8 for a preview (the 0..255 mapping of the metrics, rounded half away)."""
    y = pair.to_255(x).numpy().astype(np.float64)  # a copy
    return round_half_away(np.clip(y, 0, 255, out=y)).astype(np.uint8)


def to_dtype(x: torch.Tensor, dtype: str) -> np.ndarray:
    """Image values (already on the dtype's grid for integers) -> a numpy array of ``dtype``."""
    rng = integer_range(dtype)
    y = x.clamp(*rng) if rng is not None else x
    return y.numpy().astype(dtype)


def preview_strip(outputs: Outputs, size: int = 160, zoom: int = 2, gap: int = 4) -> np.ndarray:
    """A side-by-side crop HR | bicubic | model (uint8, (3 or C, h, w)) of the image's centre for a person to look at.

    size: crop side in HR pixels (smaller images are shown whole); zoom: nearest-neighbour enlargement; gap: white
    pixels between the panels.
    """
    pair = outputs.pair
    panels = [pair.hr, outputs.bicubic] + ([outputs.sr] if outputs.sr is not None else [])
    _, h, w = pair.hr.shape
    ch, cw = min(size, h), min(size, w)
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    crops = [to_uint8_image(p[:, r0 : r0 + ch, c0 : c0 + cw], pair) for p in panels]
    if crops[0].shape[0] > 3:
        crops = [c[:3] for c in crops]
    crops = [c.repeat(zoom, axis=1).repeat(zoom, axis=2) for c in crops]
    white = np.full((crops[0].shape[0], ch * zoom, gap), 255, np.uint8)
    pieces = []
    for i, c in enumerate(crops):
        if i:
            pieces.append(white)
        pieces.append(c)
    return np.concatenate(pieces, axis=2)


def save_image(path: str | Path, data: np.ndarray, like: str | Path | None = None) -> Path:
    """Write (C, H, W) ``data`` as an image: PNG for uint8 with 1-4 bands and no georeferencing, else GeoTIFF.

    like: the source image; its CRS and transform are copied (the SR output covers the same ground as the HR, on
    the HR pixel grid, cropped at the bottom and right to a multiple of the scale). Returns the path written.
    """
    path = Path(path)
    crs = transform = None
    if like is not None:
        with open_raster(like, DataError, REMEDY) as src:
            if src.crs is not None:
                crs, transform = src.crs, src.transform
    png = data.dtype == np.uint8 and data.shape[0] <= 4 and crs is None
    path = path.with_suffix(".png" if png else ".tif")
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="PNG" if png else "GTiff", width=data.shape[2], height=data.shape[1],
                   count=data.shape[0], dtype=data.dtype)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if not png:
        profile.update(compress="deflate", tiled=data.shape[1] >= 256 and data.shape[2] >= 256)
    with quiet_georeferencing(), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    aux = path.with_name(path.name + ".aux.xml")
    if png and aux.exists():
        aux.unlink()
    return path
