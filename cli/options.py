"""Options and helpers shared by the geosr commands.

Library errors (GeosrError) become one-line click errors here, at the CLI boundary; with -v the traceback is logged too.
"""

from __future__ import annotations

import functools
import logging

import click

from geosr.errors import GeosrError

log = logging.getLogger("geosr")


def configure_logging(verbosity: int) -> None:
    """Set the geosr log level from the -v/-q count: 0 is WARNING, 1 INFO, 2+ DEBUG, -1 ERROR."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    if verbosity < -1:
        level = logging.CRITICAL
    logging.basicConfig(format="%(levelname)s: %(message)s", level=level)
    logging.getLogger("geosr").setLevel(level)
    # GDAL/rasterio chatter (e.g. NotGeoreferencedWarning on plain images) only at DEBUG.
    logging.getLogger("rasterio").setLevel(max(level, logging.ERROR) if verbosity < 2 else logging.DEBUG)


def verbosity(ctx: click.Context) -> int:
    """The -v/-q count of the root group (0 when unset)."""
    root = ctx.find_root()
    return int((root.obj or {}).get("verbosity", 0))


def handle_errors(func):
    """Run a command body; turn GeosrError into a one-line click error (exit 1), Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except GeosrError as exc:
            if verbosity(ctx) >= 1:
                log.exception("traceback")
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)

    return wrapper
