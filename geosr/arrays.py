"""Super-resolve an array in memory exactly as ``geosr upscale`` super-resolves a raster holding the same pixels.

``upscale_pixels(data, predictor, options, nodata=...)`` takes a (bands, H, W) numpy array and returns the
(bands, s*H, s*W) array of the same dtype that geosr.pipeline would write for a GeoTIFF with those pixels and that
nodata value: the same global radiometry (computed from the same decimated sample, geosr.radiometry), the same tile
grid (tiles never larger than the array), blend weights, tile batches and panels (geosr.tiling, geosr.plan), the
same band groups for a model with fewer channels than bands (geosr.plan.band_groups), the same consistency
correction (geosr.rowstream.RowStream, pushed the same rows) and the same nodata handling: the nodata value, NaN,
+-Inf and extreme float fills are invalid, never reach valid pixels, and stay nodata (NaN for floats without a nodata
value).

It runs the pipeline's loop (geosr.strips: one column panel at a time, one tile row at a time, a StripAccumulator of
a few tile rows) reading slices of the array instead of windows of a file, so besides the output it holds only the
strips of a panel: a few float32 copies of a tile row, never of the whole array. It runs in the calling thread.

``upscale_in_layout(array, layout, predictor, options, nodata=...)`` is the entry of geosr.upscale_array and
geosr.upscale_dataarray: an array of any layout (geosr.arraylayout: bands first, last or between) is read through a
(bands, H, W) view and its result written in the same layout, without a copy of either; a numpy.ma.MaskedArray's
masked pixels are invalid exactly as nodata pixels are, and its result is a MaskedArray masked where its pixels
lie under masked input pixels.

Kept in step with geosr.pipeline by tests/test_api.py, which compares the two pixel for pixel, and checked on hostile
inputs (band-last, masked, irregular DataArrays) by tests/test_array_inputs.py.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from geosr.arraylayout import BANDS_FIRST, Layout, upscaled_mask
from geosr.errors import ModelFileError, OptionError, RasterError
from geosr.inputrows import InputRows, Strip
from geosr.options import UpscaleOptions
from geosr.plan import auto_panel_width, band_groups, card_tiling
from geosr.predictor import Predictor
from geosr.radiometry import SUPPORTED_DTYPES, Radiometry, compute_radiometry, valid_mask
from geosr.raster import check_range_fits, nearest_source
from geosr.strips import Panel, column_panels, make_strip, run_strips, tile_rows, to_output
from geosr.tiling import TileGrid

log = logging.getLogger("geosr.arrays")

SAMPLE_PIXELS = 1 << 20  # per band, as geosr.raster.read_decimated


def check_nodata(nodata: float | None, dtype: np.dtype) -> float | None:
    """``nodata`` as a float when an array of ``dtype`` can hold it; OptionError otherwise (as GDAL refuses it)."""
    if nodata is None:
        return None
    if isinstance(nodata, (bool, str, bytes)) or not isinstance(nodata, (int, float, np.number)):
        raise OptionError(f"nodata {nodata!r}: expected a number (or None)", option="nodata")
    value = float(nodata)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not (math.isfinite(value) and value.is_integer() and info.min <= value <= info.max):
            raise OptionError(
                f"nodata {nodata!r}: a {dtype} array cannot hold it; give an integer of {info.min}..{info.max}",
                option="nodata",
            )
    return value


def invalid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """GDAL's band masks of ``data`` for a nodata value: (b, h, w) uint8, 0 where a pixel equals ``nodata`` (NaN
    matches NaN), 255 elsewhere; None without a nodata value."""
    if nodata is None:
        return None
    if math.isnan(nodata):
        return np.where(np.isnan(data), np.uint8(0), np.uint8(255))
    return np.where(data == data.dtype.type(nodata), np.uint8(0), np.uint8(255))


def band_masks(data: np.ndarray, nodata: float | None, invalid: np.ndarray | None) -> np.ndarray | None:
    """invalid_mask of ``data`` for ``nodata``, with 0 also where ``invalid`` (bool, as data) is True; None when
    neither marks any pixel."""
    masks = invalid_mask(data, nodata)
    if invalid is None:
        return masks
    if masks is None:
        return np.where(invalid, np.uint8(0), np.uint8(255))
    masks[invalid] = 0
    return masks


def decimated(data: np.ndarray, max_pixels: int = SAMPLE_PIXELS) -> np.ndarray:
    """The nearest-neighbour sample of (b, H, W) ``data`` that geosr.raster.read_decimated reads from a raster of
    those pixels: at most ``max_pixels`` per band, GDAL's choice of source pixels (the one under each output centre).
    """
    _, h, w = data.shape
    f = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
    oh, ow = max(1, h // f), max(1, w // f)
    if (oh, ow) == (h, w):
        return data
    return data[:, nearest_source(h, oh)][:, :, nearest_source(w, ow)]


def array_radiometry(
    data: np.ndarray,
    nodata: float | None,
    value_range: tuple[float, float] | None = None,
    invalid: np.ndarray | None = None,
) -> Radiometry:
    """The global mapping of ``data`` to the model's range, as upscale computes it for a raster of these pixels;
    ``invalid`` (bool, as data): pixels that are invalid besides those of ``nodata``."""
    sample = decimated(data)
    valid = valid_mask(sample, band_masks(sample, nodata, None if invalid is None else decimated(invalid)))
    if not valid.any():
        log.warning("the array has no valid pixel (all nodata, NaN or extreme values)")
    try:
        radiometry = compute_radiometry(sample, valid, str(data.dtype), value_range)
    except ValueError as exc:
        raise OptionError(f"{exc} (value_range)", option="value_range") from None
    if value_range is not None and data.dtype == np.uint8:
        log.warning("uint8 always maps 0..255; value_range is ignored")
    elif value_range is not None and valid.any():  # as geosr.upscale checks a file's
        check_range_fits("the array", sample, valid, value_range, range(1, len(sample) + 1), option="value_range")
    return radiometry


def check_array(shape: tuple[int, ...], dtype: np.dtype, options: UpscaleOptions, nodata: float | None) -> float | None:
    """The checks of upscale_pixels that need no pixel, for a (bands, H, W) array of ``shape`` and ``dtype``;
    returns ``nodata`` as a float (check_nodata). Raises RasterError for a shape or dtype geosr cannot
    super-resolve, OptionError for an ``aoi``, a nodata value the dtype cannot hold or a band that is not there.
    """
    if options.aoi is not None:
        raise OptionError("an AOI applies to files; crop the array instead", option="aoi")
    if len(shape) != 3 or min(shape) < 1:
        raise RasterError(f"expected a (bands, height, width) array with at least one pixel, got shape {shape}")
    if dtype.name not in SUPPORTED_DTYPES:
        hint = "; convert it, e.g. array.astype(np.int32) or np.float32" if dtype.kind in "iuf" else ""
        raise RasterError(f"dtype {dtype} is not supported; geosr upscales {', '.join(SUPPORTED_DTYPES)} arrays{hint}")
    nodata = check_nodata(nodata, dtype)
    if options.bands is not None and max(options.bands) > shape[0]:
        raise OptionError(
            f"the array has {shape[0]} band{'s' * (shape[0] > 1)}; bands takes 1-based indices up to "
            f"{shape[0]}, got {max(options.bands)}",
            option="bands",
        )
    return nodata


def upscale_pixels(
    data: np.ndarray,
    predictor: Predictor,
    options: UpscaleOptions = UpscaleOptions(),
    *,
    nodata: float | None = None,
    invalid: np.ndarray | None = None,
    layout: Layout = BANDS_FIRST,
    radiometry: Radiometry | None = None,
) -> np.ndarray:
    """Super-resolve a (bands, H, W) array (any strides); returns (len(bands), s*H, s*W) in ``data``'s dtype.

    options: as for a file; ``bands`` picks and orders bands (1-based), ``aoi`` is refused (crop the array instead),
    the output-file settings (cog, compress, overwrite) do not apply. nodata: the value that marks invalid pixels.
    invalid: a bool array as ``data``, True for pixels that are invalid as nodata pixels are (a mask). layout: the
    layout of the returned array (``data`` is a (bands, H, W) view of an array of that layout, which the result
    keeps). radiometry: the mapping of the picked bands to the model's range, fixed for a whole array of which
    ``data`` is a block (geosr.lazy); None computes it from ``data`` (array_radiometry). Raises RasterError for an
    array geosr cannot super-resolve (shape, dtype), OptionError for a nodata value the dtype cannot hold or an
    ``aoi``, GeosrError/ModelFileError for a tiling that does not fit the model card, ValueError for a
    ``radiometry`` of other bands or another dtype.
    """
    if not isinstance(data, np.ndarray):
        raise RasterError(
            f"expected a (bands, height, width) array with at least one pixel, got shape {getattr(data, 'shape', None)}"
        )
    nodata = check_array(data.shape, data.dtype, options, nodata)
    dtype = data.dtype
    if invalid is not None:
        if invalid.shape != data.shape:
            raise RasterError(f"a mask of shape {invalid.shape} for an array of shape {data.shape}; they must match")
        invalid = invalid.astype(bool, copy=False)
    if options.bands is not None:
        picked = [b - 1 for b in options.bands]
        data = data[picked]
        invalid = None if invalid is None else invalid[picked]

    card = predictor.card
    s = predictor.scale
    tile, overlap = card_tiling(card, predictor.source, options.tile_size, options.overlap)
    if card.config.out_channels != card.config.in_channels:
        raise ModelFileError(
            f"{predictor.source} maps {card.config.in_channels} bands to "
            f"{card.config.out_channels}; upscaling needs as many output bands as input bands"
        )
    n, h, w = data.shape
    groups, real = band_groups(n, predictor.channels)
    masks = nodata is not None or dtype.kind == "f" or invalid is not None  # as geosr.raster.has_masks
    if radiometry is None:
        radiometry = array_radiometry(data, nodata, options.value_range, invalid)
    elif (radiometry.bands, radiometry.dtype) != (n, dtype.name):
        raise ValueError(f"a radiometry of {radiometry.bands} {radiometry.dtype} bands for {n} {dtype} bands")
    fill = nodata if nodata is not None else (float("nan") if dtype.kind == "f" else 0)
    grid = TileGrid(h, w, tile, overlap, s)
    panel_width = options.panel_width or auto_panel_width(n, s, min(tile, h))  # as geosr.plan.make_plan
    result, out = layout.empty(n, s * h, s * w, dtype)  # out: the (n, s*h, s*w) view of result

    def strip_of(panel: Panel, r: int) -> Strip:
        """The strip of a tile row, as the pipeline's reader reads it (never padded: a tile is at most the array)."""
        y0, y1 = grid.rows.extent(r)
        raw = data[:, y0:y1, panel.x0 : panel.x1]
        held = None if invalid is None else invalid[:, y0:y1, panel.x0 : panel.x1]
        return make_strip(grid, panel, groups, real, radiometry, y0, raw, band_masks(raw, nodata, held), raw[:0])

    def put(values: np.ndarray, r0: int, c0: int, held: InputRows) -> None:
        _, rows, cols = values.shape
        valid = held.under(held.valid, r0, c0, rows, cols) if masks else None
        excess = held.excess_under(r0, c0, rows, cols)
        out[:, r0 : r0 + rows, c0 : c0 + cols] = to_output(values, valid, radiometry, nodata, fill, excess)

    panels = column_panels(grid, (0, s * w), panel_width, options.consistency)
    rows = tile_rows(grid, (0, s * h), options.consistency)
    run_strips(
        grid,
        panels,
        rows,
        strip_of,
        predictor,
        put,
        groups=groups,
        real=real,
        batch_size=options.batch_size,
        consistency=options.consistency,
        masks=masks,
        out_rows=(0, s * h),
    )
    return result


def upscale_in_layout(
    array: np.ndarray,
    layout: Layout,
    predictor: Predictor,
    options: UpscaleOptions = UpscaleOptions(),
    *,
    nodata: float | None = None,
    radiometry: Radiometry | None = None,
) -> np.ndarray:
    """Super-resolve ``array`` of ``layout`` (geosr.arraylayout) into an array of the same layout and dtype.

    A numpy.ma.MaskedArray's masked pixels are invalid as nodata pixels are (they never reach valid pixels) and
    the result is a MaskedArray (of the input's fill_value) masked over each masked pixel's s x s block, whose data
    there is ``nodata`` (NaN for floats, 0 for integers without one); an array with no masked pixel gives exactly
    the values of the same array unmasked. radiometry: as for upscale_pixels. Raises as upscale_pixels.
    """
    masked = isinstance(array, np.ma.MaskedArray)
    data = np.ma.getdata(array) if masked else np.asarray(array)
    mask = np.ma.getmaskarray(array) if masked and np.ma.is_masked(array) else None
    invalid = None if mask is None else layout.bands_first(mask)
    out = upscale_pixels(
        layout.bands_first(data),
        predictor,
        options,
        nodata=nodata,
        invalid=invalid,
        layout=layout,
        radiometry=radiometry,
    )
    if not masked:
        return out
    out_mask = np.ma.nomask if mask is None else upscaled_mask(mask, layout, predictor.scale, options.bands)
    return np.ma.MaskedArray(out, mask=out_mask, fill_value=array.fill_value)  # type: ignore[attr-defined]
