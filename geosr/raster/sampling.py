"""A raster's decimated sample and its radiometry: what upscale, evaluation and training map its values by.

``read_decimated`` reads at most a megapixel per band, nearest neighbour: the pixels GDAL picks for a reduced read
of the whole raster (the one under each output pixel's centre), or an overview's when the file has them. A raster of
several bands stored pixel-interleaved is read a row of blocks at a time, all bands at once: GDAL decodes a block
once for all its bands and keeps the others in its cache, which holds a row of blocks but not a large raster, so a
reduced read of the whole raster, band after band, would decode every block once per band (a 13-band uint16 image of
2048 x 2048 pixels: 4.8 s against 0.6 s on a 64 MB cache). Both ways take the same pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from geosr.errors import GeosrError, RasterError
from geosr.radiometry import PERCENTILES, Radiometry, compute_radiometry, valid_mask
from geosr.raster.reading import _read, has_masks, pixel_interleaved

log = logging.getLogger("geosr.raster")


def nearest_source(n_src: int, n_dst: int) -> np.ndarray:
    """The source pixel GDAL's nearest-neighbour reduction takes for each of ``n_dst`` pixels along an axis of
    ``n_src``: the one under the output pixel's centre."""
    return ((np.arange(n_dst) + 0.5) * (n_src / n_dst)).astype(np.intp)


def read_decimated(
    ds,
    path,
    bands: Sequence[int],
    masks: bool,
    max_pixels: int = 1 << 20,
    *,
    error: type[GeosrError] = RasterError,
    remedy: str = "",
) -> tuple[np.ndarray, np.ndarray | None]:
    """The whole raster read at reduced resolution (at most ``max_pixels`` per band, nearest neighbour).

    Returns (values, band masks or None), each (b, h, w). Overviews are used when the file has them. A damaged file
    raises ``error`` naming it, followed by ``remedy``.
    """
    f = max(1, math.ceil(math.sqrt(ds.height * ds.width / max_pixels)))
    shape = (len(bands), max(1, ds.height // f), max(1, ds.width // f))
    by_rows = f > 1 and len(bands) > 1 and not ds.overviews(bands[0]) and pixel_interleaved(ds)
    if not by_rows:
        return _read(ds, path, bands, masks, "", error, remedy, out_shape=shape, resampling=Resampling.nearest)
    values = np.empty(shape, ds.dtypes[bands[0] - 1])
    found = np.empty(shape, np.uint8) if masks else None
    rows = nearest_source(ds.height, shape[1])
    block = ds.block_shapes[bands[0] - 1][0]
    for start in range(0, ds.height, block):  # a row of blocks at a time: its sampled rows, GDAL's columns
        picked = np.nonzero((rows >= start) & (rows < start + block))[0]
        if not picked.size:
            continue
        first, last = int(rows[picked[0]]), int(rows[picked[-1]])
        v, m = _read(
            ds, path, bands, masks, "", error, remedy, window=Window(0, first, ds.width, last - first + 1),
            out_shape=(shape[0], last - first + 1, shape[2]), resampling=Resampling.nearest,
        )  # fmt: skip
        values[:, picked] = v[:, rows[picked] - first]
        if found is not None and m is not None:
            found[:, picked] = m[:, rows[picked] - first]
    return values, found


def raster_radiometry(
    ds,
    path,
    bands: Sequence[int],
    value_range: tuple[float, float] | None = None,
    *,
    error: type[GeosrError] = RasterError,
    remedy: str = "",
) -> Radiometry:
    """The global mapping of ``bands`` of a raster to the model's range (``geosr.radiometry``): from the valid pixels
    of a decimated read, or from ``value_range``. The same for upscale, evaluation and training.

    Logs a warning when the sample holds no valid pixel. Raises ``error`` naming the file for a damaged file, and
    GeosrError naming --value-range for an unusable ``value_range``.
    """
    dtype = ds.dtypes[bands[0] - 1]
    sample, sample_masks = read_decimated(ds, path, bands, has_masks(ds, bands), error=error, remedy=remedy)
    valid = valid_mask(sample, sample_masks)
    if not valid.any():
        log.warning("%s: no valid pixel found in a decimated read; the raster may be all nodata", path)
    try:
        radiometry = compute_radiometry(sample, valid, dtype, value_range)
    except ValueError as exc:
        if value_range is not None:
            raise GeosrError(f"{path}: {exc} (--value-range)", option="--value-range") from None
        raise error(f"{path}: {exc}") from None
    if value_range is not None and dtype != "uint8" and valid.any():
        check_range_fits(path, sample, valid, value_range, bands)
    return radiometry


def check_range_fits(
    subject,
    sample: np.ndarray,
    valid: np.ndarray,
    value_range: tuple[float, float],
    bands: Sequence[int],
    option: str = "--value-range",
) -> None:
    """A warning for each band (``bands``: their numbers in ``subject``, a file or "the array") that a given value
    range serves badly (most of its values lie outside it: they pass the model clipped); GeosrError for a band whose
    values fill under 1 % of the range: the model sees a nearly flat image, and its small errors, stretched back by
    the range, swamp the data (a uint16 band of 448..3000 under 0..1e6: 2.4 % of the output pixels at 0 or 65535).
    option: the setting's name in the messages."""
    lo, hi = value_range
    for b, number in enumerate(bands):
        v = sample[b][valid[b]].astype(np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        p0, p1 = np.percentile(v, PERCENTILES)
        inside = float(((v >= lo) & (v <= hi)).mean())
        if inside < 0.5:
            log.warning(
                "%s: band %d: %.0f%% of its values lie outside %s %g..%g; the model sees them clipped and "
                "the output gives them back without super-resolution: give a range that holds them",
                subject, number, 100 * (1 - inside), option, lo, hi,
            )  # fmt: skip
        elif (p1 - p0) < 0.01 * (hi - lo):
            raise GeosrError(
                f"{subject}: band {number}: its values ({p0:g}..{p1:g}) fill {100 * (p1 - p0) / (hi - lo):.2g}% of "
                f"{option} {lo:g}..{hi:g}; the model would see a nearly flat image and its output be noise: give "
                f"a range closer to the data, or leave {option} out (the data's own percentiles)",
                option=option,
            )
