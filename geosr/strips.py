"""The strip loop of ``geosr upscale``, one for files (geosr.pipeline) and arrays (geosr.arrays).

``run_strips`` goes one column panel at a time, one tile row at a time: the tiles of a strip (a tile row of a panel)
that hold a valid pixel, batched through the model, are blended into a StripAccumulator (geosr.tiling); the rows no
later tile row reaches are corrected for consistency with the input (geosr.rowstream.RowStream, unless switched
off), cropped to the output and handed to a sink with the input rows under them. Where strips come from (a reader
thread, slices of an array) and where finished rows go (a writer thread, an array) is the caller's.

Everything per output pixel happens on the model's device: the tiles stay where the model computed them, are
blended there (with weights made there), corrected there, and mapped back to the raster's dtype there
(Radiometry.from_model), so a GPU hands the CPU only finished rows in the output dtype, and the CPU's work per
strip does not grow with the scale squared. On the CPU the same code runs on CPU tensors.

Coordinates are those of the grid's window: input pixels, or output pixels (``scale`` times as many) where named so.

Where the time goes: each step runs in a stage of geosr.stagetimer (timers that are off unless a benchmark asks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geosr.consistency import DEFAULT_HALO
from geosr.device import intra_op_threads, to_device
from geosr.inputrows import InputRows, Strip
from geosr.predictor import Predictor
from geosr.radiometry import ExcessPoints, Radiometry, keep_off_nodata, restore_excess, valid_mask
from geosr.rowstream import RowStream
from geosr.stagetimer import stage
from geosr.tiling import StripAccumulator, TileGrid, even_splits


@dataclass(frozen=True)
class Panel:
    """Output columns [c0, c1) and the tile columns that reach them.

    [e0, e1) are the columns blended: [c0, c1) and, with consistency, its halo on each side (within the window),
    which the correction needs as context.
    """

    c0: int
    c1: int
    tiles: tuple[int, ...]
    x0: int  # first input column read
    x1: int
    e0: int
    e1: int


def _blended(lo: int, hi: int, size: int, scale: int, consistency: bool) -> tuple[int, int]:
    """Output pixels [lo, hi) of an axis of ``size`` input pixels and, with consistency, their halo."""
    halo = scale * DEFAULT_HALO if consistency else 0
    return max(0, lo - halo), min(scale * size, hi + halo)


def column_panels(grid: TileGrid, cols: tuple[int, int], width: int, consistency: bool) -> list[Panel]:
    """The output columns ``cols`` (output pixels [lo, hi)) in panels of ``width`` input columns."""
    s = grid.scale
    out = []
    for c0 in range(cols[0], cols[1], s * width):
        c1 = min(cols[1], c0 + s * width)
        e0, e1 = _blended(c0, c1, grid.width, s, consistency)
        tiles = grid.cols.tiles_for(e0, e1)
        out.append(Panel(c0, c1, tiles, grid.cols.extent(tiles[0])[0], grid.cols.extent(tiles[-1])[1], e0, e1))
    return out


def tile_rows(grid: TileGrid, rows: tuple[int, ...], consistency: bool) -> tuple[int, ...]:
    """The tile rows that reach the output rows ``rows`` (output pixels [lo, hi)) or their halo."""
    lo, hi = rows
    return grid.rows.tiles_for(*_blended(lo, hi, grid.height, grid.scale, consistency))


def make_strip(
    grid: TileGrid,
    panel: Panel,
    groups,
    real,
    radiometry: Radiometry,
    y0: int,
    raw: np.ndarray,
    masks: np.ndarray | None,
    extra: np.ndarray,
) -> Strip:
    """The strip of raw values (bands, h, w) from input row ``y0`` and column ``panel.x0``, with their GDAL band masks
    (geosr.radiometry.valid_mask); groups, real: the band groups (geosr.plan.band_groups)."""
    valid = valid_mask(raw, masks)
    todo = np.zeros((len(panel.tiles), len(groups)), bool)
    for j, c in enumerate(panel.tiles):
        a, b = grid.cols.extent(c)
        tile_valid = valid[:, :, a - panel.x0 : b - panel.x0]
        for k, grp in enumerate(groups):
            todo[j, k] = tile_valid[list(grp[: real[k]])].any()
    return Strip(y0, radiometry.to_model(raw, valid), valid, extra, todo, radiometry.excess(raw, valid))


def to_output(
    values: torch.Tensor | np.ndarray,
    valid: np.ndarray | None,
    radiometry: Radiometry,
    nodata: float | None,
    fill: float,
    excess: ExcessPoints | None = None,
) -> np.ndarray:
    """Blended model values -> the output dtype: valid values kept off ``nodata``, ``fill`` where ``valid`` is False.

    excess: what the radiometry's clip took from the input under these pixels (``InputRows.excess_under``), given
    back to them (geosr.radiometry.restore_excess)."""
    if isinstance(values, np.ndarray) or not radiometry.maps_tensors:
        with stage("dtype mapping"):
            out = radiometry.from_model(values)
    else:
        with stage("dtype mapping"):
            mapped = radiometry.from_model_tensor(values)
        with stage("device to host"):
            out = radiometry.to_host(mapped)
    with stage("finish rows"):
        if excess is not None:
            restore_excess(out, excess, radiometry.dtype)
        keep_off_nodata(out, nodata)
        if valid is not None and not valid.all():
            out[~valid] = fill
    return out


Sink = Callable[["torch.Tensor", int, int, InputRows], None]


class _DeviceWeights:
    """A grid's 2-D blend weights on a device, made there from its 1-D weights: tiles with equal 1-D weights (all
    but those at the edges) share one tensor of each, and one 2-D product of each pair."""

    def __init__(self, grid: TileGrid, device: torch.device) -> None:
        self.grid, self.device = grid, device
        self._axes: dict[tuple[int, int], torch.Tensor] = {}  # (axis, tile) -> its 1-D weights
        self._seen: dict[bytes, torch.Tensor] = {}  # the 1-D weights, one tensor per distinct value
        self._products: dict[tuple[int, int], torch.Tensor] = {}  # (id, id) of two 1-D tensors -> their product

    def _axis(self, axis: int, i: int) -> torch.Tensor:
        if (axis, i) not in self._axes:
            w = (self.grid.rows, self.grid.cols)[axis].weights(i)
            if w.tobytes() not in self._seen:
                self._seen[w.tobytes()] = torch.from_numpy(w.copy()).to(self.device)
            self._axes[(axis, i)] = self._seen[w.tobytes()]
        return self._axes[(axis, i)]

    def __call__(self, r: int, c: int) -> torch.Tensor:
        """What TileGrid.weight(r, c) gives (the same float32 products), as a tensor on the device."""
        rows, cols = self._axis(0, r), self._axis(1, c)
        key = (id(rows), id(cols))
        if key not in self._products:
            if len(self._products) >= 64:  # a grid of unusual tiles: hold a few products only
                self._products.clear()
            self._products[key] = rows[:, None] * cols[None, :]
        return self._products[key]


class _SpreadRows:
    """The self-ensemble's spread of a panel: blended in its own StripAccumulator (with the values' weights), its
    released rows held until the values' rows over them are released (with consistency, up to ``halo`` input rows
    later)."""

    def __init__(self, bands: int, capacity: int, panel: Panel, origin: int, device: torch.device) -> None:
        self.acc = StripAccumulator(bands, capacity, panel.e0, panel.e1, origin=origin, device=device)
        self.start = 0  # output row of the first row held
        self.rows: torch.Tensor | None = None  # (bands, n, e1 - e0)

    def hold(self, stop: int, lo: int, hi: int) -> None:
        """Hold rows [lo, hi) of the accumulator, all blended up to ``stop`` (views stay valid as it moves on)."""
        new = self.acc.rows(stop)[:, lo - self.acc.origin : hi - self.acc.origin]
        if self.rows is None:
            self.start, self.rows = lo, new
        else:
            self.rows = torch.cat([self.rows, new], dim=1)

    def take(self, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi), held, and let go of every row before ``hi``."""
        if self.rows is None:
            return torch.zeros((0, 0, 0))
        out = self.rows[:, lo - self.start : hi - self.start]
        self.rows, self.start = self.rows[:, hi - self.start :], hi
        return out


def run_strips(
    grid: TileGrid,
    panels: list[Panel],
    rows: tuple[int, ...],
    strip_of: Callable[[Panel, int], Strip],
    predictor: Predictor,
    sink: Sink,
    *,
    groups,
    real,
    batch_size: int,
    consistency: bool,
    masks: bool,
    out_rows: tuple[int, int],
    tiles_done: Callable[[int, bool], None] | None = None,
    spread: bool = False,
    needed: np.ndarray | None = None,
) -> int:
    """Super-resolve the panels' strips; returns the tiles (x band groups) run through the model.

    strip_of(panel, r): the strip of tile row r (of ``rows``, from tile_rows) in a panel, asked for in order.
    sink(values, r0, c0, held): finished model values (bands, h, w), a float32 tensor on the model's device, of
    output rows from r0 (within ``out_rows``) and the panel's output columns from c0, with the panel's input rows
    ``held`` that lie under them.
    masks: whether the input may hold invalid pixels (the consistency correction then leaves them unconstrained).
    tiles_done(n, ran): after each batch of n tiles through the model (ran), and with the n tiles of a strip skipped
    for holding no valid pixel.
    spread: also blend the self-ensemble's spread (Predictor.run(spread=True); the values are then its mean) with
    the same weights, and pass its rows to the sink with the values over them: sink(values, r0, c0, held, spread).
    needed: (tile rows, tile columns) bool, the tiles to run (None: all): an AOI's (geosr.plan); the others are
    skipped as tiles without a valid pixel are.
    """
    run = _StripRun(
        grid,
        rows,
        strip_of,
        predictor,
        sink,
        groups,
        real,
        batch_size,
        consistency,
        masks,
        out_rows,
        tiles_done,
        spread,
        needed,
    )
    # On a CPU the loop's own work (blending, the correction, the mapping to the dtype) runs on this one thread and
    # only the model on all of torch's threads: that work is many small operations, and the threads of each one's
    # parallel region spin while they wait for the next, taking the cores that reading and GDAL's compression need.
    with intra_op_threads(1 if run.device.type == "cpu" else run.threads):
        for panel in panels:
            run.panel(panel)
    return run.computed


@dataclass
class _StripRun:
    """``run_strips``'s state: its arguments (see there), the shared blend weights, the tiles computed so far."""

    grid: TileGrid
    rows: tuple[int, ...]
    strip_of: Callable[[Panel, int], Strip]
    predictor: Predictor
    sink: Sink
    groups: Any
    real: Any
    batch_size: int
    consistency: bool
    masks: bool
    out_rows: tuple[int, int]
    tiles_done: Callable[[int, bool], None] | None
    spread: bool
    needed: np.ndarray | None = None
    computed: int = 0

    def __post_init__(self) -> None:
        self.device = self.predictor.device
        self.threads = torch.get_num_threads()  # the model's intra-op threads
        self.weights = _DeviceWeights(self.grid, self.device)
        self.row_lo, self.row_hi = _blended(*self.out_rows, self.grid.height, self.grid.scale, self.consistency)

    def panel(self, panel: Panel) -> None:
        """Every strip of one panel: its tiles through the model and blended, its final rows corrected and emitted."""
        grid, s = self.grid, self.grid.scale
        origin = s * grid.rows.starts[self.rows[0]]
        bands = sum(self.real)
        acc = StripAccumulator(bands, s * grid.rows.length, panel.e0, panel.e1, origin=origin, device=self.device)
        held = InputRows(s, panel.x0)
        spread = _SpreadRows(bands, s * grid.rows.length, panel, origin, self.device) if self.spread else None
        stream = RowStream(s, halo=DEFAULT_HALO, device=self.device, workers=self.threads) if self.consistency else None
        next_row = self.row_lo  # with consistency: the first output row the stream has not returned yet
        cols = slice(panel.e0 // s - panel.x0, panel.e1 // s - panel.x0)
        for i, r in enumerate(self.rows):
            with stage("strip (wait for the reader)"):
                strip = self.strip_of(panel, r)
            held.add(strip, grid.rows.length)
            with stage("host to device"):
                x_dev = to_device(torch.from_numpy(strip.x), self.device)  # moved once, for its tiles and the stream
            self._tiles(panel, r, strip, x_dev, acc, spread)
            # rows that no later tile row reaches are blended
            last = i == len(self.rows) - 1
            stop_row = s * (strip.y0 + grid.rows.length) if last else s * grid.rows.starts[self.rows[i + 1]]
            lo, hi = max(acc.origin, self.row_lo), min(stop_row, self.row_hi)
            if hi > lo:
                values = acc.rows(stop_row)[:, lo - acc.origin : hi - acc.origin]
                if spread is not None:
                    spread.hold(stop_row, lo, hi)
                if stream is not None:  # the rows now final, ``halo`` input rows behind
                    a = lo // s - strip.y0
                    b = a + values.shape[1] // s
                    with stage("consistency"):
                        values = stream.push(
                            values, x_dev[:, a:b, cols], strip.valid[:, a:b, cols] if self.masks else None
                        )
                    lo, next_row = next_row, next_row + values.shape[1]
                self._emit(panel, values, lo, held, spread)
            with stage("blend"):
                acc.advance(stop_row)
                if spread is not None:
                    spread.acc.advance(stop_row)
            held.drop_before((stop_row if stream is None else next_row) // s)
        if stream is not None:
            with stage("consistency"):
                values = stream.finish()
            self._emit(panel, values, next_row, held, spread)

    def _tiles(
        self, panel: Panel, r: int, strip: Strip, x_dev: torch.Tensor, acc: StripAccumulator, spread: _SpreadRows | None
    ) -> None:
        """The strip's tiles that hold a valid pixel, batched through the model and blended into ``acc``."""
        grid, s, tile, groups, real = self.grid, self.grid.scale, self.grid.tile_size, self.groups, self.real
        length_r, length_c = grid.rows.length, grid.cols.length
        need = self.needed
        items = [
            (j, k)
            for j in range(len(panel.tiles))
            if need is None or need[r, panel.tiles[j]]
            for k in range(len(groups))
            if strip.todo[j, k]
        ]
        if self.tiles_done is not None:
            self.tiles_done(len(panel.tiles) * len(groups) - len(items), False)
        for b0, b1 in even_splits(len(items), -(-len(items) // self.batch_size)):
            batch = items[b0:b1]
            xs = [grid.cols.starts[panel.tiles[j]] - panel.x0 for j, _ in batch]
            with stage("gather tiles"):
                tiles = torch.stack([x_dev[list(groups[k]), :tile, x : x + tile] for (_, k), x in zip(batch, xs)])
            with stage("model"), intra_op_threads(self.threads):
                if spread is None:
                    outs = self.predictor.run(tiles)  # (B, C, s*tile, s*tile)
                else:
                    outs, spreads = self.predictor.run(tiles, spread=True)  # mean and spread, (B, C, s*tile, s*tile)
            places = [
                (
                    self.weights(r, panel.tiles[j]),
                    s * strip.y0,
                    s * grid.cols.starts[panel.tiles[j]],
                    list(groups[k][: real[k]]),
                    real[k],
                )
                for j, k in batch
            ]
            with stage("blend"):
                if spread is not None:
                    for sp, (w, y, x, bands, n) in zip(spreads, places):
                        spread.acc.add(sp[:n, : s * length_r, : s * length_c], w, y, x, bands=bands)
                for out, (w, y, x, bands, n) in zip(outs, places):
                    acc.add(out[:n, : s * length_r, : s * length_c], w, y, x, bands=bands)
            self.computed += len(batch)
            if self.tiles_done is not None:
                self.tiles_done(len(batch), True)

    def _emit(self, panel: Panel, values: torch.Tensor, lo: int, held: InputRows, spread: _SpreadRows | None) -> None:
        """Blended (and corrected) rows [lo, lo + h) x [e0, e1) -> the sink, cropped to the output."""
        a, b = max(lo, self.out_rows[0]), min(lo + values.shape[1], self.out_rows[1])
        extra = {} if spread is None else {"spread": spread.take(lo, lo + values.shape[1])}
        if b > a:
            crop = (slice(None), slice(a - lo, b - lo), slice(panel.c0 - panel.e0, panel.c1 - panel.e0))
            self.sink(values[crop], a, panel.c0, held, **{key: v[crop] for key, v in extra.items()})
