"""The output's profile: dtype, bands, nodata, georeferencing and metadata of the output of an input window.

transform = window transform * Affine.scale(1 / scale) (right for rotated rasters too), CRS copied as is, GCPs moved
to the new pixel grid, footprint unchanged. Outputs are tiled GeoTIFFs (512 x 512 blocks, compressed with a
predictor, BigTIFF when it may be needed), or PNG / JPEG by their suffix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from geosr.errors import OptionError
from geosr.raster.gdal import quiet_georeferencing

log = logging.getLogger("geosr.raster")


BLOCK = 512
# Deflate's level for outputs. Measured on four real x4 outputs (benchmarks/output_io.py --levels): level 3 takes
# 31-84 % of the CPU of GDAL's default 6 for files 0.3-5.9 % larger. The output has 16 times the input's pixels, so
# its compression is the largest piece of CPU work beside the model (results/output_io.txt).
DEFLATE_LEVEL = 3


# Output formats chosen by the output file's suffix; anything else is written as GeoTIFF.
COPY_DRIVERS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


COPY_DTYPES = {"PNG": ("uint8", "uint16"), "JPEG": ("uint8",)}


def output_nodata(ds, path, bands: Sequence[int]) -> float | None:
    """The one nodata value of an output of ``bands`` (1-based; a GeoTIFF holds one value for all its bands).

    The bands' nodata value when they share one (or None when none has one). Bands with different values (per-band
    nodata, as a VRT or an ENVI file may have; or some bands with and some without) take the first value declared,
    with a warning: the invalid pixels of every band are written with it, and valid pixels that equal it move to the
    nearest other value (geosr.radiometry.keep_off_nodata), so nothing valid reads as nodata and nothing invalid as
    data.
    """
    values = [ds.nodatavals[b - 1] for b in bands]
    declared = [v for v in values if v is not None]
    if not declared:
        return None
    first = declared[0]
    same = all(v is not None and (v == first or (math.isnan(v) and math.isnan(first))) for v in values)
    if not same:
        shown = ", ".join(f"band {b}: {'none' if v is None else f'{v:g}'}" for b, v in zip(bands, values))
        log.warning(
            "%s: the bands have different nodata values (%s); a GeoTIFF holds one, so the output marks the "
            "invalid pixels of every band with %g (valid pixels equal to it move to the next value)",
            path,
            shown,
            first,
        )
    return first


def copy_format_problem(driver: str, dtype: str, colorinterp: Sequence[ColorInterp], nodata: float | None) -> str:
    """What keeps an output of bands with ``colorinterp`` (in output order), ``dtype`` and ``nodata`` from being
    written faithfully as PNG or JPEG, with the remedy; "" when nothing does (always "" for GTiff).

    PNG holds uint8 / uint16 in 1 to 4 bands, the 2nd of 2 and the 4th of 4 taken as alpha, and one nodata value
    for its colour bands when it has no alpha band; JPEG holds uint8 in 1 or 3 bands and no nodata value (its lossy
    compression changes the fill value and valid values near it: valid and nodata pixels would swap). Masks are
    kept by both (a .msk sidecar for PNG, inside the file for JPEG).
    """
    if driver == "GTiff":
        return ""
    count = len(colorinterp)
    tif = "name the output .tif"
    if dtype not in COPY_DTYPES[driver]:
        return f"{driver} cannot hold {dtype} values; {tif}"
    if driver == "JPEG":
        if count not in (1, 3):
            return f"JPEG holds 1 or 3 bands, not {count}; {tif} or pick 1 or 3 bands with --bands"
        if nodata is not None:
            return (
                f"JPEG cannot keep nodata apart: its lossy compression changes the fill value {nodata:g} and the "
                "valid values near it, so valid and nodata pixels would swap; name the output .png or .tif"
            )
        return ""
    if count > 4:
        return f"PNG holds 1 to 4 bands, not {count}; {tif} or pick bands with --bands"
    if count in (2, 4) and colorinterp[-1] != ColorInterp.alpha:
        return (
            f"PNG takes the last of {count} bands as alpha (transparency), and band {count} of the output is "
            f"not an alpha band; {tif} or pick bands with --bands"
        )
    if count in (2, 4) and nodata is not None:
        return f"PNG cannot hold the nodata value {nodata:g} beside an alpha band; {tif}"
    return ""


@dataclass(frozen=True)
class OutputSpec:
    """Everything the writer needs to create the output, as plain data (it is used from another thread).

    profile: rasterio creation profile; gcps: (points, crs) or None; tags: dataset tags; band_*: per output band.
    internal_mask: write a per-dataset mask (when the output has no nodata value and no alpha band to say it).
    """

    profile: dict[str, Any]
    gcps: tuple[list[GroundControlPoint], Any] | None
    tags: dict[str, str]
    band_tags: list[dict[str, str]]
    descriptions: list[str | None]
    colorinterp: list[ColorInterp]
    units: list[str | None]
    scales: list[float]
    offsets: list[float]
    internal_mask: bool = False


# Tags of the input that are not carried to the output. STATISTICS_* (GDAL's band statistics: minimum, maximum, mean,
# standard deviation, valid percent, ...) describe the input's pixels, not the new ones: they are dropped, not
# recomputed, since recomputing them would take a second pass over the whole output after it is written (GDAL
# computes them on demand: gdalinfo -stats). GEOSR_* describe an earlier run of geosr (when the input is itself an
# output): the run writes its own.
DROPPED_TAG_PREFIXES = ("STATISTICS_", "GEOSR_")


def carried_tags(tags: dict[str, str]) -> dict[str, str]:
    """The tags (dataset or band) of an input that its output keeps: all but DROPPED_TAG_PREFIXES."""
    return {k: v for k, v in tags.items() if not str(k).upper().startswith(DROPPED_TAG_PREFIXES)}


def output_spec(
    ds,
    path,
    *,
    scale: int,
    window: Window,
    bands: Sequence[int],
    dtype: str,
    georef: str,
    compress: str,
    internal_mask: bool,
    tags: dict[str, str],
    nodata: float | None,
) -> OutputSpec:
    """The output of super-resolving ``bands`` of ``window`` of ``ds`` by ``scale``: profile and metadata.

    The input's dataset and band tags are copied (``carried_tags``: not its STATISTICS_* and GEOSR_* tags), and
    ``tags`` (the run's GEOSR_* provenance) added.

    compress: one of COMPRESSIONS (checked by geosr.options.check_compression); nodata: the output's one nodata
    value (``output_nodata``).
    """
    height, width = int(window.height) * scale, int(window.width) * scale
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": len(bands),
        "dtype": dtype,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "interleave": "pixel",
        "bigtiff": "IF_SAFER",
        "num_threads": "ALL_CPUS",
    }
    if compress != "none":
        profile["compress"] = compress
        profile["predictor"] = 3 if np.dtype(dtype).kind == "f" else 2
        if compress == "deflate":
            profile["zlevel"] = DEFLATE_LEVEL
    gcps = None
    if georef == "transform":
        profile["crs"] = ds.crs
        window_transform = ds.transform @ Affine.translation(window.col_off, window.row_off)
        profile["transform"] = window_transform @ Affine.scale(1 / scale)
    elif georef == "gcps":
        points, crs = ds.gcps
        gcps = (
            [
                GroundControlPoint(
                    row=(p.row - window.row_off) * scale,
                    col=(p.col - window.col_off) * scale,
                    x=p.x,
                    y=p.y,
                    z=p.z,
                    id=p.id,
                    info=p.info,
                )
                for p in points
            ],
            crs,
        )
    idx = [b - 1 for b in bands]
    all_tags = carried_tags(ds.tags())
    all_tags.update(tags)
    return OutputSpec(
        profile=profile,
        gcps=gcps,
        tags=all_tags,
        band_tags=[carried_tags(ds.tags(b)) for b in bands],
        descriptions=[ds.descriptions[i] for i in idx],
        colorinterp=[ds.colorinterp[i] for i in idx],
        units=[ds.units[i] for i in idx],
        scales=[ds.scales[i] for i in idx],
        offsets=[ds.offsets[i] for i in idx],
        internal_mask=internal_mask,
    )


def create_output(path: Path, spec: OutputSpec):
    """Create the output file at ``path`` and write its metadata; returns the open rasterio dataset."""
    with quiet_georeferencing():
        dst = rasterio.open(path, "w", **spec.profile)
    try:
        if spec.gcps is not None:
            dst.gcps = spec.gcps
        dst.update_tags(**spec.tags)
        for i in range(dst.count):
            if spec.band_tags[i]:
                dst.update_tags(i + 1, **spec.band_tags[i])
            if spec.descriptions[i]:
                dst.set_band_description(i + 1, spec.descriptions[i])
        dst.colorinterp = spec.colorinterp
        if any(spec.units):
            dst.units = [u or "" for u in spec.units]
        if any(s != 1.0 for s in spec.scales) or any(o != 0.0 for o in spec.offsets):
            dst.scales = spec.scales
            dst.offsets = spec.offsets
    except BaseException:
        dst.close()
        raise
    return dst


OUTPUT_SUFFIXES = (".tif", ".tiff", ".gtif", *COPY_DRIVERS)


def output_driver(path: Path) -> str:
    """GTiff, or PNG / JPEG for outputs named .png / .jpg / .jpeg; OptionError (on -o/--output) for any other
    suffix."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise OptionError(
            f"{path}: geosr writes GeoTIFF (.tif), PNG (.png) or JPEG (.jpg), "
            f"not {suffix or 'files without a suffix'}; name the output .tif",
            option="--output",
        )
    return COPY_DRIVERS.get(suffix, "GTiff")
