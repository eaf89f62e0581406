"""Radiometry: raster values <-> the model's range [-1, 1], global per-band statistics, nodata masks.

uint8 maps 0..255 to -1..1. Every other dtype maps one global value range per band, [low, high], linearly to -1..1:
either robust percentiles of a decimated read of the whole raster or an explicit range given by the user. The mapping
is never computed per tile, so there are no brightness jumps from tile to tile. Output values are mapped back with the
inverse and clipped to the dtype.

Invalid pixels (nodata value, alpha 0, internal mask, NaN) are replaced by a per-band fill value (the mean of the
valid pixels) before the model sees them, so they cannot leak into valid pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

MODEL_RANGE = (-1.0, 1.0)
PERCENTILES = (0.05, 99.95)
SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def dtype_range(dtype: str | np.dtype) -> tuple[float, float]:
    """The representable (min, max) of a numeric dtype."""
    dt = np.dtype(dtype)
    info = np.iinfo(dt) if dt.kind in "iu" else np.finfo(dt)
    return float(info.min), float(info.max)


@dataclass(frozen=True)
class Radiometry:
    """A linear map per band from raster values to the model's range: x -> 2 (x - low) / (high - low) - 1.

    dtype: the raster's dtype; low, high: per band, in raster units; fill: per band, in model units, the value given
    to invalid pixels; method: how low and high were found, in words (written in the output's tags).
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
            if not hi > lo:
                raise ValueError(f"empty value range {lo}..{hi}")

    @property
    def bands(self) -> int:
        return len(self.low)

    def _coeffs(self, bands) -> tuple[np.ndarray, np.ndarray]:
        lo = np.asarray(self.low, np.float64)[bands][:, None, None]
        hi = np.asarray(self.high, np.float64)[bands][:, None, None]
        return lo, hi

    def to_model(self, data: np.ndarray, valid: np.ndarray | None = None, bands=slice(None)) -> np.ndarray:
        """Raster values (b, h, w) -> float32 model values in [-1, 1]; invalid pixels get the fill value.

        bands: which of this mapping's bands ``data`` holds (an index array or slice), all by default.
        """
        lo, hi = self._coeffs(bands)
        x = (data.astype(np.float32) - lo.astype(np.float32)) * (2.0 / (hi - lo)).astype(np.float32) - 1.0
        np.clip(x, *MODEL_RANGE, out=x)
        if valid is not None:
            fill = np.asarray(self.fill, np.float32)[bands][:, None, None]
            np.copyto(x, np.broadcast_to(fill, x.shape), where=~valid)
        return x

    def from_model(self, values: np.ndarray, bands=slice(None)) -> np.ndarray:
        """Model values (b, h, w) -> raster values in this mapping's dtype, rounded and clipped to the dtype."""
        dt = np.dtype(self.dtype)
        # float32 holds every uint8/int16/uint16 value exactly; wider dtypes are computed in float64
        work = np.float64 if dt.itemsize > 2 and dt != np.float32 else np.float32
        lo, hi = (c.astype(work) for c in self._coeffs(bands))
        x = values.astype(work)  # a copy, then in place: one temporary only
        x += work(1.0)
        x *= (hi - lo) / work(2.0)
        x += lo
        if dt.kind in "iu":
            np.rint(x, out=x)
            np.clip(x, *dtype_range(dt), out=x)
        return x.astype(dt)

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

    sample: (bands, h, w) values read from the whole raster at reduced resolution; valid: same shape, bool.
    value_range: (min, max) for every band instead of percentiles (ignored for uint8, which is always 0..255).
    Bands without a single valid sample get the dtype's range (integers) or 0..1 (floats).
    Raises ValueError for an unsupported dtype or an empty value range.
    """
    if np.dtype(dtype).name not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {dtype}; supported: {', '.join(SUPPORTED_DTYPES)}")
    n = sample.shape[0]
    if np.dtype(dtype) == np.uint8:
        low, high, method = [0.0] * n, [255.0] * n, "uint8: 0..255 maps linearly to -1..1"
    elif value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
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
            if not hi > lo:  # a constant band: any range that holds its value
                hi = lo + 1.0
            low.append(lo)
            high.append(hi)
        method = (
            f"per band, percentiles {percentiles[0]:g}..{percentiles[1]:g} of a decimated read of the whole raster "
            "map linearly to -1..1"
        )
    fill = []
    for b in range(n):
        v = sample[b][valid[b]].astype(np.float64)
        mean = float(v.mean()) if v.size else (low[b] + high[b]) / 2
        fill.append(float(np.clip(2 * (mean - low[b]) / (high[b] - low[b]) - 1, *MODEL_RANGE)))
    return Radiometry(str(np.dtype(dtype)), tuple(low), tuple(high), tuple(fill), method)


def valid_mask(data: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Per-band validity (b, h, w) bool: GDAL's masks (nodata value, alpha, internal mask) and finite (not NaN/Inf).

    masks: the (b, h, w) uint8 band masks from rasterio's ``read_masks`` (0 invalid), or None when all are valid.
    """
    valid = np.ones(data.shape, bool) if masks is None else masks > 0
    if data.dtype.kind == "f":
        valid &= np.isfinite(data)
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
