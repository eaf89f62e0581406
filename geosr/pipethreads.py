"""The pipeline's reader and writer threads (geosr.pipeline runs the strip loop between them).

``read_strips`` reads, masks and normalises the strips of a plan in order, a queue's length ahead of the model;
``Writer`` takes finished rows in the output dtype and writes them in whole 512-row blocks, GDAL compressing them on
its own threads meanwhile. Both stop at a shared ``stop`` event and hand their failures to the main thread: the
reader as a ``Failed`` item in its queue, the writer as the error ``put`` or ``close`` raises.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import rasterio
from rasterio.windows import Window

from geosr.blocks import Block
from geosr.plan import Plan
from geosr.raster import BLOCK, READ_ERRORS, gdal_message, gdal_options, read_window, write_failure
from geosr.stagetimer import timed
from geosr.strips import Panel, make_strip


class Failed:
    """A reader's failure, handed to the main thread in the strips' queue."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


DONE = object()  # the end of a queue


def put_until(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` in ``q``, waiting while it is full; False if ``stop`` was set first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def read_strips(
    ds, plan: Plan, panels: list[Panel], rows: tuple[int, ...], q: queue.Queue, stop: threading.Event
) -> None:
    """Reader thread: put a Strip for every (panel, tile row) read from ``ds``, then DONE; a Failed on error."""
    try:
        with rasterio.Env(**gdal_options()):
            g = plan.grid
            n = len(plan.colour)
            for panel in panels:
                for r in rows:
                    if stop.is_set():
                        return
                    y0, y1 = g.rows.extent(r)
                    window = Window(plan.proc.col_off + panel.x0, plan.proc.row_off + y0, panel.x1 - panel.x0, y1 - y0)
                    data, m = timed("read", read_window, ds, plan.src, window, plan.colour + plan.alpha, plan.masks)
                    strip = timed(
                        "normalise",
                        make_strip,
                        g,
                        panel,
                        plan.groups,
                        plan.real,
                        plan.radiometry,
                        y0,
                        data[:n],
                        None if m is None else m[:n],
                        data[n:],
                    )  # alpha: the strip's extra values
                    if not put_until(q, strip, stop):
                        return
        put_until(q, DONE, stop)
    except BaseException as exc:  # handed to the main thread, which raises it
        put_until(q, Failed(exc), stop)


class Writer:
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

    def put(self, block: Block) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(block, timeout=0.1)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    raise RuntimeError("the writer thread stopped") from None

    def close(self) -> None:
        """Write what is left, close the file and raise the writer's error, if any."""
        if self.thread.is_alive():
            while self.thread.is_alive() and self.error is None:
                try:
                    self.q.put(DONE, timeout=0.1)
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
                        if item is DONE or self.stop.is_set():
                            break
                        timed("copy to blocks", self._add, item)
                    if not self.stop.is_set():
                        self._flush()
                finally:
                    self.dst.close()
        except READ_ERRORS as exc:  # a write failed (a full disk): the output is named, not its temporary file
            self.error = write_failure(self.plan.dst, gdal_message(exc))
        except BaseException as exc:
            self.error = exc

    def _add(self, block: Block) -> None:
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
            timed("write", self.dst.write, np.ascontiguousarray(self.buf[:, :n]), window=window)  # GDAL compresses
            if self.mask_buf is not None:
                timed("write", self.dst.write_mask, np.ascontiguousarray(self.mask_buf[:n]), window=window)
        self.at, self.filled = None, 0
