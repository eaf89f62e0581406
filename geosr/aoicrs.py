"""An area of interest across coordinate reference systems: whether it covers a whole raster, and its geometry in
the raster's CRS where only part of it can be converted there.

A box in EPSG:4326 wider than a UTM zone, or one that reaches past the edge of a geostationary satellite's disk,
holds points that the raster's CRS cannot represent; converted whole, the conversion fails. ``reprojected`` then
converts the points it can (GDAL's partial reprojection) and says so: near the raster, which lies where its CRS
is defined, the geometry is the AOI's own.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import rasterio
import shapely
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.warp import transform as rasterio_transform
from rasterio.warp import transform_geom
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

log = logging.getLogger("geosr.aoi")

CONVERSION_ERRORS = (RasterioError, CPLE_BaseError, ValueError)


def reprojected(geom: BaseGeometry, src: CRS, dst: CRS, what: str) -> BaseGeometry:
    """``geom`` (its edges densified) from ``src`` to ``dst``; where some of its points lie beyond ``dst``'s domain,
    the geometry of the points that convert, with a warning naming ``what``. Raises one of CONVERSION_ERRORS when
    not even that converts."""
    try:
        return _converted(geom, src, dst, partial=False)
    except CONVERSION_ERRORS:
        out = _converted(geom, src, dst, partial=True)
    log.warning("%s reaches beyond where its CRS converts to the raster's; the part that converts is used", what)
    return out


def _converted(geom: BaseGeometry, src: CRS, dst: CRS, partial: bool) -> BaseGeometry:
    with rasterio.Env(OGR_ENABLE_PARTIAL_REPROJECTION=partial), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return shape(transform_geom(src, dst, mapping(geom)))


def covers_raster(geom: BaseGeometry, crs: CRS, ds, per_edge: int = 64, across: int = 9) -> bool:
    """Whether a convex AOI (in ``crs``) covers the whole raster: points along the raster's edges and on a grid
    inside it, taken to ``crs``, all lie in it. False for an AOI that is not convex (a point could miss a notch or a
    hole) and where a point cannot be taken to ``crs`` (then the AOI is reprojected as usual)."""
    hull = geom.convex_hull
    if geom.is_empty or hull.area <= 0 or geom.area < 0.999 * hull.area:
        return False
    t = np.linspace(0, 1, per_edge)
    u = np.linspace(0, 1, across)
    cols = np.concatenate([t, t, np.zeros_like(t), np.ones_like(t), np.repeat(u, across)]) * ds.width
    rows = np.concatenate([np.zeros_like(t), np.ones_like(t), t, t, np.tile(u, across)]) * ds.height
    x, y = ds.transform * (cols, rows)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            xs, ys = rasterio_transform(ds.crs, crs, np.asarray(x).tolist(), np.asarray(y).tolist())
    except CONVERSION_ERRORS:
        return False
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return False
    return bool(shapely.covers(geom, shapely.points(xs, ys)).all())
