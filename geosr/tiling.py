"""The tile grid, the blend weights and the strip accumulator: pure functions and small value types.

Units: tiles are placed in input (LR) pixels of the processed window; weights, supports and accumulators are in
output (HR) pixels, ``scale`` times finer.

Grid along one axis (size n, tile t, overlap o, all in input pixels)::

    starts 0, t - o, 2 (t - o), ...        every tile is t pixels long
    the last tile moves inward to n - t    rather than shrink
    n <= t: one tile of n pixels           tiles never exceed the raster: a model runs on no padding

Blending: two neighbours i and i + 1 overlap over [start(i+1), end(i)). Across a window of o / 2 input pixels centred
in that overlap the weight of tile i + 1 ramps linearly from 0 to 1 and the weight of tile i from 1 to 0. So every
tile ignores at least o / 4 input pixels along each edge it shares with a neighbour (where its output lacks context),
is never ramped at the raster border, and the 1-D weights of an axis sum to 1 at every output pixel. The 2-D weight of
a tile is the outer product of its row and column weights, so the 2-D weights sum to 1 as well, wherever the raster is
covered, and the blended result does not depend on the order in which the tiles are added.

A model whose receptive field reaches at most o / 4 input pixels therefore gives tiled output equal to whole-image
output (to float precision).

``tile_array`` runs a predictor over a whole (bands, H, W) array with exactly this scheme (the grid, the weights, tiles
as short as an axis shorter than the tile, the float32 accumulation in tile order): what ``geosr upscale`` computes
for a raster with those pixels, without the raster I/O. ``geosr evaluate`` measures models through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from geosr.limits import MAX_TILE, MIN_TILE


def tiling_problem(tile: object, overlap: object) -> str | None:
    """What is wrong with a tile size and overlap (input pixels), or None when they are usable.

    The one rule for every caller (model cards, training configs, upscale options, the CLI): the tile is an integer
    of ``MIN_TILE``..``MAX_TILE`` input pixels and the overlap an integer of 0..tile/2. Callers raise their own error
    type with the message, so that it names the file or option it is about.
    """
    if isinstance(tile, bool) or not isinstance(tile, int) or not MIN_TILE <= tile <= MAX_TILE:
        return f"tile size {tile!r}: must be an integer of {MIN_TILE}..{MAX_TILE} input pixels"
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= tile // 2:
        return f"overlap {overlap!r}: must be an integer of 0..{tile // 2} (half the tile size {tile})"
    return None


def tile_starts(size: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Start offsets (input pixels) of the tiles along an axis of ``size`` pixels; see the module docstring.

    Raises ValueError for a size below 1, a tile below 1 or an overlap outside 0..tile/2.
    """
    if size < 1:
        raise ValueError(f"axis size must be at least 1 pixel, got {size}")
    if tile < 1:
        raise ValueError(f"tile size must be at least 1 pixel, got {tile}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap must be 0..tile/2 = {tile // 2}, got {overlap}")
    if size <= tile:
        return (0,)
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)  # the last tile moves inward rather than shrink
    return tuple(starts)


@dataclass(frozen=True)
class AxisTiling:
    """The tiles along one axis, with their blend weights in output pixels.

    size, tile, overlap: input pixels; scale: output pixels per input pixel.
    """

    size: int
    tile: int
    overlap: int
    scale: int = 1

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be at least 1, got {self.scale}")
        tile_starts(self.size, self.tile, self.overlap)  # validates

    @cached_property
    def starts(self) -> tuple[int, ...]:
        return tile_starts(self.size, self.tile, self.overlap)

    @property
    def length(self) -> int:
        """Length of every tile in input pixels inside the raster (shorter than ``tile`` only for a small raster)."""
        return min(self.tile, self.size)

    def __len__(self) -> int:
        return len(self.starts)

    def extent(self, i: int) -> tuple[int, int]:
        """[start, stop) of tile i in input pixels."""
        start = self.starts[i]
        return start, start + self.length

    @cached_property
    def _ramps(self) -> tuple[tuple[float, float], ...]:
        """(centre, width) in output pixels of the ramp between tiles i and i + 1."""
        s = self.scale
        width = s * self.overlap / 2
        return tuple((s * (self.starts[i + 1] + self.starts[i] + self.length) / 2, width) for i in range(len(self) - 1))

    @cached_property
    def _weights(self) -> tuple[np.ndarray, ...]:
        s = self.scale
        out = []
        for i, start in enumerate(self.starts):
            centres = s * start + np.arange(s * self.length, dtype=np.float64) + 0.5  # output pixel centres
            w = np.ones_like(centres)
            if i > 0:
                w *= _ramp_up(centres, *self._ramps[i - 1])
            if i < len(self) - 1:
                w *= 1.0 - _ramp_up(centres, *self._ramps[i])
            w = w.astype(np.float32)
            w.flags.writeable = False
            out.append(w)
        return tuple(out)

    def weights(self, i: int) -> np.ndarray:
        """Blend weights of tile i over its extent, in output pixels (read-only float32, length scale * length)."""
        return self._weights[i]

    @cached_property
    def _supports(self) -> tuple[tuple[int, int], ...]:
        out = []
        for i, w in enumerate(self._weights):
            nz = np.flatnonzero(w)
            start = self.scale * self.starts[i]
            out.append((start + int(nz[0]), start + int(nz[-1]) + 1))
        return tuple(out)

    def support(self, i: int) -> tuple[int, int]:
        """[lo, hi) in output pixels where tile i has a non-zero weight."""
        return self._supports[i]

    def tiles_for(self, lo: int, hi: int) -> tuple[int, ...]:
        """Indices of the tiles whose support meets the output range [lo, hi)."""
        return tuple(i for i, (a, b) in enumerate(self._supports) if a < hi and b > lo)


def _ramp_up(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """0 before the ramp, 1 after it, linear across ``width`` around ``centre``; a step (0.5 at the step) if width 0."""
    if width <= 0:
        return np.where(x > centre, 1.0, np.where(x == centre, 0.5, 0.0))
    return np.clip((x - centre) / width + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class Tile:
    """One tile: grid position (row, col) and extent in input pixels of the processed window."""

    row: int
    col: int
    y: int
    x: int
    height: int
    width: int


@dataclass(frozen=True)
class TileGrid:
    """The 2-D tile grid of a height x width window (input pixels); weights in output pixels."""

    height: int
    width: int
    tile_size: int
    overlap: int
    scale: int = 1

    @cached_property
    def rows(self) -> AxisTiling:
        return AxisTiling(self.height, self.tile_size, self.overlap, self.scale)

    @cached_property
    def cols(self) -> AxisTiling:
        return AxisTiling(self.width, self.tile_size, self.overlap, self.scale)

    def __post_init__(self) -> None:
        self.rows, self.cols  # noqa: B018 - builds (and so validates) both axes early

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def tile_at(self, row: int, col: int) -> Tile:
        y0, y1 = self.rows.extent(row)
        x0, x1 = self.cols.extent(col)
        return Tile(row, col, y0, x0, y1 - y0, x1 - x0)

    def __iter__(self):
        for r in range(len(self.rows)):
            for c in range(len(self.cols)):
                yield self.tile_at(r, c)

    def weight(self, row: int, col: int) -> np.ndarray:
        """2-D blend weights of a tile, (scale*height, scale*width) float32."""
        return np.outer(self.rows.weights(row), self.cols.weights(col))


class StripAccumulator:
    """Weighted sums of tile outputs for a strip of output rows, never the whole output, on a torch device.

    Holds output rows [origin, origin + capacity) and columns [col0, col1) (output pixels); ``add`` sums a weighted
    tile into it (cropped to the columns), ``rows(stop)`` shows the finished rows [origin, stop), ``advance(stop)``
    moves the strip down past them (``pop`` does both). Rows must be added in non-decreasing order of
    their start, as a tile-row-by-tile-row pass does. The sums live on ``device`` (the model's: on a GPU the tiles
    are blended where they were computed); float32 products summed in the order of the ``add`` calls, as numpy would.
    """

    def __init__(self, bands: int, capacity: int, col0: int, col1: int, origin: int = 0, device="cpu") -> None:
        import torch  # here, not at the top: the grid and its rules stay importable without PyTorch's start-up

        self.col0, self.col1 = col0, col1
        self.origin = origin
        self._buf = torch.zeros((bands, capacity, col1 - col0), dtype=torch.float32, device=device)

    @property
    def capacity(self) -> int:
        return self._buf.shape[1]

    @property
    def device(self):
        return self._buf.device

    def add(self, values, weight, row: int, col: int, bands=slice(None)) -> None:
        """Add ``values * weight`` with its top-left output pixel at (row, col); values (b, h, w), weight (h, w),
        float32 tensors or arrays (moved to the strip's device)."""
        import torch

        _, h, w = values.shape
        c0, c1 = max(col, self.col0), min(col + w, self.col1)
        if c1 <= c0:
            return
        r0 = row - self.origin
        if r0 < 0 or r0 + h > self.capacity:
            raise ValueError(
                f"rows {row}..{row + h} fall outside the strip {self.origin}..{self.origin + self.capacity}"
            )
        v = torch.as_tensor(values, device=self.device)[:, :, c0 - col : c1 - col]
        wt = torch.as_tensor(weight, device=self.device)[:, c0 - col : c1 - col]
        if not isinstance(bands, slice) and list(bands) == list(range(bands[0], bands[0] + len(bands))):
            bands = slice(bands[0], bands[0] + len(bands))  # consecutive bands (the usual case): a view, added in place
        if isinstance(bands, slice):
            self._buf[bands, r0 : r0 + h, c0 - self.col0 : c1 - self.col0] += v * wt
        else:
            target = self._buf[:, r0 : r0 + h, c0 - self.col0 : c1 - self.col0]
            target[bands] = target[bands] + v * wt

    def rows(self, stop: int):
        """The finished rows [origin, stop), (bands, stop - origin, width): a view, unchanged by later calls."""
        n = stop - self.origin
        if not 0 <= n <= self.capacity:
            raise ValueError(f"cannot take rows {self.origin}..{stop} from a strip of {self.capacity} rows")
        return self._buf[:, :n]

    def advance(self, stop: int) -> None:
        """Drop the rows before ``stop`` and move the strip down to start there (into a new buffer, so that views
        from ``rows`` keep their values)."""
        n = stop - self.origin
        if not 0 <= n <= self.capacity:
            raise ValueError(f"cannot advance from row {self.origin} to {stop} in a strip of {self.capacity} rows")
        buf = self._buf.new_empty(self._buf.shape)
        buf[:, : self.capacity - n] = self._buf[:, n:]
        buf[:, self.capacity - n :] = 0
        self._buf = buf
        self.origin = stop

    def pop(self, stop: int):
        """The finished rows [origin, stop) (a tensor no later call changes); the strip moves to stop."""
        done = self.rows(stop)
        self.advance(stop)
        return done


def even_splits(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) of ``parts`` near-equal consecutive chunks of n items (17 in 3: 5, 6, 6)."""
    bounds = [n * k // parts for k in range(parts + 1)] if parts else [0]
    return list(zip(bounds[:-1], bounds[1:]))


def tile_array(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    *,
    scale: int,
    tile_size: int,
    overlap: int,
    batch_size: int = 8,
) -> np.ndarray:
    """Super-resolve a (bands, H, W) array in tiles, blended as ``geosr upscale`` blends a raster's tiles.

    predict: maps (B, bands, t, t) float32 model values to (B, bands', scale*t, scale*t) float32 (a
    ``geosr.inference.Predictor`` or any callable like it). x: float32 model values, no invalid pixels left.
    tile_size, overlap: input pixels, as upscale's options (``tiling_problem`` rules); batch_size: tiles per call,
    batched per tile row in near-equal batches as upscale batches them. Along an axis shorter than the tile, tiles
    are as long as the axis (never padded). Returns (bands', scale*H, scale*W) float32.
    Raises ValueError for a tile size, overlap or batch size that is not usable, or a predictor that returns another
    size.
    """
    problem = tiling_problem(tile_size, overlap)
    if problem is not None:
        raise ValueError(problem)
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size}: must be at least 1")
    own = getattr(predict, "scale", None)  # a Predictor's or an OnnxPredictor's
    if isinstance(own, int) and own != scale:
        raise ValueError(f"scale={scale}, but the predictor's model upscales x{own}: give scale={own}")
    _, h, w = x.shape
    grid = TileGrid(h, w, tile_size, overlap, scale)
    x = np.ascontiguousarray(x, dtype=np.float32)
    len_r, len_c = grid.rows.length, grid.cols.length  # the tile, clamped to the array
    acc: StripAccumulator | None = None
    for r, y0 in enumerate(grid.rows.starts):
        cols = grid.cols.starts
        for b0, b1 in even_splits(len(cols), math.ceil(len(cols) / batch_size)):
            tiles = np.stack([x[:, y0 : y0 + len_r, x0 : x0 + len_c] for x0 in cols[b0:b1]])
            outs = predict(tiles)  # (B, bands', s*len_r, s*len_c)
            if outs.shape[0] != b1 - b0 or outs.shape[-2:] != (scale * len_r, scale * len_c):
                raise ValueError(f"the predictor gave {tuple(outs.shape)} for tiles {tuple(tiles.shape)} at x{scale}")
            if acc is None:
                acc = StripAccumulator(outs.shape[1], scale * h, 0, scale * w)
            for c, out in zip(range(b0, b1), outs):
                acc.add(out, grid.weight(r, c), scale * y0, scale * cols[c])
    return acc.pop(scale * h).numpy()


def seam_index(
    image: np.ndarray, period: int, offset: int = 0, valid: np.ndarray | None = None, subpixel: int = 1
) -> float:
    """How much stronger the steps between neighbouring pixels are at the tile period than elsewhere.

    For columns: d(x) = mean over rows (and bands) of |image[..., x] - image[..., x - 1]|. The seam phase holds the
    steps with x = offset (mod period); the index is mean(d) over the seam phase divided by mean(d) over all other
    phases. The same for rows; the larger of the two is returned (1.0 means no seam; 1.05 a 5 % excess).

    image: (H, W) or (bands, H, W); period, offset: output pixels; valid: optional (H, W) bool, steps touching an
    invalid pixel are ignored. subpixel: compare only with the phases at the same position modulo ``subpixel`` (pass
    the scale to discount the sub-pixel pattern an upsampler may print at every ``scale`` pixels; period must be a
    multiple of it). Raises ValueError when neither axis holds both a seam step and another step.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W) or (bands, H, W) image, got shape {np.shape(image)}")
    if period < 2:
        raise ValueError(f"period must be at least 2 pixels, got {period}")
    if subpixel < 1 or period % subpixel or period == subpixel:
        raise ValueError(f"subpixel must divide the period {period} (and be smaller), got {subpixel}")
    ok = np.ones(img.shape[1:], bool) if valid is None else np.asarray(valid, bool)
    ratios = []
    for axis in (2, 1):
        n = img.shape[axis]
        d = np.abs(np.diff(img, axis=axis)).mean(axis=0)  # (H, W-1) or (H-1, W)
        v = (ok[:, 1:] & ok[:, :-1]) if axis == 2 else (ok[1:] & ok[:-1])
        steps = np.arange(1, n)  # step k is between pixel k-1 and k
        seam = ((steps - offset) % period) == 0
        other = ~seam & (((steps - offset) % subpixel) == 0)
        seam_b, other_b = (seam[None, :], other[None, :]) if axis == 2 else (seam[:, None], other[:, None])
        sel_seam, sel_other = v & seam_b, v & other_b
        if sel_seam.any() and sel_other.any():
            base = d[sel_other].mean()
            ratios.append(d[sel_seam].mean() / base if base > 0 else float("inf"))
    if not ratios:
        raise ValueError("the image is too small to hold a seam step and another step along either axis")
    return float(max(ratios))
