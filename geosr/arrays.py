"""Super-resolve an array in memory exactly as ``geosr upscale`` super-resolves a raster holding the same pixels.

``upscale_pixels(data, predictor, options, nodata=...)`` takes a (bands, H, W) numpy array and returns the
(bands, s*H, s*W) array of the same dtype that geosr.pipeline would write for a GeoTIFF with those pixels and that
nodata value: the same global radiometry (computed from the same decimated sample, geosr.radiometry), the same tile
grid (tiles never larger than the array), blend weights, tile batches and panels (geosr.tiling, geosr.plan), the
same band groups for a model with fewer channels than bands (geosr.plan.band_groups), the same consistency
correction (geosr.consistency.RowStream, pushed the same rows) and the same nodata handling: the nodata value, NaN,
+-Inf and extreme float fills are invalid, never reach valid pixels, and stay nodata (NaN for floats without a nodata
value).

It runs the pipeline's loop (one column panel at a time, one tile row at a time, a StripAccumulator of a few tile
rows) reading slices of the array instead of windows of a file, so besides the output it holds only the strips of
a panel: a few float32 copies of a tile row, never of the whole array. It runs in the calling thread.

Kept in step with geosr.pipeline by tests/test_api.py, which compares the two pixel for pixel.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from geosr.consistency import DEFAULT_HALO, RowStream
from geosr.errors import ModelFileError, OptionError, RasterError
from geosr.options import UpscaleOptions
from geosr.plan import auto_panel_width, band_groups, card_tiling
from geosr.predictor import Predictor
from geosr.radiometry import SUPPORTED_DTYPES, Radiometry, compute_radiometry, keep_off_nodata, valid_mask
from geosr.tiling import StripAccumulator, TileGrid, even_splits

log = logging.getLogger("geosr.arrays")

SAMPLE_PIXELS = 1 << 20  # per band, as geosr.raster.read_decimated


def check_nodata(nodata: float | None, dtype: np.dtype) -> float | None:
    """``nodata`` as a float when an array of ``dtype`` can hold it; OptionError otherwise (as GDAL refuses it)."""
    if nodata is None:
        return None
    try:
        value = float(nodata)
    except (TypeError, ValueError):
        raise OptionError(f"nodata {nodata!r}: expected a number", option="nodata") from None
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not (math.isfinite(value) and value.is_integer() and info.min <= value <= info.max):
            raise OptionError(f"nodata {nodata!r}: a {dtype} array cannot hold it; give an integer of "
                              f"{info.min}..{info.max}", option="nodata")
    return value


def invalid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """GDAL's band masks of ``data`` for a nodata value: (b, h, w) uint8, 0 where a pixel equals ``nodata`` (NaN
    matches NaN), 255 elsewhere; None without a nodata value."""
    if nodata is None:
        return None
    if math.isnan(nodata):
        return np.where(np.isnan(data), np.uint8(0), np.uint8(255))
    return np.where(data == data.dtype.type(nodata), np.uint8(0), np.uint8(255))


def decimated(data: np.ndarray, max_pixels: int = SAMPLE_PIXELS) -> np.ndarray:
    """The nearest-neighbour sample of (b, H, W) ``data`` that geosr.raster.read_decimated reads from a raster of
    those pixels: at most ``max_pixels`` per band, GDAL's choice of source pixels (the one under each output centre).
    """
    _, h, w = data.shape
    f = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
    oh, ow = max(1, h // f), max(1, w // f)
    if (oh, ow) == (h, w):
        return data
    rows = ((np.arange(oh) + 0.5) * (h / oh)).astype(np.intp)
    cols = ((np.arange(ow) + 0.5) * (w / ow)).astype(np.intp)
    return data[:, rows][:, :, cols]


def array_radiometry(
    data: np.ndarray, nodata: float | None, value_range: tuple[float, float] | None = None
) -> Radiometry:
    """The global mapping of ``data`` to the model's range, as upscale computes it for a raster of these pixels."""
    sample = decimated(data)
    valid = valid_mask(sample, invalid_mask(sample, nodata))
    if not valid.any():
        log.warning("the array has no valid pixel (all nodata, NaN or extreme values)")
    try:
        return compute_radiometry(sample, valid, str(data.dtype), value_range)
    except ValueError as exc:
        raise OptionError(f"{exc} (value_range)", option="value_range") from None


def upscale_pixels(
    data: np.ndarray,
    predictor: Predictor,
    options: UpscaleOptions = UpscaleOptions(),
    *,
    nodata: float | None = None,
) -> np.ndarray:
    """Super-resolve a (bands, H, W) array; returns (len(bands), s*H, s*W) in ``data``'s dtype.

    options: as for a file; ``bands`` picks and orders bands (1-based), ``aoi`` is refused (crop the array instead),
    the output-file settings (cog, compress, overwrite) do not apply. nodata: the value that marks invalid pixels.
    Raises RasterError for an array geosr cannot super-resolve (shape, dtype), OptionError for a nodata value the
    dtype cannot hold or an ``aoi``, GeosrError/ModelFileError for a tiling that does not fit the model card.
    """
    if options.aoi is not None:
        raise OptionError("an AOI applies to files; crop the array instead", option="aoi")
    if not isinstance(data, np.ndarray) or data.ndim != 3 or min(data.shape) < 1:
        shape = getattr(data, "shape", None)
        raise RasterError(f"expected a (bands, height, width) array with at least one pixel, got shape {shape}")
    dtype = data.dtype
    if dtype.name not in SUPPORTED_DTYPES:
        raise RasterError(f"dtype {dtype} is not supported; geosr upscales {', '.join(SUPPORTED_DTYPES)} arrays")
    nodata = check_nodata(nodata, dtype)
    if options.bands is not None:
        if max(options.bands) > data.shape[0]:
            raise OptionError(f"the array has {data.shape[0]} band{'s' * (data.shape[0] > 1)}; bands takes 1-based "
                              f"indices up to {data.shape[0]}, got {max(options.bands)}", option="bands")
        data = data[[b - 1 for b in options.bands]]

    card = predictor.card
    s = predictor.scale
    tile, overlap = card_tiling(card, predictor.source, options.tile_size, options.overlap)
    if card.config.out_channels != card.config.in_channels:
        raise ModelFileError(f"{predictor.source} maps {card.config.in_channels} bands to "
                             f"{card.config.out_channels}; upscaling needs as many output bands as input bands")
    n, h, w = data.shape
    groups, real = band_groups(n, predictor.channels)
    masks = nodata is not None or dtype.kind == "f"  # as geosr.raster.has_masks for such a raster
    radiometry = array_radiometry(data, nodata, options.value_range)
    fill = nodata if nodata is not None else (float("nan") if dtype.kind == "f" else 0)
    grid = TileGrid(h, w, tile, overlap, s)
    panel_width = options.panel_width or auto_panel_width(n, s, min(tile, h))
    halo = DEFAULT_HALO if options.consistency else 0
    out = np.empty((n, s * h, s * w), dtype)

    def strip_of(y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        """Model values and validity of data[:, y0:y1, x0:x1], as the pipeline's reader (never padded: a tile is at
        most the array)."""
        raw = data[:, y0:y1, x0:x1]
        valid = valid_mask(raw, invalid_mask(raw, nodata))
        return radiometry.to_model(raw, valid), valid

    def finish(values: np.ndarray, lo: int, c0: int) -> None:
        """Blended model values of output rows [lo, lo + h) and columns [c0, c0 + w) -> ``out``."""
        _, rows, cols = values.shape
        if rows == 0:
            return
        block = radiometry.from_model(values)
        keep_off_nodata(block, nodata)
        if masks:
            r0, c0_in = lo // s, c0 // s
            raw = data[:, r0 : (lo + rows - 1) // s + 1, c0_in : (c0 + cols - 1) // s + 1]
            valid = valid_mask(raw, invalid_mask(raw, nodata))
            valid = valid[:, (lo + np.arange(rows)) // s - r0][:, :, (c0 + np.arange(cols)) // s - c0_in]
            if not valid.all():
                block[~valid] = fill
        out[:, lo : lo + rows, c0 : c0 + cols] = block

    length_r, length_c = grid.rows.length, grid.cols.length
    row_lo, row_hi = 0, s * h
    rows = grid.rows.tiles_for(row_lo, row_hi)
    for c0 in range(0, s * w, s * panel_width):  # column panels, as geosr.pipeline._panels
        c1 = min(s * w, c0 + s * panel_width)
        e0, e1 = max(0, c0 - s * halo), min(s * w, c1 + s * halo)
        tiles = grid.cols.tiles_for(e0, e1)
        x0, x1 = grid.cols.extent(tiles[0])[0], grid.cols.extent(tiles[-1])[1]
        acc = StripAccumulator(n, s * length_r, e0, e1, origin=s * grid.rows.starts[rows[0]])
        stream = RowStream(s, halo=halo, device=predictor.device) if options.consistency else None
        next_row = row_lo  # with consistency: the first output row the stream has not returned yet
        for i, r in enumerate(rows):
            y0, y1 = grid.rows.extent(r)
            x, valid = strip_of(y0, y1, x0, x1)
            items = []
            for j, c in enumerate(tiles):
                a, b = grid.cols.extent(c)
                tile_valid = valid[:, :, a - x0 : b - x0]
                items += [(j, k) for k, grp in enumerate(groups) if tile_valid[list(grp[: real[k]])].any()]
            for b0, b1 in even_splits(len(items), -(-len(items) // options.batch_size)):
                batch = items[b0:b1]
                xs = [grid.cols.starts[tiles[j]] - x0 for j, _ in batch]
                batch_tiles = np.stack([x[list(groups[k]), :tile, xj : xj + tile] for (_, k), xj in zip(batch, xs)])
                outs = predictor(batch_tiles)  # (B, C, s*tile, s*tile)
                for (j, k), o in zip(batch, outs):
                    c = tiles[j]
                    acc.add(o[: real[k], : s * length_r, : s * length_c], grid.weight(r, c), s * y0,
                            s * grid.cols.starts[c], bands=list(groups[k][: real[k]]))
            last = i == len(rows) - 1
            stop_row = s * (y0 + length_r) if last else s * grid.rows.starts[rows[i + 1]]
            lo, hi = max(acc.origin, row_lo), min(stop_row, row_hi)
            if hi > lo:
                values = acc.rows(stop_row)[:, lo - acc.origin : hi - acc.origin]
                if stream is not None:
                    a = lo // s - y0
                    b = a + values.shape[1] // s
                    cols = slice(e0 // s - x0, e1 // s - x0)
                    values = stream.push(values, x[:, a:b, cols], valid[:, a:b, cols] if masks else None)
                    lo, next_row = next_row, next_row + values.shape[1]
                finish(values[:, :, c0 - e0 : c1 - e0], lo, c0)
            acc.advance(stop_row)
        if stream is not None:
            finish(stream.finish()[:, :, c0 - e0 : c1 - e0], next_row, c0)
    return out

