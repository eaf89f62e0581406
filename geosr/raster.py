"""Raster I/O for geosr: open and check inputs, read windows, build the output's profile and metadata, write safely.

Reading: ``open_raster`` opens a file, ``read_whole``, ``read_window`` and ``read_decimated`` read all of it, a window
of it or a reduced-resolution sample of it, and ``raster_radiometry`` computes its global value mapping from that
sample. They are the only readers of input pixels in geosr (upscale, evaluation and the training loader) and map every
rasterio/GDAL failure the same way: to the caller's error class (RasterError by default, DataError for data sets)
with one line that names the file. Damaged files are detected on every read path: reads run with
``READ_CHECKS``, which turn off GDAL's whole-image PNG decoder (it returns the garbage of a truncated PNG without an
error) and keep libjpeg's warnings (a truncated JPEG) errors.

Georeferencing of an output super-resolved by ``scale`` over an input window:
transform = window transform * Affine.scale(1 / scale) (right for rotated rasters too), CRS copied as is, GCPs moved
to the new pixel grid, footprint unchanged. Outputs are tiled GeoTIFFs (512 x 512 blocks, compressed with a
predictor, BigTIFF when it may be needed), written to a temporary file beside the output and renamed on success.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import shutil
import socket
import stat
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio._err import CPLE_BaseError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geosr.limits import COMPRESSIONS  # noqa: F401 - the output codecs, re-exported for geosr.options
from geosr.errors import GeosrError, OptionError, OutputExistsError, RasterError, WriteError
from geosr.radiometry import SUPPORTED_DTYPES, Radiometry, compute_radiometry, valid_mask

BLOCK = 512
# Suffixes of the rasters a folder search picks up (GDAL reads many more; name files explicitly for those).
RASTER_SUFFIXES = (".tif", ".tiff", ".gtif", ".vrt", ".jp2", ".j2k", ".png", ".jpg", ".jpeg", ".img", ".webp", ".bmp")
# Output formats chosen by the output file's suffix; anything else is written as GeoTIFF.
COPY_DRIVERS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
COPY_DTYPES = {"PNG": ("uint8", "uint16"), "JPEG": ("uint8",)}


# GDAL settings under which a damaged file fails its read instead of returning garbage: GDAL's whole-image PNG
# decoder reports no error for a truncated PNG (the row-by-row one does), and libjpeg's "premature end of file" is only
# a warning unless GDAL_ERROR_ON_LIBJPEG_WARNING holds (its default, which a user's environment may have turned off).
READ_CHECKS: dict[str, Any] = {"GDAL_PNG_WHOLE_IMAGE_OPTIM": "NO", "GDAL_ERROR_ON_LIBJPEG_WARNING": "YES"}


def gdal_options() -> dict[str, Any]:
    """GDAL settings for a run: a bounded block cache (unless the user set GDAL_CACHEMAX), internal masks, and the
    ``READ_CHECKS`` that make damaged inputs fail."""
    options: dict[str, Any] = {"GDAL_TIFF_INTERNAL_MASK": True, **READ_CHECKS}
    if "GDAL_CACHEMAX" not in os.environ:
        options["GDAL_CACHEMAX"] = 64  # MB; outputs are written in whole blocks, so this mostly serves reads
    return options


@contextlib.contextmanager
def quiet_georeferencing() -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning: plain images (PNG, JPEG, TIFF) are valid inputs and outputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


READ_ERRORS = (RasterioError, CPLE_BaseError)  # what rasterio raises for a file it cannot open, read or write

log = logging.getLogger("geosr.raster")


def gdal_message(exc: BaseException) -> str:
    """The first informative message of a rasterio error and its causes, on one line.

    rasterio reports a failed read as "Read failed. See previous exception for details." with GDAL's message in the
    exception's cause; that message is the one a user needs.
    """
    e: BaseException | None = exc
    while e is not None:
        text = " ".join(str(e).split())
        if text and "See previous exception" not in text:
            return text
        e = e.__cause__ or e.__context__
    return type(exc).__name__


@contextlib.contextmanager
def open_raster(
    path: str | os.PathLike, error: type[GeosrError] = RasterError, remedy: str = ""
) -> Iterator[rasterio.io.DatasetReader]:
    """Open ``path`` for reading under ``READ_CHECKS``, with rasterio's warning about plain images silenced.

    A missing file, a folder or anything GDAL cannot open raises ``error`` naming the file, followed by ``remedy``
    (e.g. "; remove it from the data or replace it").
    """
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such file{remedy}")
    if path.is_dir():
        raise error(f"{path}: is a folder, not a raster{remedy}")
    check_regular_file(path, error, remedy)
    check_name_encoding(path, error)
    with quiet_georeferencing():
        try:
            with rasterio.Env(**READ_CHECKS):  # some drivers decide at open how they will decode (PNG)
                ds = rasterio.open(path)
        except READ_ERRORS as exc:
            raise error(f"{path}: not a raster GDAL can read ({gdal_message(exc)}){remedy}") from None
        with ds:
            check_sources(ds, path, error, remedy)
            yield ds


def printable(path: str | os.PathLike) -> str:
    """``path`` as text that any terminal or log takes: bytes that are not UTF-8 shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_name_encoding(path: str | os.PathLike, error: type[GeosrError] = RasterError) -> None:
    """Raise ``error`` for a path whose name is not valid UTF-8: GDAL takes UTF-8 names only (the file exists, but
    no GDAL call could open or create it)."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{printable(path)}: the name is not valid UTF-8, which GDAL (and so geosr) needs for file names; "
                    "rename it (e.g. convmv -f latin1 -t utf8) and run again") from None


def check_regular_file(path: Path, error: type[GeosrError] = RasterError, remedy: str = "") -> None:
    """Raise ``error`` for a named pipe, socket or device: GDAL reads rasters by seeking, which those cannot do (a
    pipe would be read once, or block forever)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: the caller's open says so
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise error(f"{path}: is {kind}, not a file; geosr reads rasters from files: save the data to a file and "
                    f"give that{remedy}")


def check_sources(ds, path: Path, error: type[GeosrError] = RasterError, remedy: str = "") -> None:
    """Raise ``error`` naming the first missing file a raster reads its pixels from (a VRT's sources, a .ovr or .msk
    that GDAL lists), which GDAL would only report, as a failed read, once that part is reached."""
    if ds.driver != "VRT":
        return
    for name in ds.files[1:]:
        if name.startswith("/vsi") or "://" in name:
            continue
        source = Path(name)
        if not source.exists():
            raise error(f"{path}: its source file {source} does not exist (a VRT reads its pixels from the files it "
                        f"names); restore that file or fix the VRT{remedy}")
        check_regular_file(source, error, remedy)


# --- what an input holds -----------------------------------------------------------------------------------------


def georeferencing(ds, path: str | os.PathLike) -> str:
    """'transform', 'gcps' or 'none' (a plain image); raises RasterError for a raster referenced by RPCs only."""
    if ds.transform != Affine.identity() or (ds.crs is not None and not ds.gcps[0]):
        return "transform"
    if ds.gcps[0]:
        return "gcps"
    if ds.rpcs is not None:
        raise RasterError(
            f"{path}: georeferenced by RPCs only, which geosr cannot carry to a finer grid; orthorectify it first "
            "(e.g. gdalwarp -rpc) and upscale the result"
        )
    return "none"


def check_input(ds, path: str | os.PathLike, bands: Sequence[int]) -> str:
    """Check that ``bands`` (1-based) of ``ds`` can be super-resolved; returns their common dtype.

    Raises RasterError for a band index out of range, a dtype geosr does not handle, bands of mixed dtypes or a
    paletted band.
    """
    for b in bands:
        if not 1 <= b <= ds.count:
            raise RasterError(
                f"{path} has {ds.count} band{'s' if ds.count > 1 else ''}; --bands takes 1-based indices up to "
                f"{ds.count}, got {b}"
            )
    dtypes = sorted({ds.dtypes[b - 1] for b in bands})
    if len(dtypes) > 1:
        raise RasterError(f"{path}: the bands have different dtypes {dtypes}; pick bands of one dtype with --bands")
    dtype = dtypes[0]
    if dtype not in SUPPORTED_DTYPES:
        raise RasterError(
            f"{path}: dtype {dtype} is not supported; geosr upscales {', '.join(SUPPORTED_DTYPES)} rasters"
        )
    for b in bands:
        if ds.colorinterp[b - 1] == ColorInterp.palette:
            raise RasterError(
                f"{path}: band {b} is paletted (class codes, not intensities) and cannot be super-resolved; "
                "expand it to RGB first (gdal_translate -expand rgb)"
            )
    return dtype


def output_nodata(ds, path, bands: Sequence[int]) -> float | None:
    """The one nodata value of an output of ``bands`` (1-based; a GeoTIFF holds one value for all its bands).

    The bands' nodata value when they share one (or None when none has one). Bands with different values (per-band
    nodata, as a VRT or an ENVI file may have; or some bands with and some without) take the first value declared,
    with a warning: the invalid pixels of every band are written with it, and valid pixels that equal it move to the
    nearest other value (geosr.radiometry.keep_off_nodata), so nothing valid reads as nodata and nothing invalid as
    data.
    """
    values = [ds.nodatavals[b - 1] for b in bands]
    declared = [v for v in values if v is not None]
    if not declared:
        return None
    first = declared[0]
    same = all(v is not None and (v == first or (math.isnan(v) and math.isnan(first))) for v in values)
    if not same:
        shown = ", ".join(f"band {b}: {'none' if v is None else f'{v:g}'}" for b, v in zip(bands, values))
        log.warning("%s: the bands have different nodata values (%s); a GeoTIFF holds one, so the output marks the "
                    "invalid pixels of every band with %g (valid pixels equal to it move to the next value)",
                    path, shown, first)
    return first


def copy_format_problem(driver: str, dtype: str, colorinterp: Sequence[ColorInterp], nodata: float | None) -> str:
    """What keeps an output of bands with ``colorinterp`` (in output order), ``dtype`` and ``nodata`` from being
    written faithfully as PNG or JPEG, with the remedy; "" when nothing does (always "" for GTiff).

    PNG holds uint8 / uint16 in 1 to 4 bands, the 2nd of 2 and the 4th of 4 taken as alpha, and one nodata value
    for its colour bands when it has no alpha band; JPEG holds uint8 in 1 or 3 bands and no nodata value (its lossy
    compression changes the fill value and valid values near it: valid and nodata pixels would swap). Masks are
    kept by both (a .msk sidecar for PNG, inside the file for JPEG).
    """
    if driver == "GTiff":
        return ""
    count = len(colorinterp)
    tif = "name the output .tif"
    if dtype not in COPY_DTYPES[driver]:
        return f"{driver} cannot hold {dtype} values; {tif}"
    if driver == "JPEG":
        if count not in (1, 3):
            return f"JPEG holds 1 or 3 bands, not {count}; {tif} or pick 1 or 3 bands with --bands"
        if nodata is not None:
            return (f"JPEG cannot keep nodata apart: its lossy compression changes the fill value {nodata:g} and the "
                    "valid values near it, so valid and nodata pixels would swap; name the output .png or .tif")
        return ""
    if count > 4:
        return f"PNG holds 1 to 4 bands, not {count}; {tif} or pick bands with --bands"
    if count in (2, 4) and colorinterp[-1] != ColorInterp.alpha:
        return (f"PNG takes the last of {count} bands as alpha (transparency), and band {count} of the output is "
                f"not an alpha band; {tif} or pick bands with --bands")
    if count in (2, 4) and nodata is not None:
        return f"PNG cannot hold the nodata value {nodata:g} beside an alpha band; {tif}"
    return ""


def alpha_bands(ds, bands: Sequence[int]) -> list[int]:
    """Which of ``bands`` (1-based) are alpha bands, by colour interpretation."""
    return [b for b in bands if ds.colorinterp[b - 1] == ColorInterp.alpha]


def has_masks(ds, bands: Sequence[int]) -> bool:
    """Whether any of ``bands`` can hold invalid pixels (nodata, alpha, internal mask, or NaN in floats)."""
    if any(ds.dtypes[b - 1].startswith("float") for b in bands):
        return True
    return any(ds.mask_flag_enums[b - 1] != [MaskFlags.all_valid] for b in bands)


def has_dataset_mask(ds, bands: Sequence[int]) -> bool:
    """Whether ``bands`` are masked by an internal (per-dataset) mask or by an alpha band."""
    return any(
        MaskFlags.per_dataset in ds.mask_flag_enums[b - 1] or MaskFlags.alpha in ds.mask_flag_enums[b - 1]
        for b in bands
    )


def _read(ds, path, bands: Sequence[int], masks: bool, where: str, error: type[GeosrError], remedy: str, **kwargs):
    """(values, masks or None) of ``ds.read(bands, **kwargs)`` under READ_CHECKS; failures raise ``error``."""
    try:
        with rasterio.Env(**READ_CHECKS):
            data = ds.read(list(bands), **kwargs)
            m = ds.read_masks(list(bands), **kwargs) if masks else None
    except READ_ERRORS as exc:
        raise error(f"{path}: read failed{where}, the file is damaged ({gdal_message(exc)}){remedy}") from None
    return data, m


def read_whole(
    ds, path, bands: Sequence[int], masks: bool, *, error: type[GeosrError] = RasterError, remedy: str = ""
) -> tuple[np.ndarray, np.ndarray | None]:
    """Values (b, h, w) of ``bands`` (1-based) of the whole raster and, if ``masks``, GDAL's band masks (b, h, w)
    uint8 (0 invalid). A damaged file raises ``error`` naming it, followed by ``remedy``."""
    return _read(ds, path, bands, masks, "", error, remedy)


def read_window(
    ds, path, window: Window, bands: Sequence[int], masks: bool, *, error: type[GeosrError] = RasterError,
    remedy: str = "",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Values (b, h, w) and, if ``masks``, GDAL's band masks (b, h, w) uint8 of a window (raster pixels).

    A damaged file raises ``error`` naming it and the window, followed by ``remedy``.
    """
    return _read(ds, path, bands, masks, f" at {window_str(window)}", error, remedy, window=window)


def read_decimated(
    ds, path, bands: Sequence[int], masks: bool, max_pixels: int = 1 << 20, *, error: type[GeosrError] = RasterError,
    remedy: str = "",
) -> tuple[np.ndarray, np.ndarray | None]:
    """The whole raster read at reduced resolution (at most ``max_pixels`` per band, nearest neighbour).

    Returns (values, band masks or None), each (b, h, w). Overviews are used when the file has them. A damaged file
    raises ``error`` naming it, followed by ``remedy``.
    """
    f = max(1, math.ceil(math.sqrt(ds.height * ds.width / max_pixels)))
    shape = (len(bands), max(1, ds.height // f), max(1, ds.width // f))
    return _read(ds, path, bands, masks, "", error, remedy, out_shape=shape, resampling=Resampling.nearest)


def raster_radiometry(
    ds, path, bands: Sequence[int], value_range: tuple[float, float] | None = None, *,
    error: type[GeosrError] = RasterError, remedy: str = "",
) -> Radiometry:
    """The global mapping of ``bands`` of a raster to the model's range (``geosr.radiometry``): from the valid pixels
    of a decimated read, or from ``value_range``. The same for upscale, evaluation and training.

    Logs a warning when the sample holds no valid pixel. Raises ``error`` naming the file for a damaged file, and
    GeosrError naming --value-range for an unusable ``value_range``.
    """
    dtype = ds.dtypes[bands[0] - 1]
    sample, sample_masks = read_decimated(ds, path, bands, has_masks(ds, bands), error=error, remedy=remedy)
    valid = valid_mask(sample, sample_masks)
    if not valid.any():
        log.warning("%s: no valid pixel found in a decimated read; the raster may be all nodata", path)
    try:
        return compute_radiometry(sample, valid, dtype, value_range)
    except ValueError as exc:
        if value_range is not None:
            raise GeosrError(f"{path}: {exc} (--value-range)", option="--value-range") from None
        raise error(f"{path}: {exc}") from None


def window_str(w: Window) -> str:
    return f"cols {w.col_off}..{w.col_off + w.width}, rows {w.row_off}..{w.row_off + w.height}"


# --- the output ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputSpec:
    """Everything the writer needs to create the output, as plain data (it is used from another thread).

    profile: rasterio creation profile; gcps: (points, crs) or None; tags: dataset tags; band_*: per output band.
    internal_mask: write a per-dataset mask (when the output has no nodata value and no alpha band to say it).
    """

    profile: dict[str, Any]
    gcps: tuple[list[GroundControlPoint], Any] | None
    tags: dict[str, str]
    band_tags: list[dict[str, str]]
    descriptions: list[str | None]
    colorinterp: list[ColorInterp]
    units: list[str | None]
    scales: list[float]
    offsets: list[float]
    internal_mask: bool = False


# Tags of the input that are not carried to the output. STATISTICS_* (GDAL's band statistics: minimum, maximum, mean,
# standard deviation, valid percent, ...) describe the input's pixels, not the new ones: they are dropped, not
# recomputed, since recomputing them would take a second pass over the whole output after it is written (GDAL
# computes them on demand: gdalinfo -stats). GEOSR_* describe an earlier run of geosr (when the input is itself an
# output): the run writes its own.
DROPPED_TAG_PREFIXES = ("STATISTICS_", "GEOSR_")


def carried_tags(tags: dict[str, str]) -> dict[str, str]:
    """The tags (dataset or band) of an input that its output keeps: all but DROPPED_TAG_PREFIXES."""
    return {k: v for k, v in tags.items() if not str(k).upper().startswith(DROPPED_TAG_PREFIXES)}


def output_spec(
    ds,
    path,
    *,
    scale: int,
    window: Window,
    bands: Sequence[int],
    dtype: str,
    georef: str,
    compress: str,
    internal_mask: bool,
    tags: dict[str, str],
    nodata: float | None,
) -> OutputSpec:
    """The output of super-resolving ``bands`` of ``window`` of ``ds`` by ``scale``: profile and metadata.

    The input's dataset and band tags are copied (``carried_tags``: not its STATISTICS_* and GEOSR_* tags), and
    ``tags`` (the run's GEOSR_* provenance) added.

    compress: one of COMPRESSIONS (checked by geosr.options.check_compression); nodata: the output's one nodata
    value (``output_nodata``).
    """
    height, width = int(window.height) * scale, int(window.width) * scale
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": len(bands),
        "dtype": dtype,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "interleave": "pixel",
        "bigtiff": "IF_SAFER",
        "num_threads": "ALL_CPUS",
    }
    if compress != "none":
        profile["compress"] = compress
        profile["predictor"] = 3 if np.dtype(dtype).kind == "f" else 2
    gcps = None
    if georef == "transform":
        profile["crs"] = ds.crs
        window_transform = ds.transform @ Affine.translation(window.col_off, window.row_off)
        profile["transform"] = window_transform @ Affine.scale(1 / scale)
    elif georef == "gcps":
        points, crs = ds.gcps
        gcps = (
            [
                GroundControlPoint(
                    row=(p.row - window.row_off) * scale,
                    col=(p.col - window.col_off) * scale,
                    x=p.x,
                    y=p.y,
                    z=p.z,
                    id=p.id,
                    info=p.info,
                )
                for p in points
            ],
            crs,
        )
    idx = [b - 1 for b in bands]
    all_tags = carried_tags(ds.tags())
    all_tags.update(tags)
    return OutputSpec(
        profile=profile,
        gcps=gcps,
        tags=all_tags,
        band_tags=[carried_tags(ds.tags(b)) for b in bands],
        descriptions=[ds.descriptions[i] for i in idx],
        colorinterp=[ds.colorinterp[i] for i in idx],
        units=[ds.units[i] for i in idx],
        scales=[ds.scales[i] for i in idx],
        offsets=[ds.offsets[i] for i in idx],
        internal_mask=internal_mask,
    )


def create_output(path: Path, spec: OutputSpec):
    """Create the output file at ``path`` and write its metadata; returns the open rasterio dataset."""
    with quiet_georeferencing():
        dst = rasterio.open(path, "w", **spec.profile)
    try:
        if spec.gcps is not None:
            dst.gcps = spec.gcps
        dst.update_tags(**spec.tags)
        for i in range(dst.count):
            if spec.band_tags[i]:
                dst.update_tags(i + 1, **spec.band_tags[i])
            if spec.descriptions[i]:
                dst.set_band_description(i + 1, spec.descriptions[i])
        dst.colorinterp = spec.colorinterp
        if any(spec.units):
            dst.units = [u or "" for u in spec.units]
        if any(s != 1.0 for s in spec.scales) or any(o != 0.0 for o in spec.offsets):
            dst.scales = spec.scales
            dst.offsets = spec.offsets
    except BaseException:
        dst.close()
        raise
    return dst


SAMPLE_SIDE = 96  # input pixels: the side of each of the SAMPLE_GRID x SAMPLE_GRID windows compressed to foresee
SAMPLE_GRID = 3  # the output's size, spread over the raster so that fill areas and textures count as they occur
COMPRESSION_MARGIN = 1.25  # on the sample's compressed fraction: a super-resolved output holds finer texture
MIN_COMPRESSED_FRACTION = 0.05  # no output is foreseen smaller than this fraction of its raw size


def compression_sample(ds, path, window: Window, bands: Sequence[int]) -> np.ndarray:
    """Values (bands, h, w) of ``bands`` (1-based, in output order) of ``window``, in the raster's dtype: the whole
    window when small, else SAMPLE_GRID x SAMPLE_GRID windows of SAMPLE_SIDE pixels spread evenly over it, side by
    side. What ``estimate_output_bytes`` compresses to foresee the output's size."""
    n = SAMPLE_GRID
    h, w = int(window.height), int(window.width)
    sh, sw = min(SAMPLE_SIDE, h // n) or h, min(SAMPLE_SIDE, w // n) or w
    rows = [int(window.row_off) + (h - sh) * i // max(1, n - 1) for i in range(n)] if sh < h else [int(window.row_off)]
    cols = [int(window.col_off) + (w - sw) * j // max(1, n - 1) for j in range(n)] if sw < w else [int(window.col_off)]
    parts = [[read_window(ds, path, Window(c, r, sw, sh), bands, masks=False)[0] for c in cols] for r in rows]
    return np.concatenate([np.concatenate(row, axis=2) for row in parts], axis=1)


def compressed_fraction(sample: np.ndarray, profile: dict[str, Any]) -> float:
    """The size of ``sample`` (bands, h, w) written as a GeoTIFF with the codec and predictor of ``profile``, as a
    fraction of its raw size (1.0 for an uncompressed profile; at most 1.0)."""
    if not profile.get("compress"):
        return 1.0
    b, h, w = sample.shape
    options = {"compress": profile["compress"], "predictor": profile.get("predictor", 1)}
    with rasterio.MemoryFile() as mem:
        with quiet_georeferencing(), mem.open(driver="GTiff", width=w, height=h, count=b,
                                              dtype=str(sample.dtype), interleave="pixel", **options) as d:
            d.write(sample)
        stored = mem.getbuffer().nbytes
    return min(1.0, stored / max(1, sample.nbytes))


def estimate_output_bytes(spec: OutputSpec, cog: bool, sample: np.ndarray | None = None, copy: bool = False) -> int:
    """The room the output needs on disk while it is made, in bytes.

    sample: input values (bands, h, w) in the output's dtype (``compression_sample``): the output's compressed size is
    its raw size times the fraction the output's own codec and predictor achieve on the sample, with a margin
    (COMPRESSION_MARGIN) and never below MIN_COMPRESSED_FRACTION; without a sample, the raw size. A COG needs room
    for its overviews and, until it is complete, for the GeoTIFF it is copied from; a PNG or JPEG (``copy``) for
    that GeoTIFF too.
    """
    p = spec.profile
    pixels = p["width"] * p["height"]
    raw = pixels * p["count"] * np.dtype(p["dtype"]).itemsize
    fraction = 1.0 if sample is None else min(1.0, max(MIN_COMPRESSED_FRACTION,
                                                          COMPRESSION_MARGIN * compressed_fraction(sample, p)))
    tiles = math.ceil(p["width"] / BLOCK) * math.ceil(p["height"] / BLOCK)
    size = math.ceil(raw * fraction) + (pixels // 8 if spec.internal_mask else 0) + 16 * tiles + 65536
    if cog:
        size = size * 4 // 3 * 2  # overviews, and the temporary file beside the COG until it is complete
    elif copy:
        size *= 2  # the GeoTIFF and its PNG / JPEG copy, until the copy is complete
    return int(size)


def size_str(n: float) -> str:
    """A byte count for people: 512 bytes, 3.4 MB, 1.25 GB."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{int(n)} bytes"


def check_free_space(path: Path, needed: int) -> None:
    """Raise RasterError when the disk that holds ``path`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise RasterError(
            f"{path}: not enough disk space for the output: about {size_str(needed)} needed, "
            f"{size_str(free)} free in {path.parent}; free some space or write the output elsewhere"
        )


def check_output_room(path: Path, spec: OutputSpec, cog: bool, sample: Callable[[], np.ndarray],
                      copy: bool = False) -> None:
    """``check_free_space`` for the output ``spec`` (``estimate_output_bytes``). The raw size, an upper bound of the
    estimate, is tried first; ``sample()`` (``compression_sample``: a few reads) is asked for only when that does not
    fit, so small outputs and roomy disks cost no reading."""
    if estimate_output_bytes(spec, cog, None, copy) <= shutil.disk_usage(path.parent).free:
        return
    check_free_space(path, estimate_output_bytes(spec, cog, sample(), copy))


OUTPUT_SUFFIXES = (".tif", ".tiff", ".gtif", *COPY_DRIVERS)


def output_driver(path: Path) -> str:
    """GTiff, or PNG / JPEG for outputs named .png / .jpg / .jpeg; OptionError (on -o/--output) for any other
    suffix."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise OptionError(
            f"{path}: geosr writes GeoTIFF (.tif), PNG (.png) or JPEG (.jpg), "
            f"not {suffix or 'files without a suffix'}; name the output .tif", option="--output"
        )
    return COPY_DRIVERS.get(suffix, "GTiff")


def check_output_name(path: str | os.PathLike, cog: bool = False) -> str:
    """The driver an output named ``path`` is written with (``output_driver``); OptionError (a usage error, found
    from the name alone) for a suffix geosr does not write, and for ``cog`` with a PNG or JPEG name: the two
    exclude each other."""
    if str(path).startswith("/vsi") or re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", str(path)):
        raise OptionError(f"{path}: geosr writes outputs to local files (a temporary file, checked, then renamed), "
                          "not to GDAL's virtual file systems or URLs; give a local path and copy the result",
                          option="--output")
    path = Path(path)
    driver = output_driver(path)
    if cog and driver != "GTiff":
        raise OptionError(f"{path}: --cog writes a GeoTIFF, but the name asks for {driver}; drop --cog or name the "
                          "output .tif", option="--cog")
    return driver


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file or folder: the same absolute path, or one file through links."""
    a, b = Path(a), Path(b)
    if a.absolute() == b.absolute():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_input(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Raise RasterError when the output ``path`` is the input ``source`` (also through a link)."""
    if same_file(source, path):
        raise RasterError(f"{path}: the output is the input; choose another output path", option="--output")


def check_output_file(
    path: str | os.PathLike, *, overwrite: bool, source: str | os.PathLike | None = None, keep_hint: str = ""
) -> None:
    """Raise unless an output file may be written at ``path``.

    RasterError when ``path`` is ``source`` (the input it is made from) or a folder; OutputExistsError when it exists
    (a dangling link included) and ``overwrite`` is false, with ``keep_hint`` appended to the remedy.
    """
    path = Path(path)
    if source is not None:
        check_not_input(source, path)
    if path.is_dir():
        raise RasterError(f"{path}: is a folder; give an output file name", option="--output")
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode):  # a device or a pipe: a rename over it would replace the node itself (/dev/null)
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise RasterError(f"{path}: is {kind}, not a file; geosr writes outputs only to files: give another "
                          "output path", option="--output")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass --overwrite to replace it{keep_hint}",
                                option="--overwrite")


def check_output_location(path: str | os.PathLike) -> None:
    """Raise RasterError unless outputs can be written at ``path`` (a file, or a folder, made if missing).

    The nearest existing folder on the way must be a folder, and one this process may write in; nothing is created.
    """
    check_name_encoding(path, OptionError)
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise RasterError(f"{path}: {folder} is a file, not a folder; choose another output path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RasterError(
            f"{path}: cannot write in {folder} (no permission or a read-only disk); choose another output path"
        )


TEMP_SUFFIX = ".geosr-tmp"
# This machine, as a short hash of its name: a temporary file names the machine and process that write it.
_HOST = hashlib.blake2s(socket.gethostname().encode(), digest_size=4).hexdigest()
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}(?:\.[\w-]+)?"
                        + re.escape(TEMP_SUFFIX) + r"(?:\..+)?$")


def temp_path(path: Path, tag: str = "") -> Path:
    """A hidden temporary file name beside ``path`` that names its writer: ``.NAME.HOST-PID-RANDOM[TAG].geosr-tmp``,
    HOST a hash of this machine's name and PID this process, so that a later run can tell a temporary file left by a
    killed process (``remove_stale_outputs``) from one that is being written."""
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}{tag}{TEMP_SUFFIX}")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: a process of another user has that id
        return True
    return True


def remove_stale_outputs(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary outputs (with their GDAL sidecars) that geosr processes of this machine left in
    ``folder`` when they were killed (kill -9, a power cut, an out-of-memory kill): those whose process is gone.

    name: only those of the output of this file name. Temporary files of running processes and of other machines
    (a shared network folder) are left alone, and so is everything else. Returns the removed paths.
    """
    prefix = "." if name is None else f".{name}."
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or TEMP_SUFFIX not in entry.name:
            continue
        m = _TEMP_NAME.match(entry.name)
        if m is None or m["host"] != _HOST or _process_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    if removed:
        log.info("%s: removed %d temporary file(s) of killed runs: %s", folder, len(removed),
                 ", ".join(p.name for p in removed))
    return removed


# --- checking a finished output ------------------------------------------------------------------------------------


FULL_DISK_BYTES = 1 << 20  # a disk with less free space than this after a failed write is taken as full


def write_failure(path: Path, reason: str) -> WriteError:
    """The error for an output that could not be written: names the output, GDAL's reason and, when its disk has
    (next to) no space left, that; says nothing was kept."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < FULL_DISK_BYTES:
        return WriteError(f"{path}: cannot write the output, the disk is full ({size_str(free)} free in "
                          f"{path.parent}); nothing was kept under this name; free some space or write the output "
                          f"elsewhere ({reason})", option="--output")
    return WriteError(f"{path}: cannot write the output ({reason}); nothing was kept under this name; free some "
                      "space or write the output elsewhere", option="--output")


def _missing_blocks(ds) -> list[tuple[int, int]]:
    """Blocks (column, row) of a tiled or striped GeoTIFF that have no data in the file: a failed write leaves them,
    and GDAL would read them as zeros without an error."""
    bh, bw = ds.block_shapes[0]
    bands = [1] if ds.interleaving is None or ds.interleaving.name.lower() == "pixel" else range(1, ds.count + 1)
    missing = []
    for y in range(math.ceil(ds.height / bh)):
        for x in range(math.ceil(ds.width / bw)):
            sizes = [ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=b) for b in bands]
            if not all(size and int(size) > 0 for size in sizes):
                missing.append((x, y))
    return missing


VERIFY_READ_BYTES = 64 * 2**20  # at most this much per read while verifying an output


def decode_threads() -> dict[str, Any]:
    """GDAL settings that decode the blocks of one read on every core (GDAL_NUM_THREADS), unless the user's
    environment sets the number of threads."""
    return {} if "GDAL_NUM_THREADS" in os.environ else {"GDAL_NUM_THREADS": "ALL_CPUS"}


def verify_output(path: Path, shape: tuple[int, int, int] | None = None, *, shown: Path | None = None) -> None:
    """Raise WriteError unless the raster at ``path`` is complete: it opens, has ``shape`` (bands, height, width)
    when given, every block of a GeoTIFF is in the file, and every pixel (and mask) reads without an error.

    shown: the name to report (the final output's, when ``path`` is its temporary file). Reads a row of blocks at a
    time, at most VERIFY_READ_BYTES per read (memory stays small whatever the size), each read's blocks decoded on
    every core (``decode_threads``): on a GPU machine the check of a large output is not one core's work.
    """
    shown = shown or path
    try:
        with rasterio.Env(**READ_CHECKS, **decode_threads()), quiet_georeferencing(), rasterio.open(path) as ds:
            if shape is not None and (ds.count, ds.height, ds.width) != tuple(shape):
                raise write_failure(shown, f"it has {ds.count} x {ds.height} x {ds.width} values where "
                                           f"{' x '.join(map(str, shape))} were written")
            if ds.driver in ("GTiff", "COG"):
                missing = _missing_blocks(ds)
                if missing:
                    raise write_failure(shown, f"{len(missing)} block(s) of data are missing from the file, the "
                                               f"first at block column {missing[0][0]}, row {missing[0][1]}")
            masked = any(MaskFlags.per_dataset in flags for flags in ds.mask_flag_enums)
            bh, bw = ds.block_shapes[0]
            rows = max(bh, min(BLOCK, ds.height))
            if bw < ds.width:  # a read of whole blocks, as many side by side as the bound allows
                per_block = rows * bw * ds.count * max(np.dtype(d).itemsize for d in ds.dtypes)
                cols = min(ds.width, bw * max(1, VERIFY_READ_BYTES // per_block))
            else:
                cols = ds.width
            for r in range(0, ds.height, rows):
                for c in range(0, ds.width, cols):
                    window = Window(c, r, min(cols, ds.width - c), min(rows, ds.height - r))
                    ds.read(window=window)
                    if masked:
                        ds.read_masks(1, window=window)
    except READ_ERRORS as exc:
        reason = gdal_message(exc).replace(f"{path.name}, ", "").replace(f"{path}: ", "")
        raise write_failure(shown, f"the file written does not read back: {reason}") from None


def remove_quietly(path: Path) -> None:
    """Remove a file and the sidecars GDAL may have made beside it."""
    for p in (path, Path(f"{path}.aux.xml"), Path(f"{path}.msk"), Path(f"{path}.ovr")):
        with contextlib.suppress(OSError):
            p.unlink()


def publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Give the complete file ``tmp`` its final name ``path`` in one atomic step.

    overwrite: replace an existing ``path`` (rename). Otherwise the name is taken with a hard link, which fails when
    ``path`` exists, so a file another process finished meanwhile is never clobbered (OutputExistsError); where the
    file system has no hard links, a rename after a last check.
    """
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(
            f"{path}: already exists (written meanwhile by another process?); pass --overwrite to replace it",
            option="--overwrite",
        ) from None
    except OSError:  # no hard links here (some network and FAT file systems)
        if path.exists():
            raise OutputExistsError(f"{path}: already exists; pass --overwrite to replace it",
                                    option="--overwrite") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def finish_output(
    tmp: Path, path: Path, *, cog: bool, compress: str, georeferenced: bool = True, overwrite: bool = True,
    shape: tuple[int, int, int] | None = None,
) -> None:
    """Turn the written temporary GeoTIFF ``tmp`` into ``path``: as is, as a COG, or copied to PNG / JPEG.

    The final file appears under its name only once complete and verified (``verify_output``: it opens, has
    ``shape`` when given, every block is in the file and reads without an error), in an atomic rename or link on the
    same disk; WriteError otherwise, with nothing left under ``path``. Without ``overwrite`` an
    existing ``path`` is never replaced (OutputExistsError). A georeferenced PNG / JPEG keeps its georeferencing in
    a ``.aux.xml`` sidecar and a PNG its mask in a ``.msk`` sidecar; stale sidecars of a replaced output are removed.
    """
    driver = output_driver(path)
    final = tmp
    try:
        if final is tmp and not cog and driver == "GTiff":
            verify_output(tmp, shape, shown=path)
        else:
            with rasterio.Env(**READ_CHECKS), quiet_georeferencing(), rasterio.open(tmp) as ds:
                missing = _missing_blocks(ds)  # the copy would read them as zeros
            if missing:
                raise write_failure(path, f"{len(missing)} block(s) of data are missing from the file written")
            if cog:
                final = temp_path(path, ".cog")
                options = {
                    "BLOCKSIZE": BLOCK,
                    "OVERVIEWS": "AUTO",
                    "OVERVIEW_RESAMPLING": "AVERAGE",
                    "BIGTIFF": "IF_SAFER",
                    "NUM_THREADS": "ALL_CPUS",
                    "COMPRESS": "NONE" if compress == "none" else compress.upper(),
                }
                if compress != "none":
                    options["PREDICTOR"] = "YES"
                with quiet_georeferencing():
                    rasterio.shutil.copy(str(tmp), str(final), driver="COG", **options)
            else:
                final = temp_path(path, path.suffix.lower())
                options = {"WRITE_METADATA_AS_TEXT": "YES"} if driver == "PNG" else {"QUALITY": 95}
                with quiet_georeferencing(), rasterio.Env(GDAL_PAM_ENABLED=georeferenced):
                    rasterio.shutil.copy(str(tmp), str(final), driver=driver, **options)
            if georeferenced and driver != "GTiff" and not Path(f"{final}.aux.xml").exists():
                raise write_failure(path, "the .aux.xml sidecar that holds its georeferencing was not written")
            verify_output(final, shape, shown=path)
        publish(final, path, overwrite)
        for sidecar in (".aux.xml", ".msk"):
            new, old = Path(f"{final}{sidecar}"), Path(f"{path}{sidecar}")
            if new.exists():
                os.replace(new, old)
            elif old.exists():
                old.unlink()
    except READ_ERRORS as exc:  # the copy failed
        raise write_failure(path, gdal_message(exc)) from None
    finally:
        if final != tmp:
            remove_quietly(final)
        remove_quietly(tmp)


@dataclass
class FoundRasters:
    """The rasters under a folder and what was left out of the search, by reason (hidden names aside)."""

    files: list[Path]
    skipped: dict[str, list[Path]]

    def describe_skipped(self) -> str:
        """One phrase for the log: "2 broken links (a.tif, b.tif), 1 link to a folder, not followed (sub)"."""
        parts = []
        for reason, paths in self.skipped.items():
            if paths:
                names = ", ".join(printable(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
                parts.append(f"{len(paths)} {reason} ({names})")
        return "; ".join(parts)


SKIP_REASONS = ("broken link(s)", "link(s) to folders, not followed", "file(s) under the output folder")


def find_rasters(folder: Path, exclude: Sequence[Path] = ()) -> FoundRasters:
    """Rasters under ``folder`` (recursively, by suffix), sorted. Hidden files and folders are left out; links to
    files are followed, links to folders are not (a link may loop back); ``exclude``: folders inside ``folder``
    whose rasters are not inputs (the output folder of a run; one that holds ``folder`` excludes nothing)."""
    root = folder.resolve()
    excluded = [e.resolve() for e in exclude if root in e.resolve().parents]
    found: list[Path] = []
    skipped: dict[str, list[Path]] = {reason: [] for reason in SKIP_REASONS}
    broken, linked, under_output = skipped.values()
    for here, dirs, files in os.walk(folder):
        base = Path(here)
        for d in list(dirs):
            if d.startswith("."):
                dirs.remove(d)
            elif (base / d).is_symlink():
                dirs.remove(d)
                linked.append(base / d)
        for name in files:  # a broken link is listed here too
            p = base / name
            if name.startswith(".") or p.suffix.lower() not in RASTER_SUFFIXES:
                continue
            if not p.exists():
                broken.append(p)
                continue
            if not p.is_file():
                continue
            rp = p.resolve()
            if any(rp == e or e in rp.parents for e in excluded):
                under_output.append(p)
                continue
            found.append(p)
    return FoundRasters(sorted(found), {k: sorted(v) for k, v in skipped.items()})
