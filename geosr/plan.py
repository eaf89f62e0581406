"""The plan for one file: everything decided about a run before the first tile, from the open source raster.

``make_plan(ds, src, dst, predictor, options)`` checks the options against the model card and the raster and
settles the bands (the ones through the model, in groups of the model's channels, and the alpha bands beside it),
the processed and output windows (the AOI's, widened by the overlap for context), the tile grid, the global
radiometry (from a decimated read of the whole raster), the nodata fill, the output's profile and tags, the panel
width and the batch size. The pipeline (geosr.pipeline) then only executes the plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.windows import Window
from shapely.geometry import box
from shapely.prepared import prep

from geosr.aoi import aoi_window
from geosr.checkpoint import ModelCard
from geosr.consistency import DEFAULT_HALO as CONSISTENCY_HALO
from geosr.errors import ModelFileError, OptionError, RasterError
from geosr.options import PANEL_STEP, UpscaleOptions
from geosr.predictor import Predictor
from geosr.provenance import provenance_tags
from geosr.radiometry import Radiometry
from geosr.raster import (
    OutputSpec,
    alpha_bands,
    check_input,
    check_output_name,
    copy_format_problem,
    georeferencing,
    has_dataset_mask,
    has_masks,
    output_nodata,
    output_spec,
    raster_radiometry,
)
from geosr.tiling import AxisTiling, TileGrid, tiling_problem

log = logging.getLogger("geosr.plan")

ACCUMULATOR_BYTES = 16 * 2**20
MAX_PANEL_WIDTH = 2048


def auto_panel_width(bands: int, scale: int, tile: int) -> int:
    """Input columns per pass such that the float32 strip accumulator (bands x s*tile x s*width) stays within
    ACCUMULATOR_BYTES: a multiple of 512, at least 512 and at most MAX_PANEL_WIDTH.

    Wider panels recompute fewer tiles along panel edges (about one tile column per edge); narrower ones hold less.
    """
    per_column = bands * scale * tile * scale * 4
    width = ACCUMULATOR_BYTES // per_column // PANEL_STEP * PANEL_STEP
    return int(min(MAX_PANEL_WIDTH, max(PANEL_STEP, width)))


@dataclass(frozen=True)
class Plan:
    """What to do with one file; windows in input (raster) pixels, the grid over the processed window."""

    src: Path
    dst: Path
    scale: int
    tile_size: int
    overlap: int
    batch_size: int  # tiles per model call
    bands: tuple[int, ...]  # output bands, as 1-based input band indices
    colour: tuple[int, ...]  # the bands that go through the model
    alpha: tuple[int, ...]  # the alpha bands (upscaled nearest)
    layout: tuple[tuple[str, int], ...]  # per output band: ("c", index in colour) or ("a", index in alpha)
    groups: tuple[tuple[int, ...], ...]  # per model call: colour indices, padded to the model's channels
    real: tuple[int, ...]  # per group: how many of its indices are real (the rest is padding)
    masks: bool  # read GDAL masks (and check NaN)
    proc: Window  # the processed window (output window + model context)
    out: Window  # the output window
    grid: TileGrid  # over ``proc``
    tiles_needed: Any  # (tile rows, tile columns) bool: the tiles near the AOI (None: all), _tiles_needed
    radiometry: Radiometry
    spec: OutputSpec
    nodata: float | None
    fill: float  # value written to invalid pixels
    aoi_px: Any  # the AOI in raster pixels (shapely), or None when the output window lies inside it
    panel_width: int
    cog: bool
    compress: str
    overwrite: bool
    consistency: bool  # correct the output for consistency with the input (geosr.consistency)
    seen: dict[str, bool] = field(default_factory=dict)  # what the run found: "valid" once a block has a valid pixel

    @property
    def offset(self) -> tuple[int, int]:
        """(rows, cols) of the output window inside the processed window, input pixels."""
        return int(self.out.row_off - self.proc.row_off), int(self.out.col_off - self.proc.col_off)

    @property
    def georeferenced(self) -> bool:
        return "crs" in self.spec.profile or self.spec.gcps is not None


def band_groups(n: int, c: int) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Colour indices in groups of ``c``: one group when n == c, else groups of c with the last padded by repeating.

    Returns (groups, real): per group its indices and how many of them are real.
    """
    if n == c:
        return (tuple(range(n)),), (n,)
    groups, real = [], []
    for start in range(0, n, c):
        idx = list(range(start, min(start + c, n)))
        real.append(len(idx))
        idx += [idx[-1]] * (c - len(idx))
        groups.append(tuple(idx))
    return tuple(groups), tuple(real)


def _groups_str(colour, groups, real) -> str:
    return "; ".join(
        "(" + ", ".join(f"band {colour[i]}" if k < r else "pad" for k, i in enumerate(g)) + ")"
        for g, r in zip(groups, real)
    )


def card_tiling(
    card: ModelCard, source: str, tile_size: int | None = None, overlap: int | None = None
) -> tuple[int, int]:
    """The tile size and overlap (input pixels) a run uses: the ones given, the model card's for those that are None.

    source: the model file's name, for messages. Raises OptionError (naming --overlap or --tile-size: a usage error,
    whatever the rasters) when a value given and one of the card's do not fit together (geosr.tiling.tiling_problem);
    values given both are checked when they are made (geosr.options.check_tiling).
    """
    tile = card.tile_size if tile_size is None else tile_size
    lap = card.overlap if overlap is None else overlap
    problem = tiling_problem(tile, lap)
    if problem and tile_size is None:
        raise OptionError(
            f"{problem}; {tile} is the tile size of the model card ({source}): lower --overlap or give --tile-size",
            option="--overlap",
        )
    if problem:
        raise OptionError(
            f"{problem}; {lap} is the overlap of the model card ({source}): give --overlap with --tile-size {tile}",
            option="--tile-size",
        )
    return tile, lap


@dataclass(frozen=True)
class _Bands:
    """The bands of a run (1-based input indices) and how they go through the model; fields as in Plan."""

    bands: tuple[int, ...]
    dtype: str  # their common dtype
    colour: tuple[int, ...]
    alpha: tuple[int, ...]
    layout: tuple[tuple[str, int], ...]
    groups: tuple[tuple[int, ...], ...]
    real: tuple[int, ...]
    grouping: str | None  # the groups in words when they are not one full model call, else None


def make_plan(ds, src: Path, dst: Path, predictor: Predictor, options: UpscaleOptions) -> Plan:
    """Check the source ``ds`` (open, read from ``src``) against the options and the model, and decide the run.

    The steps, in the order of their checks: the model and its tiles, the output's name and driver, the
    georeferencing, the bands, nodata and the output's format, the windows (AOI), the radiometry, the output's
    profile and tags. Raises GeosrError (RasterError, ModelFileError) naming the file, the value and the remedy.
    """
    s = predictor.scale
    tile, overlap = _model_tiling(src, predictor, options)
    driver = check_output_name(dst, options.cog)
    georef = georeferencing(ds, src)
    b = _bands(ds, src, predictor, options.bands)
    masks = has_masks(ds, b.colour)
    nodata = _nodata(ds, src, dst, driver, b)
    out, proc, aoi_px = _windows(ds, src, options, (tile, overlap, s))
    if driver == "JPEG" and max(out.width, out.height) * s > JPEG_MAX_SIDE:  # libjpeg's limit, found only at the end
        raise RasterError(
            f"{dst} (from {src}): JPEG holds at most {JPEG_MAX_SIDE} pixels a side, the output would have "
            f"{int(out.width) * s} x {int(out.height) * s}; name the output .tif or .png",
            option="--output",
        )
    radiometry = raster_radiometry(ds, src, b.colour, options.value_range)
    if options.value_range is not None and b.dtype == "uint8":
        log.warning("%s: uint8 always maps 0..255; --value-range is ignored", src)
    made = ds.tags().get("GEOSR_SCALE")
    if made:  # an earlier output among the inputs, most often by mistake
        log.warning("%s: an output of geosr (x%s, its GEOSR_SCALE tag); upscaling it again", src, made)
    spec = _output_spec(
        ds,
        src,
        predictor,
        options,
        b,
        tile=tile,
        overlap=overlap,
        out=out,
        georef=georef,
        nodata=nodata,
        radiometry=radiometry,
        aoi_px=aoi_px,
    )
    fill = nodata if nodata is not None else (float("nan") if np.dtype(b.dtype).kind == "f" else 0)
    grid = TileGrid(int(proc.height), int(proc.width), tile, overlap, s)
    reach = overlap + (AOI_ROUNDS * CONSISTENCY_HALO if options.consistency else 0)
    return Plan(
        src=src,
        dst=dst,
        scale=s,
        tile_size=tile,
        overlap=overlap,
        batch_size=options.batch_size,
        bands=b.bands,
        colour=b.colour,
        alpha=b.alpha,
        layout=b.layout,
        groups=b.groups,
        real=b.real,
        masks=masks,
        proc=proc,
        out=out,
        grid=grid,
        tiles_needed=_tiles_needed(grid, proc, aoi_px, reach),
        radiometry=radiometry,
        spec=spec,
        nodata=nodata,
        fill=fill,
        aoi_px=aoi_px,
        panel_width=options.panel_width or auto_panel_width(len(b.colour), s, min(tile, int(proc.height))),
        cog=options.cog,
        compress=options.compress,
        overwrite=options.overwrite,
        consistency=options.consistency,
    )


def _model_tiling(src: Path, predictor: Predictor, options: UpscaleOptions) -> tuple[int, int]:
    """The tile size and overlap of the run (card_tiling), a warning for an overlap below the card's; raises
    ModelFileError for a model that does not map its bands to as many bands."""
    card = predictor.card
    tile, overlap = card_tiling(card, predictor.source, options.tile_size, options.overlap)
    if overlap < card.overlap and options.overlap is not None:
        log.warning("%s: overlap %d is below the model card's %d; seams may show", src, overlap, card.overlap)
    cfg = card.config
    if cfg.out_channels != cfg.in_channels:
        raise ModelFileError(
            f"{predictor.source} maps {cfg.in_channels} bands to {cfg.out_channels}; geosr upscale needs a model "
            "with as many output bands as input bands"
        )
    return tile, overlap


def _bands(ds, src: Path, predictor: Predictor, bands: tuple[int, ...] | None) -> _Bands:
    """The output bands (``bands``, or all of them), the alpha bands among them, the colour bands in groups of the
    model's channels. Raises RasterError for bands geosr cannot read (check_input) or only alpha bands."""
    bands = bands or tuple(range(1, ds.count + 1))
    dtype = check_input(ds, src, bands)
    alpha = tuple(alpha_bands(ds, bands))
    colour = tuple(b for b in bands if b not in alpha)
    if not colour:
        raise RasterError(
            f"{src}: bands {list(bands)} are all alpha bands; nothing to super-resolve (--bands)", option="--bands"
        )
    layout = tuple(("a", alpha.index(b)) if b in alpha else ("c", colour.index(b)) for b in bands)
    groups, real = band_groups(len(colour), predictor.channels)
    grouping = None
    if len(groups) > 1 or real[0] < predictor.channels:
        grouping = _groups_str(colour, groups, real)
        log.info(
            "%s: %d bands through a %d-channel model in %d group(s) %s",
            src,
            len(colour),
            predictor.channels,
            len(groups),
            grouping,
        )
    return _Bands(bands, dtype, colour, alpha, layout, groups, real, grouping)


def _nodata(ds, src: Path, dst: Path, driver: str, b: _Bands) -> float | None:
    """The output's nodata value (output_nodata); raises RasterError when the output's format (PNG, JPEG) cannot
    hold the bands, their dtype and that value faithfully."""
    nodata = output_nodata(ds, src, b.colour)
    problem = copy_format_problem(driver, b.dtype, [ds.colorinterp[i - 1] for i in b.bands], nodata)
    if problem:
        raise RasterError(f"{dst} (from {src}): {problem}", option="--output")
    return nodata


JPEG_MAX_SIDE = 65500  # pixels: libjpeg's JPEG_MAX_DIMENSION

# The tiles a non-rectangular AOI needs: those within the tiles' overlap of it, and, with the consistency correction,
# within AOI_ROUNDS of its halos (the correction's windows reach a halo further each round). The AOI's pixels are
# then those of a run of every tile (tests/test_aoi.py; on its two fields 0, 1 and 2 rounds did too: 4 keeps room).
AOI_ROUNDS = 4


def _tiles_needed(grid: TileGrid, proc: Window, aoi_px: Any, margin: int) -> np.ndarray | None:
    """Which tiles of ``grid`` (over ``proc``) lie within ``margin`` input pixels of the AOI (raster pixels); None
    without an AOI to mask (every tile is needed)."""
    if aoi_px is None:
        return None
    y0, x0 = np.meshgrid(np.add(proc.row_off, grid.rows.starts), np.add(proc.col_off, grid.cols.starts), indexing="ij")
    boxes = shapely.box(x0 - margin, y0 - margin, x0 + grid.cols.length + margin, y0 + grid.rows.length + margin)
    shapely.prepare(aoi_px)
    return shapely.intersects(aoi_px, boxes)


def _windows(ds, src: Path, options: UpscaleOptions, tiling: tuple[int, int, int]) -> tuple[Window, Window, Any]:
    """(output window, processed window, AOI in pixels or None), input pixels: the whole raster without an AOI;
    with one, the window covering it, and around it the whole raster's tiles that reach it (``_on_the_grid``).
    tiling: (tile, overlap, scale). The AOI is None when the output window lies inside it. Raises AOIMissError."""
    if options.aoi is None:
        out = Window(0, 0, ds.width, ds.height)
        return out, out, None
    out, aoi_px = aoi_window(options.aoi, ds, src)
    if prep(aoi_px).contains(box(out.col_off, out.row_off, out.col_off + out.width, out.row_off + out.height)):
        aoi_px = None  # the whole output window lies inside the AOI
    # context around the output window: the tiles' overlap, and the consistency correction's halo
    ctx = tiling[1] + (CONSISTENCY_HALO if options.consistency else 0)
    r0, r1 = _on_the_grid(int(out.row_off), int(out.row_off + out.height), ds.height, tiling, ctx)
    c0, c1 = _on_the_grid(int(out.col_off), int(out.col_off + out.width), ds.width, tiling, ctx)
    return out, Window(c0, r0, c1 - c0, r1 - r0), aoi_px


def _on_the_grid(o0: int, o1: int, size: int, tiling: tuple[int, int, int], ctx: int) -> tuple[int, int]:
    """The processed span [a, b) of an axis around the output span [o0, o1): the whole raster's tiles (tiling:
    tile, overlap, scale) whose blend weight reaches [o0 - ctx, o1 + ctx), so that the AOI's tiles are the whole
    raster's and its pixels those of the whole raster's output: the model sees the same input, and every pixel of
    that span blends the same tiles with the same weights (the last tile of an axis, moved inward, overlaps its
    neighbour by more than the overlap, and the ramp between them lies in the middle of that)."""
    tile, overlap, scale = tiling
    if size <= tile:  # the whole raster is one tile
        return 0, size
    axis = AxisTiling(size, tile, overlap, scale)
    reach = axis.tiles_for(scale * max(0, o0 - ctx), scale * min(size, o1 + ctx))
    return axis.extent(reach[0])[0], axis.extent(reach[-1])[1]


def _output_spec(
    ds,
    src: Path,
    predictor: Predictor,
    options: UpscaleOptions,
    b: _Bands,
    *,
    tile: int,
    overlap: int,
    out: Window,
    georef: str,
    nodata: float | None,
    radiometry: Radiometry,
    aoi_px: Any,
) -> OutputSpec:
    """The output's profile and tags (provenance, radiometry, band groups, alpha bands); an internal mask when
    nothing else marks invalid pixels (no nodata value, no alpha band) and some may be: a masked input or an AOI."""
    internal_mask = nodata is None and not b.alpha and (has_dataset_mask(ds, b.colour) or aoi_px is not None)
    tags = provenance_tags(predictor, tile=tile, overlap=overlap, consistency=options.consistency)
    tags["GEOSR_RADIOMETRY"] = radiometry.describe()
    if b.grouping is not None:
        tags["GEOSR_BAND_GROUPS"] = b.grouping
    if b.alpha:
        tags["GEOSR_ALPHA"] = f"bands {list(b.alpha)} upscaled nearest, not through the model"
    return output_spec(
        ds,
        src,
        scale=predictor.scale,
        window=out,
        bands=b.bands,
        dtype=b.dtype,
        georef=georef,
        compress=options.compress,
        internal_mask=internal_mask,
        tags=tags,
        nodata=nodata,
    )
