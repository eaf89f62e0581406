"""The work-size guard: a file whose output would take geosr more than a day is not started without a confirmation.

A sparse GeoTIFF may declare 200000 x 200000 pixels in a few kilobytes; its compressed output may even fit the disk.
Before a file starts, ``check_work_size`` compares its output pixels with ``--max-pixels`` or, by default, with a
day's work on the device at geosr's measured rate (``geosr.limits.day_of_work``) and refuses, with the estimate, unless
``--yes`` says to go on.
"""

from __future__ import annotations

from geosr.device import cpu_supports_bf16, usable_cores
from geosr.errors import GeosrError
from geosr.limits import DAY_S, day_of_work, output_rate


class WorkTooLarge(GeosrError):
    """A file whose output is past --max-pixels or a day's work, without --yes."""


def _duration(seconds: float) -> str:
    if seconds >= 2 * DAY_S:
        return f"{seconds / DAY_S:.0f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} hours"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _pixels(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} gigapixels"
    return f"{n / 1e6:.1f} megapixels" if n >= 1e5 else f"{n:,} pixels"


def check_work_size(
    name: str,
    out_pixels: int,
    device_type: str,
    *,
    self_ensemble: bool = False,
    precision: str = "fp32",
    scale: int = 4,
    max_pixels: int | None = None,
    yes: bool = False,
) -> None:
    """Raise WorkTooLarge naming ``name``, its output size and the time it would take when ``out_pixels`` is past
    ``max_pixels`` (or a day's work on ``device_type`` at ``precision`` for a model of ``scale``), unless ``yes``."""
    if yes:
        return
    cores = usable_cores()
    speed = {"native_bf16": device_type == "cpu" and precision == "bf16" and cpu_supports_bf16(), "scale": scale}
    limit = max_pixels if max_pixels is not None else day_of_work(device_type, cores, self_ensemble, **speed)
    if out_pixels <= limit:
        return
    seconds = out_pixels / output_rate(device_type, cores, self_ensemble, **speed)
    where = "the GPU" if device_type == "cuda" else f"{cores} CPU core{'s' if cores != 1 else ''} in {precision}"
    bound = f"--max-pixels {max_pixels}" if max_pixels is not None else "a day's work"
    raise WorkTooLarge(
        f"{name}: the output would have {_pixels(out_pixels)}, past {bound}: about "
        f"{_duration(seconds)} on {where} at geosr's usual rate; check the raster's size (a sparse file may declare "
        "far more pixels than it holds), pick a part with --aoi/--bbox, or pass --yes to go on"
    )
