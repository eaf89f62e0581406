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
import math
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio._err import CPLE_BaseError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geosr.errors import GeosrError, OutputExistsError, RasterError
from geosr.radiometry import SUPPORTED_DTYPES, Radiometry, compute_radiometry, valid_mask

BLOCK = 512
COMPRESSIONS = ("deflate", "zstd", "lzw", "none")
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


READ_ERRORS = (RasterioError, CPLE_BaseError)  # what rasterio raises for a file it cannot open or read


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
    with quiet_georeferencing():
        try:
            with rasterio.Env(**READ_CHECKS):  # some drivers decide at open how they will decode (PNG)
                ds = rasterio.open(path)
        except READ_ERRORS as exc:
            raise error(f"{path}: not a raster GDAL can read ({gdal_message(exc)}){remedy}") from None
        with ds:
            yield ds


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

    Raises ``error`` naming the file for a damaged file or an empty ``value_range``.
    """
    dtype = ds.dtypes[bands[0] - 1]
    sample, sample_masks = read_decimated(ds, path, bands, has_masks(ds, bands), error=error, remedy=remedy)
    try:
        return compute_radiometry(sample, valid_mask(sample, sample_masks), dtype, value_range)
    except ValueError as exc:
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
) -> OutputSpec:
    """The output of super-resolving ``bands`` of ``window`` of ``ds`` by ``scale``: profile and metadata.

    compress: one of COMPRESSIONS (checked by geosr.options.check_compression).
    """
    height, width = int(window.height) * scale, int(window.width) * scale
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": len(bands),
        "dtype": dtype,
        "nodata": ds.nodata,
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
    all_tags = dict(ds.tags())
    all_tags.update(tags)
    return OutputSpec(
        profile=profile,
        gcps=gcps,
        tags=all_tags,
        band_tags=[dict(ds.tags(b)) for b in bands],
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


def estimate_output_bytes(spec: OutputSpec, cog: bool) -> int:
    """A rough size of the output on disk: half the uncompressed size when compressed; a COG needs room twice."""
    p = spec.profile
    raw = p["width"] * p["height"] * p["count"] * np.dtype(p["dtype"]).itemsize
    size = raw // 2 if p.get("compress") else raw
    if cog:
        size = size * 4 // 3 * 2  # overviews, and the temporary file beside the COG until it is complete
    return int(size)


def check_free_space(path: Path, needed: int) -> None:
    """Raise RasterError when the disk that holds ``path`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise RasterError(
            f"{path}: not enough disk space for the output: about {needed / 1e9:.2f} GB needed, "
            f"{free / 1e9:.2f} GB free in {path.parent}; free some space or write the output elsewhere"
        )


OUTPUT_SUFFIXES = (".tif", ".tiff", ".gtif", *COPY_DRIVERS)


def output_driver(path: Path) -> str:
    """GTiff, or PNG / JPEG for outputs named .png / .jpg / .jpeg; RasterError for any other suffix."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise RasterError(
            f"{path}: geosr writes GeoTIFF (.tif), PNG (.png) or JPEG (.jpg), "
            f"not {suffix or 'files without a suffix'}; name the output .tif"
        )
    return COPY_DRIVERS.get(suffix, "GTiff")


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
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass --overwrite to replace it{keep_hint}",
                                option="--overwrite")


def check_output_location(path: str | os.PathLike) -> None:
    """Raise RasterError unless outputs can be written at ``path`` (a file, or a folder, made if missing).

    The nearest existing folder on the way must be a folder, and one this process may write in; nothing is created.
    """
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


def temp_path(path: Path, tag: str = "") -> Path:
    """A hidden temporary file name beside ``path``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{tag}.geosr-tmp")


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
    tmp: Path, path: Path, *, cog: bool, compress: str, georeferenced: bool = True, overwrite: bool = True
) -> None:
    """Turn the written temporary GeoTIFF ``tmp`` into ``path``: as is, as a COG, or copied to PNG / JPEG.

    The final file appears under its name only once complete (an atomic rename or link on the same disk); without
    ``overwrite`` an existing ``path`` is never replaced (OutputExistsError). A georeferenced PNG / JPEG keeps its
    georeferencing in a ``.aux.xml`` sidecar; a stale sidecar of a replaced output is removed.
    """
    driver = output_driver(path)
    final = tmp
    try:
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
        elif driver != "GTiff":
            final = temp_path(path, path.suffix.lower())
            options = {"WRITE_METADATA_AS_TEXT": "YES"} if driver == "PNG" else {"QUALITY": 95}
            with quiet_georeferencing(), rasterio.Env(GDAL_PAM_ENABLED=georeferenced):
                rasterio.shutil.copy(str(tmp), str(final), driver=driver, **options)
        publish(final, path, overwrite)
        aux, old_aux = Path(f"{final}.aux.xml"), Path(f"{path}.aux.xml")
        if aux.exists():
            os.replace(aux, old_aux)
        elif old_aux.exists():
            old_aux.unlink()
    finally:
        if final != tmp:
            remove_quietly(final)
        remove_quietly(tmp)


def find_rasters(folder: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """Rasters under ``folder`` (recursively, by suffix), sorted; hidden files and ``exclude`` folders left out."""
    excluded = [e.resolve() for e in exclude]
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or p.suffix.lower() not in RASTER_SUFFIXES:
            continue
        if not p.is_file():
            continue
        rp = p.resolve()
        if any(rp == e or e in rp.parents for e in excluded):
            continue
        found.append(p)
    return sorted(found)
