"""How a command ends: every failure as one line and a documented exit code (``handle_errors``), and SIGTERM as
Ctrl-C (``stop_on_sigterm``), so that the same cleanup runs. Every command is decorated with both.
"""

from __future__ import annotations

import errno
import functools
import importlib.abc
import logging
import signal
import sys
import threading

import click

from geosr.cli.options import bad_parameter, gdal_messages_logged, verbosity
from geosr.cli.threads import threads_in_force
from geosr.errors import GeosrError, OptionError, one_line

log = logging.getLogger("geosr")


def _os_error_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or one_line(exc)
    if exc.errno == errno.ENOSPC:
        return f"{where}: no space left on the disk; free some space or write elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}: {reason}; choose a place you can write to, or fix its permissions"
    if exc.errno == errno.ENOTDIR:
        return f"{where}: {reason} (a file lies on the way where a folder should be); choose another path"
    return f"{where}: {reason}"


def handle_errors(func):
    """Run a command body and end every failure with one line and a documented exit code, never a traceback.

    OptionError (a value wrong in itself) exits 2 as a usage error on the option it names; any other GeosrError and
    OSError (a disk that is full, a folder that cannot be written) exit 1 with their message; MemoryError and any
    unexpected error exit 1 with a one-line summary (the traceback is logged with -v); Ctrl-C exits 130. click's own
    usage errors (exit 2) pass through. The lines GDAL, PROJ and libtiff would print themselves become log records
    while the command runs (geosr.raster.gdal.gdal_messages_logged), shown with -v beside geosr's one line.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()

        def fail(message: str) -> click.ClickException:
            if verbosity(ctx) >= 1:
                log.exception("traceback")
            return click.ClickException(message)

        try:
            with gdal_messages_logged(), threads_in_force(ctx):  # GDAL's own lines become log records (-v)
                return func(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except OptionError as exc:
            raise bad_parameter(ctx, exc) from None
        except GeosrError as exc:
            raise fail(one_line(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except OSError as exc:
            raise fail(_os_error_message(exc)) from None
        except MemoryError:
            raise fail(
                "out of memory; use a smaller --tile-size or --batch-size, or a machine with more memory"
            ) from None
        except Exception as exc:  # a bug or an unforeseen failure: still one line, the traceback with -v
            raise fail(
                f"unexpected error: {type(exc).__name__}: {one_line(exc)} (run with -v for the "
                "traceback, and report it)"
            ) from None

    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that the same cleanup runs (the
    output under way is deleted, a batch report is written); ``exit_code`` is the shell's code for it."""

    exit_code = 143


def stop_on_sigterm(func):
    """While the command runs, SIGTERM (a scheduler's or ``kill``'s stop) raises Terminated in the main thread; the
    command then ends with "Terminated." and exit code 143. Place it under ``handle_errors``."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return func(*args, **kwargs)

        def handle(signum, frame):
            raise Terminated()

        previous = signal.signal(signal.SIGTERM, handle)
        try:
            return func(*args, **kwargs)
        except Terminated:
            click.echo("Terminated.", err=True)
            click.get_current_context().exit(Terminated.exit_code)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return wrapper


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class HeldImport(importlib.abc.MetaPathFinder):
    """Imports ``names`` (top-level packages) with SIGINT and SIGTERM held back until the import ends, in the main
    thread. PyTorch's import runs C++ initialisers that call back into Python: Ctrl-C there raises inside them, and
    the process aborts (SIGABRT, "terminate called after throwing pybind11::error_already_set") instead of ending
    with "Interrupted."; held back, the signal arrives when the import is done, and the command stops as it would
    anywhere else. ``install`` puts one first on ``sys.meta_path``."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    @classmethod
    def install(cls, names: frozenset[str] = frozenset({"torch"})) -> HeldImport:
        finder = cls(names)
        sys.meta_path.insert(0, finder)
        return finder

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.names or threading.current_thread() is not threading.main_thread():
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader.exec_module = _held(spec.loader.exec_module)  # this spec's own loader object
                return spec
        return None


def _held(exec_module):
    """``exec_module`` with SIGINT and SIGTERM noted while it runs and raised again once it is done. (Blocking them
    in the main thread would not do: another thread takes the signal, and Python still raises in the main one.)"""

    def exec_held(module) -> None:
        came: list[int] = []
        previous = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in HELD_SIGNALS}
        try:
            exec_module(module)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if came:
                signal.raise_signal(came[0])  # handled as it would have been: KeyboardInterrupt, Terminated, ...

    return exec_held
