"""The pipeline that super-resolves one raster in bounded memory: overlapping tiles in, blended strips out.

``upscale_raster(src, dst, predictor, options, progress)`` checks the destination, opens the source once, makes the
plan (geosr.plan) and runs it in three stages that overlap in time:

    reader thread   strips of tile rows, one column panel at a time: read, mask, normalise, fill nodata
    this thread     tiles of the strip, batched through the model, blended into a StripAccumulator; finished rows
                    corrected for consistency with the input (geosr.consistency, unless switched off), then back
                    to the dtype with nodata / alpha / mask
    writer thread   finished rows written (and compressed by GDAL) in whole 512-row blocks

GDAL and numpy release the GIL, so reading and writing run while the model computes. Only a strip of tile rows of at
most ``plan.panel_width`` input columns is ever held, so memory does not grow with the raster (see geosr.tiling for
the grid and the weights). The output goes to a temporary file beside ``dst`` that takes its name once complete and
is deleted on any error or interruption. Nothing here draws a progress bar: callers pass a ``progress`` callback.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
from affine import Affine
from rasterio.features import geometry_mask
from rasterio.windows import Window

from geosr.consistency import DEFAULT_HALO, RowStream
from geosr.errors import NotEnoughMemory
from geosr.options import UpscaleOptions
from geosr.plan import Plan, make_plan
from geosr.predictor import Predictor
from geosr.radiometry import keep_off_nodata, valid_mask
from geosr.raster import (
    BLOCK,
    READ_ERRORS,
    check_free_space,
    check_output_file,
    compression_sample,
    create_output,
    estimate_output_bytes,
    finish_output,
    gdal_message,
    gdal_options,
    open_raster,
    output_driver,
    read_window,
    remove_quietly,
    remove_stale_outputs,
    temp_path,
    write_failure,
)
from geosr.tiling import StripAccumulator, TileGrid

log = logging.getLogger("geosr.pipeline")


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
    """The outcome of one file: status 'done', 'skipped' or 'failed', with a one-line message for the last two;
    reason: why a file was skipped, 'exists' (--skip-existing) or 'aoi' (the area of interest misses it)."""

    src: Path
    dst: Path
    status: str
    message: str = ""
    seconds: float = 0.0
    pixels: int = 0
    tiles: int = 0
    reason: str = ""


# --- the work units ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Panel:
    """Output columns [c0, c1) (output pixels of the processed window) and the tile columns that reach them.

    [e0, e1) are the columns blended: [c0, c1) and, with consistency, its halo on each side (within the processed
    window), which the correction needs as context.
    """

    c0: int
    c1: int
    tiles: tuple[int, ...]
    x0: int  # first input column read (processed window)
    x1: int
    e0: int
    e1: int


def _halo(plan: Plan) -> int:
    """Input pixels of context the consistency correction needs on each side of what it writes (0 without it)."""
    return DEFAULT_HALO if plan.consistency else 0


def _panels(plan: Plan) -> list[_Panel]:
    s = plan.scale
    dy, dx = plan.offset
    lo, hi = s * dx, s * (dx + int(plan.out.width))
    halo = s * _halo(plan)
    step = s * plan.panel_width
    panels = []
    for c0 in range(lo, hi, step):
        c1 = min(hi, c0 + step)
        e0, e1 = max(0, c0 - halo), min(s * int(plan.proc.width), c1 + halo)
        tiles = plan.grid.cols.tiles_for(e0, e1)
        x0 = plan.grid.cols.extent(tiles[0])[0]
        x1 = plan.grid.cols.extent(tiles[-1])[1]
        panels.append(_Panel(c0, c1, tiles, x0, x1, e0, e1))
    return panels


def _row_range(plan: Plan) -> tuple[int, int]:
    """Output rows [lo, hi) of the processed window that are blended: the output window's and their halo."""
    s = plan.scale
    dy, _ = plan.offset
    halo = s * _halo(plan)
    return max(0, s * dy - halo), min(s * int(plan.proc.height), s * (dy + int(plan.out.height)) + halo)


def _tile_rows(plan: Plan) -> tuple[int, ...]:
    return plan.grid.rows.tiles_for(*_row_range(plan))


@dataclass
class _Strip:
    """One tile row of one panel, read and normalised (input pixels; columns from panel.x0)."""

    panel: int
    row: int
    y0: int  # first input row (processed window)
    x: np.ndarray  # (n_colour, h, w) float32 model values, nodata filled; a tile is at most h x w (never padded)
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
    ds, plan: Plan, panels: list[_Panel], rows: tuple[int, ...], q: queue.Queue, stop: threading.Event
) -> None:
    """Reader thread: put a _Strip for every (panel, tile row) read from ``ds``, then _DONE; a _Failed on error."""
    try:
        with rasterio.Env(**gdal_options()):
            g = plan.grid
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
                    x = plan.radiometry.to_model(data[:n], valid)  # no padding: tiles never exceed the raster
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
    plan: Plan, values: np.ndarray, r0: int, c0: int, in_valid: np.ndarray, in_alpha: np.ndarray,
    lr_origin: tuple[int, int],
) -> _Block:
    """Blended model values (n_colour, h, w) -> an output block in the output dtype, with nodata, alpha and mask.

    r0, c0: the block's top-left output pixel (output window); in_valid, in_alpha: the input rows' validity
    (n_colour, rows, cols) and alpha values (n_alpha, rows, cols) that lie under the block; lr_origin: the input
    pixel (row, col), relative to the output window, of their first value.
    """
    s = plan.scale
    _, h, w = values.shape
    lr_r, lr_c = lr_origin
    ri = (r0 + np.arange(h)) // s - lr_r
    ci = (c0 + np.arange(w)) // s - lr_c
    valid = in_valid[:, ri][:, :, ci] if plan.masks else None  # input validity, upsampled nearest
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
    alpha = in_alpha[:, ri][:, :, ci] if plan.alpha else in_alpha
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


class _InputRows:
    """A panel's input rows (validity, alpha) kept until the output rows over them are finished.

    Without consistency each strip's rows are finished with the strip; with it, output rows are finished up to
    ``halo`` input rows later, when they may lie under an earlier strip. Rows are in the processed window.
    """

    def __init__(self) -> None:
        self.start = 0  # first row held
        self.valid: np.ndarray | None = None  # (n_colour, rows, cols)
        self.alpha: np.ndarray | None = None  # (n_alpha, rows, cols)

    def add(self, strip: _Strip, length: int) -> None:
        """Hold the strip's rows from the first one not held yet (strips overlap)."""
        v, a = strip.valid[:, :length], strip.alpha[:, :length]
        if self.valid is None:
            self.start, self.valid, self.alpha = strip.y0, v, a
            return
        skip = self.start + self.valid.shape[1] - strip.y0  # rows of the strip already held
        self.valid = np.concatenate([self.valid, v[:, skip:]], axis=1)
        self.alpha = np.concatenate([self.alpha, a[:, skip:]], axis=1)

    def drop_before(self, row: int) -> None:
        k = row - self.start
        if self.valid is not None and k > 0:
            self.valid, self.alpha = self.valid[:, k:], self.alpha[:, k:]
            self.start = row


class _Consistency:
    """The consistency stage of one panel: blended rows in, corrected rows out (geosr.consistency.RowStream).

    Rows of [e0, e1) come in with the input values (model range, nodata filled) and validity under them; rows come
    out, in order, from the first row pushed, once ``halo`` input rows below them have been pushed.
    """

    def __init__(self, plan: Plan, panel: _Panel, first_row: int, device) -> None:
        self.stream = RowStream(plan.scale, halo=_halo(plan), device=device)  # the model's device
        self.next_row = first_row  # output row (processed window) of the next row that comes out
        self.cols = slice(panel.e0 // plan.scale - panel.x0, panel.e1 // plan.scale - panel.x0)
        self.scale = plan.scale
        self.masks = plan.masks

    def push(self, values: np.ndarray, lo: int, strip: _Strip) -> tuple[int, np.ndarray]:
        """Blended rows [lo, lo + h) -> (first row, corrected rows) now final."""
        s = self.scale
        a = lo // s - strip.y0
        b = a + values.shape[1] // s
        x = strip.x[:, a:b, self.cols]
        valid = strip.valid[:, a:b, self.cols] if self.masks else None
        return self._out(self.stream.push(values, x, valid))

    def finish(self) -> tuple[int, np.ndarray]:
        return self._out(self.stream.finish())

    def _out(self, rows: np.ndarray) -> tuple[int, np.ndarray]:
        first = self.next_row
        self.next_row += rows.shape[1]
        return first, rows


class _Writer:
    """Writer thread: write finished blocks in whole 512-row blocks (GDAL compresses them here).

    Rows are copied into one preallocated block-row buffer (bands x 512 x panel width) that is written whenever it
    reaches a block boundary, so GDAL always receives whole blocks and never caches partial ones.
    """

    def __init__(self, plan: Plan, dst, stop: threading.Event) -> None:
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
        except READ_ERRORS as exc:  # a write failed (a full disk): the output is named, not its temporary file
            self.error = write_failure(self.plan.dst, gdal_message(exc))
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


def _execute(plan: Plan, ds, tmp: Path, predictor: Predictor, progress: ProgressCallback | None) -> int:
    """Run the plan from the open source ``ds`` into a new GeoTIFF ``tmp``; returns the tiles run through the model.

    From here on each dataset is used by one thread only: ``ds`` by the reader, the output by the writer. ``ds`` is
    left open for the caller, who closes it once this returns (never under a reader that is still reading).
    """
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
            progress(Progress(plan.dst, done, total, pixels, oh * ow))

    report()
    stop = threading.Event()
    strips: queue.Queue = queue.Queue(maxsize=2)
    dst_ds = create_output(tmp, plan.spec)
    reader = threading.Thread(
        target=_read_strips, args=(ds, plan, panels, rows, strips, stop), name="geosr-reader", daemon=True
    )
    writer = _Writer(plan, dst_ds, stop)
    reader.start()
    writer.thread.start()
    row_lo, row_hi = _row_range(plan)  # output rows blended (with consistency: the written ones and their halo)

    def finish(panel: _Panel, values: np.ndarray, lo: int, held: _InputRows) -> None:
        """Write blended (and corrected) rows [lo, lo + h) x [e0, e1) of the processed window, cropped to output."""
        nonlocal pixels
        a, b = max(lo, s * dy), min(lo + values.shape[1], s * dy + oh)
        if b <= a:
            return
        block = values[:, a - lo : b - lo, panel.c0 - panel.e0 : panel.c1 - panel.e0]
        lr_origin = (held.start - dy, panel.x0 - dx)
        writer.put(_finish_rows(plan, block, a - s * dy, panel.c0 - s * dx, held.valid, held.alpha, lr_origin))
        pixels += (b - a) * (panel.c1 - panel.c0)
        report()

    try:
        for panel in panels:
            origin = s * g.rows.starts[rows[0]]
            acc = StripAccumulator(len(plan.colour), s * length_r, panel.e0, panel.e1, origin=origin)
            held = _InputRows()
            stage = _Consistency(plan, panel, row_lo, predictor.device) if plan.consistency else None
            for i, r in enumerate(rows):
                strip = _next_strip(strips, reader)
                held.add(strip, length_r)
                # tiles of this strip, batched through the model
                items = [
                    (j, k) for j in range(len(panel.tiles)) for k in range(n_groups) if strip.todo[j, k]
                ]
                done += len(panel.tiles) * n_groups - len(items)
                n_batches = -(-len(items) // plan.batch_size)
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
                # rows that no later tile row reaches are blended
                last = i == len(rows) - 1
                stop_row = s * (strip.y0 + length_r) if last else s * g.rows.starts[rows[i + 1]]
                r_from = acc.origin
                lo, hi = max(r_from, row_lo), min(stop_row, row_hi)
                if hi > lo:
                    values = acc.rows(stop_row)[:, lo - r_from : hi - r_from]
                    if stage is not None:
                        lo, values = stage.push(values, lo, strip)  # the rows now final, ``halo`` rows behind
                    finish(panel, values, lo, held)
                acc.advance(stop_row)
                if stage is None:
                    held.drop_before(stop_row // s)
                else:
                    held.drop_before(stage.next_row // s)
            if stage is not None:
                lo, values = stage.finish()
                finish(panel, values, lo, held)
        writer.close()
    finally:
        stop.set()
        reader.join(timeout=30)
        if reader.is_alive():  # a read that hangs (a stalled network disk): the caller must not close ds under it
            log.warning("%s: waiting for a read to finish before closing the file", plan.src)
            reader.join()
        writer.thread.join(timeout=60)
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


# --- one file -------------------------------------------------------------------------------------------------------


def upscale_raster(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    predictor: Predictor,
    options: UpscaleOptions = UpscaleOptions(),
    progress: ProgressCallback | None = None,
) -> FileResult:
    """Super-resolve ``src`` into ``dst`` (a tiled GeoTIFF, a COG, or PNG / JPEG by its suffix).

    The output has the input's dtype, bands, nodata and metadata, ``predictor.scale`` times as many pixels on each
    axis over the same footprint (or over the AOI's window). Raises GeosrError (RasterError, ModelFileError,
    OutputExistsError, ...) with a one-line message for anything wrong with the input or the options; leaves no
    partial output on any error or interruption, and never replaces an existing ``dst`` unless ``options.overwrite``.
    """
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    check_output_file(dst, overwrite=options.overwrite, source=src, keep_hint=" (or --skip-existing to keep it)")
    remove_stale_outputs(dst.parent, dst.name)
    with rasterio.Env(**gdal_options()), open_raster(src) as ds:
        plan = make_plan(ds, src, dst, predictor, options)
        dst.parent.mkdir(parents=True, exist_ok=True)
        sample = compression_sample(ds, src, plan.out, plan.bands)
        check_free_space(dst, estimate_output_bytes(plan.spec, plan.cog, sample, copy=output_driver(dst) != "GTiff"))
        p = plan.spec.profile
        tmp = temp_path(dst)
        try:
            tiles = _execute(plan, ds, tmp, predictor, progress)
            finish_output(tmp, dst, cog=plan.cog, compress=plan.compress, georeferenced=plan.georeferenced,
                          overwrite=plan.overwrite, shape=(p["count"], p["height"], p["width"]))
        except READ_ERRORS as exc:  # creating the output failed (reads, writes and copies map their own)
            raise write_failure(dst, gdal_message(exc)) from None
        except NotEnoughMemory as exc:  # the model's: say which file it was
            raise NotEnoughMemory(f"{src}: {exc}", option=exc.option) from None
        finally:
            remove_quietly(tmp)
    return FileResult(src, dst, "done", "", time.perf_counter() - t0, p["width"] * p["height"], tiles)
