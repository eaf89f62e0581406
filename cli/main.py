"""The `geosr` command group."""

from __future__ import annotations

import click

from geosr.cli.evaluate import evaluate
from geosr.cli.export import export
from geosr.cli.info import info
from geosr.cli.options import verbosity_options
from geosr.cli.train import train
from geosr.cli.upscale import upscale
from geosr.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geosr")
@verbosity_options
def cli() -> None:
    """Super-resolve georeferenced rasters with DEGAN, the diffusion-enhanced GAN.

    -v/-q may be given before or after the command: geosr -q upscale ... and geosr upscale ... -q are the same.
    """


cli.add_command(upscale)
cli.add_command(train)
cli.add_command(evaluate)
cli.add_command(info)
cli.add_command(export)


def main() -> None:
    """The `geosr` program's entry point."""
    cli(prog_name="geosr")


if __name__ == "__main__":
    main()
