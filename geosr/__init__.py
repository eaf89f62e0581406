"""geosr: super-resolution of georeferenced rasters with DEGAN.

The public API (geosr.api), for files, folders, numpy arrays and xarray DataArrays:

    upscale(src, dst, scale=None, model=None, **options)            a raster file, as `geosr upscale`
    upscale_folder(src, dst, scale=None, model=None, report=None, **options)   a folder of rasters
    load_model(name_or_path, device="auto", precision="auto")        a model, loaded once for many calls
    upscale_array(array, scale=None, model=None, nodata=None, value_range=None, **options)
    upscale_dataarray(da, scale=None, model=None, nodata=None, value_range=None, **options)

and the errors they raise: GeosrError and its subclasses OptionError, ModelFileError, RasterError, DataError,
WriteError, OutputExistsError. ``import geosr`` stays cheap: the functions (and torch) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geosr.errors import DataError, GeosrError, ModelFileError, OptionError, OutputExistsError, RasterError, WriteError
from geosr.version import __version__

_API = ("upscale", "upscale_folder", "load_model", "upscale_array", "upscale_dataarray")

__all__ = [
    *_API,
    "DataError",
    "GeosrError",
    "ModelFileError",
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
    raise AttributeError(f"module 'geosr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
