"""GDAL settings and errors: the options a run reads and writes under, the checks that make damaged files fail,
the one-line message of a rasterio/GDAL error, and GDAL's, PROJ's and libtiff's own messages as log records
(``gdal_messages_logged``, for the command line).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from geosr.sources import network_timeouts

# GDAL settings under which a damaged file fails its read instead of returning garbage: GDAL's whole-image PNG
# decoder reports no error for a truncated PNG (the row-by-row one does), and libjpeg's "premature end of file" is only
# a warning unless GDAL_ERROR_ON_LIBJPEG_WARNING holds (its default, which a user's environment may have turned off).
READ_CHECKS: dict[str, Any] = {"GDAL_PNG_WHOLE_IMAGE_OPTIM": "NO", "GDAL_ERROR_ON_LIBJPEG_WARNING": "YES"}


CACHE_BYTES = 64 << 20  # GDAL's block cache during a run


def gdal_options() -> dict[str, Any]:
    """GDAL settings for a run: a bounded block cache (unless the user set GDAL_CACHEMAX), internal masks, the
    ``READ_CHECKS`` that make damaged inputs fail, and limits on stalled network reads (geosr.sources)."""
    options: dict[str, Any] = {"GDAL_TIFF_INTERNAL_MASK": True, **READ_CHECKS, **network_timeouts()}
    if "GDAL_CACHEMAX" not in os.environ:
        # in bytes: rasterio hands a number to GDALSetCacheMax64 as it is (64 would be a cache of 64 bytes, none);
        # outputs are written in whole blocks, so this mostly serves reads
        options["GDAL_CACHEMAX"] = CACHE_BYTES
    return options


@contextlib.contextmanager
def quiet_georeferencing() -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning: plain images (PNG, JPEG, TIFF) are valid inputs and outputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


READ_ERRORS = (RasterioError, CPLE_BaseError)  # what rasterio raises for a file it cannot open, read or write


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


def decode_threads() -> dict[str, Any]:
    """GDAL settings that decode the blocks of one read on every core (GDAL_NUM_THREADS), unless the user's
    environment sets the number of threads."""
    return {} if "GDAL_NUM_THREADS" in os.environ else {"GDAL_NUM_THREADS": "ALL_CPUS"}


# --- GDAL's, PROJ's and libtiff's own messages ---------------------------------------------------------------------

GDAL_LOG = logging.getLogger("geosr.gdal")  # GDAL's and libtiff's messages from where rasterio does not log them
_CPL_LEVELS = {1: logging.DEBUG, 2: logging.WARNING, 3: logging.ERROR, 4: logging.CRITICAL}  # CE_Debug..CE_Fatal
_CPLErrorHandler = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_char_p)
_TIFFErrorHandler = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)  # va_list as a pointer


def _text(raw: bytes | None) -> str:
    return " ".join((raw or b"").decode("utf-8", "replace").split())


@_CPLErrorHandler
def _log_gdal(err_class: int, err_no: int, message: bytes | None) -> None:
    with contextlib.suppress(Exception):  # an exception here would be printed by ctypes: the very noise avoided
        GDAL_LOG.log(_CPL_LEVELS.get(err_class, logging.ERROR), "GDAL error %d: %s", err_no, _text(message))


def _libtiff_handler(level: int):
    @_TIFFErrorHandler
    def handler(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
        with contextlib.suppress(Exception):
            GDAL_LOG.log(level, "libtiff: %s: %s", _text(module), _format(fmt, args))

    return handler


_log_tiff_error, _log_tiff_warning = _libtiff_handler(logging.ERROR), _libtiff_handler(logging.WARNING)


def _format(fmt: bytes | None, args: int | None) -> str:
    """libtiff's message: its printf format filled in from its va_list by the C library's vsnprintf."""
    libc = _libc()
    if libc is None or fmt is None:
        return _text(fmt)
    buffer = ctypes.create_string_buffer(1024)
    libc.vsnprintf(buffer, len(buffer), fmt, args)
    return _text(buffer.value)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        return libc
    except (OSError, AttributeError, TypeError):  # Windows: no process-wide symbol table
        return None


@functools.cache
def _gdal_libraries() -> tuple[ctypes.CDLL | None, ctypes.CDLL | None]:
    """The GDAL library rasterio runs on and the libtiff beside it (the copies this process loaded: a second libtiff,
    Pillow's, is left alone), or None for what cannot be found (not Linux, a GDAL with libtiff built in)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None, None
    loaded = {Path(line.split(None, 5)[5]) for line in maps.splitlines() if len(line.split(None, 5)) == 6}
    gdal = next((p for p in sorted(loaded) if p.name.startswith("libgdal") and ".so" in p.name), None)
    if gdal is None:
        return None, None
    tiff = next((p for p in sorted(loaded) if p.name.startswith("libtiff") and p.parent == gdal.parent), None)
    try:
        return ctypes.CDLL(str(gdal)), ctypes.CDLL(str(tiff)) if tiff is not None else None
    except OSError:
        return None, None


def _swap(library: ctypes.CDLL | None, name: str, handler: Any) -> Callable[[], None]:
    """Install ``handler`` with ``library``'s setter ``name``; returns what puts the previous one back."""
    setter = getattr(library, name, None) if library is not None else None
    if setter is None:
        return lambda: None
    setter.restype = setter_arg = ctypes.c_void_p
    setter.argtypes = [setter_arg]
    previous = setter(ctypes.cast(handler, ctypes.c_void_p))
    return lambda: setter(previous)


@contextlib.contextmanager
def gdal_messages_logged() -> Iterator[None]:
    """While it lasts, the messages GDAL, PROJ and libtiff print on stderr become log records, so that a command
    shows its own one-line error and the raw lines only when asked (its -v).

    In this thread a rasterio environment is open, in which rasterio logs GDAL's messages (loggers "rasterio._env"
    and "rasterio._err"); elsewhere (the reader and writer threads) GDAL's global error handler, and libtiff's (which
    writes "_tiffWriteProc: No space left on device." itself), log on "geosr.gdal". Errors still raise: rasterio
    reads them from GDAL, not from the handler. Where the libraries cannot be found (not Linux), only this thread's
    messages are caught.
    """
    gdal, tiff = _gdal_libraries()
    restore = [
        _swap(gdal, "CPLSetErrorHandler", _log_gdal),
        _swap(tiff, "TIFFSetErrorHandler", _log_tiff_error),
        _swap(tiff, "TIFFSetWarningHandler", _log_tiff_warning),
    ]
    try:
        with rasterio.Env():
            yield
    finally:
        for undo in reversed(restore):
            undo()
