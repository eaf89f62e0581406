"""`geosr upscale`: super-resolve GeoTIFFs (and plain images), one file or whole folders.

The command only resolves its inputs and options, draws progress bars and reports; the work is done by
geosr.inference. Under ``torchrun --nproc_per_node N geosr upscale ...`` every process takes every N-th file and its
own GPU (LOCAL_RANK); no process group is needed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from geosr.cli.options import (
    COMPRESSIONS,
    bands_option,
    batch_size_option,
    checked,
    consistency_option,
    device_option,
    handle_errors,
    lazy,
    model_option,
    output_option,
    overlap_option,
    overwrite_option,
    precision_option,
    self_ensemble_option,
    scale_option,
    stop_on_sigterm,
    tile_size_option,
    verbosity,
    verbosity_options,
)

if TYPE_CHECKING:
    from geosr.inference import FileResult, Progress

log = logging.getLogger("geosr")


class _Bars:
    """tqdm bars on stderr: one per file (tiles, output megapixels per second) and one for the batch."""

    def __init__(self, enabled: bool, files: int, per_file: bool = True) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm
        self.enabled = enabled
        self.per_file = per_file  # off with several files in flight: their bars would take each other's line
        self.batch = tqdm(
            total=files, unit="file", desc="files", position=0, file=sys.stderr, disable=not enabled or files < 2
        )
        self.bar = None
        self.path: Path | None = None
        self.t0 = 0.0

    def __call__(self, p: Progress) -> None:
        if not self.enabled or not self.per_file:
            return
        if p.path != self.path:
            self.close_file()
            self.path, self.t0 = p.path, time.perf_counter()
            self.bar = self.tqdm(
                total=p.tiles_total, unit="tile", desc=p.path.name, position=1 if not self.batch.disable else 0,
                leave=self.batch.disable, file=sys.stderr,
            )
        assert self.bar is not None
        self.bar.update(p.tiles_done - self.bar.n)
        dt = time.perf_counter() - self.t0
        if dt > 0 and p.pixels_done:
            self.bar.set_postfix_str(f"{p.pixels_done / dt / 1e6:.2f} MP/s", refresh=False)

    def file_done(self, result: FileResult) -> None:
        self.close_file()
        self.batch.update(1)

    def close_file(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.path = None, None

    def close(self) -> None:
        self.close_file()
        self.batch.close()


@click.command(short_help="Super-resolve rasters.")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", type=click.Path(path_type=Path))
@output_option("Output file (one input file) or folder (several inputs or a folder; the layout is kept).")
@model_option()
@scale_option("Upscaling factor; the model's by default (4 for the bundled model).")
@tile_size_option()
@overlap_option()
@batch_size_option("Tiles per model call.", default=8)
@consistency_option()
@self_ensemble_option()
@device_option()
@precision_option()
@bands_option()
@click.option("--aoi", metavar="GEOJSON|WKT", help="Area of interest: a GeoJSON file or a WKT polygon.")
@click.option("--bbox", callback=checked(lazy("geosr.aoi", "parse_bbox")), metavar="MINX,MINY,MAXX,MAXY",
              help="Area of interest as a box.")
@click.option("--aoi-crs", metavar="CRS",
              help="CRS of --aoi/--bbox [GeoJSON: EPSG:4326; WKT and --bbox: the raster's CRS].")
@click.option("--value-range", nargs=2, type=float, metavar="MIN MAX",
              callback=checked(lazy("geosr.options", "check_value_range")),
              help="Values mapped to the model's range in every band (non-uint8 rasters) instead of percentiles.")
@click.option("--cog", is_flag=True, help="Write a Cloud-Optimized GeoTIFF with overviews.")
@click.option("--compress", type=click.Choice(COMPRESSIONS), default="deflate", show_default=True)
@overwrite_option("Replace existing outputs.")
@click.option("--skip-existing", is_flag=True, help="Leave existing outputs alone (resumes a batch).")
@click.option("--files-in-flight", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Files of a batch processed at once, their tiles sharing the model's calls: for folders of small "
              "files on a GPU.")
@click.option("--max-pixels", type=click.IntRange(min=1), metavar="N",
              help="Output pixels a file may have before geosr asks for --yes [what the device does in a day].")
@click.option("--yes", is_flag=True, help="Go on with files past --max-pixels (or a day's work).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.json",
              help="Write a JSON report: one record per file (status, message, seconds, output pixels, model, "
              "settings) and the summary; also when the batch fails or is interrupted.")
@verbosity_options
@click.pass_context
@handle_errors
@stop_on_sigterm
def upscale(ctx: click.Context, inputs, output, model, scale, tile_size, overlap, batch_size, consistency,
            self_ensemble, device, precision, bands, aoi, bbox, aoi_crs, value_range, cog, compress, overwrite,
            skip_existing, files_in_flight, max_pixels, yes, report) -> None:
    """Super-resolve rasters: geosr upscale INPUT... -o OUTPUT.

    One input file: OUTPUT is a file (GeoTIFF; .png/.jpg for plain images). Several inputs or a folder (searched
    recursively for rasters): OUTPUT is a folder and the relative layout is kept. Georeferencing, dtype, bands, nodata
    and metadata are kept; the footprint is unchanged.
    """
    from tqdm import tqdm

    from geosr.aoi import AOIMissError, bbox_aoi, load_aoi
    from geosr.device import torchrun_env
    from geosr.inference import FileResult, UpscaleOptions, load_predictor, plan_outputs, upscale_batch, upscale_raster
    from geosr.plan import card_tiling
    from geosr.raster import check_output_location, check_output_name
    from geosr.report import BatchReport, rank_path, settings_of

    level = verbosity(ctx)
    if overwrite and skip_existing:
        raise click.UsageError("--overwrite and --skip-existing exclude each other")
    if aoi is not None and bbox is not None:
        raise click.UsageError("give --aoi or --bbox, not both")
    if aoi_crs is not None and aoi is None and bbox is None:
        raise click.UsageError("--aoi-crs needs --aoi or --bbox")

    area = None
    if aoi is not None:
        area = load_aoi(aoi, aoi_crs)
    elif bbox is not None:
        area = bbox_aoi(bbox, aoi_crs)
    options = UpscaleOptions(
        tile_size=tile_size, overlap=overlap, batch_size=batch_size, bands=bands, aoi=area, value_range=value_range,
        cog=cog, compress=compress, overwrite=overwrite, consistency=consistency, max_pixels=max_pixels, yes=yes,
    )
    job = torchrun_env()
    book = None
    if report is not None:  # under torchrun, one report per process: report.rank1.json, ...
        book = BatchReport(rank_path(report, job.rank, job.world_size), command=sys.argv,
                           settings=settings_of(options, skip_existing=skip_existing, files_in_flight=files_in_flight),
                           overwrite=overwrite, inputs=inputs)
    with book if book is not None else contextlib.nullcontext():  # written however the batch ends
        pairs = plan_outputs(inputs, output)
        check_output_location(output)
        for _, dst in pairs:  # a suffix geosr does not write, --cog with a .png / .jpg: usage errors, from the names
            check_output_name(dst, cog)
        single = len(inputs) == 1 and inputs[0].is_file()
        mine = pairs[job.rank :: job.world_size]
        who = f"rank {job.rank}/{job.world_size}: " if job.distributed else ""
        if book is not None:
            book.plan(mine)
        if not mine:
            log.info("%sno files for this process", who)
            return
        predictor = load_predictor(model, scale, device, precision, job.local_rank, self_ensemble)
        card_tiling(predictor.card, predictor.source, tile_size, overlap)  # the same usage error for every file
        if book is not None:
            book.use_model(predictor, settings_of(options, predictor, skip_existing=skip_existing,
                                                  files_in_flight=files_in_flight))
            book.running()
        bars = _Bars(enabled=level >= 0 and job.rank == 0, files=len(mine), per_file=files_in_flight == 1)
        try:
            if single:
                src, dst = mine[0]
                if skip_existing and dst.exists():
                    log.warning("%s exists; skipped (--skip-existing)", dst)
                    if book is not None:
                        book.add(FileResult(src, dst, "skipped", f"{dst}: exists (--skip-existing)"))
                    return
                result = upscale_raster(src, dst, predictor, options, progress=bars)
                if book is not None:
                    book.add(result)
                bars.close()
                log.info("%s -> %s: %d tiles in %.1f s", src, dst, result.tiles, result.seconds)
                return

            def on_result(result: FileResult) -> None:
                bars.file_done(result)
                if book is not None:
                    book.add(result)
                if result.status == "failed":
                    tqdm.write(f"{who}error: {result.message}", file=sys.stderr)
                elif result.status == "skipped":
                    log.info("%sskipped: %s", who, result.message)
                else:
                    log.info("%s%s -> %s (%.1f s)", who, result.src, result.dst, result.seconds)

            summary = upscale_batch(
                mine, predictor, options, skip_existing=skip_existing, progress=bars, on_result=on_result,
                files_in_flight=files_in_flight,
            )
        finally:
            bars.close()
    if level >= 0:
        click.echo(f"{who}{summary.line()}", err=True)
    missed = [r for r in summary.results if r.reason == "aoi"]
    if missed and len(missed) == len(summary.results):
        raise AOIMissError(f"the area of interest ({area.source}) meets none of the {len(missed)} input files "
                           f"({missed[0].message}); check the area and its CRS (--aoi-crs)", option=area.option)
    if missed:
        names = ", ".join(r.src.name for r in missed[:3]) + (", ..." if len(missed) > 3 else "")
        log.warning("%s%d file(s) skipped: the area of interest does not meet them (%s)", who, len(missed), names)
    if summary.count("failed"):
        ctx.exit(1)
