"""GDAL settings and errors: the options a run reads and writes under, the checks that make damaged files fail,
and the one-line message of a rasterio/GDAL error.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator

from rasterio._err import CPLE_BaseError
from rasterio.errors import NotGeoreferencedWarning, RasterioError

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
