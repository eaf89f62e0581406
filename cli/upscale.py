"""`geosr upscale`: super-resolve GeoTIFFs (and plain images), one file or whole folders.

The command only resolves its inputs and options, draws progress bars and reports; the work is done by
geosr.inference. Under ``torchrun --nproc_per_node N geosr upscale ...`` every process takes every N-th file and its
own GPU (LOCAL_RANK); no process group is needed.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from geosr.aoi import AOITextError, bbox_aoi, load_aoi, parse_bbox
from geosr.cli.options import configure_logging, handle_errors, verbosity
from geosr.device import PRECISIONS
from geosr.inference import (
    FileResult,
    Progress,
    UpscaleOptions,
    distributed_rank,
    load_predictor,
    plan_outputs,
    upscale_batch,
    upscale_raster,
)
from geosr.raster import COMPRESSIONS, MAX_TILE_SIZE, check_output_location

log = logging.getLogger("geosr")

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _check_device(ctx, param, value: str) -> str:
    if not _DEVICE.match(value.strip().lower()):
        raise click.BadParameter(f"{value!r}: expected auto, cpu, cuda, cuda:N or mps")
    return value.strip().lower()


def _parse_bands(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        bands = tuple(int(v) for v in value.replace(" ", ",").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected 1-based band numbers separated by commas, e.g. 4,3,2") from None
    if not bands or min(bands) < 1:
        raise click.BadParameter(f"{value!r}: band numbers start at 1, e.g. 1,2,3")
    if len(set(bands)) != len(bands):
        raise click.BadParameter(f"{value!r}: name each band once")
    return bands


def _parse_bbox(ctx, param, value: str | None):
    if value is None:
        return None
    try:
        return parse_bbox(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class _Bars:
    """tqdm bars on stderr: one per file (tiles, output megapixels per second) and one for the batch."""

    def __init__(self, enabled: bool, files: int) -> None:
        self.enabled = enabled
        self.batch = tqdm(
            total=files, unit="file", desc="files", position=0, file=sys.stderr, disable=not enabled or files < 2
        )
        self.bar: tqdm | None = None
        self.path: Path | None = None
        self.t0 = 0.0

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if p.path != self.path:
            self.close_file()
            self.path, self.t0 = p.path, time.perf_counter()
            self.bar = tqdm(
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
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output file (one input file) or folder (several inputs or a folder; the layout is kept).")
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default=None,
              help="Upscaling factor; the model's by default (4 for the bundled model).")
@click.option("--model", metavar="PATH", help="Model file (.safetensors); the bundled model for --scale by default.")
@click.option("--tile-size", type=click.IntRange(8, MAX_TILE_SIZE),
              help=f"Tile size in input pixels, 8..{MAX_TILE_SIZE} [model card].")
@click.option("--overlap", type=click.IntRange(min=0),
              help="Overlap of neighbouring tiles in input pixels [model card].")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Tiles per model call.")
@click.option("--device", default="auto", show_default=True, callback=_check_device,
              help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: bf16 on GPUs and CPUs that support it, fp32 elsewhere.")
@click.option("--bands", callback=_parse_bands, metavar="LIST",
              help="1-based input bands, in output order (e.g. 4,3,2).")
@click.option("--aoi", metavar="GEOJSON|WKT", help="Area of interest: a GeoJSON file or a WKT polygon.")
@click.option("--bbox", callback=_parse_bbox, metavar="MINX,MINY,MAXX,MAXY", help="Area of interest as a box.")
@click.option("--aoi-crs", metavar="CRS",
              help="CRS of --aoi/--bbox [GeoJSON: EPSG:4326; WKT and --bbox: the raster's CRS].")
@click.option("--value-range", nargs=2, type=float, metavar="MIN MAX",
              help="Values mapped to the model's range in every band (non-uint8 rasters) instead of percentiles.")
@click.option("--cog", is_flag=True, help="Write a Cloud-Optimized GeoTIFF with overviews.")
@click.option("--compress", type=click.Choice(COMPRESSIONS), default="deflate", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--skip-existing", is_flag=True, help="Leave existing outputs alone (resumes a batch).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug, with tracebacks).")
@click.option("-q", "--quiet", count=True, help="No progress bars or summary; errors only.")
@click.pass_context
@handle_errors
def upscale(ctx: click.Context, inputs, output, scale, model, tile_size, overlap, batch_size, device, precision,
            bands, aoi, bbox, aoi_crs, value_range, cog, compress, overwrite, skip_existing, verbose, quiet) -> None:
    """Super-resolve rasters: geosr upscale INPUT... -o OUTPUT.

    One input file: OUTPUT is a file (GeoTIFF; .png/.jpg for plain images). Several inputs or a folder (searched
    recursively for rasters): OUTPUT is a folder and the relative layout is kept. Georeferencing, dtype, bands, nodata
    and metadata are kept; the footprint is unchanged.
    """
    level = verbosity(ctx) + verbose - quiet
    ctx.find_root().ensure_object(dict)["verbosity"] = level
    configure_logging(level)
    if overwrite and skip_existing:
        raise click.UsageError("--overwrite and --skip-existing exclude each other")
    if aoi is not None and bbox is not None:
        raise click.UsageError("give --aoi or --bbox, not both")
    if aoi_crs is not None and aoi is None and bbox is None:
        raise click.UsageError("--aoi-crs needs --aoi or --bbox")
    if tile_size is not None and overlap is not None and overlap > tile_size // 2:
        raise click.BadParameter(
            f"{overlap}: at most half the tile size ({tile_size} // 2 = {tile_size // 2})", param_hint="--overlap"
        )
    if value_range and not all(math.isfinite(v) for v in value_range):
        raise click.BadParameter(f"{value_range[0]:g} {value_range[1]:g}: give finite numbers",
                                 param_hint="--value-range")
    if value_range and not value_range[0] < value_range[1]:
        raise click.BadParameter(
            f"{value_range[0]:g} {value_range[1]:g}: MIN must be below MAX", param_hint="--value-range"
        )

    area = None
    try:
        if aoi is not None:
            area = load_aoi(aoi, aoi_crs)
        elif bbox is not None:
            area = bbox_aoi(bbox, aoi_crs)
    except AOITextError as exc:
        raise click.BadParameter(str(exc), param_hint="--aoi-crs" if "--aoi-crs" in str(exc) else
                                 ("--bbox" if bbox is not None else "--aoi")) from None
    pairs = plan_outputs(inputs, output)
    check_output_location(output)
    single = len(inputs) == 1 and inputs[0].is_file()
    rank, world, local_rank = distributed_rank()
    mine = pairs[rank::world]
    who = f"rank {rank}/{world}: " if world > 1 else ""
    if not mine:
        log.info("%sno files for this process", who)
        return
    predictor = load_predictor(model, int(scale) if scale else None, device, precision, local_rank)
    options = UpscaleOptions(
        tile_size=tile_size, overlap=overlap, batch_size=batch_size, bands=bands, aoi=area,
        value_range=tuple(value_range) if value_range else None, cog=cog, compress=compress, overwrite=overwrite,
    )
    bars = _Bars(enabled=level >= 0 and rank == 0, files=len(mine))
    try:
        if single:
            src, dst = mine[0]
            if skip_existing and dst.exists():
                log.warning("%s exists; skipped (--skip-existing)", dst)
                return
            result = upscale_raster(src, dst, predictor, options, progress=bars)
            bars.close()
            log.info("%s -> %s: %d tiles in %.1f s", src, dst, result.tiles, result.seconds)
            return

        def report(result: FileResult) -> None:
            bars.file_done(result)
            if result.status == "failed":
                tqdm.write(f"{who}error: {result.message}", file=sys.stderr)
            elif result.status == "skipped":
                log.info("%sskipped: %s", who, result.message)
            else:
                log.info("%s%s -> %s (%.1f s)", who, result.src, result.dst, result.seconds)

        summary = upscale_batch(
            mine, predictor, options, skip_existing=skip_existing, progress=bars, on_result=report
        )
    finally:
        bars.close()
    if level >= 0:
        click.echo(f"{who}{summary.line()}", err=True)
    if summary.count("failed"):
        ctx.exit(1)
