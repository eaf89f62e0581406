"""Super-resolve a folder of tiles from Python (geosr.upscale_folder), as examples/upscale_tiles.sh does with the
command line: the same defaults, the same outputs.

    python examples/upscale_tiles.py TILES_DIR OUT_DIR MODEL.safetensors [--overwrite] [--device cuda] ...

TILES_DIR is searched recursively and OUT_DIR keeps its layout; the model is loaded once. Existing outputs are kept,
so a rerun resumes an interrupted batch (outputs only appear once complete); --overwrite redoes every output
instead (after a change of model, say), and deleting an output redoes that one. Files that fail are reported
("error: ...") and the rest go on.

Exit codes: 0 every file done or kept, 1 a file failed or the run could not start (missing folder, no rasters,
not a model file: one "error: ..." line), 2 a usage error, 130 Ctrl-C and 143 SIGTERM (the files finished stay, the
one under way leaves nothing).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import TYPE_CHECKING

import geosr
from geosr.errors import GeosrError, OptionError, one_line

if TYPE_CHECKING:
    from geosr.inference import FileResult


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, parsed; argparse itself exits 2 with a usage line for a wrong one."""
    first, _, rest = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(description=first, epilog=rest, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("tiles", metavar="TILES_DIR", help="folder of rasters, searched recursively")
    parser.add_argument("out", metavar="OUT_DIR", help="folder of the outputs (made if missing)")
    parser.add_argument("model", metavar="MODEL", help="geosr model file, or a bundled model's name")
    parser.add_argument("--overwrite", action="store_true", help="redo every output instead of keeping existing ones")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps [auto]")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 [auto]")
    parser.add_argument(
        "--files-in-flight", type=at_least_one, default=1, metavar="N", help="files processed at once [1]"
    )
    return parser.parse_args(argv)


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number of at least 1")
    return value


def run(args: argparse.Namespace) -> int:
    """Run the batch; its exit code. GeosrError and OSError pass to the caller."""

    def report(result: FileResult) -> None:  # as each file ends
        if result.status == "done":
            mp = result.pixels / 1e6
            print(f"{result.dst}: {result.tiles} tiles, {mp:.2f} output megapixels in {result.seconds:.1f} s")
        elif result.status == "failed":
            print(f"error: {result.message}", file=sys.stderr)

    summary = geosr.upscale_folder(
        args.tiles,
        args.out,
        model=args.model,
        device=args.device,
        precision=args.precision,
        overwrite=args.overwrite,
        skip_existing=not args.overwrite,  # the two exclude each other: --overwrite replaces the default
        files_in_flight=args.files_in_flight,
        on_result=report,
    )
    print(summary.line(), file=sys.stderr)
    return 1 if summary.count("failed") else 0


def show_warnings() -> None:
    """geosr's warnings as `geosr upscale` shows them ("WARNING: ..."), without the lines it keeps for -v: GDAL's
    own messages (the raw details of geosr's one-line errors) and the warning upscale_folder logs for each failed
    file, which report() above prints as "error: ..." already."""
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    for name in ("rasterio", "geosr.gdal"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    logging.getLogger("geosr.api").setLevel(logging.ERROR)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, kill, timeout), raised where Ctrl-C would be, so the same cleanup runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Every ending as an exit code and at most one line, never a traceback."""
    args = arguments(argv)
    show_warnings()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except Terminated:
        print("stopped (SIGTERM): the files finished are kept; rerun the same command to do the rest", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted: the files finished are kept; rerun the same command to do the rest", file=sys.stderr)
        return 130
    except OptionError as exc:  # a value wrong in itself: a usage error
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except GeosrError as exc:  # a missing folder, no rasters, not a model file, an output that cannot be written
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a disk that is full, a folder without permission
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"error: {where}{exc.strerror or one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
