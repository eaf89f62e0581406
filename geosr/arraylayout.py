"""Where an in-memory array holds its bands, rows and columns, and where its pixels lie: checked, never guessed.

geosr.upscale_array and geosr.upscale_dataarray take arrays whose layout and georeferencing no file header states.
This module decides both from what the caller said, or refuses with a one-line error that names the remedy:

- ``Layout``: the axes of the bands, rows and columns. A numpy array's come from ``band_axis`` (``numpy_layout``:
  the first axis unless told otherwise, and an array that looks band-last, (H, W, 3), is refused rather than read
  as 3 columns); a DataArray's from its dimension names, wherever they stand (``dataarray_layout``). The result is
  written in the input's layout.
- ``Grid``: a DataArray's pixel grid (``dataarray_grid``). A 1-D x or y coordinate is the pixel centres and must be
  a regular grid (evenly spaced within ``RTOL`` of a step, no repeated value); a single coordinate gives no pixel
  size, which then comes from a stored transform (rioxarray's grid mapping GeoTransform or a ``transform``
  attribute) or the call is refused. Where coordinates and a stored transform disagree (a subset whose GeoTransform
  was not updated), the coordinates, which xarray keeps in step with every selection, place the pixels (with the
  stored pixel size where the two agree on it, as rioxarray does).

Coordinates are in the DataArray's CRS units; sizes are input pixels unless named otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine

from geosr.errors import OptionError, RasterError

log = logging.getLogger("geosr.arraylayout")

BAND_NAMES = ("band", "bands", "channel", "channels", "spectral", "wavelength")
Y_NAMES = ("y", "lat", "latitude", "row")
X_NAMES = ("x", "lon", "longitude", "col")
MAX_BANDS_FIRST_GUESS = 16  # a first axis longer than this, with a last of at most 4, looks like (H, W, bands)
RTOL = 1e-6  # coordinates are a regular grid when every centre lies within RTOL of a step of its place
_REMEDY = "drop the coordinate and give the transform (rioxarray: da.rio.write_transform(transform))"


# --- layout ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """The axes of an array that hold its bands, rows (y) and columns (x); band is None for a 2-D array (one band)."""

    band: int | None
    y: int
    x: int

    @property
    def order(self) -> tuple[int, ...]:
        """The axes in (band, y, x) order, or (y, x)."""
        return (self.y, self.x) if self.band is None else (self.band, self.y, self.x)

    def bands_first(self, array: np.ndarray) -> np.ndarray:
        """A (bands, rows, cols) view of ``array`` (no copy)."""
        view = array.transpose(self.order)
        return view[None] if self.band is None else view

    def empty(self, bands: int, rows: int, cols: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """An uninitialised array of ``bands`` x ``rows`` x ``cols`` in this layout, and its (bands, rows, cols)
        view; OptionError for several bands of a 2-D layout."""
        if self.band is None and bands != 1:
            raise OptionError(f"a 2-D array is one band; bands takes [1], not {bands} bands", option="bands")
        shape = [0] * len(self.order)
        shape[self.y], shape[self.x] = rows, cols
        if self.band is not None:
            shape[self.band] = bands
        array = np.empty(shape, dtype)
        return array, self.bands_first(array)


BANDS_FIRST = Layout(0, 1, 2)


def numpy_layout(shape: Sequence[int], band_axis: int | None = None) -> Layout:
    """The layout of a numpy array of ``shape``: (H, W) is one band; (..., ..., ...) has its bands on ``band_axis``
    (negative counts from the end) and its rows before its columns on the other two axes.

    band_axis None takes the first axis, but refuses (RasterError) an array that looks band-last: a first axis
    longer than 16 with a last of at most 4, e.g. an (H, W, 3) image. Raises RasterError for other dimensions,
    OptionError for a band_axis that is not an axis of a 3-D array.
    """
    shape = tuple(int(n) for n in shape)
    if band_axis is not None:
        _check_band_axis(band_axis)
    if len(shape) == 2 and min(shape) >= 1:  # one band, whatever band_axis (one call for 2-D and band-last arrays)
        return Layout(None, 0, 1)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise RasterError(
            f"expected a (bands, height, width) or (height, width) array with at least one pixel, got shape {shape}"
        )
    if band_axis is None:
        if shape[0] > MAX_BANDS_FIRST_GUESS and shape[-1] <= 4:
            raise RasterError(
                f"an array of shape {shape} looks band-last (H, W, {shape[-1]}): pass band_axis=-1, "
                f"or band_axis=0 if its first axis does hold {shape[0]} bands",
                option="band_axis",
            )
        band_axis = 0
    band = int(band_axis) % 3
    y, x = (axis for axis in range(3) if axis != band)
    return Layout(band, y, x)


def _check_band_axis(band_axis: Any) -> None:
    if isinstance(band_axis, bool) or not isinstance(band_axis, (int, np.integer)) or not -3 <= band_axis <= 2:
        raise OptionError(
            f"band_axis {band_axis!r}: expected an axis of a 3-D array, -3..2 (0: bands first, -1: bands last)",
            option="band_axis",
        )


def _role(da: Any, dim: Hashable) -> str | None:
    """'band', 'y', 'x' or None for a dimension: by its name, or (y, x) by the CF attributes rioxarray reads."""
    name = str(dim).lower()
    for role, names in (("band", BAND_NAMES), ("y", Y_NAMES), ("x", X_NAMES)):
        if name in names:
            return role
    attrs = da.coords[dim].attrs if dim in da.coords else {}
    axis, standard = str(attrs.get("axis", "")).upper(), str(attrs.get("standard_name", "")).lower()
    if axis == "X" or standard in ("longitude", "projection_x_coordinate"):
        return "x"
    if axis == "Y" or standard in ("latitude", "projection_y_coordinate"):
        return "y"
    return None


def dataarray_layout(da: Any) -> Layout:
    """The layout of a DataArray of dims (y, x) or (band, y, x), in any order, told by the dimension names.

    Bands: band, bands, channel, channels, spectral or wavelength; rows: y, lat, latitude or row; columns: x, lon,
    longitude or col (any case), or a coordinate with CF's axis or standard_name, as rioxarray finds them. Raises
    RasterError, naming the dims, for dims it cannot tell apart.
    """
    dims = tuple(da.dims)
    roles = [_role(da, dim) for dim in dims]
    wanted = ("band", "y", "x") if len(dims) == 3 else ("y", "x")
    if len(dims) in (2, 3) and sorted(roles, key=str) == sorted(wanted):
        return Layout(roles.index("band") if len(dims) == 3 else None, roles.index("y"), roles.index("x"))
    found = ", ".join(f"{dim!r}: {role or '?'}" for dim, role in zip(dims, roles))
    if len(dims) in (2, 3):
        remedy = f"rename the dims (da.rename({dict(zip(dims, wanted))}))"
    else:
        others = [dim for dim, role in zip(dims, roles) if role is None] or list(dims[:1])
        remedy = f"select one slice of each other dim (da.isel({', '.join(f'{d}=0' for d in others)}))"
    raise RasterError(
        f"cannot tell the bands, rows and columns of a DataArray of dims {dims} ({found}): geosr takes (y, x) or "
        f"(band, y, x) in any order, named {'/'.join(BAND_NAMES)}, {'/'.join(Y_NAMES)} and {'/'.join(X_NAMES)}; "
        f"{remedy}"
    )


# --- georeferencing -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisGrid:
    """One axis of a regular grid: the coordinate of the first pixel's outer edge and the signed pixel size."""

    edge: float
    step: float

    def centres(self, n: int, scale: int = 1) -> np.ndarray:
        """The centres of the ``scale * n`` pixels of size ``step / scale`` over this axis's first ``n`` pixels."""
        return self.edge + (np.arange(scale * n) + 0.5) * (self.step / scale)


@dataclass(frozen=True)
class Grid:
    """A DataArray's pixel grid: its x and y axes (None where neither a coordinate nor a stored transform places
    them) and its affine transform (None unless both are known; rotated only when stored and without 1-D x/y
    coordinates)."""

    x: AxisGrid | None
    y: AxisGrid | None
    transform: Affine | None


def _numbers(values: np.ndarray, name: str) -> np.ndarray:
    """Coordinate values as finite float64; RasterError, naming ``name``, for others (text, dates, NaN)."""
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise RasterError(
            f"the {name} coordinate holds {np.asarray(values).dtype} values, not numbers; {_REMEDY}"
        ) from None
    if not np.isfinite(v).all():
        raise RasterError(f"the {name} coordinate holds NaN or infinite values; {_REMEDY}")
    return v


def regular_axis(values: np.ndarray, name: str) -> tuple[float, float, float]:
    """(first centre, step, tolerance) of pixel centres ``values`` (two or more) on a regular grid.

    The tolerance is RTOL of a step, or a few units of the values' precision where that is coarser (float32
    coordinates). Raises RasterError, naming ``name``, for values that are not numbers, repeat, or lie off an even
    spacing by more than the tolerance (the message gives the worst deviation and where it is).
    """
    v = _numbers(values, name)
    n = v.size
    diffs = np.diff(v)
    if not diffs.any():
        raise RasterError(
            f"the {name} coordinate repeats one value ({float(v[0])!r}) for all {n} pixels: it gives no "
            f"pixel size; give each pixel its own coordinate, or {_REMEDY}"
        )
    same = np.flatnonzero(diffs == 0)
    if same.size:
        i = int(same[0])
        raise RasterError(
            f"the {name} coordinate repeats values ({name}[{i}] == {name}[{i + 1}] == {float(v[i])!r}, "
            f"{same.size} repeat(s)): a regular grid has one value per pixel; give each pixel its own "
            f"coordinate, or {_REMEDY}"
        )
    step = (v[-1] - v[0]) / (n - 1)
    precision = np.asarray(values).dtype if np.asarray(values).dtype.kind == "f" else np.dtype(np.float64)
    tol = max(RTOL * abs(step), 4 * float(np.spacing(np.abs(v).max().astype(precision))))
    deviation = np.abs(v - (v[0] + np.arange(n) * step))
    i = int(deviation.argmax())
    if step == 0 or deviation[i] > tol:
        raise RasterError(
            f"the {name} coordinate is not a regular grid: its {n} values lie off an even spacing of {step:.6g} by "
            f"up to {deviation[i]:.3g} (at {name}[{i}]; {deviation[i] / abs(step or 1):.3g} of a step, tolerance "
            f"{RTOL:g}); resample onto a regular grid (da.interp) or {_REMEDY}"
        )
    return float(v[0]), float(step), tol


def stored_transform(da: Any) -> Affine | None:
    """The transform a DataArray stores, as rioxarray reads it: the grid mapping coordinate's GeoTransform (any
    coordinate's when the grid mapping has none), else a ``transform`` attribute; None without one."""
    mapping = da.encoding.get("grid_mapping", da.attrs.get("grid_mapping", "spatial_ref"))
    holders = [mapping] if mapping in da.coords else []
    holders += [name for name in da.coords if name != mapping]
    for name in holders:
        text = da.coords[name].attrs.get("GeoTransform")
        if text:
            try:
                return Affine.from_gdal(*(float(v) for v in str(text).split()))
            except (TypeError, ValueError):
                raise RasterError(f"the GeoTransform of {name!r} is {text!r}, not six numbers") from None
    if "transform" in da.attrs:
        try:
            return Affine(*(float(v) for v in tuple(da.attrs["transform"])[:6]))
        except (TypeError, ValueError):
            raise RasterError(f"the transform attribute is {da.attrs['transform']!r}, not six numbers") from None
    return None


def _axis_grid(da: Any, dim: Hashable, stored: AxisGrid | None) -> AxisGrid | None:
    """One axis of the grid: from the dimension's coordinate, the stored transform's axis where that agrees or the
    coordinate has one value, None without either."""
    if dim not in da.coords:
        return stored
    values = np.asarray(da.coords[dim].values)
    if values.size == 1:
        if stored is None:
            raise RasterError(
                f"the {dim} coordinate has one value ({values.item()!r}): the pixel size along {dim} "
                "is unknown; write the transform (rioxarray: da.rio.write_transform(transform)) or "
                "give two pixels or more"
            )
        centre = float(_numbers(values, str(dim))[0])  # rioxarray's rule: the coordinate is the pixel's centre
        return AxisGrid(centre - stored.step / 2, stored.step)
    first, step, tol = regular_axis(values, str(dim))
    if stored is None:
        return AxisGrid(first - step / 2, step)
    if abs(stored.step - step) > tol:
        log.info(
            "the stored transform's pixel size along %s is %r, its coordinate's %r (a resampled array?): the "
            "coordinate places the pixels",
            dim,
            stored.step,
            step,
        )
        return AxisGrid(first - step / 2, step)
    if abs(stored.edge + stored.step / 2 - first) <= tol:
        return stored  # the same grid, with the stored transform's exact numbers
    return AxisGrid(first - stored.step / 2, stored.step)  # a subset: its first centre, the stored pixel size


def dataarray_grid(da: Any, layout: Layout) -> Grid:
    """The pixel grid of a DataArray of ``layout`` (from dataarray_layout), checked: RasterError for x/y
    coordinates that are not a regular grid (see regular_axis), a single coordinate without a stored transform, or
    1-D coordinates beside a rotated stored transform."""
    ydim, xdim = da.dims[layout.y], da.dims[layout.x]
    stored = stored_transform(da)
    if stored is not None and (stored.b != 0 or stored.d != 0):
        if xdim in da.coords or ydim in da.coords:
            raise RasterError(
                f"the stored transform is rotated ({tuple(stored)[:6]}) but {xdim}/{ydim} have 1-D "
                "coordinates, which cannot describe it; drop the coordinates or the transform"
            )
        return Grid(None, None, stored)
    x = _axis_grid(da, xdim, AxisGrid(stored.c, stored.a) if stored else None)
    y = _axis_grid(da, ydim, AxisGrid(stored.f, stored.e) if stored else None)
    transform = Affine(x.step, 0.0, x.edge, 0.0, y.step, y.edge) if x is not None and y is not None else None
    return Grid(x, y, transform)


def _own_axis(coord: Any, name: str) -> AxisGrid | None:
    """The regular spacing of a 1-D coordinate that is not a dimension's (None, with a log line, without one)."""
    if coord.size < 2:
        log.info("coordinate %s has one value and no spacing; dropped from the result", name)
        return None
    try:
        first, step, _ = regular_axis(np.asarray(coord.values), name)
    except RasterError as exc:
        log.info("coordinate %s dropped from the result: %s", name, exc)
        return None
    return AxisGrid(first - step / 2, step)


def upscaled_coords(da: Any, layout: Layout, grid: Grid, scale: int, bands: Sequence[int] | None) -> dict:
    """The coordinates of ``da`` super-resolved ``scale`` times: the x/y dimension coordinates are the centres of
    the new pixels (from ``grid``), other 1-D coordinates along x or y are refined on their own regular spacing
    (dropped, with a log line, where they have none), coordinates that vary along both are dropped, and the rest
    are kept (the band coordinate picked by ``bands``, 1-based)."""
    import xarray as xr

    ydim, xdim = da.dims[layout.y], da.dims[layout.x]
    band_dim = da.dims[layout.band] if layout.band is not None else None
    coords: dict[Hashable, Any] = {}
    for name, coord in da.coords.items():
        spatial = [d for d in coord.dims if d in (ydim, xdim)]
        if not spatial:
            if bands is not None and band_dim in coord.dims:
                coord = coord.isel({band_dim: [b - 1 for b in bands]})
            coords[name] = coord
            continue
        if len(coord.dims) != 1:
            log.info("coordinate %s varies along more than one of %s; dropped from the result", name, da.dims)
            continue
        dim = coord.dims[0]
        n = da.sizes[dim]
        axis = grid.x if dim == xdim else grid.y
        if name != dim:
            axis = _own_axis(coord, str(name))
            if axis is None:
                continue
        assert axis is not None  # a dimension coordinate makes its axis known (dataarray_grid)
        coords[name] = xr.Variable((dim,), axis.centres(n, scale), attrs=coord.attrs)
    return coords


def upscaled_mask(mask: np.ndarray, layout: Layout, scale: int, bands: Sequence[int] | None) -> np.ndarray:
    """A mask of an array of ``layout`` for its result: the picked ``bands`` (1-based), and every pixel's value
    repeated over its ``scale`` x ``scale`` block of output pixels."""
    if bands is not None and layout.band is not None:
        mask = mask.take([b - 1 for b in bands], axis=layout.band)
    return mask.repeat(scale, axis=layout.y).repeat(scale, axis=layout.x)
