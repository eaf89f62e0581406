"""``geosr upscale --preview PNG``: one picture to judge a result without a GIS.

Three panels side by side over one window of the scene, each with its label above: the input (nearest-neighbour
enlarged by the scale), its bicubic upsampling (geosr.resize) and geosr's output read back from the written file;
a fourth, the error map, with ``--uncertainty``. The window (input pixels) is given, or the one with the most
gradient energy on a decimated read of the input. Bands: the first three (one band as grey), stretched per band
between the input window's 2nd and 98th percentiles, the same stretch on every panel; the error map in grey,
0 to its 98th percentile. The drawing is geosr.pictures'.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from geosr.errors import OptionError

log = logging.getLogger("geosr.preview")

PREVIEW_WINDOW = 64  # side of the automatic window, input pixels
GAP = 4  # white pixels between the panels


def parse_preview_window(text: str) -> tuple[int, int, int, int]:
    """'COL,ROW,WIDTH,HEIGHT' (input pixels) -> four integers; OptionError unless they are, with a positive size."""
    try:
        values = tuple(int(v) for v in text.replace(" ", ",").split(",") if v.strip())
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 0 or min(values[2:]) < 1:
        raise OptionError(
            f"{text!r}: expected COL,ROW,WIDTH,HEIGHT in input pixels (e.g. 0,0,64,64), a positive size",
            option="--preview-window",
        )
    return values  # type: ignore[return-value]


def check_preview(path: str | os.PathLike, *, single: bool, inputs, outputs, overwrite: bool) -> Path:
    """The checked preview path (before any work): one input file only, a .png name, never an input, another output,
    a folder, a device, a place that cannot be written in or (without ``overwrite``) an existing file. Raises
    OptionError, OutputExistsError or RasterError."""
    from geosr.fileio import check_target
    from geosr.raster import check_output_location

    if not single:
        raise OptionError(
            f"{path}: --preview draws one input file; give one file, or run one command per file", option="--preview"
        )
    local = [p for p in inputs if isinstance(p, (str, os.PathLike))]
    target = check_target(
        path,
        what="the preview",
        option="--preview",
        overwrite=overwrite,
        inputs=local,
        outputs=[(label, p) for label, p in outputs if p is not None],
    ).path
    if target.suffix.lower() != ".png":
        raise OptionError(
            f"{path}: the preview is a PNG picture; give --preview a name ending .png", option="--preview"
        )
    check_output_location(target)  # a folder that cannot be written in: before the run, not after it
    return target


def check_preview_window(window: tuple[int, int, int, int], src, aoi=None) -> None:
    """Before any work: OptionError unless ``window`` (input pixels) meets the part of input ``src`` that the output
    will cover (the whole raster, or the window of the area of interest ``aoi``, a geosr.aoi.AOI)."""
    from geosr.aoi import aoi_window
    from geosr.raster import open_raster

    with open_raster(src) as ds:
        out = aoi_window(aoi, ds, src)[0] if aoi is not None else None
        cover = (0, 0, ds.width, ds.height) if out is None else (out.col_off, out.row_off, out.width, out.height)
    shown = _clip(window, tuple(int(v) for v in cover))
    if shown != tuple(window):
        log.warning(
            "--preview-window %s reaches beyond the %d x %d input pixels at %d,%d that the output covers; the preview "
            "shows its part inside them, %s",
            ",".join(map(str, window)),
            *cover[2:],
            *cover[:2],
            ",".join(map(str, shown)),
        )


def busiest_window(values: np.ndarray, factor: int, width: int, height: int) -> tuple[int, int]:
    """(col, row) in full-resolution pixels of the ``width`` x ``height`` window with the most gradient energy on
    ``values`` (b, h, w), a read decimated by ``factor``; NaN (invalid) counts as flat, and so does its edge with
    valid pixels (the border of a scene's nodata is no detail)."""
    grey = values.astype(np.float64).mean(axis=0)
    energy = np.zeros_like(grey)
    energy[:, 1:] += np.nan_to_num(np.diff(grey, axis=1) ** 2)
    energy[1:, :] += np.nan_to_num(np.diff(grey, axis=0) ** 2)
    wh, ww = max(1, min(grey.shape[0], height // factor)), max(1, min(grey.shape[1], width // factor))
    s = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = s[wh:, ww:] - s[:-wh, ww:] - s[wh:, :-ww] + s[:-wh, :-ww]  # every window's total
    r, c = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(c) * factor, int(r) * factor


SEARCH_PIXELS = 1 << 18  # the most input pixels the window search reads


def _chosen_window(ds, src, shown, cover: tuple[int, int, int, int], ds_out=None) -> tuple[int, int, int, int]:
    """The busiest PREVIEW_WINDOW-sized window inside ``cover`` (col, row, width, height of input pixels): searched on
    the cover itself where it is small (an AOI), else on a decimated read of the whole raster, cut to the cover."""
    from rasterio.windows import Window

    from geosr.raster import read_decimated

    c0, r0, cw, ch = cover
    w, h = min(PREVIEW_WINDOW, cw), min(PREVIEW_WINDOW, ch)
    if cw * ch <= SEARCH_PIXELS:
        values, f, a, b = _read(src, shown, Window(c0, r0, cw, ch)), 1, c0, r0
    else:
        values, masks = read_decimated(ds, src, shown, True, max_pixels=SEARCH_PIXELS)
        values = values.astype(np.float64)
        if masks is not None:
            values[masks == 0] = np.nan
        f = max(1, round(ds.width / values.shape[2]))
        a, b = c0 // f, r0 // f  # the decimated cells the cover touches, at least one each way
        a1, b1 = max(a + 1, -(-(c0 + cw) // f)), max(b + 1, -(-(r0 + ch) // f))
        values, a, b = values[:, b:b1, a:a1], a * f, b * f
    if ds_out is not None:  # what the output masks (outside an AOI's polygons) is no detail either
        from rasterio.enums import Resampling

        out_mask = ds_out.read_masks(1, out_shape=values.shape[1:], resampling=Resampling.nearest)
        values[:, out_mask == 0] = np.nan
    col, row = busiest_window(values, f, w, h)
    # back to input pixels, inside the cover (a decimated cell can start before it)
    return min(max(c0, a + col), c0 + cw - w), min(max(r0, b + row), r0 + ch - h), w, h


def _read(path, bands, window) -> np.ndarray:
    """float64 (b, h, w) of a window, NaN where GDAL's masks say invalid."""
    from geosr.raster import open_raster, read_window

    with open_raster(path) as ds:
        values, masks = read_window(ds, path, window, bands or range(1, min(ds.count, 3) + 1), True)
    out = values.astype(np.float64)
    out[masks == 0] = np.nan
    return out


def write_preview(
    target: Path,
    src,
    dst: Path,
    *,
    bands=None,
    error_map: Path | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> Path:
    """Draw and write (atomically) the preview of the finished output ``dst`` of input ``src`` at ``target``.

    bands: the input's bands that made the output (1-based; None: all); window: (col, row, width, height) in input
    pixels, cut to the part of the input the output covers (None: chosen). Returns ``target``.
    """
    import torch
    from rasterio.windows import Window

    from geosr.fileio import atomic_write
    from geosr.pictures import labelled_panels, percentile_stretch, png_bytes, stretched
    from geosr.raster import open_raster
    from geosr.resize import imresize

    with open_raster(src) as ds_in, open_raster(dst) as ds_out:
        shown = list(bands or range(1, ds_in.count + 1))[:3]
        m = ~ds_in.transform @ ds_out.transform  # output pixel -> input pixel
        s = round(1 / m.a) if 0 < m.a < 1 else max(1, round(ds_out.width / ds_in.width))
        c0, r0 = (round(m.c), round(m.f)) if 0 < m.a < 1 else (0, 0)
        cover = (c0, r0, ds_out.width // s, ds_out.height // s)  # the input pixels the output covers
        if window is None:
            window = _chosen_window(ds_in, src, shown, cover, ds_out)
    col, row, w, h = _clip(window, cover)
    lr = _read(src, shown, Window(col, row, w, h))
    sr = _read(dst, list(range(1, len(shown) + 1)), Window((col - c0) * s, (row - r0) * s, w * s, h * s))
    up = imresize(
        torch.from_numpy(np.nan_to_num(lr, nan=float(np.nanmean(lr)) if np.isfinite(lr).any() else 0)), float(s)
    ).numpy()
    near = lr.repeat(s, 1).repeat(s, 2)  # the input, nearest-neighbour enlarged
    up[np.isnan(near)] = np.nan  # invalid stays black, as on the input's panel
    low, high = percentile_stretch(lr)
    panels = [
        ("input", stretched(near, low, high)),
        ("bicubic", stretched(up, low, high)),
        ("geosr", stretched(sr, low, high)),
    ]
    if error_map is not None:
        err = _read(error_map, [1], Window((col - c0) * s, (row - r0) * s, w * s, h * s))
        panels.append(("error map", stretched(err, np.zeros(1), percentile_stretch(err, 0, 98)[1])))
    return atomic_write(target, png_bytes(labelled_panels(panels, GAP)), what="the preview")


def _clip(window: tuple[int, int, int, int], cover: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """``window`` (input pixels) cut to ``cover``; OptionError when they do not meet."""
    col, row, w, h = window
    c0, r0, cw, ch = cover
    left, top = max(col, c0), max(row, r0)
    right, bottom = min(col + w, c0 + cw), min(row + h, r0 + ch)
    if right <= left or bottom <= top:
        raise OptionError(
            f"--preview-window {col},{row},{w},{h} lies outside the {cw} x {ch} input pixels at "
            f"{c0},{r0} that the output covers; give a window inside them",
            option="--preview-window",
        )
    return left, top, right - left, bottom - top
