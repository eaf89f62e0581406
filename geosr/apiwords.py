"""How geosr.api speaks to Python callers: its errors name keyword arguments where the library's messages name the
command line's options, and a model from ``load_model`` keeps the device and precision it was loaded with."""

from __future__ import annotations

import functools
import re
from dataclasses import fields
from typing import TYPE_CHECKING

from geosr.errors import GeosrError, OptionError
from geosr.options import UpscaleOptions

if TYPE_CHECKING:
    from geosr.predictor import Predictor

# The keyword names of geosr.api's options and functions; boolean ones among them are written name=True (--no-NAME:
# name=False) in messages for Python callers.
_OPTIONS = {f.name for f in fields(UpscaleOptions)} | {"bbox", "aoi_crs"}
_KEYWORDS = _OPTIONS | {"scale", "model", "device", "precision", "skip_existing", "self_ensemble", "nodata"}
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
                exc.args = (python_words(exc.args[0]), *exc.args[1:])
            raise

    return wrapper


def check_loaded(model: Predictor, device: str, precision: str) -> None:
    """Raise OptionError where device= or precision= names other than a loaded model's own (which it keeps)."""
    import torch

    if device != "auto":
        try:
            want = torch.device(device)
        except (RuntimeError, TypeError):
            raise OptionError(
                f"device={device!r} names no device; use auto, cpu, cuda, cuda:N or mps", option="device"
            ) from None
        have = model.device
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
