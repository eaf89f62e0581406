"""Areas of interest: a polygon (GeoJSON file, WKT or bounding box) in any CRS, and the raster window it covers.

GeoJSON is in EPSG:4326 (RFC 7946) unless it names another CRS in a legacy "crs" member; WKT and bounding boxes are
in the raster's own CRS unless a CRS is given, as with GDAL's -projwin. The geometry is reprojected to the raster's
CRS with rasterio.warp.transform_geom after densifying its edges, so straight lines stay faithful.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import shapely
from shapely import affinity
from shapely.errors import GEOSException
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from geosr.errors import GeosrError, OptionError, RasterError, one_line


class AOIError(GeosrError):
    """An area of interest that cannot be read or used (``option``: the option that gave it)."""


class AOITextError(AOIError, OptionError):
    """WKT, a bounding box or a CRS given as text that does not parse or is not an area: a usage error."""


class AOIMissError(RasterError):
    """The area of interest does not meet the raster."""


@dataclass(frozen=True)
class AOI:
    """A polygonal area of interest. crs: None means the raster's own CRS. source: how the user gave it."""

    geometry: BaseGeometry
    crs: str | None
    source: str
    option: str = "--aoi"  # the command-line option that gave it


def load_aoi(spec: str, crs: str | None = None) -> AOI:
    """An AOI from a GeoJSON file (a geometry, a Feature or a FeatureCollection: the union of its polygons) or WKT.

    crs: the AOI's CRS (anything rasterio.crs.CRS understands); default EPSG:4326 for GeoJSON, the raster's for WKT.
    Raises AOITextError for invalid WKT, a WKT geometry that is not a polygon or a ``crs`` that is not understood, and
    AOIError for a GeoJSON file that is missing, unreadable or holds no usable polygon.
    """
    if crs is not None:
        _check_crs(crs)
    path = Path(spec)
    looks_like_file = path.suffix.lower() in (".json", ".geojson") or os.sep in spec or path.exists()
    if looks_like_file and not spec.lstrip().upper().startswith(("POLYGON", "MULTIPOLYGON")):
        return _load_geojson(path, crs)
    try:
        geom = shapely.from_wkt(spec)
    except GEOSException as exc:
        raise AOITextError(
            f"--aoi {_short(spec)}: neither a GeoJSON file nor valid WKT ({one_line(exc)}); give a .geojson path or "
            "a WKT POLYGON", option="--aoi",
        ) from None
    if geom is None:
        raise AOITextError(f"--aoi {_short(spec)}: empty; give a .geojson path or a WKT POLYGON", option="--aoi")
    return AOI(_polygonal(geom, f"--aoi {_short(spec)}", AOITextError), crs, "WKT")


def bbox_aoi(bounds: tuple[float, float, float, float], crs: str | None = None) -> AOI:
    """An AOI from (minx, miny, maxx, maxy) in ``crs`` (the raster's CRS when None)."""
    minx, miny, maxx, maxy = bounds
    if not (minx < maxx and miny < maxy):
        raise AOITextError(f"--bbox {minx:g},{miny:g},{maxx:g},{maxy:g}: needs minx < maxx and miny < maxy",
                           option="--bbox")
    if crs is not None:
        _check_crs(crs)
    return AOI(box(minx, miny, maxx, maxy), crs, f"bbox {minx:g},{miny:g},{maxx:g},{maxy:g}", "--bbox")


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """'minx,miny,maxx,maxy' -> four floats; raises AOITextError (a ValueError) with a readable message."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if len(parts) != 4:
        raise AOITextError(f"expected minx,miny,maxx,maxy (four numbers), got {text!r}", option="--bbox")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise AOITextError(f"expected four numbers minx,miny,maxx,maxy, got {text!r}", option="--bbox") from None
    if not all(math.isfinite(v) for v in values):
        raise AOITextError(f"expected four finite numbers, got {text!r}", option="--bbox")
    return values  # type: ignore[return-value]


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _check_crs(crs: str, where: str | None = None) -> None:
    """Raise AOITextError for an --aoi-crs that is not a CRS, or AOIError naming ``where`` (a file) for its own."""
    try:
        CRS.from_user_input(crs)
    except CRSError:
        if where is not None:
            raise AOIError(f"--aoi {where}: its CRS {crs!r} is not one rasterio understands; give --aoi-crs",
                           option="--aoi") from None
        raise AOITextError(f"--aoi-crs {crs!r}: not a CRS rasterio understands; use e.g. EPSG:4326",
                           option="--aoi-crs") from None


def _load_geojson(path: Path, crs: str | None) -> AOI:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AOIError(f"--aoi {path}: no such file (give a GeoJSON file or a WKT polygon)",
                       option="--aoi") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AOIError(f"--aoi {path}: not a GeoJSON file ({one_line(exc)})", option="--aoi") from None
    if not isinstance(data, dict):
        raise AOIError(f"--aoi {path}: not a GeoJSON object", option="--aoi")
    if data.get("type") == "FeatureCollection":
        geoms = [f.get("geometry") for f in data.get("features") or [] if isinstance(f, dict)]
    elif data.get("type") == "Feature":
        geoms = [data.get("geometry")]
    else:
        geoms = [data]
    try:
        shapes = [shape(g) for g in geoms if g]
    except (KeyError, TypeError, ValueError, AttributeError, GEOSException) as exc:
        raise AOIError(f"--aoi {path}: invalid GeoJSON geometry ({one_line(exc)})", option="--aoi") from None
    if not shapes:
        raise AOIError(f"--aoi {path}: holds no geometry", option="--aoi")
    if crs is None:
        named = ((data.get("crs") or {}).get("properties") or {}).get("name")
        crs = named or "EPSG:4326"
        _check_crs(crs, str(path))
    geom = shapely.union_all([s.buffer(0) if not s.is_valid else s for s in shapes])
    return AOI(_polygonal(geom, f"--aoi {path}"), crs, str(path))


def _polygonal(geom: BaseGeometry, what: str, error: type[AOIError] = AOIError) -> BaseGeometry:
    """``geom`` as a valid polygon or multipolygon of non-zero area (invalid rings repaired), or ``error``."""
    if geom.geom_type == "GeometryCollection":
        geom = shapely.union_all([g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise error(f"{what}: the area of interest must be a polygon, got {geom.geom_type} (empty: {geom.is_empty})",
                    option="--aoi")
    if not all(math.isfinite(v) for v in geom.bounds):
        raise error(f"{what}: the polygon has coordinates that are not finite numbers", option="--aoi")
    if not geom.is_valid:
        geom = geom.buffer(0)
    if geom.is_empty or geom.area <= 0:
        raise error(f"{what}: the polygon encloses no area (a self-intersecting or degenerate ring); give a simple "
                    "polygon", option="--aoi")
    return geom


def to_raster_pixels(aoi: AOI, ds, path) -> BaseGeometry:
    """The AOI in the raster's pixel coordinates (input pixels, x = column, y = row).

    Raises RasterError for a raster without a geotransform and a CRS when the AOI has a CRS of its own.
    """
    if ds.transform == Affine.identity() and ds.crs is None:
        raise RasterError(f"{path}: has no geotransform, so --aoi/--bbox cannot be placed on it; drop them",
                          option=aoi.option)
    geom = aoi.geometry
    if aoi.crs is not None:
        if ds.crs is None:
            raise RasterError(f"{path}: has no CRS to reproject the AOI ({aoi.crs}) to; drop --aoi-crs",
                              option="--aoi-crs")
        src_crs = CRS.from_user_input(aoi.crs)
        if src_crs != ds.crs:
            minx, miny, maxx, maxy = geom.bounds
            geom = shapely.segmentize(geom, max(maxx - minx, maxy - miny) / 64 or 1.0)
            try:
                geom = shape(transform_geom(src_crs, ds.crs, mapping(geom)))
            except (RasterioError, ValueError) as exc:
                raise AOIMissError(
                    f"{path}: the area of interest ({aoi.source}) cannot be reprojected from {aoi.crs} to the "
                    f"raster's CRS ({one_line(exc)}); check --aoi-crs", option="--aoi-crs",
                ) from None
            if not geom.is_valid:
                geom = geom.buffer(0)
    inv = ~ds.transform
    return affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])


def aoi_window(aoi: AOI, ds, path) -> tuple[Window, BaseGeometry]:
    """The smallest window of whole input pixels that covers the AOI inside the raster, and the AOI in pixels.

    Raises AOIMissError when the AOI does not meet the raster.
    """
    px = to_raster_pixels(aoi, ds, path)
    inside = px.intersection(box(0, 0, ds.width, ds.height))
    if inside.is_empty or inside.area <= 0:
        where = f" (AOI CRS {aoi.crs})" if aoi.crs else " (AOI taken in the raster's CRS; set --aoi-crs if not)"
        raise AOIMissError(f"{path}: the area of interest ({aoi.source}) does not meet the raster{where}",
                           option=aoi.option)
    x0, y0, x1, y1 = inside.bounds
    c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    c1, r1 = min(ds.width, math.ceil(x1)), min(ds.height, math.ceil(y1))
    return Window(c0, r0, max(1, c1 - c0), max(1, r1 - r0)), px
