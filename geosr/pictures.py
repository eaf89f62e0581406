"""Pictures for a person to look at: image values as uint8, side-by-side crops, and images written as PNG or GeoTIFF.

``geosr evaluate --preview`` and ``--save-images`` draw and write with these, and ``geosr upscale --preview``
(geosr.preview) draws its labelled panels here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.io import MemoryFile

from geosr.datasets import REMEDY
from geosr.errors import DataError
from geosr.evaluation import Outputs, Pair
from geosr.radiometry import integer_range, round_half_away
from geosr.raster import open_raster, quiet_georeferencing, temp_path


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
    """A side-by-side crop HR | bicubic | model of the image's centre, each labelled above, for a person to look at:
    uint8 (3, LABEL_HEIGHT + h, w), the first three bands (one band or two: the first, as grey).

    size: crop side in HR pixels (smaller images are shown whole); zoom: nearest-neighbour enlargement; gap: white
    pixels between the panels.
    """
    pair = outputs.pair
    panels = [("HR", pair.hr), ("BICUBIC", outputs.bicubic)]
    if outputs.sr is not None:
        panels.append(("MODEL", outputs.sr))
    _, h, w = pair.hr.shape
    ch, cw = min(size, h), min(size, w)
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    shown = []
    for text, p in panels:
        crop = to_uint8_image(p[:, r0 : r0 + ch, c0 : c0 + cw], pair)
        crop = crop[:3] if crop.shape[0] >= 3 else np.repeat(crop[:1], 3, axis=0)
        shown.append((text, crop.repeat(zoom, axis=1).repeat(zoom, axis=2)))
    return labelled_panels(shown, gap)


def side_by_side(panels: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """uint8 panels (C, H, W) of one height and band count in a row, ``gap`` white pixels between them."""
    white = np.full((panels[0].shape[0], panels[0].shape[1], gap), 255, np.uint8)
    pieces = []
    for i, c in enumerate(panels):
        if i:
            pieces.append(white)
        pieces.append(c)
    return np.concatenate(pieces, axis=2)


def percentile_stretch(window: np.ndarray, lo: float = 2.0, hi: float = 98.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (lo, hi) percentiles of ``window`` (b, h, w), NaN ignored: the stretch of a preview (each (b,))."""
    v = window.reshape(window.shape[0], -1).astype(np.float64)
    low, high = np.full(len(v), 0.0), np.full(len(v), 1.0)
    for b, band in enumerate(v):
        band = band[np.isfinite(band)]
        if band.size:
            low[b], high[b] = np.percentile(band, [lo, hi])
    return low, np.where(high > low, high, low + 1)


def stretched(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(b, h, w) values -> uint8 (3, h, w): each band mapped low..high to 0..255 (NaN black), one band as grey."""
    y = (x.astype(np.float64) - low[:, None, None]) / (high - low)[:, None, None] * 255
    y = np.clip(np.nan_to_num(y, nan=0.0), 0, 255).round().astype(np.uint8)
    return np.repeat(y[:1], 3, axis=0) if y.shape[0] == 1 else y[:3]


# A 5 x 7 bitmap font for the preview's labels: each glyph is 7 rows of 5 pixels.
_GLYPHS = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 11001 10101 10011 10001 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    " ": "00000 00000 00000 00000 00000 00000 00000",
}
LABEL_HEIGHT = 11  # pixels above a panel: 7 of text, 2 of margin above and below


def label(text: str, width: int) -> np.ndarray:
    """``text`` (the font's letters, any case) in black on white, (3, LABEL_HEIGHT, width) uint8, cut at ``width``."""
    row = np.full((LABEL_HEIGHT, max(width, 6 * len(text) + 2)), 255, np.uint8)
    for i, ch in enumerate(text.upper()):
        bits = np.array([[c == "1" for c in r] for r in _GLYPHS.get(ch, _GLYPHS[" "]).split()])
        row[2:9, 2 + 6 * i : 7 + 6 * i][bits] = 0
    return np.repeat(row[None, :, :width], 3, axis=0)


def labelled_panels(panels: Sequence[tuple[str, np.ndarray]], gap: int = 4) -> np.ndarray:
    """uint8 (3, h, w) panels with their labels above, side by side: (3, LABEL_HEIGHT + h, n w + (n - 1) gap)."""
    return side_by_side([np.concatenate([label(text, p.shape[2]), p], axis=1) for text, p in panels], gap)


def png_bytes(data: np.ndarray) -> bytes:
    """uint8 (C, H, W) with 1-4 bands encoded as a PNG file's bytes (GDAL's PNG driver, in memory)."""
    with quiet_georeferencing(), MemoryFile() as mem:
        with mem.open(
            driver="PNG", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype="uint8"
        ) as dst:
            dst.write(data)
        return mem.read()


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
    profile = dict(
        driver="PNG" if png else "GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
    )
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if not png:
        profile.update(compress="deflate", tiled=data.shape[1] >= 256 and data.shape[2] >= 256)
    tmp = temp_path(path)  # written whole, then renamed: a kill leaves no image that looks done
    try:
        with quiet_georeferencing(), rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failure
        tmp.with_name(tmp.name + ".aux.xml").unlink(missing_ok=True)  # GDAL's sidecar of the temporary name
    if png:
        path.with_name(path.name + ".aux.xml").unlink(missing_ok=True)  # an earlier image's
    return path
