"""Reading inputs: open and check a raster (one line naming the file for anything wrong), read all of it or a window,
and find the rasters of a folder (saying what the search left out); ``geosr.raster.sampling`` reads its decimated
sample and radiometry with these.

They are the only readers of input pixels in geosr (upscale, evaluation and the training loader) and map every
rasterio/GDAL failure to the caller's error class (RasterError by default, DataError for data sets). Reads run with
``READ_CHECKS``: GDAL's whole-image PNG decoder off (it returns the garbage of a truncated PNG without an error) and
libjpeg's warnings (a truncated JPEG) errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NodataShadowWarning
from rasterio.windows import Window

from geosr.errors import GeosrError, RasterError
from geosr.fileio import special_kind
from geosr.radiometry import SUPPORTED_DTYPES
from geosr.raster.gdal import READ_CHECKS, READ_ERRORS, gdal_message, quiet_georeferencing
from geosr.sources import RemoteSource, input_spec, is_network, redact, remote_options

log = logging.getLogger("geosr.raster")


# Suffixes of the rasters a folder search picks up (GDAL reads many more; name files explicitly for those).
RASTER_SUFFIXES = (".tif", ".tiff", ".gtif", ".vrt", ".jp2", ".j2k", ".png", ".jpg", ".jpeg", ".img", ".webp", ".bmp")


@contextlib.contextmanager
def open_raster(
    path: str | os.PathLike, error: type[GeosrError] = RasterError, remedy: str = ""
) -> Iterator[rasterio.io.DatasetReader]:
    """Open ``path`` for reading under ``READ_CHECKS``, with rasterio's warning about plain images silenced.

    A missing file, a folder or anything GDAL cannot open raises ``error`` naming the file, followed by ``remedy``
    (e.g. "; remove it from the data or replace it"). A remote input (geosr.sources: a URL, a /vsi path) is opened
    by GDAL as it is, and named without credentials.
    """
    source = input_spec(path)
    if isinstance(source, RemoteSource):
        path, target, options = source, source.gdal, remote_options(source.gdal)
    else:
        path = target = source
        options = {}
        if not path.exists():
            raise error(f"{path}: no such file{remedy}")
        if path.is_dir():
            raise error(f"{path}: is a folder, not a raster{remedy}")
        check_regular_file(path, error, remedy)
        check_name_encoding(path, error)
        if not os.access(path, os.R_OK):
            raise error(f"{path}: cannot be read (permission denied); check its permissions{remedy}")
    with quiet_georeferencing():
        try:
            with rasterio.Env(**READ_CHECKS, **options):  # some drivers decide at open how they will decode (PNG)
                ds = rasterio.open(target)
        except READ_ERRORS as exc:
            if isinstance(path, RemoteSource):
                check = (
                    "the address, and GDAL's credentials and network settings (its environment variables)"
                    if is_network(target)
                    else "the path"
                )
                raise error(
                    f"{path}: cannot read it as a raster ({redact(gdal_message(exc))}); check {check}{remedy}"
                ) from None
            hint = remedy or "; give a raster file (GeoTIFF, JPEG 2000, PNG, ...), and check that it is complete"
            raise error(f"{path}: not a raster GDAL can read ({gdal_message(exc)}){hint}") from None
        # the remote settings hold while it is open: a VRT (a STAC item's) opens its sources as it reads them
        with ds, rasterio.Env(**options) if options else contextlib.nullcontext():
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
        raise error(
            f"{printable(path)}: the name is not valid UTF-8, which GDAL (and so geosr) needs for file names; "
            "rename it (e.g. convmv -f latin1 -t utf8) and run again"
        ) from None


def check_regular_file(
    path: Path,
    error: type[GeosrError] = RasterError,
    remedy: str = "",
    advice: str = "geosr reads rasters from files: save the data to a file and give that",
) -> None:
    """Raise ``error`` for a named pipe, socket or device: GDAL reads rasters by seeking, which those cannot do (a
    pipe would be read once, or block forever). ``advice`` follows "is ..., not a file; " in the message."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: the caller's open says so
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = special_kind(mode)
        raise error(f"{path}: is {kind}, not a file; {advice}{remedy}")


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
            raise error(
                f"{path}: its source file {source} does not exist (a VRT reads its pixels from the files it "
                f"names); restore that file or fix the VRT{remedy}"
            )
        check_regular_file(source, error, remedy)


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


def pixel_interleaved(ds) -> bool:
    """Whether a raster stores its bands together in each block (a GeoTIFF's pixel interleaving; also a raster that
    says nothing of it), rather than each band in blocks of its own."""
    return ds.interleaving is None or ds.interleaving.name.lower() == "pixel"


def has_dataset_mask(ds, bands: Sequence[int]) -> bool:
    """Whether ``bands`` are masked by an internal (per-dataset) mask or by an alpha band."""
    return any(
        MaskFlags.per_dataset in ds.mask_flag_enums[b - 1] or MaskFlags.alpha in ds.mask_flag_enums[b - 1]
        for b in bands
    )


def _read(ds, path, bands: Sequence[int], masks: bool, where: str, error: type[GeosrError], remedy: str, **kwargs):
    """(values, masks or None) of ``ds.read(bands, **kwargs)`` under READ_CHECKS; failures raise ``error``."""
    try:
        with rasterio.Env(**READ_CHECKS), warnings.catch_warnings():
            # nodata and an alpha band both: rasterio warns that the alpha shadows nodata; geosr follows GDAL's mask
            warnings.simplefilter("ignore", NodataShadowWarning)
            data = ds.read(list(bands), **kwargs)
            m = ds.read_masks(list(bands), **kwargs) if masks else None
    except READ_ERRORS as exc:
        if isinstance(path, RemoteSource) and is_network(path.gdal):  # a network failure as often as a damaged file
            raise error(
                f"{path}: read failed{where} ({redact(gdal_message(exc))}); check the network and run again{remedy}"
            ) from None
        again = remedy or "; get the file again (a copy cut short?) or leave it out"
        raise error(f"{path}: read failed{where}, the file is damaged ({gdal_message(exc)}){again}") from None
    return data, m


def read_whole(
    ds, path, bands: Sequence[int], masks: bool, *, error: type[GeosrError] = RasterError, remedy: str = ""
) -> tuple[np.ndarray, np.ndarray | None]:
    """Values (b, h, w) of ``bands`` (1-based) of the whole raster and, if ``masks``, GDAL's band masks (b, h, w)
    uint8 (0 invalid). A damaged file raises ``error`` naming it, followed by ``remedy``."""
    return _read(ds, path, bands, masks, "", error, remedy)


def read_window(
    ds,
    path,
    window: Window,
    bands: Sequence[int],
    masks: bool,
    *,
    error: type[GeosrError] = RasterError,
    remedy: str = "",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Values (b, h, w) and, if ``masks``, GDAL's band masks (b, h, w) uint8 of a window (raster pixels).

    A damaged file raises ``error`` naming it and the window, followed by ``remedy``.
    """
    return _read(ds, path, bands, masks, f" at {window_str(window)}", error, remedy, window=window)


def window_str(w: Window) -> str:
    """A window as "cols a..b, rows c..d" for messages."""
    return f"cols {w.col_off}..{w.col_off + w.width}, rows {w.row_off}..{w.row_off + w.height}"


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


UNREADABLE = "folder(s) that cannot be read (check their permissions)"
SKIP_REASONS = (
    "broken link(s)",
    "link(s) to folders, not followed",
    "file(s) under the output folder",
    UNREADABLE,
)


def find_rasters(folder: Path, exclude: Sequence[Path] = ()) -> FoundRasters:
    """Rasters under ``folder`` (recursively, by suffix), sorted. Hidden files and folders are left out; links to
    files are followed, links to folders are not (a link may loop back); ``exclude``: folders inside ``folder``
    whose rasters are not inputs (the output folder of a run; one that holds ``folder`` excludes nothing)."""
    root = folder.resolve()
    excluded = [e.resolve() for e in exclude if root in e.resolve().parents]
    found: list[Path] = []
    skipped: dict[str, list[Path]] = {reason: [] for reason in SKIP_REASONS}
    broken, linked, under_output, unreadable = skipped.values()
    for here, dirs, files in os.walk(folder, onerror=lambda exc: unreadable.append(Path(exc.filename or folder))):
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
