"""Super-resolve a Dask array lazily, block by block, with the pixels of the eager path: geosr.upscale_dataarray on
a Dask-backed DataArray (``rioxarray.open_rasterio(path, chunks=...)``), on one machine or a ``dask.distributed``
cluster.

``upscale_lazy(data, layout, predictor, options, nodata=..., radiometry=..., model=...)`` returns a Dask array of the
result without computing a pixel. The pieces, in the order they are decided:

- The radiometry is fixed once for the whole array (``fixed_radiometry``): the same decimated sample and statistics
  as geosr.arrays.array_radiometry (the sample is the one thing computed up front; a uint8 array without a nodata
  value needs none), handed to every block, which never computes its own. Two chunks of one scene are mapped alike.
- The bands go together through the model: the band axis is one chunk. Along y and x every block is extended
  (``dask.array.map_overlap``, no padding at the array's edges) by ``depth`` input pixels, enough to hold every tile
  of the whole array's tile grid (geosr.tiling.TileGrid, the card's tile size and overlap) that reaches the block or
  the consistency correction's halo around it (geosr.consistency.DEFAULT_HALO input pixels), as geosr.strips runs
  them: at most a tile plus the halo. Chunks shorter than that are merged with a neighbour first.
- A block runs the eager path itself (geosr.arrays.upscale_pixels, the fixed radiometry) on the part of its extension
  that those tiles cover, and keeps the ``scale`` x ``scale`` output pixels of its own input pixels. Its tiles are
  the whole array's tiles (the same grid restricted to them), blended with the same weights where it keeps pixels:
  the models' attention makes a tile's output depend on the whole tile, so the tiles, not only their overlap, must
  be the eager path's. What differs is float rounding (tiles batched otherwise) and the consistency correction's
  context beyond the halo, whose effect falls about three times per input pixel (geosr.consistency).
- The model reaches the workers as a ``ModelRef`` (the model file, device, precision, self-ensemble and SHA-256),
  loaded once per process (``worker_predictor``, cached); no torch module is pickled into the graph.

Measured against the eager result (uint8, the consistency correction on): tests/test_lazy.py's 3 x 96 x 160 in
chunks of 48 x 64 on two worker processes (the tiny x2 test model, tile 32, overlap 8): equal; over six such scenes
and two chunkings, at most 1 grey level, at 4 of 2.2 million pixels; degan-x4 on 3 x 160 x 200 pixels of
examples/data/RGB.byte.tif in chunks of 80 x 100: at most 1 grey level, at 3 of 1.5 million pixels. Without the
consistency correction the tiny model's results were equal. Blocks that ran their own tile grid over an extension
of only the overlap and the halo differed by up to 31 grey levels (degan-x4), hence the whole array's tiles.

Sizes are input pixels unless named output pixels (``scale`` times as many).
"""

from __future__ import annotations

import functools
import sys
import threading
import weakref
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from geosr.arraylayout import Layout
from geosr.arrays import array_radiometry, check_array, decimated, upscale_pixels
from geosr.consistency import DEFAULT_HALO
from geosr.errors import ModelFileError, OptionError
from geosr.options import UpscaleOptions
from geosr.plan import card_tiling
from geosr.predictor import Predictor, load_predictor
from geosr.radiometry import Radiometry
from geosr.tiling import AxisTiling

TOKEN = "geosr-upscale"  # the prefix of the result's Dask keys


def is_dask_array(data: Any) -> bool:
    """Whether ``data`` is a Dask array (False without Dask: then nothing is one)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(data, module.Array)


# --- the model on the workers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """What a worker process needs to load the model itself: the model file, device, precision (geosr.device's
    names, resolved by each worker), self-ensemble, and the SHA-256 the file must have (None: unchecked)."""

    path: str
    device: str
    precision: str
    self_ensemble: bool
    sha256: str | None


_HELD: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # the caller's own predictors, by their ModelRef
_LOADING = threading.Lock()  # one load per process, however many threads ask at once


def model_ref(predictor: Predictor, device: str, precision: str, *, loaded: bool) -> ModelRef:
    """The ModelRef of ``predictor``: its own device and precision when the caller ``loaded`` it (geosr.load_model),
    else ``device`` and ``precision`` as asked (each worker resolves "auto" to its own device). Raises
    ModelFileError for a model built in memory, which has no file to load."""
    if predictor.path is None:
        raise ModelFileError(
            f"{predictor.source} was built in memory; a Dask array's blocks load the model from its "
            "file: save it (geosr.checkpoint.save_generator) and pass the file"
        )
    if loaded:
        device, precision = str(predictor.device), predictor.precision
    ref = ModelRef(predictor.path, device, precision, predictor.self_ensemble, predictor.model_sha256)
    _HELD[ref] = predictor  # blocks computed in this process use it rather than a second copy
    return ref


def worker_predictor(ref: ModelRef) -> Predictor:
    """The model of ``ref`` in this process: the caller's where it lives here, else loaded once per process.
    Raises ModelFileError where the file is not the one the caller loaded (another SHA-256)."""
    held = _HELD.get(ref)
    if held is not None:
        return held
    with _LOADING:
        return _load(ref)


@functools.lru_cache(maxsize=4)
def _load(ref: ModelRef) -> Predictor:
    predictor = load_predictor(ref.path, None, ref.device, ref.precision, self_ensemble=ref.self_ensemble)
    if ref.sha256 is not None and predictor.model_sha256 != ref.sha256:
        raise ModelFileError(
            f"{ref.path} on this worker is not the model file the caller loaded (SHA-256 "
            f"{predictor.model_sha256} against {ref.sha256}); give every worker the same file"
        )
    return predictor


# --- the radiometry -------------------------------------------------------------------------------------------------


def fixed_radiometry(data: Any, options: UpscaleOptions, nodata: float | None) -> Radiometry:
    """The radiometry upscale_pixels computes for a (bands, H, W) array (numpy or Dask) and ``options.bands``:
    array_radiometry of the same decimated sample, computed here for a Dask array (only the sample).

    A Dask uint8 array without a nodata value computes nothing: uint8 maps 0..255 whatever its values, and its fill
    (the mean of the sample) would serve invalid pixels only, of which it has none. Raises as check_array.
    """
    nodata = check_array(tuple(data.shape), np.dtype(data.dtype), options, nodata)
    picked = data if options.bands is None else data[[b - 1 for b in options.bands]]
    if is_dask_array(data) and picked.dtype == np.uint8 and nodata is None:
        sample = np.zeros((picked.shape[0], 1, 1), np.uint8)  # never read: only the fill depends on it
    else:
        sample = np.asarray(decimated(picked))  # a Dask array's sample is computed here, once
    return array_radiometry(sample, nodata, options.value_range)


# --- blocks ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisBlocks:
    """The blocks along y or x: their bounds, the part of each extended block a block runs (the whole array's tiles
    that reach it or its halo), and the extension ``depth``; input pixels."""

    bounds: tuple[int, ...]  # the chunk bounds, 0 .. size
    runs: tuple[tuple[int, int], ...]  # per block: [start, stop) run through upscale_pixels
    depth: int

    def extended(self, i: int) -> tuple[int, int]:
        """[start, stop) of block i with map_overlap's extension (none beyond the array)."""
        return max(0, self.bounds[i] - self.depth), min(self.bounds[-1], self.bounds[i + 1] + self.depth)


def _runs(axis: AxisTiling, bounds: tuple[int, ...], halo: int) -> tuple[tuple[int, int], ...]:
    s, out = axis.scale, []
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        tiles = axis.tiles_for(s * max(0, b0 - halo), s * min(axis.size, b1 + halo))
        out.append((axis.extent(tiles[0])[0], axis.extent(tiles[-1])[1]))
    return tuple(out)


def _merged(chunks: tuple[int, ...], least: int) -> tuple[int, ...]:
    """``chunks`` with every chunk shorter than ``least`` merged into a neighbour (a single chunk stays)."""
    out: list[int] = []
    for c in chunks:
        if out and out[-1] < least:
            out[-1] += c
        else:
            out.append(c)
    if len(out) > 1 and out[-1] < least:
        last = out.pop()
        out[-1] += last
    return tuple(out)


def axis_blocks(axis: AxisTiling, chunks: tuple[int, ...], halo: int) -> AxisBlocks:
    """The blocks of an axis tiled as ``axis`` (the whole array's tiles) in ``chunks``, merged where a chunk is
    shorter than the extension its neighbours need (map_overlap takes an extension of at most a chunk)."""
    for attempt in (chunks, _merged(chunks, axis.tile + halo)):
        bounds = tuple(int(b) for b in np.cumsum((0, *attempt)))
        runs = _runs(axis, bounds, halo)
        depth = max(max(b0 - r0, r1 - b1) for (r0, r1), b0, b1 in zip(runs, bounds[:-1], bounds[1:]))
        if len(attempt) == 1 or depth <= min(attempt):
            return AxisBlocks(bounds, runs, depth)
    raise AssertionError(f"chunks {chunks} merged to at least {axis.tile + halo} still need an extension of {depth}")


@dataclass(frozen=True)
class BlockJob:
    """Everything a block needs, small and picklable: the model's file, the options (tile size and overlap
    settled), the nodata value, the fixed radiometry, the blocks along y and x and the scale."""

    model: ModelRef
    options: UpscaleOptions
    nodata: float | None
    radiometry: Radiometry
    rows: AxisBlocks
    cols: AxisBlocks
    scale: int


def upscale_block(block: np.ndarray, job: BlockJob, block_id: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """One block of the result: (bands, s*h, s*w) output pixels of a (bands, H, W) extended input block (the
    block ``block_id`` of map_overlap's extended array), by upscale_pixels on the tiles that reach it."""
    _, i, j = block_id
    (ey0, ey1), (ex0, ex1) = job.rows.extended(i), job.cols.extended(j)
    if block.shape[1:] != (ey1 - ey0, ex1 - ex0):
        raise AssertionError(f"block {block_id} of shape {block.shape}, expected rows {ey0}..{ey1}, cols {ex0}..{ex1}")
    (ry0, ry1), (rx0, rx1) = job.rows.runs[i], job.cols.runs[j]
    part = np.asarray(block[:, ry0 - ey0 : ry1 - ey0, rx0 - ex0 : rx1 - ex0])
    out = upscale_pixels(part, worker_predictor(job.model), job.options, nodata=job.nodata, radiometry=job.radiometry)
    s = job.scale
    y0, y1, x0, x1 = job.rows.bounds[i], job.rows.bounds[i + 1], job.cols.bounds[j], job.cols.bounds[j + 1]
    return np.ascontiguousarray(out[:, s * (y0 - ry0) : s * (y1 - ry0), s * (x0 - rx0) : s * (x1 - rx0)])


def upscale_lazy(
    data: Any,
    layout: Layout,
    predictor: Predictor,
    options: UpscaleOptions,
    *,
    nodata: float | None,
    radiometry: Radiometry,
    model: ModelRef,
) -> Any:
    """The lazy result of a Dask array ``data`` of ``layout`` (geosr.arraylayout): a Dask array of the same layout
    and dtype, ``predictor.scale`` times as many rows and columns, whose blocks load the model from ``model``.

    nodata: checked (check_array); radiometry: fixed_radiometry of ``data``; predictor: the model as the caller
    loaded it (its card gives the tiles). Computes nothing. Raises OptionError for several bands of a 2-D array,
    OptionError/ModelFileError as upscale_pixels for a tiling that does not fit the model card or a model that maps
    its bands to another number of bands.
    """
    import dask.array as dsa

    card, s = predictor.card, predictor.scale
    tile, overlap = card_tiling(card, predictor.source, options.tile_size, options.overlap)
    if card.config.out_channels != card.config.in_channels:
        raise ModelFileError(
            f"{predictor.source} maps {card.config.in_channels} bands to "
            f"{card.config.out_channels}; upscaling needs as many output bands as input bands"
        )
    order = list(layout.order)
    x = data if order == sorted(order) else data.transpose(order)
    x = x[None] if layout.band is None else x
    bands = len(options.bands) if options.bands is not None else x.shape[0]
    if layout.band is None and bands != 1:
        raise OptionError(f"a 2-D array is one band; bands takes [1], not {bands} bands", option="bands")
    halo = DEFAULT_HALO if options.consistency else 0
    _, h, w = x.shape
    rows = axis_blocks(AxisTiling(h, tile, overlap, s), x.chunks[1], halo)
    cols = axis_blocks(AxisTiling(w, tile, overlap, s), x.chunks[2], halo)
    x = x.rechunk((-1, np.diff(rows.bounds).tolist(), np.diff(cols.bounds).tolist()))
    job = BlockJob(model, replace(options, tile_size=tile, overlap=overlap), nodata, radiometry, rows, cols, s)
    out = dsa.map_overlap(
        upscale_block,
        x,
        depth={0: 0, 1: rows.depth, 2: cols.depth},
        boundary="none",
        trim=False,
        allow_rechunk=False,
        dtype=x.dtype,
        meta=np.empty((0, 0, 0), x.dtype),
        token=TOKEN,
        job=job,
        chunks=((bands,), tuple(s * c for c in x.chunks[1]), tuple(s * c for c in x.chunks[2])),
    )
    out = out[0] if layout.band is None else out
    return out if order == sorted(order) else out.transpose(np.argsort(order).tolist())
