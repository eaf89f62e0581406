"""Options and helpers shared by the geosr commands.

Library errors (GeosrError) become one-line click errors here, at the CLI boundary; with -v the traceback is logged too.
"""

from __future__ import annotations

import errno
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


def one_line_message(exc: BaseException) -> str:
    """The user-facing message of ``exc`` on one line.

    An error raised in a DataLoader worker process comes back with the worker's traceback in its message; only the
    original message (the last line) is kept.
    """
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split()) or type(exc).__name__


def _os_error_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or one_line_message(exc)
    if exc.errno == errno.ENOSPC:
        return f"{where}: no space left on the disk; free some space or write elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}: {reason}; choose a place you can write to, or fix its permissions"
    return f"{where}: {reason}"


def handle_errors(func):
    """Run a command body and end every failure with one line and a documented exit code, never a traceback.

    GeosrError and OSError (a disk that is full, a folder that cannot be written) exit 1 with their message;
    MemoryError and any unexpected error exit 1 with a one-line summary (the traceback is logged with -v);
    Ctrl-C exits 130. click's own usage errors (exit 2) pass through.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()

        def fail(message: str) -> click.ClickException:
            if verbosity(ctx) >= 1:
                log.exception("traceback")
            return click.ClickException(message)

        try:
            return func(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except GeosrError as exc:
            raise fail(one_line_message(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except OSError as exc:
            raise fail(_os_error_message(exc)) from None
        except MemoryError:
            raise fail("out of memory; use a smaller --tile-size or --batch-size, or a machine with more memory") \
                from None
        except Exception as exc:  # a bug or an unforeseen failure: still one line, the traceback with -v
            raise fail(f"unexpected error: {type(exc).__name__}: {one_line_message(exc)} (run with -v for the "
                       "traceback, and report it)") from None

    return wrapper
