"""Finished rows as blocks to write: the output's (dtype, nodata, alpha, mask) and its error map's (geosr.uncertainty).

geosr.pipeline's strip loop hands finished model values to ``finish_rows`` and, with ``--uncertainty``, the
self-ensemble's spread over the same pixels to ``map_block``; both give a ``Block`` of output pixels that the writer
threads write. The error map is float32 in the output's units, one band per output band (0 for an alpha band, which
is copied), NaN (its nodata) wherever the output is nodata: invalid input pixels and pixels outside the AOI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.features import geometry_mask

from geosr.inputrows import InputRows
from geosr.plan import Plan
from geosr.raster import OutputSpec
from geosr.strips import to_output
from geosr.uncertainty import error_map


@dataclass
class Block:
    """Finished output rows [r0, r0 + h) x cols [c0, c0 + w) (output pixels of the output window), ready to write."""

    r0: int
    c0: int
    data: np.ndarray  # (bands, h, w) in the output dtype, in output band order
    mask: np.ndarray | None  # (h, w) uint8 internal mask, when the output has one


def _validity(plan: Plan, r0: int, c0: int, h: int, w: int, held: InputRows):
    """(valid, inside, r0, c0): input validity under the rows (None: all valid), with the AOI's (None: no AOI), and
    the block's top-left pixel in the output window."""
    s = plan.scale
    valid = held.under(held.valid, r0, c0, h, w) if plan.masks else None  # input validity, upsampled nearest
    dy, dx = plan.offset
    r0, c0 = r0 - s * dy, c0 - s * dx  # in the output window from here on
    inside = None
    if plan.aoi_px is not None:
        # output pixels whose centres lie inside the AOI (given in input pixel units)
        t = Affine.translation(plan.out.col_off + c0 / s, plan.out.row_off + r0 / s)
        inside = geometry_mask([plan.aoi_px], (h, w), t @ Affine.scale(1 / s), invert=True)
        valid = np.broadcast_to(inside, (len(plan.colour), h, w)) if valid is None else valid & inside
    return valid, inside, r0, c0


def finish_rows(plan: Plan, values: np.ndarray, r0: int, c0: int, held: InputRows) -> Block:
    """Blended model values (n_colour, h, w) -> an output block in the output dtype, with nodata, alpha and mask.

    r0, c0: the block's top-left output pixel (processed window); held: the input rows under it (validity, alpha).
    """
    _, h, w = values.shape
    alpha = held.under(held.extra, r0, c0, h, w) if plan.alpha else held.extra
    excess = held.excess_under(r0, c0, h, w)
    valid, inside, r0, c0 = _validity(plan, r0, c0, h, w, held)
    if "valid" not in plan.seen and (valid is None or valid.any()):
        plan.seen["valid"] = True
    out_values = to_output(values, valid, plan.radiometry, plan.nodata, plan.fill, excess)
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
    return Block(r0, c0, data, mask)


def map_block(plan: Plan, spread, r0: int, c0: int, held: InputRows, k: float) -> Block:
    """The blended spread (n_colour, h, w) of the rows ``finish_rows`` finishes -> the error map's block (float32,
    output units, NaN where the output is nodata)."""
    _, h, w = spread.shape
    emap = error_map(spread, plan.radiometry, k)
    valid, _, r0, c0 = _validity(plan, r0, c0, h, w, held)
    if valid is not None:
        emap[~valid] = np.nan
    data = np.zeros((len(plan.layout), h, w), np.float32)  # an alpha band is copied: no error
    for i, (kind, j) in enumerate(plan.layout):
        if kind == "c":
            data[i] = emap[j]
        elif valid is not None:  # an alpha band's: NaN too where the output is transparent (no band valid)
            data[i][~valid.any(axis=0)] = np.nan
    return Block(r0, c0, data, None)


def map_spec(plan: Plan, description: str) -> OutputSpec:
    """The error map's file: the output's grid, georeferencing and tiling, float32 with NaN as nodata, one band per
    output band, the output's units; ``description`` in its tags."""
    spec = plan.spec
    profile = {key: v for key, v in spec.profile.items() if key not in ("photometric", "predictor", "nbits")}
    profile.update(driver="GTiff", dtype="float32", nodata=float("nan"), count=len(plan.layout))
    n = len(plan.layout)
    names = [f"expected |error| of band {b}" for b in range(1, n + 1)]
    return dataclasses.replace(
        spec,
        profile=profile,
        tags={**{k: v for k, v in spec.tags.items() if k.startswith("GEOSR_")}, "GEOSR_UNCERTAINTY": description},
        band_tags=[{} for _ in range(n)],
        descriptions=names,
        colorinterp=[ColorInterp.gray] * n,
        scales=[1.0] * n,
        offsets=[0.0] * n,
        internal_mask=False,
    )
