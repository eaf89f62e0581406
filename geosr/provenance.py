"""What geosr records about how an output was made (its GEOSR_* tags), and reading it back from a raster.

Every output of ``geosr upscale`` carries these dataset tags, and every DataArray of ``geosr.upscale_dataarray``
these attributes::

    GEOSR_VERSION        the geosr version that made it
    GEOSR_MODEL          the model file's name, the card's name and the scale: "degan-x4.safetensors (degan, x4)"
    GEOSR_MODEL_SHA256   the SHA-256 (hex) of the model file that ran, as ``sha256sum MODEL`` prints it
                         (absent only for a Predictor built from a model in memory, which has no file)
    GEOSR_SCALE          the scale factor: "4"
    GEOSR_TILING         "tile 64, overlap 16 input pixels"
    GEOSR_PRECISION      fp32, bf16 or fp16
    GEOSR_CONSISTENCY    "on: ..." or "off: ..." (the correction of geosr.consistency)
    GEOSR_SELF_ENSEMBLE  "on: ..." or "off: ..." (the mean over each tile's 8 flips and transposes)

and files also GEOSR_RADIOMETRY (the value mapping, JSON), GEOSR_BAND_GROUPS (when the bands run through the model in
groups) and GEOSR_ALPHA (when alpha bands skip the model), written by geosr.plan. An input's own STATISTICS_* and
GEOSR_* tags are never copied to its output (geosr.raster.carried_tags).

``read_provenance(path)`` reads a raster's size, CRS, pixel size and GEOSR_* tags: what ``geosr info OUT.tif``
prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosr.raster import open_raster
from geosr.sources import RemoteSource, input_spec
from geosr.version import __version__

if TYPE_CHECKING:  # reading a raster's provenance (geosr info) needs no torch
    from geosr.predictor import Predictor

PREFIX = "GEOSR_"
# The order in which the tags are shown; tags of other names (a newer geosr's) follow, sorted.
TAG_ORDER = (
    "GEOSR_VERSION",
    "GEOSR_MODEL",
    "GEOSR_MODEL_SHA256",
    "GEOSR_SCALE",
    "GEOSR_TILING",
    "GEOSR_PRECISION",
    "GEOSR_CONSISTENCY",
    "GEOSR_SELF_ENSEMBLE",
    "GEOSR_RADIOMETRY",
    "GEOSR_BAND_GROUPS",
    "GEOSR_ALPHA",
)

CONSISTENCY = {
    True: "on: corrected so that downsampling the output (bicubic with antialiasing) gives back the input",
    False: "off: the model's output, not corrected for consistency with the input",
}
SELF_ENSEMBLE = {
    True: "on: mean of the 8 flips and transposes of each tile",
    False: "off: one pass of the model per tile",
}


def provenance_tags(predictor: Predictor, *, tile: int, overlap: int, consistency: bool) -> dict[str, str]:
    """The GEOSR_* tags every output of ``predictor`` carries (see the module docstring); tile and overlap in input
    pixels, consistency: whether the consistency correction ran."""
    tags = {
        "GEOSR_VERSION": __version__,
        "GEOSR_MODEL": f"{predictor.source} ({predictor.card.name}, x{predictor.scale})",
        "GEOSR_SCALE": str(predictor.scale),
        "GEOSR_TILING": f"tile {tile}, overlap {overlap} input pixels",
        "GEOSR_PRECISION": predictor.precision,
        "GEOSR_CONSISTENCY": CONSISTENCY[bool(consistency)],
        "GEOSR_SELF_ENSEMBLE": SELF_ENSEMBLE[bool(predictor.self_ensemble)],
    }
    if predictor.model_sha256:
        tags["GEOSR_MODEL_SHA256"] = predictor.model_sha256
    return tags


def geosr_tags(tags: dict[str, Any]) -> dict[str, str]:
    """The GEOSR_* entries of ``tags``, in TAG_ORDER (unknown ones after, sorted), values as text."""
    found = {str(k): str(v) for k, v in tags.items() if str(k).startswith(PREFIX)}
    order = [k for k in TAG_ORDER if k in found] + sorted(k for k in found if k not in TAG_ORDER)
    return {k: found[k] for k in order}


@dataclass(frozen=True)
class RasterProvenance:
    """A raster's basic facts and its GEOSR_* tags.

    crs: "EPSG:n", a PROJ string for a CRS without an EPSG code, or None; georeferencing: "transform", "gcps" or
    "none"; pixel_size: (x, y) in ``units`` (the CRS's), for a raster georeferenced by a transform, else None.
    """

    path: Path | RemoteSource  # a remote raster (geosr.sources) shows without credentials
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: str | None
    georeferencing: str
    pixel_size: tuple[float, float] | None
    units: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def written_by_geosr(self) -> bool:
        """Whether geosr wrote the raster: it carries the GEOSR_VERSION tag."""
        return "GEOSR_VERSION" in self.tags

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "written_by_geosr": self.written_by_geosr,
            "width": self.width,
            "height": self.height,
            "count": self.count,
            "dtypes": list(self.dtypes),
            "crs": self.crs,
            "georeferencing": self.georeferencing,
            "pixel_size": list(self.pixel_size) if self.pixel_size else None,
            "units": self.units,
            "tags": dict(self.tags),
        }


def _crs_text(crs) -> str | None:
    if crs is None or not crs:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()  # whole: a PROJ string can drop parameters (+sweep of GEOS)


def _units(crs) -> str | None:
    """The name of the CRS's unit of length (metre, degree, US survey foot, ...), or None when it has none."""
    if crs is None or not crs:
        return None
    try:
        return crs.units_factor[0]
    except Exception:  # rasterio's CRSError for a CRS whose units PROJ cannot tell
        return None


def read_provenance(path: str | os.PathLike) -> RasterProvenance:
    """The size, CRS, pixel size and GEOSR_* dataset tags of the raster at ``path`` (any raster GDAL reads; no pixel
    is read; a URL or /vsi path too). Raises RasterError naming the file when it is missing or GDAL cannot open it."""
    path = input_spec(path)
    with open_raster(path) as ds:
        points, gcp_crs = ds.gcps
        if ds.crs and not points:
            georef, crs = "transform", ds.crs
        elif points:
            georef, crs = "gcps", gcp_crs
        elif not ds.transform.is_identity:
            georef, crs = "transform", None
        else:
            georef, crs = "none", None
        pixel = tuple(float(v) for v in ds.res) if georef == "transform" else None
        units = _units(crs) if georef == "transform" else None
        return RasterProvenance(
            path=path,
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtypes=tuple(dict.fromkeys(ds.dtypes)),
            crs=_crs_text(crs),
            georeferencing=georef,
            pixel_size=pixel,
            units=units,
            tags=geosr_tags(ds.tags()),
        )
