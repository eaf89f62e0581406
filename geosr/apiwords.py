"""How geosr.api takes its arguments and speaks to Python callers: keyword options checked and made into
UpscaleOptions, empty paths, scales and flags refused in Python's words, errors that name keyword arguments where the
library's messages name the command line's options, and a model from ``load_model`` that keeps the device and
precision it was loaded with."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosr.aoi import AOI, bbox_aoi, load_aoi
from geosr.device import DEVICES, PRECISIONS, check_device_spec
from geosr.errors import GeosrError, OptionError
from geosr.options import UpscaleOptions, check_exclusions
from geosr.sources import is_remote

if TYPE_CHECKING:
    from geosr.predictor import Predictor

# The keyword names of geosr.api's options and functions; boolean ones among them are written name=True (--no-NAME:
# name=False) in messages for Python callers.
FILE_OPTIONS = tuple(f.name for f in fields(UpscaleOptions)) + ("bbox", "aoi_crs")  # geosr.upscale's **options
_KEYWORDS = set(FILE_OPTIONS) | {"scale", "model", "device", "precision", "skip_existing", "self_ensemble", "nodata"}
_KEYWORDS |= {"report", "assets", "files_in_flight", "band_axis"}
_BOOLEANS = {f.name for f in fields(UpscaleOptions) if isinstance(f.default, bool)} | {"skip_existing", "self_ensemble"}
_FLAG = re.compile(r"(?<![\w-])--(no-)?([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def _keyword(match: re.Match) -> str:
    name = match.group(2).replace("-", "_")
    if name not in _KEYWORDS:
        return match.group(0)
    return f"{name}={not match.group(1)}" if name in _BOOLEANS else name


def python_words(message: str) -> str:
    """``message`` with the command line's options (``--overwrite``, ``--tile-size``) named as geosr.api's keyword
    arguments (``overwrite=True``, ``tile_size``); options the API has not are left as they are."""
    return _FLAG.sub(_keyword, message)


def python_messages(func):
    """The public functions' GeosrError messages name keyword arguments (``overwrite=True``, ``tile_size``) where
    the library's name the command line's options (``--overwrite``, ``--tile-size``); the exception stays the same
    (its ``option`` too)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except GeosrError as exc:
            if exc.args and isinstance(exc.args[0], str):
                message = python_words(exc.args[0])
                name = (exc.option or "").lstrip("-").replace("-", "_")
                if isinstance(exc, OptionError) and name in _KEYWORDS and name not in message:
                    message = f"{name}: {message}"  # "tile size 0: ..." names the option in words only
                exc.args = (message, *exc.args[1:])
            raise

    return wrapper


def checked_path(value: Any, name: str, *, optional: bool = False) -> Any:
    """``value``, unless it is no path (OptionError naming ``name``: None unless ``optional``, a number) or an empty
    text (Path("") would be the current folder, which an empty argument never means; the command line refuses it
    too)."""
    if value is None and optional:
        return value
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise OptionError(f"{name}={value!r}: expected a path (a str or os.PathLike)", option=name)
    if isinstance(value, (str, bytes)) and not value.strip():
        raise OptionError(f"{name}={value!r}: an empty path; give a file or folder name", option=name)
    if isinstance(value, str) and is_remote(value) and name in ("dst", "report", "uncertainty"):
        raise OptionError(f"{name}={value!r}: geosr writes local files; write here and copy it there", option=name)
    return value


def checked_scale(scale: Any) -> int | None:
    """None (the model's scale) or 2, 3 or 4; OptionError otherwise (not 0, "4", 2.0 or True)."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale not in (2, 3, 4)):
        raise OptionError(f"scale={scale!r}: expected 2, 3 or 4 (or None: the model's own)", option="scale")
    return scale


def checked_device(value: Any) -> str:
    """device= normalised (geosr.device.check_device_spec; None: auto), or OptionError naming it: auto, cpu, cuda,
    cuda:N, mps."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        try:
            return check_device_spec(value)
        except OptionError:
            pass
    raise OptionError(f"device={value!r}: expected {DEVICES}", option="device")


def checked_precision(value: Any) -> str:
    """precision= in lower case (None: auto), or OptionError naming it: one of PRECISIONS."""
    if value is None:
        return "auto"
    if not isinstance(value, str) or value.strip().lower() not in PRECISIONS:
        raise OptionError(f"precision={value!r}: expected one of {', '.join(PRECISIONS)}", option="precision")
    return value.strip().lower()


def checked_flag(value: Any, name: str) -> bool:
    """A keyword that must be True or False (a text such as "no" would read as True)."""
    if not isinstance(value, bool):
        raise OptionError(f"{name}={value!r}: must be True or False", option=name)
    return value


def check_loaded(model: Predictor, device: str, precision: str) -> None:
    """Raise OptionError where device= or precision= names other than a loaded model's own (which it keeps)."""
    import torch

    device, precision = checked_device(device), checked_precision(precision)
    if device != "auto":
        want, have = torch.device(device), model.device
        if want.type != have.type or (want.index is not None and want.index != have.index):
            raise OptionError(
                f"device={device!r}, but the model from geosr.load_model is on {have}; load it with "
                f"geosr.load_model(..., device={device!r}), or leave device out",
                option="device",
            )
    if precision != "auto" and precision != model.precision:
        raise OptionError(
            f"precision={precision!r}, but the model from geosr.load_model runs in {model.precision}; load it with "
            f"geosr.load_model(..., precision={precision!r}), or leave precision out",
            option="precision",
        )


# --- options of geosr.api's functions ---------------------------------------------------------------------------------


def check_names(options: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    """TypeError, as Python raises for any function, for keyword options that ``where`` does not take."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"{where}() got unexpected option(s) {', '.join(unknown)}; its options: {', '.join(sorted(allowed))}"
        )


def _area(aoi: Any, bbox: Sequence[float] | None, aoi_crs: str | None) -> AOI | None:
    check_exclusions(aoi=aoi is not None, bbox=bbox is not None, aoi_crs=aoi_crs is not None)
    if aoi is None and bbox is None:
        return None
    if bbox is not None:
        try:
            values = tuple(float(v) for v in bbox)
        except (TypeError, ValueError):
            values = ()
        if len(values) != 4:
            raise OptionError(f"bbox {bbox!r}: expected four numbers (minx, miny, maxx, maxy)", option="--bbox")
        return bbox_aoi(values, aoi_crs)  # type: ignore[arg-type]
    if isinstance(aoi, AOI):
        return aoi
    if hasattr(aoi, "wkt"):  # a shapely geometry
        return load_aoi(aoi.wkt, aoi_crs)
    return load_aoi(os.fspath(aoi), aoi_crs)


def file_options(where: str, options: dict[str, Any]) -> UpscaleOptions:
    """UpscaleOptions from keyword options; TypeError for a name that is no option, OptionError for a bad value."""
    check_names(options, FILE_OPTIONS, where)
    opts = dict(options)
    area = _area(opts.pop("aoi", None), opts.pop("bbox", None), opts.pop("aoi_crs", None))
    for key, example in (("bands", "[4, 3, 2]"), ("value_range", "(0, 3000)")):
        value = opts.get(key)
        if value is not None:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise OptionError(
                    f"{key} {value!r}: expected a sequence, e.g. {key}={example}", option=f"--{key.replace('_', '-')}"
                )
            opts[key] = tuple(value)
    if opts.get("uncertainty") is not None:
        opts["uncertainty"] = Path(checked_path(opts["uncertainty"], "uncertainty"))
    try:
        return UpscaleOptions(aoi=area, **opts)
    except OptionError as exc:  # a value's rule, worded for the command line: the keyword and its value instead
        key = {"--bands": "bands", "--value-range": "value_range"}.get(exc.option or "")
        if key is None:
            raise
        reason = (
            str(exc)
            .split(": ", 1)[-1]
            .replace("e.g. 4,3,2", "e.g. [4, 3, 2]")
            .replace("MIN must be below MAX", "min must be below max")
        )
        raise OptionError(f"{key}={options[key]!r}: {reason}", option=key) from None
