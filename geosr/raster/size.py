"""Size and free-space estimates: how large an output will be (raw, and compressed as a sample of the input
compresses), and the check that the disk can hold it, before any work.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from geosr.errors import RasterError
from geosr.raster.gdal import quiet_georeferencing
from geosr.raster.profile import BLOCK, OutputSpec
from geosr.raster.reading import read_window

SAMPLE_SIDE = 96  # input pixels: the side of each of the SAMPLE_GRID x SAMPLE_GRID windows compressed to foresee


SAMPLE_GRID = 3  # the output's size, spread over the raster so that fill areas and textures count as they occur


COMPRESSION_MARGIN = 1.25  # on the sample's compressed fraction: a super-resolved output holds finer texture


MIN_COMPRESSED_FRACTION = 0.05  # no output is foreseen smaller than this fraction of its raw size


def compression_sample(ds, path, window: Window, bands: Sequence[int]) -> np.ndarray:
    """Values (bands, h, w) of ``bands`` (1-based, in output order) of ``window``, in the raster's dtype: the whole
    window when small, else SAMPLE_GRID x SAMPLE_GRID windows of SAMPLE_SIDE pixels spread evenly over it, side by
    side. What ``estimate_output_bytes`` compresses to foresee the output's size."""
    n = SAMPLE_GRID
    h, w = int(window.height), int(window.width)
    sh, sw = min(SAMPLE_SIDE, h // n) or h, min(SAMPLE_SIDE, w // n) or w
    rows = [int(window.row_off) + (h - sh) * i // max(1, n - 1) for i in range(n)] if sh < h else [int(window.row_off)]
    cols = [int(window.col_off) + (w - sw) * j // max(1, n - 1) for j in range(n)] if sw < w else [int(window.col_off)]
    parts = [[read_window(ds, path, Window(c, r, sw, sh), bands, masks=False)[0] for c in cols] for r in rows]
    return np.concatenate([np.concatenate(row, axis=2) for row in parts], axis=1)


def compressed_fraction(sample: np.ndarray, profile: dict[str, Any]) -> float:
    """The size of ``sample`` (bands, h, w) written as a GeoTIFF with the codec, predictor and level of ``profile``,
    as a fraction of its raw size (1.0 for an uncompressed profile; at most 1.0)."""
    if not profile.get("compress"):
        return 1.0
    b, h, w = sample.shape
    options = {key: profile[key] for key in ("compress", "predictor", "zlevel") if key in profile}
    with rasterio.MemoryFile() as mem:
        with (
            quiet_georeferencing(),
            mem.open(
                driver="GTiff", width=w, height=h, count=b, dtype=str(sample.dtype), interleave="pixel", **options
            ) as d,
        ):
            d.write(sample)
        stored = mem.getbuffer().nbytes
    return min(1.0, stored / max(1, sample.nbytes))


def estimate_output_bytes(spec: OutputSpec, cog: bool, sample: np.ndarray | None = None, copy: bool = False) -> int:
    """The room the output needs on disk while it is made, in bytes.

    sample: input values (bands, h, w) in the output's dtype (``compression_sample``): the output's compressed size is
    its raw size times the fraction the output's own codec and predictor achieve on the sample, with a margin
    (COMPRESSION_MARGIN) and never below MIN_COMPRESSED_FRACTION; without a sample, the raw size. A COG needs room
    for its overviews and, until it is complete, for the GeoTIFF it is copied from; a PNG or JPEG (``copy``) for
    that GeoTIFF too.
    """
    p = spec.profile
    pixels = p["width"] * p["height"]
    raw = pixels * p["count"] * np.dtype(p["dtype"]).itemsize
    fraction = (
        1.0
        if sample is None
        else min(1.0, max(MIN_COMPRESSED_FRACTION, COMPRESSION_MARGIN * compressed_fraction(sample, p)))
    )
    tiles = math.ceil(p["width"] / BLOCK) * math.ceil(p["height"] / BLOCK)
    size = math.ceil(raw * fraction) + (pixels // 8 if spec.internal_mask else 0) + 16 * tiles + 65536
    if cog:
        size = size * 4 // 3 * 2  # overviews, and the temporary file beside the COG until it is complete
    elif copy:
        size *= 2  # the GeoTIFF and its PNG / JPEG copy, until the copy is complete
    return int(size)


def size_str(n: float) -> str:
    """A byte count for people: 512 bytes, 3.4 MB, 1.25 GB."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{int(n)} bytes"


def check_free_space(path: Path, needed: int) -> None:
    """Raise RasterError when the disk that holds ``path`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise RasterError(
            f"{path}: not enough disk space for the output: about {size_str(needed)} needed, "
            f"{size_str(free)} free in {path.parent}; free some space or write the output elsewhere"
        )


def check_output_room(
    path: Path, spec: OutputSpec, cog: bool, sample: Callable[[], np.ndarray], copy: bool = False
) -> None:
    """``check_free_space`` for the output ``spec`` (``estimate_output_bytes``). The raw size, an upper bound of the
    estimate, is tried first; ``sample()`` (``compression_sample``: a few reads) is asked for only when that does not
    fit, so small outputs and roomy disks cost no reading."""
    if estimate_output_bytes(spec, cog, None, copy) <= shutil.disk_usage(path.parent).free:
        return
    check_free_space(path, estimate_output_bytes(spec, cog, sample(), copy))
