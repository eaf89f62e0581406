"""Output naming and location: the driver an output's name asks for, outputs that would be inputs, existing
outputs, special files, and folders that cannot be written; all checked before any work. ``plan_outputs`` pairs
the inputs of a run (files, or folders searched recursively) with their outputs, keeping the layout below the inputs'
common folder.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from geosr.errors import GeosrError, OptionError, OutputExistsError, RasterError
from geosr.fileio import special_kind
from geosr.raster.profile import OUTPUT_SUFFIXES, output_driver
from geosr.raster.reading import (
    RASTER_SUFFIXES,
    UNREADABLE,
    check_name_encoding,
    check_regular_file,
    find_rasters,
    printable,
)
from geosr.sources import RemoteSource, input_spec, is_address, is_remote

log = logging.getLogger("geosr.raster")


def check_output_name(path: str | os.PathLike, cog: bool = False) -> str:
    """The driver an output named ``path`` is written with (``output_driver``); OptionError (a usage error, found
    from the name alone) for a suffix geosr does not write, and for ``cog`` with a PNG or JPEG name: the two
    exclude each other."""
    if is_address(str(path)):
        raise OptionError(
            f"{path}: geosr writes outputs to local files (a temporary file, checked, then renamed), "
            "not to GDAL's virtual file systems or URLs; give a local path and copy the result",
            option="--output",
        )
    path = Path(path)
    driver = output_driver(path)
    if cog and driver != "GTiff":
        raise OptionError(
            f"{path}: --cog writes a GeoTIFF, but the name asks for {driver}; drop --cog or name the output .tif",
            option="--cog",
        )
    return driver


def same_file(a: str | os.PathLike | RemoteSource, b: str | os.PathLike | RemoteSource) -> bool:
    """Whether ``a`` and ``b`` name one file or folder: the same absolute path, or one file through links. A remote
    input (geosr.sources) is none of the local files but those it reads (``local_files``)."""
    if is_remote(a) or is_remote(b):
        return any(
            same_file(f, other)
            for one, other in ((a, b), (b, a))
            if isinstance(one, RemoteSource)
            for f in one.local_files
        )
    a, b = Path(a), Path(b)
    # links and .. resolved, also through folders that do not exist yet (a write would create them): sub/../x is x
    ra, rb = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    if a.absolute() == b.absolute() or ra == rb:
        return True
    try:
        return ra.exists() and rb.exists() and os.path.samefile(ra, rb)
    except OSError:
        return False


def check_not_input(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Raise RasterError when the output ``path`` is the input ``source`` (also through a link)."""
    if same_file(source, path):
        what = "a file the input is read from" if is_remote(source) else "the input"
        raise RasterError(f"{path}: the output is {what}; choose another output path", option="--output")


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
        kind = special_kind(mode)
        raise RasterError(
            f"{path}: is {kind}, not a file; geosr writes outputs only to files: give another output path",
            option="--output",
        )
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(
            f"{path}: already exists; pass --overwrite to replace it{keep_hint}", option="--overwrite"
        )


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


def output_name(rel: Path) -> Path:
    """The output's relative path for an input's: the same, with a .tif suffix unless TIFF, PNG or JPEG."""
    return rel if rel.suffix.lower() in OUTPUT_SUFFIXES else rel.with_suffix(".tif")


def plan_outputs(
    inputs: Sequence[str | os.PathLike | RemoteSource], output: str | os.PathLike
) -> list[tuple[Path | RemoteSource, Path]]:
    """(input, output) pairs, sorted by input (remote inputs last, in the order given).

    One input file: ``output`` is the output file (or a folder that exists, or a name ending with a slash, to hold
    it). Several inputs or a folder
    (searched recursively for rasters): ``output`` is a folder, and the inputs' layout below their common folder is
    kept. A remote input (geosr.sources: a URL, a /vsi path) is one file, whose output in a folder takes its base
    name; whether it exists is GDAL's to say when it opens it. Raises GeosrError for missing inputs, no rasters found,
    an output that is an input or two inputs that would share an output.
    """
    paths = [input_spec(p) for p in inputs]
    out = Path(output)
    folder_meant = isinstance(output, str) and output.endswith(("/", os.sep))  # Path("new/") drops the slash
    if not paths:
        raise GeosrError("no input given")
    for p in paths:
        if is_remote(p):
            continue
        if not p.exists():
            raise RasterError(f"{p}: no such file or folder")
        check_regular_file(p)
    if len(paths) == 1 and (is_remote(paths[0]) or paths[0].is_file()):
        target = out / output_name(Path(paths[0].name)) if out.is_dir() or folder_meant else out
        check_not_input(paths[0], target)
        return [(paths[0], target)]
    if out.exists() and not out.is_dir():
        raise GeosrError(
            f"{out}: is a file; with several inputs or a folder, -o names an output folder", option="--output"
        )
    if not out.exists() and out.suffix.lower() in OUTPUT_SUFFIXES:
        raise GeosrError(
            f"{out}: names a file, but several inputs or a folder need an output folder; give -o a folder name "
            f"(without {out.suffix}), or one input file",
            option="--output",
        )
    for p in paths:
        if not is_remote(p) and p.is_dir() and same_file(p, out):
            raise GeosrError(
                f"{out}: the output folder is the input folder; choose another output folder", option="--output"
            )
    local = [p for p in paths if isinstance(p, Path)]
    if len(paths) == 1:
        base = paths[0].absolute()
    else:
        base = Path(os.path.commonpath([p.absolute().parent for p in local])) if local else out
    pairs: dict[Path | RemoteSource, Path] = {}
    seen: dict[str, Path] = {}  # the local inputs by their normalised absolute path (a/../b.tif is b.tif)
    left_out = []
    empty: list[Path] = []  # folders without a raster: a warning when others have some, else the error says it
    for p in paths:
        files = [p]
        if not is_remote(p) and p.is_dir():
            found = find_rasters(p, exclude=[out])
            files = found.files
            unread = found.skipped[UNREADABLE]
            if unread:  # its rasters unknown: a batch that silently shrinks would look complete
                names = ", ".join(printable(u) for u in unread[:3]) + (", ..." if len(unread) > 3 else "")
                raise RasterError(
                    f"{printable(p)}: {len(unread)} folder(s) under it cannot be read ({names}): fix their "
                    "permissions, or give the folders to process without them"
                )
            if found.describe_skipped():
                left_out.append(f"{printable(p)}: {found.describe_skipped()}")
                log.warning("%s: left out %s", printable(p), found.describe_skipped())
            if not files:
                empty.append(p)
        for f in files:
            if not is_remote(f):
                first = seen.setdefault(os.path.normpath(f.absolute()), f)
                if first is not f:
                    raise GeosrError(f"{f}: given twice (also as {first}); name each input once")
            target = out / output_name(Path(f.name) if is_remote(f) else f.absolute().relative_to(base))
            if target in pairs.values():
                other = next(k for k, v in pairs.items() if v == target)
                raise GeosrError(f"{f} and {other} would both be written to {target}; rename one of them")
            check_not_input(f, target)
            pairs[f] = target
    if not pairs:
        why = f"; left out: {'; '.join(left_out)}" if left_out else f" (names ending {', '.join(RASTER_SUFFIXES)})"
        raise GeosrError(f"no rasters found in {', '.join(map(printable, paths))}{why}")
    for folder in empty:
        log.warning("%s: no rasters found (%s)", printable(folder), ", ".join(RASTER_SUFFIXES))
    remote = [pair for pair in pairs.items() if is_remote(pair[0])]  # after the local files, in the order given
    return sorted(pair for pair in pairs.items() if not is_remote(pair[0])) + remote
