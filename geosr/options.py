"""How to upscale: ``UpscaleOptions``, and the rules for the values of settings that every entry point shares.

Each rule is one function that raises ``OptionError`` (naming the command-line option in ``option``) for a value that
is wrong in itself, whatever the raster and the model: ``UpscaleOptions`` applies them when it is made, and the
command line applies the same functions to its options before anything is opened (geosr.cli.options). What depends
on the model or the raster (an overlap beyond the model card's tile, a band the raster lacks) is checked by the plan
(geosr.plan) and by the raster reader (geosr.raster).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

from geosr.aoi import AOI
from geosr.errors import OptionError
from geosr.limits import COMPRESSIONS, MAX_TILE
from geosr.tiling import tiling_problem

PANEL_STEP = 512  # input columns; panels are whole multiples of the output's block size


def check_tiling(tile_size: int | None, overlap: int | None) -> None:
    """Raise OptionError for a tile size or overlap (input pixels) that no model could use.

    With both given, the rule of geosr.tiling.tiling_problem applies to the pair; with one of them None (the model
    card's value, not known yet), to the value given: a tile of MIN_TILE..MAX_TILE, an overlap of 0..MAX_TILE/2.
    """
    if tile_size is not None:
        problem = tiling_problem(tile_size, 0)  # the tile alone: any tile takes an overlap of 0
        if problem:
            raise OptionError(problem, option="--tile-size")
    if overlap is not None and tile_size is None:  # the bound from the card's tile comes with the model
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= MAX_TILE // 2:
            raise OptionError(
                f"overlap {overlap!r}: must be an integer of 0..{MAX_TILE // 2} input pixels, and at most half "
                "the tile size",
                option="--overlap",
            )
    elif overlap is not None:
        problem = tiling_problem(tile_size, overlap)
        if problem:
            raise OptionError(problem, option="--overlap")


def check_band_numbers(bands: Sequence[int]) -> tuple[int, ...]:
    """``bands`` (1-based band numbers) as a tuple; OptionError for an empty list, a number below 1 or a repeat."""
    shown = ",".join(map(str, bands))
    # numbers.Integral: numpy's integers too (bands=np.array([3, 2, 1])), without importing numpy here
    if isinstance(bands, (str, bytes)) or not all(isinstance(b, Integral) and not isinstance(b, bool) for b in bands):
        raise OptionError(f"{bands!r}: expected 1-based band numbers, e.g. 4,3,2", option="--bands")
    bands = [int(b) for b in bands]
    if not bands or min(bands) < 1:
        raise OptionError(
            f"bands {shown or '(none)'}: band numbers are 1-based (the first band is 1), e.g. 4,3,2", option="--bands"
        )
    if len(set(bands)) != len(bands):
        raise OptionError(f"bands {shown}: name each band once", option="--bands")
    return tuple(bands)


def check_value_range(value_range: Sequence[float]) -> tuple[float, float]:
    """(min, max) as floats; OptionError unless they are two finite numbers with min < max."""
    if len(value_range) != 2:
        raise OptionError(f"value range {value_range!r}: give two numbers, MIN MAX", option="--value-range")
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise OptionError(f"value range {lo:g} {hi:g}: give finite numbers", option="--value-range")
    if not lo < hi:
        raise OptionError(f"value range {lo:g} {hi:g}: MIN must be below MAX", option="--value-range")
    return lo, hi


def check_compression(compress: str) -> str:
    """``compress`` if it is one of COMPRESSIONS, else OptionError."""
    if compress not in COMPRESSIONS:
        raise OptionError(f"compression {compress!r}: expected one of {', '.join(COMPRESSIONS)}", option="--compress")
    return compress


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` if it is an integer of at least 1, else OptionError."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch size {batch_size!r}: must be an integer of at least 1", option="--batch-size")
    return batch_size


def check_panel_width(panel_width: int | None) -> None:
    """Raise OptionError unless ``panel_width`` is None or a positive multiple of PANEL_STEP."""
    if panel_width is not None and (
        isinstance(panel_width, bool) or not isinstance(panel_width, int) or panel_width < 1 or panel_width % PANEL_STEP
    ):
        raise OptionError(f"panel width {panel_width!r}: must be a positive multiple of {PANEL_STEP} input pixels")


@dataclass(frozen=True)
class UpscaleOptions:
    """How to upscale a raster; every size is in input pixels. Checked when made: OptionError for a bad value.

    tile_size, overlap: None takes the model card's; batch_size: tiles per model call; bands: 1-based input bands
    in output order (all when None); aoi: process only this area; value_range: (min, max) mapped to the model's
    range instead of percentiles (non-uint8 rasters); cog: write a Cloud-Optimized GeoTIFF; compress: deflate, zstd,
    lzw or none; overwrite: replace an existing output; panel_width: input columns processed per pass, a multiple of
    512 (None: as many as keep the strip accumulator within geosr.plan.ACCUMULATOR_BYTES, at most 2048).
    consistency: correct the output so that its bicubic degradation gives back the input
    (geosr.consistency; on by default). max_pixels: output pixels one file may have before it needs ``yes``
    (None: what the device finishes in a day at geosr's measured rate, geosr.limits.day_of_work); yes: go on
    with a file beyond that. uncertainty: also write the error map there (geosr.uncertainty; one input file only;
    the output is then the self-ensemble's mean).
    """

    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 8
    bands: tuple[int, ...] | None = None
    aoi: AOI | None = None
    value_range: tuple[float, float] | None = None
    cog: bool = False
    compress: str = "deflate"
    overwrite: bool = False
    panel_width: int | None = None
    consistency: bool = True
    max_pixels: int | None = None
    yes: bool = False
    uncertainty: Path | None = None

    def __post_init__(self) -> None:
        if self.max_pixels is not None and (
            isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1
        ):
            raise OptionError(
                f"max pixels {self.max_pixels!r}: must be a whole number of at least 1", option="--max-pixels"
            )
        check_tiling(self.tile_size, self.overlap)
        check_batch_size(self.batch_size)
        if self.bands is not None:
            object.__setattr__(self, "bands", check_band_numbers(self.bands))
        if self.value_range is not None:
            object.__setattr__(self, "value_range", check_value_range(self.value_range))
        check_compression(self.compress)
        check_panel_width(self.panel_width)
        for name in ("cog", "overwrite", "consistency", "yes"):  # a string such as "no" would read as True
            value = getattr(self, name)
            if not (isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"):
                raise OptionError(f"{name} {value!r}: must be True or False", option=f"--{name}")


def check_exclusions(
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    aoi: bool = False,
    bbox: bool = False,
    aoi_crs: bool = False,
) -> None:
    """The options that exclude each other, in one wording for the command line and the Python API (OptionError)."""
    if overwrite and skip_existing:
        raise OptionError("--overwrite and --skip-existing exclude each other", option="--skip-existing")
    if aoi and bbox:
        raise OptionError("give --aoi or --bbox, not both", option="--bbox")
    if aoi_crs and not (aoi or bbox):
        raise OptionError("--aoi-crs needs --aoi or --bbox", option="--aoi-crs")
