"""Progress on stderr: tqdm's bars on a terminal, plain lines anywhere else.

A bar redraws itself with carriage returns: sent to a file (``2> run.log``, a scheduler's log), it leaves thousands of
overwritten states on a few very long lines. When stderr is not a terminal, ``progress_bar`` gives a ``Lines``
instead, which takes the same calls (``update``, ``set_postfix``, ``write``, ``close``) and writes a line at most every
``LINE_INTERVAL`` seconds while it runs and one when it closes. Nothing here imports the library or tqdm before it is
needed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import click

from geosr.errors import printable

LINE_INTERVAL = 10.0  # seconds between two progress lines written to a file


def on_terminal() -> bool:
    """Whether stderr is a terminal (where bars redraw in place); False for a file, a pipe or a closed stream."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Lines:
    """A counter that reports on stderr in whole lines: ``desc: 120/480 tiles (25%), 12.0 s, 10.0 tiles/s, ...``.

    total: the count expected (None: unknown); unit: what is counted (a line says "tiles" for "tile"); initial: the
    count it starts from (a resumed run); final: write a line on ``close`` too; interval: the least seconds between two
    lines while it runs; clock: the time in seconds. tqdm's display arguments (position, leave, file, dynamic_ncols,
    ...) are accepted and ignored.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        desc: str | None = None,
        unit: str = "it",
        initial: int = 0,
        disable: bool = False,
        final: bool = True,
        interval: float = LINE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        **display: Any,
    ) -> None:
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.n = self.initial = initial
        self.final, self.interval, self.clock = final, interval, clock
        self.postfix = ""
        self.t0 = self.last = clock()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if not self.disable and now - self.last >= self.interval and self.n != self.total:
            self._line(now)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **kwargs}.items())

    def write(self, s: str, file: IO[str] | None = None) -> None:
        """Print a line, as tqdm.write does (on stdout unless ``file``)."""
        click.echo(s, file=file)

    def close(self) -> None:
        if not self.closed and not self.disable and self.final:
            self._line(self.clock())
        self.closed = True

    def line(self, now: float) -> str:
        """The report at time ``now``."""
        elapsed = now - self.t0
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = f", {(self.n - self.initial) / elapsed:.2f} {units}/s" if elapsed > 0 else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc + ': ' if self.desc else ''}{count} {units}{share}, {elapsed:.1f} s{rate}{extra}"

    def _line(self, now: float) -> None:
        self.last = now
        click.echo(self.line(now), err=True)


def progress_bar(**kwargs: Any) -> Any:
    """A tqdm bar when stderr is a terminal, else ``Lines`` with the same arguments (tqdm's keywords)."""
    if on_terminal():
        from tqdm import tqdm

        return tqdm(**{k: v for k, v in kwargs.items() if k not in ("final", "interval", "clock")})
    return Lines(**kwargs)


def file_line(
    dst: object, seconds: float, pixels: int, tiles: int, done: int = 0, files: int = 0, blank: int = 0
) -> str:
    """The line for one output written: ``[3/10] out/a.tif: 48 tiles, 1.05 MP in 3.4 s (0.31 MP/s)`` (the count
    only when ``files`` > 1; ``blank``: the tiles the progress counted but the model did not run, said after)."""
    where = f"[{done}/{files}] " if files > 1 else ""
    speed = f" ({pixels / 1e6 / seconds:.2f} MP/s)" if seconds > 0 else ""
    run = f"{tiles} tiles" + (f" (and {blank} with nothing to compute, skipped)" if blank else "")
    return f"{where}{printable(str(dst))}: {run}, {pixels / 1e6:.2f} MP in {seconds:.1f} s{speed}"
