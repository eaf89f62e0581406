"""How much to trust a pixel: the error map of ``geosr upscale --uncertainty`` and the measures of its meaning.

The map is the spread of the self-ensemble (``geosr.predictor.ensemble_spread``): the mean over the 8 flips and
transposes of a tile of |pass - mean|, per pixel and band, in the model's range; times the radiometry's scale
(raster units per model unit, (high - low) / 2: 127.5 for uint8) it is in the output's units, and times a
calibration factor k it estimates the expected absolute error of the output there: k is fitted on the UC Merced
train split (NN 00-49, benchmarks/uncertainty_k.py) so that the map's mean equals the mean absolute error of the
output (self-ensemble mean, consistency-corrected, rounded), per model.

Its meaning is measured on held-out images (``geosr evaluate --uncertainty``): the Spearman rank correlation of the
map with the actual absolute error, per pixel and per 8x8 block (means within blocks), against the same for the
gradient magnitude of the bicubic upsampling (the obvious cheap predictor, which the map must beat), and the shares
of pixels whose error is below 1x and 2x the map, against what a Laplace error with mean absolute value = the map
implies (1 - e^-1 = 63.2 %, 1 - e^-2 = 86.5 %). Errors and maps are in the image's units, ``scale`` pixels cropped
at each border as the PSNR protocol crops them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from geosr.checkpoint import ModelCard
from geosr.errors import OptionError
from geosr.predictor import Predictor
from geosr.radiometry import Radiometry
from geosr.raster import check_output_file, check_output_location, damaged_output, same_file

# k per model, fitted on 42 UC Merced train images spread over the classes (python benchmarks/uncertainty_k.py
# --model degan-x4 --images 42: bf16, card tiles, consistency on, 1 thread of the 2-core AMX Xeon; mean |error| 7.60
# and 3.96 grey levels, mean spread 1.016 and 0.556), keyed by the SHA-256 of the model file so that another file of
# the same name never takes its k.
CALIBRATION: dict[str, tuple[str, float]] = {
    "047fe2c5f32d16036ec1c71bdb25075d0008a9ab0c5fed33c6cf5fbdee95b7cf": ("degan-x4", 7.48),
    "a96a1b7bec2fe028270a4919094b4086f91749a10f139a60352b1564d571224b": ("degan-x2", 7.12),
}
DEFAULT_K = 7.48  # for models without a measured k (a card's metrics['uncertainty_k'] wins): the x4 model's
BLOCK = 8  # side of the blocks of the per-block measures, in output pixels
LAPLACE_SHARES = (1 - math.exp(-1), 1 - math.exp(-2))  # P(|e| < 1x, 2x its mean) for a Laplace error
MEASURES = (  # the measures of one image (``measure``), in the order the reports give them
    "spearman_pixel",
    "spearman_block",
    "gradient_spearman_pixel",
    "gradient_spearman_block",
    "within_1x",
    "within_2x",
    "mean_map",
    "mean_error",
)


def calibration_factor(card: ModelCard, sha256: str | None) -> float:
    """The model's k: its card's metrics['uncertainty_k'] if it has one, else the table's, else DEFAULT_K."""
    k = card.metrics.get("uncertainty_k")
    if isinstance(k, (int, float)) and math.isfinite(k) and k > 0:
        return float(k)
    return CALIBRATION.get(sha256 or "", ("", DEFAULT_K))[1]


def units_per_model_unit(radiometry: Radiometry, bands=slice(None)) -> np.ndarray:
    """(b, 1, 1) float32: raster units per model unit of each band, (high - low) / 2."""
    lo = np.asarray(radiometry.low, np.float64)[bands]
    hi = np.asarray(radiometry.high, np.float64)[bands]
    return ((hi - lo) / 2.0).astype(np.float32)[:, None, None]


def error_map(spread: torch.Tensor | np.ndarray, radiometry: Radiometry, k: float, bands=slice(None)) -> np.ndarray:
    """Blended spread (b, h, w) in the model's range -> the expected absolute error in raster units, float32."""
    if isinstance(spread, torch.Tensor):
        spread = spread.to("cpu", torch.float32).numpy()
    out = spread.astype(np.float32)  # a copy
    out *= units_per_model_unit(radiometry, bands) * np.float32(k)
    return out


MAP_SUFFIXES = (".tif", ".tiff")


def check_map_path(path: str | os.PathLike, src, dst: str | os.PathLike) -> Path:
    """The error map's path, from its name alone: a GeoTIFF's, neither the input nor the output (OptionError: a
    usage error on --uncertainty)."""
    path = Path(path)
    if path.suffix.lower() not in MAP_SUFFIXES:
        raise OptionError(f"{path}: the error map is a GeoTIFF; name it .tif", option="--uncertainty")
    if same_file(src, path):
        raise OptionError(f"{path}: is the input; give the error map another path", option="--uncertainty")
    if same_file(path, dst) or Path(os.path.abspath(path)) == Path(os.path.abspath(dst)):
        raise OptionError(f"{path}: is also the output; give the error map another name", option="--uncertainty")
    return path


def check_map_target(options, src: str | os.PathLike, dst: str | os.PathLike, predictor: Predictor) -> Predictor:
    """Check ``options.uncertainty`` (the error map's path, if any) before any work, as the output's path is checked
    (never the input or the output, an existing file only with overwrite, never a folder or a device) and make its
    folder, as the output's is made; returns the predictor that makes the output: with a map, the self-ensemble's
    (its mean is the output). Raises OptionError for a path that is not a GeoTIFF's, the input or the output,
    RasterError for a folder that cannot be made or written in, and what check_output_file raises."""
    if options.uncertainty is None:
        return predictor
    path = check_map_path(options.uncertainty, src, dst)
    check_output_location(path)
    left = f" (left by a run stopped before it wrote {dst}?)" if not Path(dst).exists() else ""
    check_output_file(path, overwrite=options.overwrite, source=src, keep_hint=left)
    path.parent.mkdir(parents=True, exist_ok=True)
    return predictor if predictor.self_ensemble else dataclasses.replace(predictor, self_ensemble=True)


def kept_output_problem(path: str | os.PathLike, src, dst: Path) -> str | None:
    """--skip-existing keeps the existing output ``dst``: what is wrong with its error map ``path`` (missing, or
    damaged), as a one-line message with the remedy, or None when it is there. The map is never made alone: it
    would not be the map of the output kept (made by another run, maybe without the self-ensemble). Raises
    OptionError for a path check_map_path refuses."""
    path = check_map_path(path, src, dst)
    redo = f"delete {dst} to redo both, or rerun with --overwrite instead of --skip-existing"
    if not path.exists():
        return f"{dst}: exists but its error map {path} does not (--skip-existing keeps the output); {redo}"
    problem = damaged_output(path)
    if problem:
        return f"{dst}: exists but its error map {path} is damaged ({problem}); delete it and {redo}"
    return None


def describe_map(k: float) -> str:
    """The error map's GEOSR_UNCERTAINTY tag."""
    return (
        f"expected absolute error of the output, in its units: k = {k:g} x the mean absolute deviation of the 8 "
        "self-ensemble passes from their mean (the output), times the radiometry's scale; NaN where the output "
        "is nodata"
    )


# --- the measures --------------------------------------------------------------------------------------------------


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of the values of ``x`` (flattened), ties given their average rank; float64."""
    x = np.asarray(x).ravel()
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # where each run of equal values starts
    counts = np.diff(np.r_[first, len(xs)])
    out = np.empty(len(xs), np.float64)
    out[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two arrays of equal size (average ranks for ties); NaN when one is constant."""
    ra, rb = ranks(a), ranks(b)
    if ra.size != rb.size:
        raise ValueError(f"arrays of {ra.size} and {rb.size} values")
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / den if den > 0 else float("nan")


def block_means(x: np.ndarray, size: int = BLOCK) -> np.ndarray:
    """(..., H, W) -> (..., H // size, W // size): the mean of each whole size x size block (the rest dropped)."""
    h, w = x.shape[-2] // size * size, x.shape[-1] // size * size
    y = x[..., :h, :w].reshape(*x.shape[:-2], h // size, size, w // size, size)
    return y.mean(axis=(-3, -1))


def gradient_magnitude(x: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (C, H, W) float64: |grad| per band by central differences (one-sided at the edges)."""
    gy, gx = np.gradient(np.asarray(x, np.float64), axis=(-2, -1))
    return np.hypot(gy, gx)


def measure(emap: np.ndarray, sr: np.ndarray, hr: np.ndarray, bicubic: np.ndarray, crop: int) -> dict[str, float]:
    """The measures of one image (module docstring): the map (C, H, W) against |sr - hr|, with the gradient of the
    bicubic upsampling as the baseline; all in the image's units, ``crop`` pixels cropped at each border."""
    c = (slice(None), slice(crop, -crop or None), slice(crop, -crop or None))
    err = np.abs(np.asarray(sr, np.float64) - np.asarray(hr, np.float64))[c]
    m = np.asarray(emap, np.float64)[c]
    grad = gradient_magnitude(bicubic)[c]
    return {
        "spearman_pixel": spearman(m, err),
        "spearman_block": spearman(block_means(m), block_means(err)),
        "gradient_spearman_pixel": spearman(grad, err),
        "gradient_spearman_block": spearman(block_means(grad), block_means(err)),
        "within_1x": float(np.mean(err < m)),
        "within_2x": float(np.mean(err < 2 * m)),
        "mean_map": float(m.mean()),
        "mean_error": float(err.mean()),
    }


def summarise_measures(per_image: Sequence[dict[str, float] | None]) -> dict[str, float | int] | None:
    """The mean of each measure over the images that have them, with 'images' and the Laplace shares to compare."""
    rows = [r for r in per_image if r]
    if not rows:
        return None
    out: dict[str, float | int] = {"images": len(rows)}
    for key in rows[0]:
        out[key] = float(np.nanmean([r[key] for r in rows]))
    out["laplace_within_1x"], out["laplace_within_2x"] = LAPLACE_SHARES
    return out


def format_summary(summary: dict[str, float | int]) -> str:
    """The mean measures as a few lines of text (for geosr evaluate's terminal output)."""
    s = summary
    return "\n".join(
        [
            f"uncertainty map ({s['images']} images): mean {s['mean_map']:.2f}, mean |error| {s['mean_error']:.2f}",
            f"  Spearman with |error|   per pixel   per {BLOCK}x{BLOCK} block",
            f"  map                     {s['spearman_pixel']:9.3f}   {s['spearman_block']:9.3f}",
            f"  bicubic gradient        {s['gradient_spearman_pixel']:9.3f}   {s['gradient_spearman_block']:9.3f}",
            f"  |error| < 1x map: {100 * s['within_1x']:.1f} % (Laplace {100 * LAPLACE_SHARES[0]:.1f} %), "
            f"< 2x map: {100 * s['within_2x']:.1f} % (Laplace {100 * LAPLACE_SHARES[1]:.1f} %)",
        ]
    )


def with_spread(predictor: Predictor):
    """``predictor`` as a callable for geosr.tiling.tile_array that returns the self-ensemble's mean and spread
    stacked on the band axis, (B, 2C, s*h, s*w) float32 numpy, so that both are blended with the same weights."""

    def run(tiles: np.ndarray) -> np.ndarray:
        mean, spread = predictor.run(torch.from_numpy(np.ascontiguousarray(tiles, np.float32)), spread=True)
        return torch.cat([mean, spread], dim=1).cpu().numpy()

    return run
