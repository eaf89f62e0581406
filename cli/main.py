"""The `geosr` command group."""

from __future__ import annotations

import signal
import sys
from typing import NoReturn

import click

from geosr.cli.evaluate import evaluate
from geosr.cli.exits import HeldImport
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
    """The `geosr` program's entry point: click's own handling of the command line, except that Ctrl-C before a
    command's body runs (while the options are parsed) exits 130 with "Interrupted.", as it does in the body
    (geosr.cli.exits.handle_errors), instead of click's "Aborted!" and 1."""
    HeldImport.install()  # Ctrl-C during PyTorch's import: "Interrupted.", not an abort
    try:
        code = cli.main(prog_name="geosr", standalone_mode=False)
    except click.exceptions.Abort:  # click's form of KeyboardInterrupt (and of EOF at a prompt; geosr has none)
        click.echo("Interrupted.", err=True)
        _exit(130)
    except click.ClickException as exc:  # usage errors (2) and the commands' one-line errors (1)
        exc.show()
        _exit(exc.exit_code)
    except BrokenPipeError:  # stdout closed early (geosr info | head): as click's standalone mode does
        sys.stdout = None  # type: ignore[assignment]  # nothing more is written, nor flushed at exit
        _exit(1)
    _exit(code if isinstance(code, int) else 0)


def _exit(code: int) -> NoReturn:
    """Exit with ``code``, the command's own: the work is over and its report written, so a Ctrl-C or SIGTERM that
    arrives while the interpreter shuts down (a quick batch's last fraction of a second) no longer turns the exit
    into a death by signal that contradicts the report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    main()
