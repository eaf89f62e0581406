"""--threads N: how many CPU threads a command computes, decodes and compresses with.

PyTorch takes one thread per core by default, and geosr asks GDAL for all cores where it decodes a large read or
compresses a Cloud-Optimized GeoTIFF. On a machine shared with other work, fewer threads can be faster (the threads
of one matrix product wait for each other). The option is kept as -v/-q are (in the context, not as a parameter of
the command) and is in force while the command's body runs: ``handle_errors`` enters ``threads_in_force``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import click

# The most threads --threads takes: past a few per core they only wait for each other, and an OpenMP pool of tens of
# thousands of threads exhausts the process's limit ("can't start new thread") before the first tile
MAX_THREADS = 1024


def threads_option(func: Callable) -> Callable:
    """--threads N: the CPU threads PyTorch computes on and GDAL decodes and compresses with, while the command runs
    (``threads_in_force``, entered by ``handle_errors``); unset, their defaults. Kept like -v/-q: not a parameter."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1, max=MAX_THREADS),
        metavar="N",
        expose_value=False,
        callback=_keep_threads,
        help="CPU threads for PyTorch and for GDAL's decoding and compression, 1 to 1024 [PyTorch's default: "
        "one per core]; on a busy machine fewer can be faster.",
    )(func)


def _keep_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        ctx.find_root().ensure_object(dict)["threads"] = value


@contextlib.contextmanager
def threads_in_force(ctx: click.Context) -> Iterator[None]:
    """The command's --threads, if given, in force while it runs: torch.set_num_threads and GDAL_NUM_THREADS (which
    geosr's reads and Cloud-Optimized GeoTIFF writes take from the environment); the previous values after."""
    threads = (ctx.find_root().obj or {}).get("threads")
    if threads is None:
        yield
        return
    from geosr.device import intra_op_threads  # imports PyTorch only when asked: a usage error never waits for it

    gdal_before = os.environ.get("GDAL_NUM_THREADS")
    os.environ["GDAL_NUM_THREADS"] = str(threads)
    try:
        with intra_op_threads(threads):
            yield
    finally:
        if gdal_before is None:
            os.environ.pop("GDAL_NUM_THREADS", None)
        else:
            os.environ["GDAL_NUM_THREADS"] = gdal_before
