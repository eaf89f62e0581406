"""The input side of the strip loop (geosr.strips): a strip as read, and the input rows under the output rows a sink
finishes (validity, extra values, what the radiometry's clip took)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geosr.radiometry import ExcessPoints, excess_points


@dataclass
class Strip:
    """One tile row of one panel, read and normalised (input pixels; columns from panel.x0)."""

    y0: int  # first input row
    x: np.ndarray  # (bands, h, w) float32 model values, invalid pixels filled; a tile is at most h x w (never padded)
    valid: np.ndarray  # (bands, h, w) bool
    extra: np.ndarray  # (k, h, w) other input values the sink needs under its rows (the pipeline's alpha bands)
    todo: np.ndarray  # (n_tile_cols, n_groups) bool: whether a tile of a group holds any valid pixel
    excess: np.ndarray | None = None  # (bands, h, w) what the radiometry's clip takes (Radiometry.excess), or None


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
        self.excess: np.ndarray | None = None  # (bands, rows, cols); None while no strip held had any

    def add(self, strip: Strip, length: int) -> None:
        """Hold the strip's rows from the first one not held yet (strips overlap)."""
        v, e = strip.valid[:, :length], strip.extra[:, :length]
        x = None if strip.excess is None else strip.excess[:, :length]
        if self.valid is None:
            self.start, self.valid, self.extra, self.excess = strip.y0, v, e, x
            return
        skip = self.start + self.valid.shape[1] - strip.y0  # rows of the strip already held
        if x is not None or self.excess is not None:  # zeros for the rows of strips that had none
            held = np.zeros(self.valid.shape, np.float32) if self.excess is None else self.excess
            new = np.zeros(v[:, skip:].shape, np.float32) if x is None else x[:, skip:]
            self.excess = np.concatenate([held, new], axis=1)
        self.valid = np.concatenate([self.valid, v[:, skip:]], axis=1)
        self.extra = np.concatenate([self.extra, e[:, skip:]], axis=1)

    def drop_before(self, row: int) -> None:
        k = row - self.start
        if self.valid is not None and k > 0:
            self.valid, self.extra = self.valid[:, k:], self.extra[:, k:]
            if self.excess is not None:
                self.excess = self.excess[:, k:] if self.excess[:, k:].any() else None
            self.start = row

    def excess_under(self, r0: int, c0: int, h: int, w: int) -> ExcessPoints | None:
        """The held excess under output rows [r0, r0 + h) x columns [c0, c0 + w): the output pixels it falls on
        (nearest, geosr.radiometry.excess_points), rows and columns within the block; None where there is none."""
        if self.excess is None:
            return None
        s = self.scale
        i0, j0 = r0 // s, c0 // s  # the first input row and column under the block
        part = self.excess[:, i0 - self.start : -(-(r0 + h) // s) - self.start]
        part = part[:, :, j0 - self.x0 : -(-(c0 + w) // s) - self.x0]
        if not part.any():
            return None
        return excess_points(part, s, (r0 - i0 * s, c0 - j0 * s), (h, w))

    def under(self, a: np.ndarray, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        """``a`` (self.valid or self.extra) under output rows [r0, r0 + h) x columns [c0, c0 + w), upsampled nearest."""
        s = self.scale
        return a[:, (r0 + np.arange(h)) // s - self.start][:, :, (c0 + np.arange(w)) // s - self.x0]
