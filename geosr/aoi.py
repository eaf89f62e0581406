"""Areas of interest: a polygon (GeoJSON file, WKT or bounding box) in any CRS, and the raster window it covers.

GeoJSON is in EPSG:4326 (RFC 7946) unless it names another CRS in a legacy "crs" member; WKT and bounding boxes are
in the raster's own CRS unless a CRS is given, as with GDAL's -projwin. The geometry is reprojected to the raster's
CRS with rasterio.warp.transform_geom after densifying its edges, so straight lines stay faithful.

A polygon that is not valid (a self-intersecting "bowtie" ring, a hole that crosses its shell) is repaired with
``shapely.make_valid`` (its "structure" method), which keeps all the area its shells enclose, and a warning says so.
Coordinates that are not finite numbers are refused before any geometry operation.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.windows import Window
from shapely import affinity
from shapely.errors import GEOSException
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from geosr.aoicrs import CONVERSION_ERRORS, covers_raster, reprojected
from geosr.errors import GeosrError, OptionError, RasterError, one_line, printable

log = logging.getLogger("geosr.aoi")


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
    file: Path | None = None  # the GeoJSON file it was read from: an input of the run, never written over


def aoi_files(aoi: AOI | None) -> list[Path]:
    """The files an AOI was read from (none for WKT and --bbox), for the checks that keep a run's inputs unwritten."""
    return [aoi.file] if aoi is not None and aoi.file is not None else []


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
        with warnings.catch_warnings():  # NaN coordinates: refused below, by name, instead of a raw warning
            warnings.simplefilter("ignore", RuntimeWarning)
            geom = shapely.from_wkt(spec)
    except GEOSException as exc:
        raise AOITextError(
            f"--aoi {_short(spec)}: neither a GeoJSON file nor valid WKT ({one_line(exc)}); give a .geojson path or "
            "a WKT POLYGON",
            option="--aoi",
        ) from None
    if geom is None:
        raise AOITextError(f"--aoi {_short(spec)}: empty; give a .geojson path or a WKT POLYGON", option="--aoi")
    return AOI(_polygonal(geom, f"--aoi {_short(spec)}", AOITextError), crs, "WKT")


def bbox_aoi(bounds: tuple[float, float, float, float], crs: str | None = None) -> AOI:
    """An AOI from (minx, miny, maxx, maxy) in ``crs`` (the raster's CRS when None)."""
    minx, miny, maxx, maxy = bounds
    shown = ",".join(map(_exact, bounds))
    if not (minx < maxx and miny < maxy):
        across = " (a box across the antimeridian: give maxx past 180, e.g. 179.9,...,180.1)" if minx > maxx else ""
        raise AOITextError(f"--bbox {shown}: needs minx < maxx and miny < maxy{across}", option="--bbox")
    if crs is not None:
        _check_crs(crs)
    return AOI(box(minx, miny, maxx, maxy), crs, f"bbox {shown}", "--bbox")


def _exact(value: float) -> str:
    """A coordinate as text that reads back as the same float: 2736910.0 -> '2736910', 0.1 -> '0.1' (never the
    rounded '2.73691e+06' of ``%g``)."""
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


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
    except CRSError as exc:
        # GDAL's and PROJ's reason ("PROJ: crs not found: EPSG:999999"), without PROJ's function names
        reason = re.sub(r"\b(internal_)?proj_\w+: ", "", one_line(exc, 200))
        if where is not None:
            raise AOIError(
                f"--aoi {where}: its CRS {crs!r} is not one rasterio understands ({reason}); give --aoi-crs",
                option="--aoi",
            ) from None
        raise AOITextError(
            f"--aoi-crs {crs!r}: not a CRS rasterio understands ({reason}); use e.g. EPSG:4326", option="--aoi-crs"
        ) from None


def _load_geojson(path: Path, crs: str | None) -> AOI:
    if path.exists() and not path.is_file() and not path.is_dir():
        raise AOIError(
            f"--aoi {path}: not a regular file (a named pipe or device); give a GeoJSON file", option="--aoi"
        )
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AOIError(f"--aoi {path}: no such file (give a GeoJSON file or a WKT polygon)", option="--aoi") from None
    except RecursionError:
        raise AOIError(
            f"--aoi {path}: nested too deeply to be GeoJSON; give a GeoJSON geometry, Feature or FeatureCollection",
            option="--aoi",
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AOIError(
            f"--aoi {path}: not a GeoJSON file ({one_line(exc)}); give a GeoJSON file (UTF-8 JSON), or a WKT polygon",
            option="--aoi",
        ) from None
    if not isinstance(data, dict):
        raise AOIError(f"--aoi {path}: not a GeoJSON object", option="--aoi")
    if data.get("type") == "FeatureCollection":
        geoms = [f.get("geometry") for f in data.get("features") or [] if isinstance(f, dict)]
    elif data.get("type") == "Feature":
        geoms = [data.get("geometry")]
    else:
        geoms = [data]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            shapes = [shape(g) for g in geoms if g]
    except RecursionError:
        raise AOIError(f"--aoi {path}: a geometry nested too deeply to be GeoJSON", option="--aoi") from None
    except (KeyError, TypeError, ValueError, AttributeError, GEOSException) as exc:
        raise AOIError(f"--aoi {path}: invalid GeoJSON geometry ({one_line(exc)})", option="--aoi") from None
    if not shapes:
        raise AOIError(
            f"--aoi {path}: holds no geometry (every feature's is null or missing); give polygons", option="--aoi"
        )
    dropped = sorted(
        {g.geom_type for g in shapes if g.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection")}
    )
    if dropped and len(dropped) < len({g.geom_type for g in shapes}):
        log.warning("--aoi %s: its %s features enclose no area and are left out of the area of interest",
                    path, " and ".join(dropped))  # fmt: skip
    if crs is None:
        named = ((data.get("crs") or {}).get("properties") or {}).get("name")
        crs = named or "EPSG:4326"
        _check_crs(crs, str(path))
    what = f"--aoi {path}"
    for s in shapes:
        _check_finite(s, what, AOIError)
    geom = shapely.union_all([_repaired(s, what) for s in shapes])
    return AOI(_polygonal(geom, what), crs, str(path), file=path)


def _check_finite(geom: BaseGeometry, what: str, error: type[AOIError]) -> None:
    """Raise ``error`` when a coordinate of ``geom`` is NaN or infinite (before any operation, which would warn)."""
    coords = shapely.get_coordinates(geom)
    if coords.size and not np.isfinite(coords).all():
        raise error(
            f"{what}: the polygon has coordinates that are not finite numbers (NaN or infinity); give numbers",
            option="--aoi",
        )


def _polygon_parts(geom: BaseGeometry) -> BaseGeometry:
    """The polygons of ``geom`` (a GeometryCollection's lines and points dropped), as one geometry."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [_polygon_parts(g) for g in geom.geoms]
        return shapely.union_all([p for p in parts if not p.is_empty]) if parts else geom
    return shapely.Polygon()


def _repaired(geom: BaseGeometry, what: str) -> BaseGeometry:
    """``geom`` itself when valid; otherwise repaired with shapely.make_valid so that no area its shells enclose is
    lost (a bowtie becomes its two triangles), with a warning that says so."""
    if geom.is_valid:
        return geom
    if geom.geom_type == "MultiPolygon" and all(part.is_valid for part in geom.geoms):
        merged = shapely.union_all(list(geom.geoms))  # parts that only touch: the halves of an antimeridian split
        if merged.is_valid and math.isclose(merged.area, sum(p.area for p in geom.geoms), rel_tol=1e-9):
            return merged
    reason = shapely.is_valid_reason(geom)
    try:
        fixed = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    except (ValueError, GEOSException, TypeError):  # GEOS older than 3.10: the linework method
        fixed = shapely.make_valid(geom)
    fixed = _polygon_parts(fixed)
    if not fixed.is_empty and fixed.area > 0:
        n = len(fixed.geoms) if fixed.geom_type == "MultiPolygon" else 1
        log.warning(
            "%s: the polygon is not valid (%s); repaired into %d polygon(s) that keep all its area (%.6g square units)",
            printable(what),
            printable(reason),
            n,
            fixed.area,
        )
    return fixed


def _polygonal(geom: BaseGeometry, what: str, error: type[AOIError] = AOIError) -> BaseGeometry:
    """``geom`` as a valid polygon or multipolygon of non-zero area (invalid rings repaired), or ``error``."""
    _check_finite(geom, what, error)
    if geom.geom_type == "GeometryCollection":
        geom = _polygon_parts(geom)
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        got = f"an empty {geom.geom_type}" if geom.is_empty else f"a {geom.geom_type}"
        raise error(
            f"{what}: the area of interest must be a polygon or multipolygon, got {got}; give one that encloses "
            "an area",
            option="--aoi",
        )
    geom = _repaired(geom, what)
    if geom.is_empty or geom.area <= 0:
        raise error(
            f"{what}: the polygon encloses no area (a self-intersecting or degenerate ring); give a simple polygon",
            option="--aoi",
        )
    return geom


def crs_name(crs: CRS) -> str:
    """A short name of a CRS for messages: EPSG:n when it has one, else the name its WKT gives (never the whole
    WKT or PROJJSON)."""
    try:
        epsg = crs.to_epsg()
    except CRSError:
        epsg = None
    if epsg:
        return f"EPSG:{epsg}"
    m = re.match(r'\s*\w+\s*\[\s*"([^"]*)"', crs.to_wkt() or "")
    return printable(_short(m.group(1))) if m else "an unnamed CRS"


def to_raster_pixels(aoi: AOI, ds, path) -> BaseGeometry:
    """The AOI in the raster's pixel coordinates (input pixels, x = column, y = row).

    Raises RasterError for a raster without a geotransform and a CRS when the AOI has a CRS of its own.
    """
    if ds.transform == Affine.identity() and ds.crs is None:
        placed = "only ground control points" if ds.gcps[0] else "no geotransform"
        raise RasterError(
            f"{path}: has {placed}, so --aoi/--bbox cannot be placed on it; drop them, or warp it to a grid first "
            "(gdalwarp) and give the AOI on that",
            option=aoi.option,
        )
    geom = aoi.geometry
    if aoi.crs is not None:
        if ds.crs is None:
            given = "as WKT or --bbox" if aoi.file is not None else "without --aoi-crs"  # a GeoJSON's CRS is its own
            raise RasterError(
                f"{path}: has no CRS to reproject the AOI ({aoi.crs}) to; give the AOI {given} in the raster's own "
                "coordinates, or assign the raster its CRS (gdal_edit.py -a_srs)",
                option="--aoi-crs",
            )
        src_crs = CRS.from_user_input(aoi.crs)
        if src_crs != ds.crs:
            local = [
                f"{name} ({crs_name(crs)})"
                for name, crs in ((f"{path}'s CRS", ds.crs), ("--aoi-crs", src_crs))
                if not (crs.is_geographic or crs.is_projected)
            ]
            if covers_raster(geom, src_crs, ds):  # a world box: whole, it would leave the CRS's domain
                return box(0, 0, ds.width, ds.height)
            minx, miny, maxx, maxy = geom.bounds
            geom = shapely.segmentize(geom, max(maxx - minx, maxy - miny) / 64 or 1.0)
            try:
                geom = reprojected(geom, src_crs, ds.crs, f"{path}: the area of interest ({aoi.source})")
            except CONVERSION_ERRORS as exc:
                if local:
                    raise RasterError(
                        f"{path}: the area of interest ({aoi.source}) cannot be converted from {crs_name(src_crs)} "
                        f"to {crs_name(ds.crs)}: {local[0]} is a local (engineering) CRS, tied to no place on Earth; "
                        "give the AOI in the raster's own coordinates, without --aoi-crs",
                        option="--aoi-crs",
                    ) from None
                raise AOIMissError(
                    f"{path}: the area of interest ({aoi.source}) cannot be reprojected from {aoi.crs} to the "
                    f"raster's CRS ({one_line(exc, 200)}); check --aoi-crs",
                    option="--aoi-crs",
                ) from None
            coords = shapely.get_coordinates(geom)
            if coords.size and not np.isfinite(coords).all():
                raise AOIMissError(
                    f"{path}: the area of interest ({aoi.source}) reaches beyond where {aoi.crs} can be "
                    f"converted to {crs_name(ds.crs)}; check --aoi-crs",
                    option="--aoi-crs",
                )
            if not geom.is_valid:
                geom = _repaired(geom, f"{aoi.option} {aoi.source} in {crs_name(ds.crs)}")
    inv = ~ds.transform
    return affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])


EDGE_SNAP = 1e-6  # pixels: an AOI edge this close to a pixel edge is on it


def aoi_window(aoi: AOI, ds, path) -> tuple[Window, BaseGeometry]:
    """The smallest window of whole input pixels that covers the AOI inside the raster, and the AOI in pixels.

    Raises AOIMissError when the AOI does not meet the raster.
    """
    px = to_raster_pixels(aoi, ds, path)
    inside = px.intersection(box(0, 0, ds.width, ds.height))
    if inside.is_empty or inside.area <= 0:
        where = f" (AOI CRS {aoi.crs})" if aoi.crs else " (AOI taken in the raster's CRS; set --aoi-crs if not)"
        raise AOIMissError(
            f"{path}: the area of interest ({aoi.source}) does not meet the raster{where}; check the AOI's coordinates "
            "against the raster's bounds (geosr info)",
            option=aoi.option,
        )
    x0, y0, x1, y1 = inside.bounds
    # bounds on pixel edges come back from the transform a rounding error off: 432.00000000000006 is column 432's edge
    c0, r0 = max(0, math.floor(x0 + EDGE_SNAP)), max(0, math.floor(y0 + EDGE_SNAP))
    c1, r1 = min(ds.width, math.ceil(x1 - EDGE_SNAP)), min(ds.height, math.ceil(y1 - EDGE_SNAP))
    return Window(c0, r0, max(1, c1 - c0), max(1, r1 - r0)), px
