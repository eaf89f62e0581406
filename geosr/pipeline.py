"""The pipeline that super-resolves one raster in bounded memory: overlapping tiles in, blended strips out.

``upscale_raster(src, dst, predictor, options, progress)`` checks the destination, opens the source once, makes the
plan (geosr.plan) and runs it in three stages that overlap in time:

    reader thread   strips of tile rows, one column panel at a time: read, mask, normalise, fill nodata
    this thread     geosr.strips' loop: tiles of the strip, batched through the model, blended into a
                    StripAccumulator; finished rows corrected for consistency with the input (geosr.consistency,
                    unless switched off) and mapped back to the dtype, all on the model's device; then nodata /
                    alpha / mask on the CPU
    writer thread   finished rows written (and compressed by GDAL, on every core) in whole 512-row blocks

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from geosr.blocks import finish_rows, map_block, map_spec
from geosr.errors import NotEnoughMemory
from geosr.inputrows import InputRows, Strip
from geosr.options import UpscaleOptions
from geosr.pipethreads import DONE, Failed, Writer, read_strips
from geosr.plan import Plan, make_plan
from geosr.predictor import Predictor
from geosr.raster import (
    READ_ERRORS,
    check_output_file,
    check_output_room,
    compression_sample,
    create_output,
    finish_output,
    gdal_message,
    gdal_options,
    open_raster,
    output_driver,
    remove_quietly,
    remove_stale_outputs,
    temp_path,
    write_failure,
)
from geosr.sources import RemoteSource, input_spec
from geosr.stagetimer import timed
from geosr.strips import column_panels, run_strips, tile_rows
from geosr.uncertainty import calibration_factor, check_map_target, describe_map
from geosr.worksize import check_work_size

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

    src: Path | RemoteSource
    dst: Path
    status: str
    message: str = ""
    seconds: float = 0.0
    pixels: int = 0
    tiles: int = 0
    reason: str = ""
    blank_tiles: int = 0  # tiles (x band groups) not run: no valid pixel in them, or away from the AOI


def _execute(
    plan: Plan, ds, tmp: Path, predictor: Predictor, progress: ProgressCallback | None, map_tmp: Path | None = None
) -> tuple[int, int]:
    """Run the plan from the open source ``ds`` into a new GeoTIFF ``tmp``; returns the tiles run through the model
    and those the progress counted but the model did not run (no valid pixel in them, or outside the AOI).

    From here on each dataset is used by one thread only: ``ds`` by the reader, the output by the writer. ``ds`` is
    left open for the caller, who closes it once this returns (never under a reader that is still reading).
    """
    s = plan.scale
    dy, dx = plan.offset
    oh, ow = s * int(plan.out.height), s * int(plan.out.width)
    out_rows = (s * dy, s * dy + oh)
    panels = column_panels(plan.grid, (s * dx, s * dx + ow), plan.panel_width, plan.consistency)
    rows = tile_rows(plan.grid, out_rows, plan.consistency)
    total = sum(len(p.tiles) for p in panels) * len(rows) * len(plan.groups)
    done = pixels = 0

    def report() -> None:
        if progress is not None:
            progress(Progress(plan.dst, done, total, pixels, oh * ow))

    report()
    stop = threading.Event()
    strips: queue.Queue = queue.Queue(maxsize=2)
    dst_ds = create_output(tmp, plan.spec)
    reader = threading.Thread(
        target=read_strips, args=(ds, plan, panels, rows, strips, stop), name="geosr-reader", daemon=True
    )
    writer = Writer(plan, dst_ds, stop)
    k = calibration_factor(predictor.card, predictor.model_sha256)
    maps = Writer(plan, create_output(map_tmp, map_spec(plan, describe_map(k))), stop) if map_tmp else None
    reader.start()
    for w in (writer, maps) if maps else (writer,):
        w.thread.start()

    def tiles_done(n: int, ran: bool) -> None:
        nonlocal done
        done += n
        if ran:
            report()

    def write(values: np.ndarray, r0: int, c0: int, held: InputRows, spread=None) -> None:
        nonlocal pixels
        if spread is not None:
            maps.put(map_block(plan, spread, r0, c0, held, k))
        timed("wait for the writer", writer.put, timed("finish rows", finish_rows, plan, values, r0, c0, held))
        pixels += values.shape[1] * values.shape[2]
        report()

    try:
        computed = run_strips(
            plan.grid,
            panels,
            rows,
            lambda panel, r: _next_strip(strips, reader),
            predictor,
            write,
            groups=plan.groups,
            real=plan.real,
            batch_size=plan.batch_size,
            consistency=plan.consistency,
            masks=plan.masks,
            out_rows=out_rows,
            tiles_done=tiles_done,
            spread=maps is not None,
            needed=plan.tiles_needed,
        )
        timed("wait for the writer", writer.close)
        if maps is not None:
            maps.close()
    finally:
        stop.set()
        reader.join(timeout=30)
        if reader.is_alive():  # a read that hangs (a stalled network disk): the caller must not close ds under it
            log.warning("%s: waiting for a read to finish before closing the file", plan.src)
            reader.join()
        writer.thread.join(timeout=60)
        if not writer.thread.is_alive():
            dst_ds.close()
        if maps is not None:
            maps.thread.join(timeout=60)
            if not maps.thread.is_alive():
                maps.dst.close()
    return computed, done - computed


def _next_strip(q: queue.Queue, reader: threading.Thread) -> Strip:
    while True:
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            if not reader.is_alive():
                raise RuntimeError("the reader thread stopped early") from None
            continue
        if isinstance(item, Failed):
            raise item.exc
        if item is DONE:
            raise RuntimeError("the reader thread ended early")
        return item


# --- one file -------------------------------------------------------------------------------------------------------


def upscale_raster(
    src: str | os.PathLike | RemoteSource,
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
    src, dst = input_spec(src), Path(dst)  # a URL or /vsi path stays as GDAL reads it (geosr.sources)
    check_output_file(dst, overwrite=options.overwrite, source=src, keep_hint=" (or --skip-existing to keep it)")
    predictor = check_map_target(options, src, dst, predictor)  # with --uncertainty: the self-ensemble's
    remove_stale_outputs(dst.parent, dst.name)
    with rasterio.Env(**gdal_options()), open_raster(src) as ds:
        plan = timed("plan", make_plan, ds, src, dst, predictor, options)
        dst.parent.mkdir(parents=True, exist_ok=True)
        timed(
            "plan",
            check_output_room,
            dst,
            plan.spec,
            plan.cog,
            lambda: compression_sample(ds, src, plan.out, plan.bands),
            copy=output_driver(dst) != "GTiff",
        )
        p = plan.spec.profile
        check_work_size(
            str(src),
            p["width"] * p["height"],
            predictor.device.type,
            self_ensemble=predictor.self_ensemble,
            precision=predictor.precision,
            scale=predictor.scale,
            max_pixels=options.max_pixels,
            yes=options.yes,
        )
        tmp, map_tmp = temp_path(dst), options.uncertainty and temp_path(options.uncertainty)
        try:
            tiles, blank = _execute(plan, ds, tmp, predictor, progress, map_tmp)
            if options.aoi is not None and not plan.seen.get("valid"):
                log.warning(
                    "%s: no valid pixel inside the area of interest (%s): the output is all nodata (the area holds "
                    "only nodata, or no output pixel's centre)",
                    src,
                    options.aoi.source,
                )
            if map_tmp:  # published first: the output's appearance says that everything is done
                finish_output(
                    map_tmp,
                    options.uncertainty,
                    cog=plan.cog,
                    compress=plan.compress,
                    overwrite=plan.overwrite,
                    shape=(len(plan.layout), p["height"], p["width"]),
                )
            timed(
                "finish",
                finish_output,
                tmp,
                dst,
                cog=plan.cog,
                compress=plan.compress,
                georeferenced=plan.georeferenced,
                overwrite=plan.overwrite,
                shape=(p["count"], p["height"], p["width"]),
            )
        except READ_ERRORS as exc:  # creating the output failed (reads, writes and copies map their own)
            raise write_failure(dst, gdal_message(exc)) from None
        except NotEnoughMemory as exc:  # the model's: say which file it was
            raise NotEnoughMemory(f"{src}: {exc}", option=exc.option) from None
        finally:
            remove_quietly(tmp)
            if map_tmp:
                remove_quietly(map_tmp)
    seconds = time.perf_counter() - t0
    return FileResult(src, dst, "done", "", seconds, p["width"] * p["height"], tiles, blank_tiles=blank)
