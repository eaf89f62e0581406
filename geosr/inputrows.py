"""The input side of the strip loop (geosr.strips): a strip as read, and the input rows under the output rows a sink
finishes (validity, extra values, what the radiometry's clip took)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geosr.radiometry import ExcessPoints, upsampled_points


@dataclass
class Strip:
    """One tile row of one panel, read and normalised (input pixels; columns from panel.x0)."""

    y0: int  # first input row
    x: np.ndarray  # (bands, h, w) float32 model values, invalid pixels filled; a tile is at most h x w (never padded)
    valid: np.ndarray  # (bands, h, w) bool
    extra: np.ndarray  # (k, h, w) other input values the sink needs under its rows (the pipeline's alpha bands)
    todo: np.ndarray  # (n_tile_cols, n_groups) bool: whether a tile of a group holds any valid pixel
    excess: ExcessPoints | None = None  # what the radiometry's clip takes, at its pixels (Radiometry.excess)


class InputRows:
    """A panel's input rows (validity, extra values, excess) kept until the output rows over them are finished.

    Without consistency each strip's rows are finished with the strip; with it, output rows are finished up to
    ``halo`` input rows later, when they may lie under an earlier strip.
    """

    def __init__(self, scale: int, x0: int) -> None:
        self.scale, self.x0 = scale, x0  # x0: the input column of the first one held
        self.start = 0  # first row held
        self.valid: np.ndarray | None = None  # (bands, rows, cols)
        self.extra: np.ndarray | None = None  # (k, rows, cols)
        self.excess: ExcessPoints | None = None  # (band, input row, input column, value); None: none held

    def add(self, strip: Strip, length: int) -> None:
        """Hold the strip's rows from the first one not held yet (strips overlap)."""
        v, e = strip.valid[:, :length], strip.extra[:, :length]
        skip = 0 if self.valid is None else self.start + self.valid.shape[1] - strip.y0  # rows already held
        if strip.excess is not None:
            b, i, j, x = strip.excess
            new = (i >= skip) & (i < length)
            points = (b[new], i[new] + strip.y0, j[new] + self.x0, x[new])
            self.excess = points if self.excess is None else _joined(self.excess, points)
        if self.valid is None:
            self.start, self.valid, self.extra = strip.y0, v, e
            return
        self.valid = np.concatenate([self.valid, v[:, skip:]], axis=1)
        self.extra = np.concatenate([self.extra, e[:, skip:]], axis=1)

    def drop_before(self, row: int) -> None:
        k = row - self.start
        if self.valid is not None and k > 0:
            self.valid, self.extra = self.valid[:, k:], self.extra[:, k:]
            if self.excess is not None:
                band, rows, cols, value = self.excess  # input rows and columns
                kept = rows >= row
                self.excess = (band[kept], rows[kept], cols[kept], value[kept]) if kept.any() else None
            self.start = row

    def excess_under(self, r0: int, c0: int, h: int, w: int) -> ExcessPoints | None:
        """The held excess under output rows [r0, r0 + h) x columns [c0, c0 + w): the output pixels it falls on
        (nearest, geosr.radiometry.upsampled_points), rows and columns within the block; None where there is none."""
        if self.excess is None:
            return None
        s = self.scale
        b, i, j, x = self.excess
        near = (i >= r0 // s) & (i * s < r0 + h) & (j >= c0 // s) & (j * s < c0 + w)
        if not near.any():
            return None
        return upsampled_points((b[near], i[near], j[near], x[near]), s, (r0, c0), (h, w))

    def under(self, a: np.ndarray, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        """``a`` (self.valid or self.extra) under output rows [r0, r0 + h) x columns [c0, c0 + w), upsampled nearest."""
        s = self.scale
        return a[:, (r0 + np.arange(h)) // s - self.start][:, :, (c0 + np.arange(w)) // s - self.x0]


def _joined(a: ExcessPoints, b: ExcessPoints) -> ExcessPoints:
    """The points of ``a``, then those of ``b``."""
    return (
        np.concatenate([a[0], b[0]]),
        np.concatenate([a[1], b[1]]),
        np.concatenate([a[2], b[2]]),
        np.concatenate([a[3], b[3]]),
    )
