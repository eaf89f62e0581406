"""Super-resolve whole rasters: overlapping tiles in, blended strips out, in bounded memory.

``upscale_raster(src, dst, predictor, options, progress)`` does one file in three stages that overlap in time:

    reader thread   strips of tile rows, one column panel at a time: read, mask, normalise, fill nodata
    this thread     tiles of the strip, batched through the model, blended into a StripAccumulator; finished rows
                    back to the dtype with nodata / alpha / mask
    writer thread   finished rows written (and compressed by GDAL) in whole 512-row blocks

GDAL and numpy release the GIL, so reading and writing run while the model computes. Only a strip of tile rows of at
most ``panel_width`` input columns is ever held, so memory does not grow with the raster (see geosr.tiling for the
grid and the weights). The output goes to a temporary file beside ``dst`` that is renamed on success and deleted on
any error or interruption.

``upscale_batch`` runs many files with one loaded ``Predictor``; a file that fails is reported and the rest go on.
Nothing here draws a progress bar or touches the command line: callers pass a ``progress`` callback.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import rasterio
import rasterio.errors
import torch
from affine import Affine
from rasterio.features import geometry_mask
from rasterio.windows import Window
from shapely.geometry import box
from shapely.prepared import prep

from geosr import __version__
from geosr.aoi import AOI, AOIMissError, aoi_window
from geosr.device import autocast, resolve_device, resolve_precision
from geosr.checkpoint import ModelCard, default_model, load_generator, read_card, resolve_model
from geosr.errors import GeosrError, ModelFileError, RasterError
from geosr.models.generator import Generator
from geosr.radiometry import Radiometry, compute_radiometry, keep_off_nodata, valid_mask
from geosr.raster import (
    BLOCK,
    COMPRESSIONS,
    COPY_DTYPES,
    OUTPUT_SUFFIXES,
    RASTER_SUFFIXES,
    OutputExistsError,
    OutputSpec,
    alpha_bands,
    check_free_space,
    check_input,
    create_output,
    estimate_output_bytes,
    find_rasters,
    finish_output,
    gdal_options,
    georeferencing,
    has_dataset_mask,
    has_masks,
    one_line,
    open_raster,
    output_driver,
    output_spec,
    quiet_georeferencing,
    read_decimated,
    read_window,
    remove_quietly,
    temp_path,
)
from geosr.tiling import StripAccumulator, TileGrid

log = logging.getLogger("geosr.inference")



# --- the model ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Predictor:
    """A loaded generator on a device at a precision: maps batches of model-range tiles to super-resolved tiles.

    It holds no state between calls, so one predictor serves any number of files (and threads).
    """

    model: Generator
    card: ModelCard
    device: torch.device
    precision: str
    source: str

    @property
    def scale(self) -> int:
        return self.card.scale

    @property
    def channels(self) -> int:
        return self.card.config.in_channels

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda" or (self.device.type == "cpu" and self.precision != "fp32")

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(B, C, h, w) float32 in [-1, 1] -> (B, C, s*h, s*w) float32."""
        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.precision):
            y = self.model(x)  # (B, C, s*h, s*w)
        return y.to("cpu", torch.float32, memory_format=torch.contiguous_format).numpy()  # one pass


def load_predictor(
    model: str | os.PathLike | None = None,
    scale: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    local_rank: int | None = None,
) -> Predictor:
    """Load a model file (or the bundled model for ``scale`` when ``model`` is None) for inference.

    Raises ModelFileError for a missing or invalid model file, or one whose scale differs from ``scale``.
    """
    if model is None:
        path = default_model(scale or 4)
    else:
        path = resolve_model(model)
        card = read_card(path)
        if scale is not None and card.scale != scale:
            raise ModelFileError(
                f"{path} is a x{card.scale} model but --scale {scale} asks for x{scale}; pass a x{scale} model "
                f"or --scale {card.scale}"
            )
    dev = resolve_device(device, local_rank)
    prec = resolve_precision(precision, dev)
    net, card = load_generator(path, device=dev)
    if dev.type == "cuda" or (dev.type == "cpu" and prec != "fp32"):
        net = net.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every call has the same tile shape: pick the fastest kernels once
    log.info("model %s (x%d) on %s at %s", path, card.scale, dev, prec)
    return Predictor(net, card, dev, prec, Path(path).name)


# --- options, progress, results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpscaleOptions:
    """How to upscale a raster; every size is in input pixels.

    tile_size, overlap: None takes the model card's; batch_size: tiles per model call; bands: 1-based input bands
    in output order (all when None); aoi: process only this area; value_range: (min, max) mapped to the model's
    range instead of percentiles (non-uint8 rasters); cog: write a Cloud-Optimized GeoTIFF; compress: deflate, zstd,
    lzw or none; overwrite: replace an existing output; panel_width: input columns processed per pass, a multiple of
    512 (None: as many as keep the strip accumulator within ACCUMULATOR_BYTES, at most 2048).
    """

    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 8
    bands: tuple[int, ...] | None = None
    aoi: AOI | None = None
    value_range: tuple[float, float] | None = None
    cog: bool = False
    compress: str = "deflate"
    overwrite: bool = False
    panel_width: int | None = None


ACCUMULATOR_BYTES = 16 * 2**20
MAX_PANEL_WIDTH = 2048


def auto_panel_width(bands: int, scale: int, tile: int) -> int:
    """Input columns per pass such that the float32 strip accumulator (bands x s*tile x s*width) stays within
    ACCUMULATOR_BYTES: a multiple of 512, at least 512 and at most MAX_PANEL_WIDTH.

    Wider panels recompute fewer tiles along panel edges (about one tile column per edge); narrower ones hold less.
    """
    per_column = bands * scale * tile * scale * 4
    width = ACCUMULATOR_BYTES // per_column // 512 * 512
    return int(min(MAX_PANEL_WIDTH, max(512, width)))


@dataclass(frozen=True)
class Progress:
    """Where the current file stands: tiles (x band groups) done of the total, output pixels written of the total."""

    path: Path
    tiles_done: int
    tiles_total: int
    pixels_done: int
    pixels_total: int


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class FileResult:
    """The outcome of one file: status 'done', 'skipped' or 'failed', with a one-line message for the last two."""

    src: Path
    dst: Path
    status: str
    message: str = ""
    seconds: float = 0.0
    pixels: int = 0
    tiles: int = 0


# --- the plan for one file -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    src: Path
    scale: int
    bands: tuple[int, ...]  # output bands, as 1-based input band indices
    colour: tuple[int, ...]  # the bands that go through the model
    alpha: tuple[int, ...]  # the alpha bands (upscaled nearest)
    layout: tuple[tuple[str, int], ...]  # per output band: ("c", index in colour) or ("a", index in alpha)
    groups: tuple[tuple[int, ...], ...]  # per model call: colour indices, padded to the model's channels
    real: tuple[int, ...]  # per group: how many of its indices are real (the rest is padding)
    masks: bool  # read GDAL masks (and check NaN)
    proc: Window  # the processed window (output window + model context), raster pixels
    out: Window  # the output window, raster pixels
    grid: TileGrid  # over ``proc``
    radiometry: Radiometry
    spec: OutputSpec
    nodata: float | None
    fill: float  # value written to invalid pixels
    aoi_px: Any  # the AOI in raster pixels (shapely), or None when the output window lies inside it
    panel_width: int

    @property
    def offset(self) -> tuple[int, int]:
        """(rows, cols) of the output window inside the processed window, input pixels."""
        return int(self.out.row_off - self.proc.row_off), int(self.out.col_off - self.proc.col_off)


def _band_groups(n: int, c: int) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Colour indices in groups of ``c``: one group when n == c, else groups of c with the last padded by repeating."""
    if n == c:
        return (tuple(range(n)),), (n,)
    groups, real = [], []
    for start in range(0, n, c):
        idx = list(range(start, min(start + c, n)))
        real.append(len(idx))
        idx += [idx[-1]] * (c - len(idx))
        groups.append(tuple(idx))
    return tuple(groups), tuple(real)


def _plan(src: Path, dst: Path, predictor: Predictor, options: UpscaleOptions) -> _Plan:
    """Open and check ``src`` and decide everything about the run; raises GeosrError naming the file."""
    card = predictor.card
    s = predictor.scale
    tile = card.tile_size if options.tile_size is None else options.tile_size
    overlap = card.overlap if options.overlap is None else options.overlap
    if not isinstance(tile, int) or tile < 8:
        raise GeosrError(f"tile size {tile!r}: must be at least 8 input pixels (--tile-size)")
    if not isinstance(overlap, int) or not 0 <= overlap <= tile // 2:
        raise GeosrError(f"overlap {overlap!r}: must be 0..{tile // 2} (half the tile size {tile}) (--overlap)")
    if overlap < card.overlap and options.overlap is not None:
        log.warning("%s: overlap %d is below the model card's %d; seams may show", src, overlap, card.overlap)
    if options.batch_size < 1:
        raise GeosrError(f"batch size {options.batch_size}: must be at least 1 (--batch-size)")
    if options.compress not in COMPRESSIONS:
        raise GeosrError(f"compression {options.compress!r}: expected one of {', '.join(COMPRESSIONS)}")
    if options.panel_width is not None and (options.panel_width < 1 or options.panel_width % 512):
        raise GeosrError(f"panel width {options.panel_width}: must be a positive multiple of 512 input pixels")
    cfg = card.config
    if cfg.out_channels != cfg.in_channels:
        raise ModelFileError(
            f"{predictor.source} maps {cfg.in_channels} bands to {cfg.out_channels}; geosr upscale needs a model "
            "with as many output bands as input bands"
        )
    driver = output_driver(dst)
    if driver != "GTiff" and options.cog:
        raise GeosrError(f"{dst}: --cog writes GeoTIFF; name the output .tif")

    with open_raster(src) as ds:
        georef = georeferencing(ds, src)
        bands = tuple(options.bands) if options.bands else tuple(range(1, ds.count + 1))
        dtype = check_input(ds, src, bands)
        if driver != "GTiff" and dtype not in COPY_DTYPES[driver]:
            raise GeosrError(f"{dst}: {driver} cannot hold {dtype} values; name the output .tif")
        alpha = tuple(alpha_bands(ds, bands))
        colour = tuple(b for b in bands if b not in alpha)
        if not colour:
            raise RasterError(f"{src}: bands {list(bands)} are all alpha bands; nothing to super-resolve (--bands)")
        layout = tuple(("a", alpha.index(b)) if b in alpha else ("c", colour.index(b)) for b in bands)
        groups, real = _band_groups(len(colour), predictor.channels)
        if len(groups) > 1 or real[0] < predictor.channels:
            log.info(
                "%s: %d bands through a %d-channel model in %d group(s) %s",
                src, len(colour), predictor.channels, len(groups), _groups_str(colour, groups, real),
            )
        masks = has_masks(ds, colour)

        full = Window(0, 0, ds.width, ds.height)
        aoi_px = None
        if options.aoi is not None:
            out, aoi_px = aoi_window(options.aoi, ds, src)
            if prep(aoi_px).contains(box(out.col_off, out.row_off, out.col_off + out.width, out.row_off + out.height)):
                aoi_px = None  # the whole output window lies inside the AOI
            c0, r0 = max(0, out.col_off - overlap), max(0, out.row_off - overlap)
            c1 = min(ds.width, out.col_off + out.width + overlap)
            r1 = min(ds.height, out.row_off + out.height + overlap)
            proc = Window(c0, r0, c1 - c0, r1 - r0)
        else:
            out = proc = full

        sample, sample_masks = read_decimated(ds, src, colour, masks)
        valid = valid_mask(sample, sample_masks)
        if not valid.any():
            log.warning("%s: no valid pixel found in a decimated read; the raster may be all nodata", src)
        try:
            radiometry = compute_radiometry(sample, valid, dtype, options.value_range)
        except ValueError as exc:
            raise GeosrError(f"{src}: {exc} (--value-range)") from None
        if options.value_range is not None and dtype == "uint8":
            log.info("%s: uint8 always maps 0..255; --value-range is ignored", src)

        nodata = ds.nodata
        internal_mask = nodata is None and not alpha and (has_dataset_mask(ds, colour) or aoi_px is not None)
        fill = nodata if nodata is not None else (float("nan") if np.dtype(dtype).kind == "f" else 0)
        tags = {
            "GEOSR_VERSION": __version__,
            "GEOSR_MODEL": f"{predictor.source} ({card.name}, x{s})",
            "GEOSR_SCALE": str(s),
            "GEOSR_RADIOMETRY": radiometry.describe(),
            "GEOSR_TILING": f"tile {tile}, overlap {overlap} input pixels",
            "GEOSR_PRECISION": predictor.precision,
        }
        if len(groups) > 1 or real[0] < predictor.channels:
            tags["GEOSR_BAND_GROUPS"] = _groups_str(colour, groups, real)
        if alpha:
            tags["GEOSR_ALPHA"] = f"bands {list(alpha)} upscaled nearest, not through the model"
        spec = output_spec(
            ds, src, scale=s, window=out, bands=bands, dtype=dtype, georef=georef, compress=options.compress,
            internal_mask=internal_mask, tags=tags,
        )
    grid = TileGrid(int(proc.height), int(proc.width), tile, overlap, s)
    return _Plan(
        src=src, scale=s, bands=bands, colour=colour, alpha=alpha, layout=layout, groups=groups, real=real,
        masks=masks, proc=proc, out=out, grid=grid, radiometry=radiometry, spec=spec, nodata=nodata, fill=fill,
        aoi_px=aoi_px,
        panel_width=options.panel_width or auto_panel_width(len(colour), s, min(tile, int(proc.height))),
    )


def _groups_str(colour, groups, real) -> str:
    return "; ".join(
        "(" + ", ".join(f"band {colour[i]}" if k < r else "pad" for k, i in enumerate(g)) + ")"
        for g, r in zip(groups, real)
    )


# --- the work units ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Panel:
    """Output columns [c0, c1) (output pixels of the processed window) and the tile columns that reach them."""

    c0: int
    c1: int
    tiles: tuple[int, ...]
    x0: int  # first input column read (processed window)
    x1: int


def _panels(plan: _Plan) -> list[_Panel]:
    s = plan.scale
    dy, dx = plan.offset
    lo, hi = s * dx, s * (dx + int(plan.out.width))
    step = s * plan.panel_width
    panels = []
    for c0 in range(lo, hi, step):
        c1 = min(hi, c0 + step)
        tiles = plan.grid.cols.tiles_for(c0, c1)
        x0 = plan.grid.cols.extent(tiles[0])[0]
        x1 = plan.grid.cols.extent(tiles[-1])[1]
        panels.append(_Panel(c0, c1, tiles, x0, x1))
    return panels


def _tile_rows(plan: _Plan) -> tuple[int, ...]:
    s = plan.scale
    dy, _ = plan.offset
    return plan.grid.rows.tiles_for(s * dy, s * (dy + int(plan.out.height)))


@dataclass
class _Strip:
    """One tile row of one panel, read and normalised (input pixels; columns from panel.x0)."""

    panel: int
    row: int
    y0: int  # first input row (processed window)
    x: np.ndarray  # (n_colour, >= tile, >= tile) float32 model values, nodata filled, padded to the tile size
    valid: np.ndarray  # (n_colour, h, w) bool, not padded
    alpha: np.ndarray  # (n_alpha, h, w) raw alpha values, not padded
    todo: np.ndarray  # (n_tile_cols, n_groups) bool: whether a tile of a group holds any valid pixel


@dataclass
class _Block:
    """Finished output rows [r0, r0 + h) x cols [c0, c0 + w) (output pixels of the output window), ready to write."""

    r0: int
    c0: int
    data: np.ndarray  # (bands, h, w) in the output dtype, in output band order
    mask: np.ndarray | None  # (h, w) uint8 internal mask, when the output has one


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


# --- the three stages ----------------------------------------------------------------------------------------------


def _read_strips(
    ds, plan: _Plan, panels: list[_Panel], rows: tuple[int, ...], q: queue.Queue, stop: threading.Event
) -> None:
    """Reader thread: put a _Strip for every (panel, tile row) read from ``ds``, then _DONE; a _Failed on error."""
    try:
        with rasterio.Env(**gdal_options()):
            g = plan.grid
            tile = g.tile_size
            real = plan.real
            for p, panel in enumerate(panels):
                for r in rows:
                    if stop.is_set():
                        return
                    y0, y1 = g.rows.extent(r)
                    window = Window(
                        plan.proc.col_off + panel.x0, plan.proc.row_off + y0, panel.x1 - panel.x0, y1 - y0
                    )
                    bands = plan.colour + plan.alpha
                    data, m = read_window(ds, plan.src, window, bands, plan.masks)
                    n = len(plan.colour)
                    valid = valid_mask(data[:n], None if m is None else m[:n])
                    x = plan.radiometry.to_model(data[:n], valid)
                    ph, pw = max(0, tile - x.shape[1]), max(0, tile - x.shape[2])
                    if ph or pw:
                        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect")
                    todo = np.zeros((len(panel.tiles), len(plan.groups)), bool)
                    for j, c in enumerate(panel.tiles):
                        a, b = g.cols.extent(c)
                        tile_valid = valid[:, :, a - panel.x0 : b - panel.x0]
                        for k, grp in enumerate(plan.groups):
                            todo[j, k] = tile_valid[list(grp[: real[k]])].any()
                    strip = _Strip(p, r, y0, x, valid, data[n:], todo)
                    if not _put(q, strip, stop):
                        return
        _put(q, _DONE, stop)
    except BaseException as exc:  # handed to the main thread, which raises it
        _put(q, _Failed(exc), stop)


def _finish_rows(
    plan: _Plan, values: np.ndarray, r0: int, c0: int, strip: _Strip, lr_origin: tuple[int, int]
) -> _Block:
    """Blended model values (n_colour, h, w) -> an output block in the output dtype, with nodata, alpha and mask.

    r0, c0: the block's top-left output pixel (output window); lr_origin: the input pixel (row, col), relative to the
    output window, of the strip's first valid/alpha value.
    """
    s = plan.scale
    _, h, w = values.shape
    lr_r, lr_c = lr_origin
    ri = (r0 + np.arange(h)) // s - lr_r
    ci = (c0 + np.arange(w)) // s - lr_c
    valid = strip.valid[:, ri][:, :, ci] if plan.masks else None  # input validity, upsampled nearest
    inside = None
    if plan.aoi_px is not None:
        # output pixels whose centres lie inside the AOI (given in input pixel units)
        t = Affine.translation(plan.out.col_off + c0 / s, plan.out.row_off + r0 / s)
        inside = geometry_mask([plan.aoi_px], (h, w), t @ Affine.scale(1 / s), invert=True)
        valid = np.broadcast_to(inside, (len(plan.colour), h, w)) if valid is None else valid & inside
    out_values = plan.radiometry.from_model(values)
    keep_off_nodata(out_values, plan.nodata)
    if valid is not None and not valid.all():
        out_values[~valid] = plan.fill
    alpha = strip.alpha[:, ri][:, :, ci] if plan.alpha else strip.alpha
    if inside is not None and plan.alpha:
        alpha[:, ~inside] = 0
    if not plan.alpha and [k for _, k in plan.layout] == list(range(len(plan.layout))):
        data = out_values  # the common case: every band through the model, in order
    else:
        data = np.empty((len(plan.layout), h, w), dtype=out_values.dtype)
        for i, (kind, k) in enumerate(plan.layout):
            data[i] = out_values[k] if kind == "c" else alpha[k]
    mask = None
    if plan.spec.internal_mask:
        mask = np.full((h, w), 255, np.uint8) if valid is None else (valid.any(axis=0) * np.uint8(255))
    return _Block(r0, c0, data, mask)


class _Writer:
    """Writer thread: write finished blocks in whole 512-row blocks (GDAL compresses them here).

    Rows are copied into one preallocated block-row buffer (bands x 512 x panel width) that is written whenever it
    reaches a block boundary, so GDAL always receives whole blocks and never caches partial ones.
    """

    def __init__(self, plan: _Plan, dst, stop: threading.Event) -> None:
        self.plan, self.dst, self.stop = plan, dst, stop
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="geosr-writer", daemon=True)
        self.buf: np.ndarray | None = None  # (bands, BLOCK, width) in the output dtype
        self.mask_buf: np.ndarray | None = None  # (BLOCK, width) uint8, for an internal mask
        self.at: tuple[int, int] | None = None  # output (row, col) of the buffer's first row
        self.rows = 0  # rows the buffer holds before the next block boundary
        self.filled = 0

    def put(self, block: _Block) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(block, timeout=0.1)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    raise RuntimeError("the writer thread stopped")

    def close(self) -> None:
        """Write what is left, close the file and raise the writer's error, if any."""
        if self.thread.is_alive():
            while self.thread.is_alive() and self.error is None:
                try:
                    self.q.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            with rasterio.Env(**gdal_options()):
                try:
                    while True:
                        try:
                            item = self.q.get(timeout=0.1)
                        except queue.Empty:
                            if self.stop.is_set():
                                return
                            continue
                        if item is _DONE or self.stop.is_set():
                            break
                        self._add(item)
                    if not self.stop.is_set():
                        self._flush()
                finally:
                    self.dst.close()
        except BaseException as exc:
            self.error = exc

    def _add(self, block: _Block) -> None:
        """Copy a block's rows into the buffer, writing the buffer at each block boundary."""
        data, mask = block.data, block.mask
        h, width = data.shape[1:]
        done = 0
        while done < h:
            row = block.r0 + done
            if self.at is not None and (block.c0 != self.at[1] or row != self.at[0] + self.filled):
                self._flush()  # a new panel starts
            if self.at is None:
                if self.buf is None or self.buf.shape[2] != width:
                    self.buf = np.empty((data.shape[0], BLOCK, width), data.dtype)
                    self.mask_buf = np.empty((BLOCK, width), np.uint8) if mask is not None else None
                self.at, self.rows, self.filled = (row, block.c0), BLOCK - row % BLOCK, 0
            n = min(self.rows - self.filled, h - done)
            self.buf[:, self.filled : self.filled + n] = data[:, done : done + n]
            if mask is not None:
                self.mask_buf[self.filled : self.filled + n] = mask[done : done + n]
            self.filled += n
            done += n
            if self.filled == self.rows:
                self._flush()

    def _flush(self) -> None:
        """Write the buffered rows."""
        if self.at is not None and self.filled:
            r0, c0 = self.at
            n = self.filled
            window = Window(c0, r0, self.buf.shape[2], n)
            self.dst.write(np.ascontiguousarray(self.buf[:, :n]), window=window)
            if self.mask_buf is not None:
                self.dst.write_mask(np.ascontiguousarray(self.mask_buf[:n]), window=window)
        self.at, self.filled = None, 0


def _run(plan: _Plan, tmp: Path, predictor: Predictor, options: UpscaleOptions, progress, dst: Path) -> int:
    """Run the pipeline into ``tmp``; returns the number of tiles run through the model."""
    s = plan.scale
    g = plan.grid
    dy, dx = plan.offset
    oh, ow = s * int(plan.out.height), s * int(plan.out.width)
    panels = _panels(plan)
    rows = _tile_rows(plan)
    n_groups = len(plan.groups)
    total = sum(len(p.tiles) for p in panels) * len(rows) * n_groups
    done = pixels = computed = 0
    tile = g.tile_size
    length_r, length_c = g.rows.length, g.cols.length

    def report() -> None:
        if progress is not None:
            progress(Progress(dst, done, total, pixels, oh * ow))

    report()
    stop = threading.Event()
    strips: queue.Queue = queue.Queue(maxsize=2)
    # Opened here, where rasterio's warning about plain images is silenced (warning filters are not thread-safe);
    # from here on each dataset is used by one thread only.
    with quiet_georeferencing():
        src_ds = rasterio.open(plan.src)
        try:
            dst_ds = create_output(tmp, plan.spec)
        except BaseException:
            src_ds.close()
            raise
    reader = threading.Thread(
        target=_read_strips, args=(src_ds, plan, panels, rows, strips, stop), name="geosr-reader", daemon=True
    )
    writer = _Writer(plan, dst_ds, stop)
    reader.start()
    writer.thread.start()
    try:
        for panel in panels:
            origin = s * g.rows.starts[rows[0]]
            acc = StripAccumulator(len(plan.colour), s * length_r, panel.c0, panel.c1, origin=origin)
            for i, r in enumerate(rows):
                strip = _next_strip(strips, reader)
                # tiles of this strip, batched through the model
                items = [
                    (j, k) for j in range(len(panel.tiles)) for k in range(n_groups) if strip.todo[j, k]
                ]
                done += len(panel.tiles) * n_groups - len(items)
                n_batches = -(-len(items) // options.batch_size)
                for b0, b1 in _even_splits(len(items), n_batches):
                    batch = items[b0:b1]
                    tiles = np.stack(
                        [
                            strip.x[list(plan.groups[k]), :tile, _cols(g, panel, j, tile)]
                            for j, k in batch
                        ]
                    )  # (B, C, tile, tile)
                    outs = predictor(tiles)  # (B, C, s*tile, s*tile)
                    for (j, k), out in zip(batch, outs):
                        c = panel.tiles[j]
                        real = plan.real[k]
                        acc.add(
                            out[:real, : s * length_r, : s * length_c],
                            g.weight(r, c),
                            s * strip.y0,
                            s * g.cols.starts[c],
                            bands=list(plan.groups[k][:real]),
                        )
                    done += len(batch)
                    computed += len(batch)
                    report()
                # rows that no later tile row reaches are finished
                last = i == len(rows) - 1
                stop_row = s * (strip.y0 + length_r) if last else s * g.rows.starts[rows[i + 1]]
                r_from = acc.origin
                lo, hi = max(r_from, s * dy), min(stop_row, s * dy + oh)
                if hi > lo:
                    values = acc.rows(stop_row)[:, lo - r_from : hi - r_from]
                    lr_origin = (strip.y0 - dy, panel.x0 - dx)
                    writer.put(_finish_rows(plan, values, lo - s * dy, panel.c0 - s * dx, strip, lr_origin))
                    pixels += (hi - lo) * (panel.c1 - panel.c0)
                    report()
                acc.advance(stop_row)
        writer.close()
    finally:
        stop.set()
        reader.join(timeout=30)
        writer.thread.join(timeout=60)
        if not reader.is_alive():
            src_ds.close()
        if not writer.thread.is_alive():
            dst_ds.close()
    return computed


def _even_splits(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) of ``parts`` near-equal consecutive chunks of n items (17 in 3: 5, 6, 6)."""
    bounds = [n * k // parts for k in range(parts + 1)] if parts else [0]
    return list(zip(bounds[:-1], bounds[1:]))


def _cols(g: TileGrid, panel: _Panel, j: int, tile: int) -> slice:
    x = g.cols.starts[panel.tiles[j]] - panel.x0
    return slice(x, x + tile)


def _next_strip(q: queue.Queue, reader: threading.Thread) -> _Strip:
    while True:
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            if not reader.is_alive():
                raise RuntimeError("the reader thread stopped early") from None
            continue
        if isinstance(item, _Failed):
            raise item.exc
        if item is _DONE:
            raise RuntimeError("the reader thread ended early")
        return item


# --- one file, many files -------------------------------------------------------------------------------------------


def upscale_raster(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    predictor: Predictor,
    options: UpscaleOptions = UpscaleOptions(),
    progress: ProgressCallback | None = None,
) -> FileResult:
    """Super-resolve ``src`` into ``dst`` (a tiled GeoTIFF, a COG, or PNG / JPEG by its suffix).

    The output has the input's dtype, bands, nodata and metadata, ``predictor.scale`` times as many pixels on each
    axis over the same footprint (or over the AOI's window). Raises GeosrError (RasterError, ModelFileError, ...) with a
    one-line message for anything wrong with the input or the options; leaves no partial output on any error or
    interruption, and never replaces an existing ``dst`` unless ``options.overwrite``.
    """
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if dst.exists() or dst.is_symlink():
        if _same_file(src, dst):
            raise RasterError(f"{dst}: the output is the input; choose another output path")
        if dst.is_dir():
            raise RasterError(f"{dst}: is a folder; give an output file name")
        if not options.overwrite:
            raise RasterError(f"{dst}: already exists; pass --overwrite to replace it (or --skip-existing to keep it)")
    with rasterio.Env(**gdal_options()):
        plan = _plan(src, dst, predictor, options)
        dst.parent.mkdir(parents=True, exist_ok=True)
        check_free_space(dst, estimate_output_bytes(plan.spec, options.cog))
        tmp = temp_path(dst)
        try:
            tiles = _run(plan, tmp, predictor, options, progress, dst)
            georeferenced = "crs" in plan.spec.profile or plan.spec.gcps is not None
            finish_output(tmp, dst, cog=options.cog, compress=options.compress, georeferenced=georeferenced,
                          overwrite=options.overwrite)
        except rasterio.errors.RasterioError as exc:
            raise RasterError(f"{src}: {one_line(exc)}") from None
        finally:
            remove_quietly(tmp)
    p = plan.spec.profile
    return FileResult(src, dst, "done", "", time.perf_counter() - t0, p["width"] * p["height"], tiles)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def output_name(rel: Path) -> Path:
    """The output's relative path for an input's: the same, with a .tif suffix unless TIFF, PNG or JPEG."""
    return rel if rel.suffix.lower() in OUTPUT_SUFFIXES else rel.with_suffix(".tif")


def plan_outputs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(input, output) pairs, sorted by input.

    One input file: ``output`` is the output file (or a folder that exists, to hold it). Several inputs or a folder
    (searched recursively for rasters): ``output`` is a folder, and the inputs' layout below their common folder is
    kept. Raises GeosrError for missing inputs, no rasters found, an output that is an input or two inputs that would
    share an output.
    """
    paths = [Path(p) for p in inputs]
    out = Path(output)
    if not paths:
        raise GeosrError("no input given")
    for p in paths:
        if not p.exists():
            raise RasterError(f"{p}: no such file or folder")
    if len(paths) == 1 and paths[0].is_file():
        target = out / output_name(Path(paths[0].name)) if out.is_dir() else out
        if _same_file(paths[0], target) or paths[0].absolute() == target.absolute():
            raise RasterError(f"{target}: the output is the input; choose another output path")
        return [(paths[0], target)]
    if out.exists() and not out.is_dir():
        raise GeosrError(f"{out}: is a file; with several inputs or a folder, -o names an output folder")
    for p in paths:
        if p.is_dir() and (_same_file(p, out) or p.absolute() == out.absolute()):
            raise GeosrError(f"{out}: the output folder is the input folder; choose another output folder")
    if len(paths) == 1:
        base = paths[0].absolute()
    else:
        base = Path(os.path.commonpath([p.absolute().parent for p in paths]))
    pairs: dict[Path, Path] = {}
    for p in paths:
        files = find_rasters(p, exclude=[out]) if p.is_dir() else [p]
        if p.is_dir() and not files:
            log.warning("%s: no rasters found (%s)", p, ", ".join(RASTER_SUFFIXES))
        for f in files:
            target = out / output_name(f.absolute().relative_to(base))
            if target in pairs.values():
                other = next(k for k, v in pairs.items() if v == target)
                raise GeosrError(f"{f} and {other} would both be written to {target}; rename one of them")
            if _same_file(f, target):
                raise RasterError(f"{target}: the output is the input; choose another output folder")
            pairs[f] = target
    if not pairs:
        raise GeosrError(f"no rasters found in {', '.join(map(str, paths))}")
    return sorted(pairs.items())


def distributed_rank() -> tuple[int, int, int | None]:
    """(rank, world size, local rank) from torchrun's RANK / WORLD_SIZE / LOCAL_RANK; (0, 1, None) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = os.environ.get("LOCAL_RANK")
        local_rank = int(local) if local is not None else None
    except ValueError:
        raise GeosrError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise GeosrError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return rank, world, local_rank


@dataclass
class BatchSummary:
    """What a batch did."""

    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def megapixels_per_second(self) -> float:
        mp = sum(r.pixels for r in self.results if r.status == "done") / 1e6
        return mp / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.count('done')} done, {self.count('skipped')} skipped, {self.count('failed')} failed in "
            f"{self.seconds:.1f} s ({self.megapixels_per_second:.2f} output megapixels/s)"
        )


def upscale_batch(
    pairs: Sequence[tuple[Path, Path]],
    predictor: Predictor,
    options: UpscaleOptions = UpscaleOptions(),
    *,
    skip_existing: bool = False,
    progress: ProgressCallback | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> BatchSummary:
    """Upscale every (input, output) pair in order with one predictor; failures are recorded, never raised.

    skip_existing: leave outputs that exist alone (resumes an interrupted batch). An AOI that misses a file skips it.
    KeyboardInterrupt stops the batch (the file in progress leaves nothing behind).
    """
    summary = BatchSummary()
    t0 = time.perf_counter()
    for src, dst in pairs:
        if skip_existing and dst.exists():
            result = FileResult(src, dst, "skipped", f"{dst}: exists (--skip-existing)")
        else:
            t1 = time.perf_counter()
            try:
                result = upscale_raster(src, dst, predictor, options, progress)
            except AOIMissError as exc:
                result = FileResult(src, dst, "skipped", str(exc), time.perf_counter() - t1)
            except OutputExistsError as exc:  # another process finished this output meanwhile
                status = "skipped" if skip_existing else "failed"
                result = FileResult(src, dst, status, str(exc), time.perf_counter() - t1)
            except GeosrError as exc:
                result = FileResult(src, dst, "failed", str(exc), time.perf_counter() - t1)
            except Exception as exc:  # an unexpected failure in one file must not stop the batch
                log.debug("%s failed", src, exc_info=True)
                result = FileResult(
                    src, dst, "failed", f"{src}: {type(exc).__name__}: {one_line(exc)}", time.perf_counter() - t1
                )
        summary.results.append(result)
        summary.seconds = time.perf_counter() - t0
        if on_result is not None:
            on_result(result)
    summary.seconds = time.perf_counter() - t0
    return summary
