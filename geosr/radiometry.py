"""Radiometry: raster values <-> the model's range [-1, 1], global per-band statistics, nodata masks.

The one owner of this mapping: ``geosr upscale``, ``geosr evaluate`` and the training loader all use a ``Radiometry``
from ``compute_radiometry`` (``geosr.raster.raster_radiometry`` reads the sample it needs), so one raster is mapped
the same way by all three.

- Forward (``Radiometry.to_model``): uint8 maps 0..255 to -1..1. Every other dtype maps one global value range per
  band, [low, high], linearly to -1..1: either robust percentiles (0.05, 99.95) of the valid pixels of a decimated read
  of the whole raster, or an explicit range given by the user. The mapping is never computed per tile, so there are
  no brightness jumps from tile to tile. Values are clipped to [low, high] before they are scaled, so an extreme
  value can neither overflow nor reach the model outside [-1, 1].
- Inverse (``Radiometry.from_model``): model values are clamped to [-1, 1] (a generator's output overshoots a little),
  mapped back, and for integer dtypes rounded to the dtype's grid, so a mapped value never leaves [low, high]: a
  uint16 raster whose minimum is 1200 gives no 0, an all-positive float raster no negative value.
- A band whose sample is one value v (low == high) maps to -1 and back to v exactly, its other values all come back
  as excess (below): a constant band stays constant.
- Excess (``Radiometry.excess``, ``restore_excess``): what the forward clip to [low, high] takes from a valid input
  pixel (its value minus the clipped one) is added back to the output pixels over it, so the input's brightest and
  darkest pixels are not lost to the percentiles, and an output stays within its input's minimum and maximum.
- Rounding to an integer grid is half away from zero (``round_half_away``: 0.5 -> 1, 2.5 -> 3, -0.5 -> -1), the rule
  of MATLAB's integer conversion, which the evaluation protocol and the bicubic degradation (``geosr.resize``) follow
  as well.
- Invalid pixels (``valid_mask``): the nodata value, alpha 0, internal masks, NaN and +-Inf, and float values of
  magnitude ``EXTREME`` (1e30) or more, such as the -3.4e38 fill of float32 rasters written without a declared
  nodata. They take no part in the statistics and are replaced by a per-band fill value (the mean of the valid
  pixels) before the model sees them, so they cannot leak into valid pixels.

Arithmetic is float32 where that is exact enough (uint8, int8, uint16, int16 and float32 values of moderate range)
and float64 otherwise (32-bit integers, float64, or ranges beyond 1e30), so no value overflows and numpy raises no
warning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

MODEL_RANGE = (-1.0, 1.0)
PERCENTILES = (0.05, 99.95)
SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
EXTREME = 1e30  # float values at or beyond this magnitude are fill values, not measurements
_FLOAT32_EXACT = ("uint8", "int8", "uint16", "int16", "float32")
# raster dtypes of _FLOAT32_EXACT -> the torch dtype that holds them (uint16 only where this PyTorch has it)
_TORCH_DTYPES = {"uint8": "uint8", "int8": "int8", "int16": "int16", "float32": "float32", "uint16": "uint16"}
_CHUNK = 2**18  # values mapped per pass by Radiometry.from_model_tensor: 1 MiB of float32, within a CPU's L2 cache


def _tensor_dtype(dtype: str, device):
    """The torch dtype that holds raster values of ``dtype`` on ``device``: the same dtype where this PyTorch and
    device have it (and can cast float32 to it), else int32 for integers and float64 for floats (exact either way)."""
    import torch

    target = getattr(torch, _TORCH_DTYPES.get(dtype, ""), None)
    if target is not None:
        try:
            torch.zeros(1, device=device).to(target)
            return target
        except (RuntimeError, NotImplementedError, TypeError):  # a cast this device or PyTorch lacks (uint16)
            pass
    return torch.int32 if np.dtype(dtype).kind in "iu" else torch.float64


def dtype_range(dtype: str | np.dtype) -> tuple[float, float]:
    """The representable (min, max) of a numeric dtype."""
    dt = np.dtype(dtype)
    info = np.iinfo(dt) if dt.kind in "iu" else np.finfo(dt)
    return float(info.min), float(info.max)


def integer_range(dtype: str | np.dtype) -> tuple[float, float] | None:
    """(min, max) of an integer dtype, whose values are rounded and clipped to it; None for floats."""
    return dtype_range(dtype) if np.dtype(dtype).kind in "iu" else None


def round_half_away(x):
    """Round half away from zero (0.5 -> 1, 2.5 -> 3, -0.5 -> -1), the rule of MATLAB's integer conversion.

    x: a float numpy array (rounded in place and returned) or a torch tensor (a new tensor is returned).
    """
    if isinstance(x, np.ndarray):
        sign = np.sign(x)
        np.abs(x, out=x)
        x += 0.5
        np.floor(x, out=x)
        x *= sign
        return x
    return x.sign() * (x.abs() + 0.5).floor()


def to_dtype_grid(x, dtype: str | np.dtype):
    """Float values -> on ``dtype``'s grid: clipped to its range, rounded half away for integers.

    x: a numpy array (changed in place and returned) or a torch tensor (clipped in place; the rounded tensor is
    returned)."""
    if isinstance(x, np.ndarray):
        np.clip(x, *dtype_range(dtype), out=x)
    else:
        x.clamp_(*dtype_range(dtype))
    if np.dtype(dtype).kind in "iu":
        x = round_half_away(x)
    return x


ExcessPoints = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # band, row, column, value


@dataclass(frozen=True)
class Radiometry:
    """A linear map per band from raster values to the model's range: x -> 2 (x - low) / (high - low) - 1.

    dtype: the raster's dtype; low, high: per band, in raster units (equal for a constant band); fill: per band, in
    model units, the value given to invalid pixels; method: how low and high were found, in words (output tags).
    """

    dtype: str
    low: tuple[float, ...]
    high: tuple[float, ...]
    fill: tuple[float, ...]
    method: str

    def __post_init__(self) -> None:
        if not len(self.low) == len(self.high) == len(self.fill):
            raise ValueError("low, high and fill need one value per band")
        for lo, hi in zip(self.low, self.high):
            if not (np.isfinite(lo) and np.isfinite(hi) and hi >= lo):
                raise ValueError(f"empty value range {lo}..{hi}")

    @property
    def bands(self) -> int:
        return len(self.low)

    def _work(self) -> type:
        """float32 where it holds the dtype's values and the range exactly enough, else float64."""
        wide = max(max(abs(v) for v in self.low), max(abs(v) for v in self.high)) >= EXTREME
        return np.float32 if self.dtype in _FLOAT32_EXACT and not wide else np.float64

    def _coeffs(self, bands, work: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-band (b, 1, 1) low, high and 2 / (high - low) in ``work``; the quotient computed in float64, 0 for a
        constant band (low == high), whose values then all map to -1."""
        lo = np.asarray(self.low, np.float64)[bands][:, None, None]
        hi = np.asarray(self.high, np.float64)[bands][:, None, None]
        k = np.divide(2.0, hi - lo, out=np.zeros_like(lo), where=hi > lo)
        return lo.astype(work), hi.astype(work), k.astype(work)

    def to_model(
        self, data: np.ndarray, valid: np.ndarray | None = None, bands=slice(None), dtype: type = np.float32
    ) -> np.ndarray:
        """Raster values (b, h, w) -> model values in [-1, 1] (float32, or ``dtype``); invalid pixels get the fill.

        valid: (b, h, w) bool, None when every pixel is valid. bands: which of this mapping's bands ``data`` holds (an
        index array or slice), all by default. Values are clipped to [low, high] before they are scaled.
        """
        work = np.float64 if np.dtype(dtype) == np.float64 else self._work()
        lo, hi, k = self._coeffs(bands, work)
        x = data.astype(work)  # a copy, then in place
        np.clip(x, lo, hi, out=x)
        x -= lo
        x *= k
        x -= work(1.0)
        np.clip(x, *MODEL_RANGE, out=x)
        if valid is not None:
            fill = np.asarray(self.fill, work)[bands][:, None, None]
            np.copyto(x, np.broadcast_to(fill, x.shape), where=~valid)
        return x.astype(dtype, copy=False)

    def from_model(self, values: np.ndarray, bands=slice(None)) -> np.ndarray:
        """Model values (b, h, w) -> raster values in this mapping's dtype.

        Values are clamped to [-1, 1] first, so the result stays within [low, high]; integers are rounded half away
        from zero. This is the one inverse mapping: every caller gets the clamp.
        """
        work = self._work()
        if not isinstance(values, np.ndarray):  # a torch tensor (geosr.strips: on the model's device)
            if work is np.float32:
                return self.to_host(self.from_model_tensor(values, bands))
            values = values.cpu().numpy()
        lo, hi, _ = self._coeffs(bands, work)
        x = values.astype(work)  # a copy, then in place: one temporary only
        np.clip(x, *MODEL_RANGE, out=x)
        x += work(1.0)
        x *= (hi - lo) / work(2.0)
        x += lo
        np.clip(x, lo, hi, out=x)  # float rounding of the line above must not leave the range
        return to_dtype_grid(x, self.dtype).astype(self.dtype)

    @property
    def maps_tensors(self) -> bool:
        """Whether ``from_model_tensor`` serves this mapping (float32 arithmetic, see ``_work``)."""
        return self._work() is np.float32

    def from_model_tensor(self, values, bands=slice(None)):
        """``from_model`` of a float32 tensor, on its device with the numpy path's float32 operations (the same values,
        bit for bit). Returns a tensor there in the raster's dtype, or (where this device or PyTorch lacks it) the
        same values in int32 / float64; ``to_host`` makes the array of it. Only for mappings with ``maps_tensors``.

        The rows are mapped a few at a time in one scratch buffer (each operation runs in the CPU's cache instead of
        making a pass over memory); operations that cannot change a value are left out: the clip to the dtype's range
        where [low, high] lies within it, and for values that are not negative the sign of the rounding half away
        from zero (it is then floor(x + 0.5))."""
        import torch

        lo, hi, _ = self._coeffs(bands, np.float32)
        device = values.device
        lo_t, hi_t = (torch.from_numpy(v).to(device) for v in (lo, hi))
        k = torch.from_numpy((hi - lo) / np.float32(2.0)).to(device)
        dmin, dmax = dtype_range(self.dtype)
        clip_dtype = not (lo.min() >= dmin and hi.max() <= dmax)
        integer = np.dtype(self.dtype).kind in "iu"
        signed = not (lo.min() >= 0 or np.dtype(self.dtype).kind == "u")  # values < 0 possible after the clips
        out = torch.empty(values.shape, dtype=_tensor_dtype(self.dtype, device), device=device)
        b, h, w = values.shape
        step = max(1, min(h, _CHUNK // max(1, b * w)))  # rows per pass
        scratch = torch.empty((b, step, w), dtype=torch.float32, device=device)
        for r0 in range(0, h, step):
            x = scratch[:, : min(step, h - r0)]
            x.copy_(values[:, r0 : r0 + step])
            x.clamp_(*MODEL_RANGE)
            x += 1.0
            x *= k
            x += lo_t
            x.clamp_(lo_t, hi_t)  # np.clip with per-band bounds: max with low, then min with high
            if clip_dtype:
                x.clamp_(dmin, dmax)
            if integer and signed:
                x.copy_(round_half_away(x))
            elif integer:
                x += 0.5
                x.floor_()
            out[:, r0 : r0 + step] = x
        return out

    def to_host(self, mapped) -> np.ndarray:
        """The array, in the raster's dtype, of a tensor from ``from_model_tensor`` (copied off a GPU)."""
        import torch

        try:
            out = mapped.cpu().numpy()
        except (RuntimeError, TypeError):  # a dtype numpy cannot take from this PyTorch (uint16): exact in int32
            out = mapped.to(torch.int32).cpu().numpy()
        return out.astype(self.dtype, copy=False)

    def excess(self, data: np.ndarray, valid: np.ndarray | None = None, bands=slice(None)) -> ExcessPoints | None:
        """What the clip to [low, high] of ``to_model`` takes from raster values (b, h, w), at the few valid pixels
        beyond the range: (band, row, column, data - clip(data)) arrays; None where it takes nothing (always for
        uint8, whose range is 0..255). ``restore_excess`` gives it back to the output (``upsampled_points``), so that
        an input's brightest and darkest values are not lost to the percentiles.
        """
        if self.dtype == "uint8":
            return None
        work = self._work()
        lo, hi, _ = self._coeffs(bands, work)
        beyond = (data < lo) | (data > hi)  # NaN compares false
        if data.dtype.kind == "f":
            beyond &= np.abs(data) < EXTREME  # fill values are no measurements
        if valid is not None:
            beyond &= valid
        if not beyond.any():
            return None
        b, i, j = np.nonzero(beyond)
        x = data[b, i, j].astype(work)
        x -= np.clip(x, lo[b, 0, 0], hi[b, 0, 0])
        return b, i, j, x

    def fill_values(self, bands=slice(None)) -> np.ndarray:
        """The fill of each band in raster units, on the dtype's grid (float64, (b,))."""
        fill = np.asarray(self.fill, np.float64)[bands][:, None, None]
        return self.from_model(fill, bands).astype(np.float64)[:, 0, 0]

    def fill_invalid(self, data: np.ndarray, valid: np.ndarray | None, bands=slice(None)) -> np.ndarray:
        """Replace invalid pixels of raster values (b, h, w), in place, by ``fill_values``; returns ``data``.

        For callers that transform the raster values before mapping them (the training and evaluation degradation):
        the filled image stays on the dtype's grid, and its invalid pixels map to the fill (up to that rounding).
        """
        if valid is not None and not valid.all():
            fill = self.fill_values(bands).astype(data.dtype)[:, None, None]
            np.copyto(data, np.broadcast_to(fill, data.shape), where=~valid)
        return data

    def describe(self) -> str:
        """A JSON description for the output's tags."""
        return json.dumps(
            {
                "method": self.method,
                "low": [_num(v) for v in self.low],
                "high": [_num(v) for v in self.high],
                "model_range": list(MODEL_RANGE),
            }
        )


def upsampled_points(points: ExcessPoints, scale: int, origin: tuple[int, int], shape: tuple[int, int]) -> ExcessPoints:
    """``Radiometry.excess`` of input pixels -> the output pixels their nearest upsampling by ``scale`` covers, in a
    block of ``shape`` whose first pixel is output pixel ``origin`` (in the frame of the points' rows and columns
    times the scale): (band, row, column, value), rows and columns within the block, only those inside it."""
    b, i, j, v = points
    dy, dx = np.divmod(np.arange(scale * scale), scale)
    rows = (i * scale)[:, None] + dy - origin[0]
    cols = (j * scale)[:, None] + dx - origin[1]
    keep = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    n = keep.sum(axis=1)
    return np.repeat(b, n), rows[keep], cols[keep], np.repeat(v, n)


def restore_excess(out: np.ndarray, points: ExcessPoints, dtype: str) -> np.ndarray:
    """Add the excess at ``points`` (``upsampled_points``) to output values ``out`` (b, h, w) in ``dtype``, in place: an
    integer dtype rounded half away from zero and kept within the dtype's range. Returns ``out``."""
    b, r, c, v = points
    if len(v):
        out[b, r, c] = to_dtype_grid(out[b, r, c].astype(np.float64) + v, dtype).astype(dtype)
    return out


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def compute_radiometry(
    sample: np.ndarray,
    valid: np.ndarray,
    dtype: str,
    value_range: tuple[float, float] | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
) -> Radiometry:
    """The global mapping of a raster from a decimated sample of it.

    sample: (bands, h, w) values read from the whole raster at reduced resolution; valid: same shape, bool (see
    ``valid_mask``); only valid values enter the statistics. value_range: (min, max) for every band instead of
    percentiles (ignored for uint8, which is always 0..255). Bands without a single valid sample get the dtype's range
    (integers) or 0..1 (floats). Statistics are computed in float64. Raises ValueError for an unsupported dtype or an
    empty or non-finite value range.
    """
    if np.dtype(dtype).name not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {dtype}; supported: {', '.join(SUPPORTED_DTYPES)}")
    n = sample.shape[0]
    if np.dtype(dtype) == np.uint8:
        low, high, method = [0.0] * n, [255.0] * n, "uint8: 0..255 maps linearly to -1..1"
    elif value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"value range {lo:g}..{hi:g} is not finite; give finite MIN and MAX")
        if not hi > lo:
            raise ValueError(f"value range {lo:g}..{hi:g} is empty; give MIN < MAX")
        low, high = [lo] * n, [hi] * n
        method = f"value range {lo:g}..{hi:g} (given) maps linearly to -1..1 in every band"
    else:
        low, high = [], []
        for b in range(n):
            v = sample[b][valid[b]].astype(np.float64)
            if v.size == 0:
                lo, hi = (0.0, 1.0) if np.dtype(dtype).kind == "f" else dtype_range(dtype)
            else:
                lo, hi = (float(p) for p in np.percentile(v, percentiles))
            low.append(lo)  # lo == hi: a constant band (see Radiometry)
            high.append(hi)
        method = (
            f"per band, percentiles {percentiles[0]:g}..{percentiles[1]:g} of a decimated read of the whole raster "
            "map linearly to -1..1"
        )
    fill = []
    for b in range(n):
        v = sample[b][valid[b]].astype(np.float64)
        mean = float(v.mean()) if v.size else (low[b] + high[b]) / 2
        span = high[b] - low[b]  # 0: a constant band, whose fill is -1 as its values are
        fill.append(float(np.clip(2 * (mean - low[b]) / span - 1, *MODEL_RANGE)) if span > 0 else -1.0)
    return Radiometry(str(np.dtype(dtype)), tuple(low), tuple(high), tuple(fill), method)


def valid_mask(data: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Per-band validity (b, h, w) bool: GDAL's masks (nodata value, alpha, internal mask) and, for floats, finite
    values of magnitude below ``EXTREME``.

    masks: the (b, h, w) uint8 band masks from rasterio's ``read_masks`` (0 invalid), or None when all are valid.
    """
    valid = np.ones(data.shape, bool) if masks is None else masks > 0
    if data.dtype.kind == "f":
        valid &= np.abs(data) < EXTREME  # False for NaN and +-Inf as well
    return valid


def keep_off_nodata(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """Move valid output values that equal ``nodata`` to the nearest other value, in place, so they stay valid.

    At the low end of an integer range the value moves up by one, at the high end down by one, elsewhere up;
    floats move to the next representable value.
    """
    if nodata is None or np.isnan(nodata):
        return values
    hit = values == nodata
    if not hit.any():
        return values
    if values.dtype.kind in "iu":
        lo, hi = dtype_range(values.dtype)
        values[hit] = nodata - 1 if nodata >= hi else nodata + 1
    else:
        values[hit] = np.nextafter(values.dtype.type(nodata), values.dtype.type(np.inf))
    return values
