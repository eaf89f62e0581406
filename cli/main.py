"""The `geosr` command group."""

from __future__ import annotations

import click

from geosr import __version__
from geosr.cli.options import configure_logging
from geosr.cli.info import info
from geosr.cli.upscale import upscale
from geosr.cli.train import train
from geosr.cli.evaluate import evaluate
from geosr.cli.export import export


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geosr")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug, with tracebacks).")
@click.option("-q", "--quiet", count=True, help="Less output: no progress bars, errors only.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int) -> None:
    """Super-resolve georeferenced rasters with DEGAN, the diffusion-enhanced GAN."""
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = verbose - quiet
    configure_logging(verbose - quiet)


cli.add_command(upscale)
cli.add_command(train)
cli.add_command(evaluate)
cli.add_command(info)
cli.add_command(export)


def main() -> None:
    cli(prog_name="geosr")


if __name__ == "__main__":
    main()
