"""Options and helpers shared by the geosr commands.

Every option that several commands take is defined here once, as a decorator with a validating callback (as in
rasterio's ``rio/options.py``), so that it is spelled, documented and checked the same way in every command. The
callbacks only map: the rules are the library's (geosr.options, geosr.device, geosr.tiling), and a value they refuse
becomes ``click.BadParameter`` (exit 2) before anything is opened. A command may word the help for its own meaning
of an option (``-o`` is an output file, folder or run folder); its names and its checks stay the same.

Library errors (GeosrError) become one-line click errors in ``geosr.cli.exits.handle_errors``: an ``OptionError`` a
usage error on the option it names (``bad_parameter``, exit 2), every other one exit 1.

Start-up: the command line imports neither PyTorch nor rasterio before a command runs, so that ``geosr --help``,
``geosr upscale --help`` and a usage error come back at once. The commands import the library inside their bodies; a
check from a module that pulls them in is called through ``lazy``; and the fixed choices and bounds come from
``geosr.limits``, which imports nothing heavy.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from geosr.device import DEVICES, PRECISIONS, check_device_spec  # geosr.device imports torch only when it needs it
from geosr.errors import OptionError, one_line
from geosr.limits import MAX_TILE, MIN_TILE, SCALES

log = logging.getLogger("geosr")


def lazy(module: str, name: str) -> Callable:
    """The function ``name`` of ``module``, imported at its first call: a library rule from a module that imports
    rasterio or torch, kept out of the command line's import (and so out of --help)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported when first called."
    return call


# the rules of geosr.options (which imports geosr.aoi and geosr.raster, and so rasterio)
check_band_numbers = lazy("geosr.options", "check_band_numbers")
check_batch_size = lazy("geosr.options", "check_batch_size")
check_tiling = lazy("geosr.options", "check_tiling")
gdal_messages_logged = lazy("geosr.raster.gdal", "gdal_messages_logged")
redact = lazy("geosr.sources", "redact")
is_address = lazy("geosr.sources", "is_address")
GDAL_LOGGERS = ("rasterio", "geosr.gdal")  # where GDAL's messages arrive (geosr.raster.gdal.gdal_messages_logged)


# --- logging ------------------------------------------------------------------------------------------------------


class _Redacting(logging.Formatter):
    """Log lines without what may be a secret in an address: user:password@ and query strings (geosr.sources.redact),
    in the message and its traceback alike."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(verbosity: int) -> None:
    """Set the geosr log level from the -v/-q count: 0 is WARNING, 1 INFO, 2+ DEBUG, -1 ERROR."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    if verbosity < -1:
        level = logging.CRITICAL
    if not logging.getLogger().handlers:  # as logging.basicConfig, only where nothing has configured logging yet
        handler = logging.StreamHandler()
        handler.setFormatter(_Redacting("%(levelname)s: %(message)s"))  # GDAL's and rasterio's lines name URLs too
        logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("geosr").setLevel(level)
    # GDAL's, PROJ's and libtiff's messages (rasterio's records, and geosr.gdal's while a command runs: see
    # handle_errors) are the raw details of geosr's one-line errors: shown with -v, rasterio's chatter with -vv.
    gdal_level = logging.CRITICAL + 1 if verbosity < 1 else logging.INFO if verbosity == 1 else logging.DEBUG
    for name in GDAL_LOGGERS:
        logging.getLogger(name).setLevel(gdal_level)


def verbosity(ctx: click.Context) -> int:
    """The -v/-q count so far (of the group and the command; 0 when unset)."""
    root = ctx.find_root()
    return int((root.obj or {}).get("verbosity", 0))


def _count(sign: int):
    def callback(ctx: click.Context, param: click.Parameter, value: int) -> None:
        obj = ctx.find_root().ensure_object(dict)
        obj["verbosity"] = obj.get("verbosity", 0) + sign * (value or 0)
        configure_logging(obj["verbosity"])

    return callback


def verbosity_options(func: Callable) -> Callable:
    """-v/--verbose and -q/--quiet: counted on the group and on every command alike (geosr -q upscale ... and
    geosr upscale ... -q are the same), setting the log level; the count is read with ``verbosity(ctx)``."""
    func = click.option(
        "-q",
        "--quiet",
        count=True,
        expose_value=False,
        callback=_count(-1),
        help="Less output: no progress bars, summaries or warnings; errors and what a command is asked for "
        "(evaluate's table, info) still print.",
    )(func)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_count(+1),
        help="More log output, and the traceback of an error (-vv: debug).",
    )(func)


# --- options with hidden aliases ------------------------------------------------------------------------------------


class AliasedOption(click.Option):
    """An option with old names that still work but are left out of --help and error messages."""

    def __init__(self, *args: Any, hidden_names: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_names = tuple(hidden_names)

    def _shown(self) -> list[str]:
        return [o for o in self.opts if o not in self.hidden_names]

    def get_help_record(self, ctx: click.Context):
        opts, self.opts = self.opts, self._shown()
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return " / ".join(f"'{o}'" for o in self._shown())


# --- validating callbacks -------------------------------------------------------------------------------------------


def _param_named(ctx: click.Context, name: str | None) -> click.Parameter | None:
    """The command's parameter that takes the option ``name`` (e.g. '--overlap'), if any."""
    if ctx is None or ctx.command is None or name is None:
        return None
    return next((p for p in ctx.command.params if name in getattr(p, "opts", ())), None)


def bad_parameter(ctx: click.Context, exc: OptionError, param: click.Parameter | None = None) -> click.BadParameter:
    """A click usage error for a library OptionError, on the parameter it names (or ``param``)."""
    target = _param_named(ctx, exc.option) or param
    hint = None if target is not None else exc.option
    return click.BadParameter(one_line(exc), ctx=ctx, param=target, param_hint=hint)


def checked(check: Callable[[Any], Any]):
    """A click callback that passes a given value through the library rule ``check`` (None stays None); the
    OptionError it raises becomes a usage error on the option it names."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except OptionError as exc:
            raise bad_parameter(ctx, exc, param) from None

    return callback


def parse_int_list(text: str) -> tuple[int, ...]:
    """'4,3,2' (commas, spaces or both) -> (4, 3, 2); ValueError for anything that is not integers, an empty item
    included ('4,,2' is more likely a typo of '4,3,2' than a wish for two bands)."""
    return tuple(int(v) for v in re.split(r"\s*,\s*|\s+", text.strip()))


def _bands(value: str) -> tuple[int, ...]:
    try:
        bands = parse_int_list(value)
    except ValueError:
        raise OptionError(
            f"{value!r}: expected 1-based band numbers separated by commas, e.g. 4,3,2", option="--bands"
        ) from None
    return check_band_numbers(bands)


def _scale(value: str) -> int:
    return int(value)  # one of the choices


def _tiling(name: str):
    """The callback of --tile-size or --overlap: the value alone, and the pair once both are known."""

    def callback(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
        if value is None:
            return None
        pair = {"tile_size": ctx.params.get("tile_size"), "overlap": ctx.params.get("overlap"), name: value}
        try:
            check_tiling(pair["tile_size"], pair["overlap"])
        except OptionError as exc:
            raise bad_parameter(ctx, exc, param) from None
        return value

    return callback


# --- the shared options ---------------------------------------------------------------------------------------------


class NonEmptyPath(click.Path):
    """click.Path that refuses an empty value: "" would name the current folder (an unset shell variable in
    ``geosr upscale "$IN"`` would start a batch over it)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path (an unset shell variable?); give a file or folder name", param, ctx)
        # click's own words ("Directory 'x' is a file.") name no remedy
        if not self.file_okay and Path(value).is_file():
            self.fail(f"{value}: is a file, where a folder is wanted; give a folder name", param, ctx)
        if not self.dir_okay and Path(value).is_dir():
            self.fail(f"{value}: is a folder, where a file is wanted; give a file name", param, ctx)
        return super().convert(value, param, ctx)


class LocalPath(NonEmptyPath):
    """NonEmptyPath for what a command writes: a local path, not a URL or a GDAL /vsi path (they would become local
    folders named "http:" or "/vsimem")."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if is_address(text):
            self.fail(
                f"{text}: geosr writes to local files, not to URLs or GDAL's /vsi paths; give a local path and copy "
                "the result",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


def output_option(
    help: str,
    *,
    dest: str = "output",
    required: bool = True,
    metavar: str = "PATH",
    type: click.ParamType | None = None,
    callback: Callable | None = None,
) -> Callable:
    """-o/--output: where the command writes (a file, a folder or a run folder: ``help`` says which). The older
    spelling --out is still accepted."""
    return click.option(
        "-o",
        "--output",
        "--out",
        dest,
        cls=AliasedOption,
        hidden_names=("--out",),
        required=required,
        type=type or NonEmptyPath(path_type=Path),
        metavar=metavar,
        callback=callback,
        help=help,
    )


def model_option(
    help: str = "A model file (.safetensors) or a bundled model's name (geosr info lists them); "
    "default: the bundled model for --scale.",
    *,
    dest: str = "model",
) -> Callable:
    """-m/--model MODEL."""
    return click.option("-m", "--model", dest, type=NonEmptyPath(), metavar="MODEL", help=help)


def scale_option(
    help: str = "Upscaling factor; must match the model's (default: the model's).", *, dest: str = "scale"
) -> Callable:
    """-s/--scale [2|3|4], as an int (None when not given)."""
    return click.option(
        "-s",
        "--scale",
        dest,
        type=click.Choice([str(s) for s in SCALES]),
        default=None,
        callback=checked(_scale),
        help=help,
    )


def bands_option(help: str = "1-based input bands, in output order (e.g. 4,3,2).", *, dest: str = "bands") -> Callable:
    """--bands LIST, as a tuple of 1-based band numbers (None when not given)."""
    return click.option("--bands", dest, metavar="LIST", callback=checked(_bands), help=help)


def device_option(
    help: str = f"{DEVICES}; auto takes CUDA, then MPS, then the CPU.",
    *,
    default: str | None = "auto",
    dest: str = "device",
) -> Callable:
    """--device DEVICE: its spelling checked here; whether this machine has it, when the model is loaded (exit 1)."""
    return click.option(
        "--device",
        dest,
        metavar="DEVICE",
        default=default,
        show_default=default is not None,
        callback=checked(check_device_spec),
        help=help,
    )


def precision_option(
    help: str = "auto: bf16 on GPUs and CPUs that support it, fp32 elsewhere.",
    *,
    default: str | None = "auto",
    name: str = "--precision",
    dest: str = "precision",
) -> Callable:
    """--precision [auto|fp32|bf16|fp16] (``name`` for a second precision option of the same kind)."""
    return click.option(
        name,
        dest,
        type=click.Choice(PRECISIONS, case_sensitive=False),
        default=default,
        show_default=default is not None,
        help=help,
    )


def tile_size_option(help: str = "Tile size in input pixels [model card].", *, dest: str = "tile_size") -> Callable:
    """--tile-size N (input pixels, MIN_TILE..MAX_TILE), checked with --overlap by geosr.tiling's rule."""
    return click.option(
        "--tile-size", dest, type=int, metavar=f"{MIN_TILE}..{MAX_TILE}", callback=_tiling("tile_size"), help=help
    )


def overlap_option(
    help: str = "Overlap of neighbouring tiles in input pixels, at most half the tile size [model card].",
    *,
    dest: str = "overlap",
) -> Callable:
    """--overlap N (input pixels), checked with --tile-size by geosr.tiling's rule."""
    return click.option("--overlap", dest, type=int, metavar="N", callback=_tiling("overlap"), help=help)


def batch_size_option(help: str, *, default: int | None = None, dest: str = "batch_size") -> Callable:
    """--batch-size N (at least 1)."""
    return click.option(
        "--batch-size",
        dest,
        type=int,
        metavar="N",
        default=default,
        show_default=default is not None,
        callback=checked(check_batch_size),
        help=help,
    )


def consistency_option() -> Callable:
    """--consistency/--no-consistency: the correction of geosr.consistency, on by default."""
    return click.option(
        "--consistency/--no-consistency",
        "consistency",
        default=True,
        show_default=True,
        help="Correct the output so that its bicubic downsampling (the degradation the model was "
        "trained for) gives back the input, per band, in the model's range.",
    )


def self_ensemble_option() -> Callable:
    """--self-ensemble: every tile through the model 8 times, flipped and transposed, the outputs averaged."""
    return click.option(
        "--self-ensemble",
        is_flag=True,
        help="Run every tile 8 times (flips and transposes) and average: higher PSNR for 8 times the "
        "compute. For the content (MSE) models; averaging smooths a GAN model's texture.",
    )


def overwrite_option(help: str = "Replace an existing output.") -> Callable:
    """--overwrite."""
    return click.option("--overwrite", is_flag=True, help=help)
