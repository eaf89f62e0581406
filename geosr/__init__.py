"""geosr: super-resolution of georeferenced rasters with DEGAN.

The public API (geosr.api), for files, folders, numpy arrays and xarray DataArrays:

    upscale(src, dst, scale=None, model=None, **options)            a raster file, as `geosr upscale`
    upscale_folder(src, dst, scale=None, model=None, report=None, **options)   a folder of rasters
    load_model(name_or_path, device="auto", precision="auto")        a model, loaded once for many calls
    upscale_array(array, scale=None, model=None, nodata=None, value_range=None, **options)
    upscale_dataarray(da, scale=None, model=None, nodata=None, value_range=None, **options)

and the errors they raise: GeosrError and its subclasses OptionError, ModelFileError, RasterError, DataError,
WriteError, OutputExistsError, NotEnoughMemory, DeviceError (a device or precision this machine lacks), AOIError (an
area of interest that cannot be used) and WorkTooLarge (work the machine would take too long for). ``import geosr``
stays cheap: the functions (and torch) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geosr.errors import (
    DataError,
    GeosrError,
    ModelFileError,
    NotEnoughMemory,
    OptionError,
    OutputExistsError,
    RasterError,
    WriteError,
)
from geosr.version import __version__

_API = ("upscale", "upscale_folder", "load_model", "upscale_array", "upscale_dataarray")
_LAZY_ERRORS = {"DeviceError": "geosr.device", "AOIError": "geosr.aoi", "WorkTooLarge": "geosr.worksize"}

__all__ = [
    *_API,
    *_LAZY_ERRORS,
    "DataError",
    "GeosrError",
    "ModelFileError",
    "NotEnoughMemory",
    "OptionError",
    "OutputExistsError",
    "RasterError",
    "WriteError",
    "__version__",
]

if TYPE_CHECKING:
    from geosr.api import load_model, upscale, upscale_array, upscale_dataarray, upscale_folder  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _API:
        from geosr import api

        return getattr(api, name)
    if name in _LAZY_ERRORS:
        import importlib

        return getattr(importlib.import_module(_LAZY_ERRORS[name]), name)
    raise AttributeError(f"module 'geosr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | set(_LAZY_ERRORS))
