"""Super-resolve whole rasters: the public face of geosr's inference, for scripts and the command line.

    from geosr.inference import UpscaleOptions, load_predictor, upscale_raster

    predictor = load_predictor("degan-x4")                  # or a .safetensors path; device and precision: auto
    upscale_raster("scene.tif", "scene_x4.tif", predictor, UpscaleOptions(bands=(4, 3, 2)))

One job per module behind it:

    geosr.predictor  Predictor, load_predictor: the model on a device at a precision
    geosr.options    UpscaleOptions and the rules for option values (tile and overlap, bands, compression, ...)
    geosr.plan       the plan for one file: bands, windows, tile grid, radiometry, output profile, batch size
    geosr.pipeline   upscale_raster: the plan run by a reader thread, the model and a writer thread, in bounded memory
    geosr.batch      plan_outputs, upscale_batch: many files with one predictor; a failed file does not stop the rest

Nothing here draws a progress bar or touches the command line: callers pass a ``progress`` callback, and errors are
GeosrError subclasses (geosr.errors) with one-line messages.
"""

from __future__ import annotations

from geosr.batch import BatchSummary, upscale_batch
from geosr.device import torchrun_env
from geosr.options import UpscaleOptions
from geosr.pipeline import FileResult, Progress, ProgressCallback, upscale_raster
from geosr.predictor import Predictor, load_predictor
from geosr.raster import output_name, plan_outputs

__all__ = [
    "BatchSummary",
    "FileResult",
    "Predictor",
    "Progress",
    "ProgressCallback",
    "UpscaleOptions",
    "distributed_rank",
    "load_predictor",
    "output_name",
    "plan_outputs",
    "upscale_batch",
    "upscale_raster",
]


def distributed_rank() -> tuple[int, int, int | None]:
    """(rank, world size, local rank) of this process under torchrun, (0, 1, None) without it.

    Kept for scripts written against earlier versions; geosr.device.torchrun_env reads the same variables.
    """
    job = torchrun_env()
    return job.rank, job.world_size, job.local_rank
