"""`geosr upscale`: super-resolve GeoTIFFs (and plain images), one file or whole folders.

The command only resolves its inputs and options, draws progress bars and reports; the work is done by
geosr.inference. Under ``torchrun --nproc_per_node N geosr upscale ...`` every process takes every N-th file and its
own GPU (LOCAL_RANK); no process group is needed.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geosr.cli.exits import handle_errors, stop_on_sigterm
from geosr.cli.options import (
    LocalPath,
    NonEmptyPath,
    bands_option,
    batch_size_option,
    checked,
    consistency_option,
    device_option,
    lazy,
    model_option,
    output_option,
    overlap_option,
    overwrite_option,
    precision_option,
    scale_option,
    self_ensemble_option,
    tile_size_option,
    verbosity,
    verbosity_options,
)
from geosr.cli.progress import Lines, file_line, on_terminal
from geosr.cli.threads import threads_option
from geosr.limits import COMPRESSIONS

if TYPE_CHECKING:
    from geosr.batch import BatchJob, BatchSummary
    from geosr.inference import FileResult, Predictor, Progress, UpscaleOptions

log = logging.getLogger("geosr")


class _Bars:
    """Progress on stderr. On a terminal, tqdm bars: one per file (tiles, output megapixels per second) and one for
    the batch. Elsewhere (a log file: ``lines``), plain lines: one per file written, with its time and speed, and
    for a long file one every LINE_INTERVAL seconds while it runs (geosr.cli.progress)."""

    def __init__(self, enabled: bool, per_file: bool = True, lines: bool | None = None) -> None:
        from tqdm import tqdm

        self.lines = not on_terminal() if lines is None else lines
        self.tqdm = functools.partial(Lines, final=False) if self.lines else tqdm
        self.enabled = enabled
        self.per_file = per_file  # off with several files in flight: their bars would take each other's line
        self.batch = tqdm(total=0, disable=True)  # until ``start`` knows how many files there are
        self.bar = None
        self.path: Path | None = None
        self.t0 = 0.0
        self.files = self.done = 0

    def start(self, files: int) -> None:
        """The batch's bar, for ``files`` files (none for one, nor in lines: each file's line counts)."""
        self.files = files
        self.batch = self.tqdm(
            total=files,
            unit="file",
            desc="files",
            position=0,
            file=sys.stderr,
            disable=not self.enabled or files < 2 or self.lines,
        )

    def __call__(self, p: Progress) -> None:
        if not self.enabled or not self.per_file:
            return
        if p.path != self.path:
            self.close_file()
            self.path, self.t0 = p.path, time.perf_counter()
            self.bar = self.tqdm(
                total=p.tiles_total,
                unit="tile",
                desc=p.path.name,
                position=1 if not self.batch.disable else 0,
                leave=self.batch.disable,
                file=sys.stderr,
            )
        assert self.bar is not None
        self.bar.update(p.tiles_done - self.bar.n)
        dt = time.perf_counter() - self.t0
        if dt > 0 and p.pixels_done:
            self.bar.set_postfix_str(f"{p.pixels_done / dt / 1e6:.2f} MP/s", refresh=False)

    def file_done(self, result: FileResult) -> None:
        self.close_file()
        self.batch.update(1)
        self.done += 1
        if self.lines and self.enabled and result.status == "done":
            click.echo(
                file_line(
                    result.dst,
                    result.seconds,
                    result.pixels,
                    result.tiles,
                    self.done,
                    self.files,
                    blank=result.blank_tiles,
                ),
                err=True,
            )

    def close_file(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.path = None, None

    def close(self) -> None:
        self.close_file()
        self.batch.close()


# The command's options that make its UpscaleOptions (through ``_options``).
OPTIONS = (
    "tile_size",
    "overlap",
    "batch_size",
    "bands",
    "aoi",
    "bbox",
    "aoi_crs",
    "value_range",
    "cog",
    "compress",
    "overwrite",
    "consistency",
    "max_pixels",
    "yes",
    "uncertainty",
    "skip_existing",
)


def _options(*, aoi, bbox, aoi_crs, skip_existing, **given) -> UpscaleOptions:
    """UpscaleOptions from the command's options, after the rules that exclude some of them together."""
    from geosr.aoi import bbox_aoi, load_aoi
    from geosr.inference import UpscaleOptions
    from geosr.options import check_exclusions

    check_exclusions(
        overwrite=given["overwrite"],
        skip_existing=skip_existing,
        aoi=aoi is not None,
        bbox=bbox is not None,
        aoi_crs=aoi_crs is not None,
    )
    area = load_aoi(aoi, aoi_crs) if aoi is not None else bbox_aoi(bbox, aoi_crs) if bbox is not None else None
    return UpscaleOptions(aoi=area, **given)


def _run_with_preview(
    job: BatchJob, load, bars: _Bars, on_result, preview: Path | None, window: tuple[int, int, int, int] | None
) -> BatchSummary:
    """run_batch with the progress bars, then the --preview picture of the one file's output (its path checked first,
    by geosr.preview's rules)."""
    from geosr.aoi import aoi_files
    from geosr.batch import run_batch
    from geosr.errors import WriteError
    from geosr.preview import check_preview, check_preview_window, write_preview

    target = None
    if preview is not None:
        target = check_preview(
            preview,
            single=job.single,
            inputs=[*job.inputs, *aoi_files(job.options.aoi)],
            overwrite=job.options.overwrite,
            outputs=[
                ("the output", job.output),
                ("the error map", job.options.uncertainty),
                ("the batch report", job.report),
            ],
        )
        if window is not None:
            check_preview_window(window, job.inputs[0], job.options.aoi)
    try:
        summary = run_batch(job, load, progress=bars, on_result=on_result, on_plan=bars.start)
    finally:
        bars.close()
    done = [r for r in summary.results if r.status == "done"]
    if target is not None and done:
        try:
            options = job.options
            write_preview(
                target, done[0].src, done[0].dst, bands=options.bands, error_map=options.uncertainty, window=window
            )
        except WriteError as exc:  # a disk that filled during the run: the output itself is whole
            raise WriteError(f"{exc}; the output {done[0].dst} is complete") from None
        log.info("preview: %s", target)
    return summary


@click.command(short_help="Super-resolve rasters.")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", type=NonEmptyPath())  # text: URLs keep their //
@output_option(
    "Output file (one input file) or folder (several inputs or a folder, the layout kept; or a name ending with /).",
    type=NonEmptyPath(),  # as typed: a trailing slash says a folder
)
@model_option()
@scale_option("Upscaling factor; the model's by default (4 for the bundled model).")
@tile_size_option()
@overlap_option()
@batch_size_option("Tiles per model call.", default=8)
@consistency_option()
@self_ensemble_option()
@device_option()
@precision_option()
@threads_option
@bands_option()
@click.option(
    "--assets",
    metavar="KEY,...",
    help="INPUT is a STAC item (JSON file or URL): read these assets as its bands, in order.",
)
@click.option("--aoi", metavar="GEOJSON|WKT", help="Area of interest: a GeoJSON file or a WKT polygon.")
@click.option(
    "--bbox",
    callback=checked(lazy("geosr.aoi", "parse_bbox")),
    metavar="MINX,MINY,MAXX,MAXY",
    help="Area of interest as a box.",
)
@click.option(
    "--aoi-crs", metavar="CRS", help="CRS of --aoi/--bbox [GeoJSON: EPSG:4326; WKT and --bbox: the raster's CRS]."
)
@click.option(
    "--value-range",
    nargs=2,
    type=float,
    metavar="MIN MAX",
    callback=checked(lazy("geosr.options", "check_value_range")),
    help="Values mapped to the model's range in every band (non-uint8 rasters) instead of the 0.05/99.95 "
    "percentiles; the model sees values beyond it clipped, the output gets them back.",
)
@click.option("--cog", is_flag=True, help="Write a Cloud-Optimized GeoTIFF with overviews.")
@click.option("--compress", type=click.Choice(COMPRESSIONS), default="deflate", show_default=True)
@overwrite_option("Replace existing outputs.")
@click.option("--skip-existing", is_flag=True, help="Leave existing outputs alone (resumes a batch).")
@click.option(
    "--files-in-flight",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Files of a batch processed at once, their tiles sharing the model's calls: for folders of small "
    "files on a GPU.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    metavar="N",
    help="Output pixels a file may have before geosr asks for --yes [what the device does in a day].",
)
@click.option("--yes", is_flag=True, help="Go on with files past --max-pixels (or a day's work).")
@click.option(
    "--uncertainty",
    type=LocalPath(dir_okay=False, path_type=Path),
    metavar="MAP.tif",
    help="Also write a float32 map of the expected absolute error of each output pixel (one input file; "
    "the output is then the self-ensemble's mean: about 8 times the model's work). Its path follows the "
    "output's rules (a COG with --cog); --skip-existing keeps an output only with its map.",
)
@click.option(
    "--report",
    type=LocalPath(dir_okay=False, path_type=Path),
    metavar="FILE.json",
    help="Write a JSON report: one record per file (status, message, seconds, output pixels, model, "
    "settings) and the summary; also when the batch fails or is interrupted.",
)
@click.option(
    "--preview",
    type=LocalPath(dir_okay=False, path_type=Path),
    metavar="PNG",
    help="Also write a PNG to judge the result: input, bicubic, output (and error map) side by side over "
    "the most detailed window (one input file).",
)
@click.option(
    "--preview-window",
    callback=checked(lazy("geosr.preview", "parse_preview_window")),
    metavar="COL,ROW,WIDTH,HEIGHT",
    help="The --preview window, in input pixels [the most detailed 64 x 64].",
)
@verbosity_options
@click.pass_context
@handle_errors
@stop_on_sigterm
def upscale(ctx: click.Context, **given: Any) -> None:
    """Super-resolve rasters: geosr upscale INPUT... -o OUTPUT.

    One input file: OUTPUT is a file (GeoTIFF; .png/.jpg for plain images). Several inputs or a folder (searched
    recursively for rasters): OUTPUT is a folder and the relative layout is kept. Georeferencing, dtype, bands, nodata
    and metadata are kept; the footprint is unchanged. An input may be any path GDAL reads: http(s)://, s3://, gs://,
    az:// and zip://archive.zip!/a.tif addresses and /vsi paths, with GDAL's credentials and settings.
    """
    from geosr.device import torchrun_env
    from geosr.inference import load_predictor

    level = verbosity(ctx)
    if given["preview_window"] is not None and given["preview"] is None:
        raise click.UsageError("--preview-window needs --preview PNG (the picture it chooses the window of)")
    options = _options(**{name: given[name] for name in OPTIONS})
    env = torchrun_env()
    who = f"rank {env.rank}/{env.world_size}: " if env.distributed else ""
    job = _job(given, options, env.rank, env.world_size)
    bars = _Bars(enabled=level >= 0 and env.rank == 0, per_file=job.files_in_flight == 1)

    def load() -> Predictor:
        return load_predictor(
            given["model"], given["scale"], given["device"], given["precision"], env.local_rank, given["self_ensemble"]
        )

    summary = _run_with_preview(job, load, bars, _on_result(bars, job, who), given["preview"], given["preview_window"])
    if level >= 0 and not job.single and summary.results:
        click.echo(f"{who}{summary.line()}", err=True)
    if summary.count("failed"):
        ctx.exit(1)


def _job(given: dict[str, Any], options: UpscaleOptions, rank: int, world_size: int) -> BatchJob:
    """The BatchJob of the command's inputs (local, remote or the assets of STAC items), output and options."""
    from geosr.batch import BatchJob
    from geosr.stac import resolve_inputs

    # URLs, /vsi paths, STAC items (--assets as typed: geosr.stac.asset_keys splits it): as GDAL reads them
    sources = resolve_inputs(given["inputs"], given["assets"])
    return BatchJob(
        sources,
        given["output"],
        options,
        given["skip_existing"],
        given["files_in_flight"],
        given["report"],
        ("geosr", *sys.argv[1:]),  # argv[0] is whatever started geosr: its script, or cli/main.py under torchrun -m
        rank,
        world_size,
    )


def _on_result(bars: _Bars, job: BatchJob, who: str) -> Callable[[FileResult], None]:
    """What the command does as each file ends: its progress, and a line for a failure, a skip or (-v) a success."""
    from tqdm import tqdm

    def on_result(result: FileResult) -> None:
        bars.file_done(result)
        if result.status == "failed":
            tqdm.write(f"{who}error: {result.message}", file=sys.stderr)
        elif result.status == "skipped":
            log.log(logging.WARNING if job.single else logging.INFO, "%sskipped: %s", who, result.message)
        else:
            log.info("%s%s -> %s: %d tiles in %.1f s", who, result.src, result.dst, result.tiles, result.seconds)

    return on_result
