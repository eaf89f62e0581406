"""Temporary outputs, verification and publishing: an output is written to a hidden temporary file beside its final
name (named for the machine and process that write it, so a later run can clear what a killed one left), read back
whole, and renamed over the final name only then.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from geosr.errors import OutputExistsError, WriteError
from geosr.fileio import NAME_MAX, fitting_name, writer_alive, writer_stamp
from geosr.raster.gdal import READ_CHECKS, READ_ERRORS, decode_threads, gdal_message, quiet_georeferencing
from geosr.raster.profile import BLOCK, DEFLATE_LEVEL, output_driver
from geosr.raster.reading import pixel_interleaved
from geosr.raster.size import size_str

log = logging.getLogger("geosr.raster")


TEMP_SUFFIX = ".geosr-tmp"


_TEMP_NAME = re.compile(
    r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})(?:\.[\w-]+)?"
    + re.escape(TEMP_SUFFIX)
    + r"(?:\..+)?$"
)


# bytes a temporary output's name adds to the output's: two dots, HOST-PID-RANDOM, a tag (".cog"), TEMP_SUFFIX and
# a GDAL sidecar's suffix (".aux.xml")
OUTPUT_TEMP_ROOM = 64


def temp_path(path: Path, tag: str = "") -> Path:
    """A hidden temporary file name beside ``path`` that names its writer: ``.NAME.HOST-PID-RANDOM[TAG].geosr-tmp``
    (``geosr.fileio.writer_stamp``), so that a later run can tell a temporary file left by a killed process
    (``remove_stale_outputs``) from one that is being written."""
    return path.with_name(f".{fitting_name(path.name, OUTPUT_TEMP_ROOM)}.{writer_stamp()}{tag}{TEMP_SUFFIX}")


def remove_stale_outputs(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary outputs (with their GDAL sidecars) that geosr processes of this machine left in
    ``folder`` when they were killed (kill -9, a power cut, an out-of-memory kill): those whose process is gone.

    name: only those of the output of this file name. Temporary files of running processes and of other machines
    (a shared network folder) are left alone, and so is everything else. Returns the removed paths.
    """
    prefix = "." if name is None else f".{fitting_name(name, OUTPUT_TEMP_ROOM)}."
    removed = []
    try:
        entries = list(os.scandir(os.fspath(folder)))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or TEMP_SUFFIX not in entry.name:
            continue
        m = _TEMP_NAME.match(entry.name)
        if m is None:
            continue
        try:
            written = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if writer_alive(m["host"], int(m["pid"]), m["token"], written):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    if removed:
        log.info(
            "%s: removed %d temporary file(s) of killed runs: %s",
            folder,
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


SHORTER_NAME = "give the output a shorter name"
FULL_DISK_BYTES = 1 << 20  # a disk with less free space than this after a failed write is taken as full


def write_failure(path: Path, reason: str, remedy: str | None = None) -> WriteError:
    """The error for an output that could not be written: names the output, GDAL's reason and, when its disk has
    (next to) no space left, that; says nothing was kept."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < FULL_DISK_BYTES:
        return WriteError(
            f"{path}: cannot write the output, the disk is full ({size_str(free)} free in "
            f"{path.parent}); nothing was kept under this name; free some space or write the output "
            f"elsewhere ({reason})",
            option="--output",
        )
    if remedy is None:
        named = "name too long" in reason.lower()  # GDAL's text of ENAMETOOLONG
        remedy = SHORTER_NAME if named else "free some space or write the output elsewhere"
    return WriteError(
        f"{path}: cannot write the output ({reason}); nothing was kept under this name; {remedy}",
        option="--output",
    )


def _block_bands(ds) -> list[int] | range:
    """The bands whose blocks a GeoTIFF stores apart: all for band interleaving, else one (pixel interleaving)."""
    return [1] if pixel_interleaved(ds) else range(1, ds.count + 1)


def _missing_blocks(ds) -> list[tuple[int, int]]:
    """Blocks (column, row) of a tiled or striped GeoTIFF that have no data in the file: a failed write leaves them,
    and GDAL would read them as zeros without an error."""
    bh, bw = ds.block_shapes[0]
    bands = _block_bands(ds)
    missing = []
    for y in range(math.ceil(ds.height / bh)):
        for x in range(math.ceil(ds.width / bw)):
            sizes = [ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=b) for b in bands]
            if not all(size and int(size) > 0 for size in sizes):
                missing.append((x, y))
    return missing


def damaged_output(path: Path, *, sparse_ok: bool = False) -> str:
    """Why an existing output cannot be what geosr wrote there, from its headers alone (no pixel is decoded, so
    --skip-existing stays cheap): it does not open as a raster, or a GeoTIFF's block lies beyond the file's end or is
    missing (a file cut short, or overwritten by something else). "" when nothing is found.

    sparse_ok: a missing block is no damage (a sparse GeoTIFF of another program; GDAL reads it as nodata or 0)."""
    try:
        with quiet_georeferencing(), rasterio.open(path) as ds:
            if ds.driver not in ("GTiff", "COG"):  # a PNG or JPEG: no block index to read; decoded whole instead
                return _decode_problem(path)
            size, (bh, bw), bands = path.stat().st_size, ds.block_shapes[0], _block_bands(ds)
            for y in range(math.ceil(ds.height / bh)):
                for x in range(math.ceil(ds.width / bw)):
                    for b in bands:
                        length = int(ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=b) or 0)
                        if not length:
                            if sparse_ok:
                                continue
                            return f"block column {x}, row {y} is missing"
                        end = int(ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=b) or 0) + length
                        if end > size:
                            return f"its data runs to byte {end} of a file of {size} bytes: it was cut short"
    except rasterio.errors.RasterioError as exc:
        return f"not a raster GDAL reads: {gdal_message(exc)}"
    return ""


def output_scale(path: Path) -> int | None:
    """The scale geosr made the raster at ``path`` with (its GEOSR_SCALE tag; a PNG's or JPEG's in its .aux.xml), or
    None where it has none or cannot be read."""
    try:
        with quiet_georeferencing(), rasterio.open(path) as ds:
            value = ds.tags().get("GEOSR_SCALE")
    except rasterio.errors.RasterioError:
        return None
    return int(value) if value and value.isdigit() else None


def _decode_problem(path: Path) -> str:
    """Why a raster without a block index (PNG, JPEG) does not decode to its end, or "" (it is read whole, with
    GDAL's checks: such outputs are small)."""
    try:
        with rasterio.Env(**READ_CHECKS), quiet_georeferencing(), rasterio.open(path) as ds:
            ds.read()
    except READ_ERRORS as exc:
        return f"it does not decode to its end: {gdal_message(exc).replace(f'{path}: ', '')}"
    return ""


VERIFY_READ_BYTES = 64 * 2**20  # at most this much per read while verifying an output


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
                raise write_failure(
                    shown,
                    f"it has {ds.count} x {ds.height} x {ds.width} values where "
                    f"{' x '.join(map(str, shape))} were written",
                )
            if ds.driver in ("GTiff", "COG"):
                missing = _missing_blocks(ds)
                if missing:
                    raise write_failure(
                        shown,
                        f"{len(missing)} block(s) of data are missing from the file, the "
                        f"first at block column {missing[0][0]}, row {missing[0][1]}",
                    )
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


def _exists(path: Path) -> bool:
    """Path.exists, False for a name the file system cannot hold (ENAMETOOLONG) rather than an error."""
    try:
        return path.exists()
    except OSError:
        return False


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
            raise OutputExistsError(
                f"{path}: already exists; pass --overwrite to replace it", option="--overwrite"
            ) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def finish_output(
    tmp: Path,
    path: Path,
    *,
    cog: bool,
    compress: str,
    georeferenced: bool = True,
    overwrite: bool = True,
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
                    "NUM_THREADS": os.environ.get("GDAL_NUM_THREADS", "ALL_CPUS"),  # as set (--threads), or all
                    "COMPRESS": "NONE" if compress == "none" else compress.upper(),
                }
                if compress != "none":
                    options["PREDICTOR"] = "YES"
                if compress == "deflate":
                    options["LEVEL"] = DEFLATE_LEVEL
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
        for sidecar in (".aux.xml", ".msk"):  # before the output is published: a sidecar must fit beside it
            if Path(f"{final}{sidecar}").exists() and len(os.fsencode(path.name + sidecar)) > NAME_MAX:
                raise write_failure(path, f"its name leaves no room for the {sidecar} file beside it", SHORTER_NAME)
        publish(final, path, overwrite)
        for sidecar in (".aux.xml", ".msk"):
            new, old = Path(f"{final}{sidecar}"), Path(f"{path}{sidecar}")
            if _exists(new):
                os.replace(new, old)
            elif _exists(old):  # a name too long for a sidecar has none
                old.unlink()
    except READ_ERRORS as exc:  # the copy failed
        raise write_failure(path, gdal_message(exc)) from None
    finally:
        if final != tmp:
            remove_quietly(final)
        remove_quietly(tmp)
