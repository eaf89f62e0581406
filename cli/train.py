"""`geosr train`: train DEGAN from a TOML config and/or command-line settings; resume a run.

Its options, one per TrainConfig setting, are made when the command is first used (``TrainCommand``): TrainConfig's
module imports PyTorch, which ``geosr --help`` and the other commands need not load.
"""

from __future__ import annotations

import contextlib
import typing
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geosr.cli.exits import handle_errors
from geosr.cli.options import (
    LocalPath,
    NonEmptyPath,
    bands_option,
    batch_size_option,
    device_option,
    output_option,
    overlap_option,
    precision_option,
    scale_option,
    tile_size_option,
    verbosity,
    verbosity_options,
)
from geosr.cli.progress import progress_bar
from geosr.cli.threads import threads_option
from geosr.errors import OptionError

if TYPE_CHECKING:
    from geosr.training.config import TrainConfig

PATH_SETTINGS = ("data", "val_data", "vgg_weights", "out")
REPEATED = {"extra_data": "DIR"}  # list settings given by repeating the option (a folder name may hold a comma)

# Settings that are options of other commands too: spelled and checked as in every command (geosr.cli.options).
SHARED_OPTIONS = {
    "scale": scale_option,
    "bands": bands_option,
    "device": partial(device_option, default=None),
    "precision": partial(precision_option, default=None),
    "val_precision": partial(precision_option, default=None, name="--val-precision", dest="val_precision"),
    "tile_size": tile_size_option,
    "overlap": overlap_option,
    "batch_size": batch_size_option,
    "out": partial(output_option, dest="out", required=False, metavar="RUN_DIR", type=LocalPath(file_okay=False)),
}


def _setting_options(func):
    """One option per TrainConfig setting, named like the setting (n_blocks -> --n-blocks; out -> -o/--output, --out
    still accepted); all default to unset."""
    from geosr.training.config import TrainConfig
    from geosr.training.configfile import _base_type

    hints = typing.get_type_hints(TrainConfig)
    for f in reversed(fields(TrainConfig)):
        tp, _ = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"]
        if f.name in SHARED_OPTIONS:
            decorator = SHARED_OPTIONS[f.name](help_text)
        elif tp is bool:
            decorator = click.option(f"{flag}/--no-{f.name.replace('_', '-')}", f.name, default=None, help=help_text)
        elif f.name in REPEATED:
            decorator = click.option(
                flag, f.name, multiple=True, type=NonEmptyPath(), metavar=REPEATED[f.name], help=help_text
            )
        elif typing.get_origin(tp) is list:
            decorator = click.option(flag, f.name, default=None, metavar="A,B,...", help=help_text)
        else:
            click_type = {int: int, float: float, str: str}[tp]
            metavar = {"data": "DIR", "val_data": "DIR", "vgg_weights": "FILE"}.get(f.name)
            if f.name in PATH_SETTINGS:
                click_type = NonEmptyPath()
            decorator = click.option(flag, f.name, type=click_type, default=None, metavar=metavar, help=help_text)
        func = decorator(func)
    return func


@contextlib.contextmanager
def _settings_checked(ctx: click.Context, overrides: dict[str, Any]):
    """A setting out of range (training.config's ConfigError, "<setting> must ...") that the command line gave is a
    usage error on its option (exit 2); one it did not give (a default, a config file's) names the option to set."""
    from geosr.training.config import ConfigError

    try:
        yield
    except ConfigError as exc:
        name, _, rest = str(exc).partition(" ")
        option = next((p for p in ctx.command.params if p.name == name and p.opts), None)
        if option is None:
            raise
        flag = max(option.opts, key=len)
        if name in overrides:
            raise OptionError(rest if rest.startswith("must") else str(exc), option=flag) from None
        raise ConfigError(f"{exc}; set {flag} (or {name} in the config file)") from None


def _overrides(raw: dict[str, Any]) -> dict[str, Any]:
    """Typed settings from the command line (comma lists split, paths made absolute); unset ones left out."""
    from geosr.training.config import TrainConfig
    from geosr.training.configfile import _base_type, coerce

    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for name, value in raw.items():
        if value is None or value == ():  # unset; an option given by repetition (REPEATED) and absent is ()
            continue
        tp, _ = _base_type(hints[name])
        if isinstance(value, tuple):  # parsed by a shared option's callback (--bands)
            value = list(value)
        elif typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            parts = [p.strip() for p in value.split(",") if p.strip()]
            try:
                value = [item(p) for p in parts]
            except ValueError:
                raise click.BadParameter(
                    f"{value!r} is not a comma-separated list of {item.__name__}",
                    param_hint="--" + name.replace("_", "-"),
                ) from None
        out[name] = coerce(name, value, "command line")
    return out


def _absolute(cfg: TrainConfig) -> TrainConfig:
    """Paths relative to the working directory made absolute, so the run folder's config.toml works from anywhere."""
    for name in PATH_SETTINGS:
        value = getattr(cfg, name)
        if value is not None:
            setattr(cfg, name, str(Path(value).expanduser().resolve()))
    return cfg


def _count(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless n is 1: 1 step, 2 steps."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


class _Bar:
    """The progress of rank 0, fed by fit's progress events: a tqdm bar on a terminal, plain lines in a log file
    (geosr.cli.progress)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "start":
            if not self.quiet:
                click.echo(
                    f"training on {info['device']} ({info['precision']}, {info['processes']} process"
                    f"{'es' if info['processes'] > 1 else ''}), {'GAN' if info['discriminator'] else 'content only'}"
                    f", {_count(info['steps_per_epoch'], 'step')} per epoch"
                    f", data {'in memory' if info['cached'] else 'from disk'}"
                    f", {_count(info['workers'], 'loader worker')}",
                    err=True,
                )
                if len(info.get("sources", ())) > 1:
                    click.echo("training items: " + "; ".join(f"{n} from {p}" for p, n in info["sources"]), err=True)
            if info["step"] >= info["total"]:  # a resumed run at its end already: no bar of "9/5 steps (180%)"
                if not self.quiet:
                    click.echo(
                        f"the run has trained {info['step']} steps and stops at step {info['total']} (--max-steps "
                        "or --epochs): nothing to train; give a larger --max-steps or --epochs to continue it",
                        err=True,
                    )
                return
            self.bar = progress_bar(
                total=info["total"], initial=info["step"], unit="step", disable=self.quiet, dynamic_ncols=True
            )
        elif kind == "step" and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in info["losses"].items()}, refresh=False)
        elif kind == "val" and not self.quiet:
            line = (
                f"step {info['step']}: val PSNR {info['val_psnr']:.3f} dB SSIM {info['val_ssim']:.4f} "
                f"(bicubic {info['val_psnr_bicubic']:.3f} / {info['val_ssim_bicubic']:.4f}, "
                f"{_count(info['val_images'], 'image')}){' *best' if info['best'] else ''}"
            )
            (self.bar.write if self.bar is not None else click.echo)(line)
        elif kind == "end" and self.bar is not None:
            self.bar.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _setting_params() -> list[click.Parameter]:
    """The options _setting_options adds, in their order."""

    def settings() -> None:
        pass

    _setting_options(settings)
    return settings.__click_params__[::-1]  # type: ignore[attr-defined]  # where click's decorators keep them


class TrainCommand(click.Command):
    """geosr train, whose setting options (_setting_options) join its parameters, after --print-config, when they are
    first read: for its own help, parsing or completion, never for ``geosr --help`` or another command."""

    _settings_added = False

    @property
    def params(self) -> list[click.Parameter]:
        if not self._settings_added:
            at = next(i for i, p in enumerate(self._params) if p.name == "print_config") + 1
            self._params[at:at] = _setting_params()
            self._settings_added = True
        return self._params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._params = value


@click.command(cls=TrainCommand, context_settings={"max_content_width": 120})
@click.option(
    "--config",
    "config_file",
    type=NonEmptyPath(dir_okay=False, path_type=Path),
    default=None,
    help="A TOML config file (see examples/configs); command-line settings override it.",
)
@click.option(
    "--resume",
    "resume_dir",
    type=NonEmptyPath(file_okay=False, path_type=Path),
    default=None,
    metavar="RUN_DIR",
    help="Continue the run in RUN_DIR from its last saved state (settings that do not "
    "change the model or the data may be overridden, e.g. --max-steps).",
)
@click.option("--print-config", is_flag=True, help="Print the resolved configuration as TOML and exit.")
@threads_option
@verbosity_options
@click.pass_context
@handle_errors
def train(
    ctx: click.Context, config_file: Path | None, resume_dir: Path | None, print_config: bool, **settings: Any
) -> None:
    """Train the DEGAN generator and discriminator on a scene data set (UC Merced, AID, image folders, HR/LR pairs,
    GeoTIFF tiles) into a run folder: config.toml, log.csv, checkpoints/state.pt, best.safetensors and
    last.safetensors (model files for geosr upscale and geosr evaluate).

    \b
    Under torchrun it trains data-parallel on every process (NCCL on GPUs, gloo on CPUs):
      torchrun --nproc_per_node 4 -m geosr.cli.main train --config FILE
    """
    from geosr.training.configfile import build_config, resume_config

    overrides = _overrides(settings)
    if resume_dir is not None:
        if config_file is not None:
            raise click.UsageError("--resume takes the run's own config.toml; give either --config or --resume")
        if "out" in overrides and Path(overrides["out"]).absolute() != resume_dir.absolute():
            raise click.UsageError(
                f"--resume continues {resume_dir} in that folder; -o {overrides['out']} would not be used: leave out "
                "-o, or copy the run folder there and resume the copy"
            )
        saved_file = resume_dir / "config.toml"
        if not resume_dir.is_dir():
            raise click.BadParameter(f"{resume_dir}: no such run folder", param_hint="--resume")
        if not saved_file.is_file():
            raise click.BadParameter(f"{resume_dir} is not a geosr run folder (no config.toml)", param_hint="--resume")
        saved = build_config(saved_file)
        overrides["out"] = str(resume_dir)
        saved.out = str(resume_dir)
        with _settings_checked(ctx, overrides):
            cfg = resume_config(saved, overrides)
    else:
        if config_file is None and "data" not in overrides:
            raise click.UsageError("give --data DIR or a --config file that sets data")
        with _settings_checked(ctx, overrides):
            cfg = build_config(config_file, overrides)
    cfg = _absolute(cfg)
    if print_config:
        click.echo(cfg.to_toml(), nl=False)
        return
    from geosr.training.loop import fit  # torch-heavy; after the options are checked

    bar = _Bar(quiet=verbosity(ctx) < 0)
    try:
        result = fit(cfg, resume=resume_dir is not None, progress=bar)
    finally:
        bar.close()
    if result.rank == 0 and verbosity(ctx) >= 0:
        best = f", best val PSNR {result.best_psnr:.3f} dB" if result.best_psnr is not None else ""
        why = {"interrupted": "interrupted", "epochs": "its --epochs done"}.get(result.stopped)
        why = why or f"stopped by --{result.stopped.replace('_', '-')}"  # --max-steps, --max-minutes
        click.echo(f"{_count(result.steps, 'step')} ({why}){best}; model file: {result.model}")
    if result.stopped == "interrupted":
        if result.rank == 0:
            click.echo(
                f"Interrupted: the state at step {result.steps} is saved; continue with geosr train --resume "
                f"{result.run_dir}",
                err=True,
            )
        ctx.exit(130)
