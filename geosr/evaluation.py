"""Evaluation with the protocol of the UC Merced super-resolution literature (see ``geosr.metrics``).

For every HR image of the split:

1. the HR image is read through ``geosr.datasets`` (invalid pixels, if any, take the fill values of the image's
   ``geosr.radiometry.Radiometry``) and cropped (bottom and right) to a multiple of the scale;
2. LR = MATLAB-style bicubic downsampling with antialiasing of that HR (``geosr.resize``), rounded and clipped to the
   image's integer grid after each pass as MATLAB does for uint8 data; the paired layout uses its own LR image
   instead (the HR is then cropped to scale x the LR size);
3. the bicubic baseline = MATLAB-style bicubic upsampling of the LR to the HR size, on the same integer grid;
4. the model's output is what ``geosr upscale`` writes for an LR raster with those pixels: the LR mapped to the model's
   range by the image's radiometry (the one upscale computes for the HR file), run through upscale's
   ``geosr.predictor.Predictor`` in tiles blended exactly as upscale blends them (``geosr.tiling.tile_array``, the
   model card's tile size and overlap), corrected for consistency with the LR as upscale corrects it
   (``geosr.consistency``, unless switched off), mapped back by the same radiometry (clamped to the model's range,
   rounded half away from zero to the image's integer grid);
5. PSNR and SSIM against the HR with ``scale`` pixels cropped from every border, on 0..255.

uint8 images are measured on their own values. Other dtypes are mapped linearly, per band, so that the range of
their radiometry (the range the model sees: percentiles of the image) spans 0..255, without rounding or clipping: their
PSNR/SSIM are relative to that range, not to the dtype's, while the gain in PSNR over bicubic does not depend on the
mapping at all. Images are measured whole: one with nodata, transparent or masked pixels (of the HR, or of a paired
LR), or a band bicubic reproduces exactly (a flat band: an infinite PSNR), is left out with a warning.

The results' report (per-class means, the text table, the JSON/CSV file, a card's metrics from it) is
``geosr.evaluation_report``; its names are importable from here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from geosr.checkpoint import ModelCard
from geosr.consistency import residual
from geosr.datasets import ImageItem, check_bands, image_info, image_radiometry, read_image_valid
from geosr.errors import DataError
from geosr.evaluation_report import (
    ImageResult,
    Report,
    card_metrics,
    format_table,
    summarise,
    write_report,
)
from geosr.limits import default_overlap
from geosr.metrics import psnr, ssim
from geosr.plan import band_groups
from geosr.predictor import Predictor
from geosr.radiometry import Radiometry, integer_range, restore_excess, upsampled_points
from geosr.resize import downscale, upscale
from geosr.rowstream import project_rows
from geosr.tiling import tile_array
from geosr.uncertainty import error_map, measure, with_spread

__all__ = [  # the report's names (geosr.evaluation_report) too, where they have always been imported from
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_TILE_SIZE",
    "ImageResult",
    "Outputs",
    "Pair",
    "Report",
    "bicubic",
    "card_metrics",
    "check_size",
    "evaluate_images",
    "format_table",
    "left_out",
    "load_pair",
    "model_predictor",
    "summarise",
    "super_resolve",
    "write_report",
]

log = logging.getLogger("geosr")

# The tiling of a model whose card is not at hand: a card's own defaults. Callers with a card pass its values.
DEFAULT_TILE_SIZE = ModelCard.tile_size
DEFAULT_BATCH_SIZE = 8  # tiles per model call, as geosr upscale's default


@dataclass
class Pair:
    """One HR/LR pair in the image's own units (float64 tensors (C, H, W) and (C, H/s, W/s)) and its radiometry."""

    item: ImageItem
    hr: torch.Tensor
    lr: torch.Tensor
    radiometry: Radiometry
    invalid: int = 0  # pixels of the HR (and of a paired LR) that are nodata, transparent or masked

    @property
    def dtype(self) -> str:
        return self.radiometry.dtype

    @property
    def integer(self) -> tuple[float, float] | None:
        return integer_range(self.dtype)

    def to_255(self, x: torch.Tensor) -> torch.Tensor:
        """Image values -> the metrics' 0..255 (identity for uint8): the radiometry's range of each band to 0..255, in
        float64, not clipped (a value beyond the range keeps its whole error; a constant band keeps its units)."""
        if self.dtype == "uint8":
            return x.double()
        low = torch.tensor(self.radiometry.low, dtype=torch.float64)[:, None, None]
        span = torch.tensor(self.radiometry.high, dtype=torch.float64)[:, None, None] - low
        return (x.double() - low) * (255.0 / torch.where(span > 0, span, 1.0))


def load_pair(item: ImageItem, scale: int, bands: Sequence[int] | None = None) -> Pair:
    """Read ``item`` and make its LR image by the protocol (or read the paired layout's LR)."""
    info = image_info(item.path)
    bands = list(bands) if bands is not None else list(range(1, info.count + 1))
    check_bands(item.path, info.count, bands)
    radiometry = image_radiometry(item.path, bands)
    hr_values, hr_valid = read_image_valid(item.path, bands, radiometry=radiometry)
    hr = torch.from_numpy(hr_values.astype(np.float64))
    lr_path = item.lr_path(scale)
    invalid = 0
    if lr_path is not None:
        lr_values, lr_valid = read_image_valid(lr_path, bands, radiometry=radiometry)
        lr = torch.from_numpy(lr_values.astype(np.float64))
        invalid = _invalid(lr_valid)
        h, w = lr.shape[-2] * scale, lr.shape[-1] * scale
        if hr.shape[-2] < h or hr.shape[-1] < w:
            raise DataError(
                f"{lr_path}: LR image of {lr.shape[-1]}x{lr.shape[-2]} pixels is too large for x{scale} of its HR "
                f"image {item.path} ({hr.shape[-1]}x{hr.shape[-2]}); is it the right scale?"
            )
        hr = hr[:, :h, :w]
    else:
        check_size(item.path, hr.shape[-1], hr.shape[-2], scale)
        h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale
        hr = hr[:, :h, :w]
        lr = downscale(hr, scale, integer_range=integer_range(info.dtype))
    invalid += _invalid(hr_valid, hr.shape[-2], hr.shape[-1])
    return Pair(item, hr, lr, radiometry, invalid)


def check_size(path, width: int, height: int, scale: int) -> None:
    """Raise DataError for an HR image too small to measure at x``scale`` (its LR made by the protocol)."""
    if min(height // scale, width // scale) < 8:
        raise DataError(
            f"{path}: {width}x{height} pixels is too small for x{scale}, which measures images of at least "
            f"{scale * 8}x{scale * 8} pixels; remove it from the data"
        )


def _invalid(valid: np.ndarray | None, h: int | None = None, w: int | None = None) -> int:
    """Pixels (of the top-left ``h`` x ``w``) where any band is invalid."""
    return 0 if valid is None else int((~valid[:, :h, :w].all(axis=0)).sum())


def left_out(pair: Pair, psnr_bicubic: float | None = None) -> str | None:
    """Why the protocol cannot measure ``pair`` (it measures whole images), or None: pixels without data, or a band
    that bicubic reproduces exactly (``psnr_bicubic`` infinite)."""
    if pair.invalid:
        return (
            f"{pair.invalid} of its pixels are nodata, transparent or masked, and the protocol measures whole "
            "images: left out (evaluate tiles without nodata)"
        )
    if psnr_bicubic is not None and not np.isfinite(psnr_bicubic):
        return "a band is flat (bicubic gives it back exactly: an infinite PSNR): nothing to measure, left out"
    return None


def bicubic(pair: Pair, scale: int) -> torch.Tensor:
    """The bicubic baseline: MATLAB-style upsampling of the LR to the HR size, on the image's integer grid."""
    return upscale(pair.lr, scale, integer_range=pair.integer)


def model_predictor(
    model: torch.nn.Module, device: torch.device, precision: str = "fp32", self_ensemble: bool = False
) -> Predictor:
    """``model`` (on ``device``, in eval mode) as the ``geosr.predictor.Predictor`` that ``geosr upscale`` runs: the
    same forward pass, memory format and precision (and self-ensemble, if asked). Its card is a stand-in built from
    the model's config (the predictor needs only the scale and the bands from it)."""
    return Predictor(
        model, ModelCard(config=model.config), torch.device(device), precision, "evaluation", self_ensemble
    )


def super_resolve(
    model: torch.nn.Module,
    x: torch.Tensor | np.ndarray,
    *,
    device: torch.device,
    precision: str = "fp32",
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    consistency: bool = True,
) -> torch.Tensor:
    """Run ``model`` on x (C, h, w) in [-1, 1] as ``geosr upscale`` runs it on a raster; (C', s*h, s*w) float32 on the
    CPU. tile_size, overlap: input pixels (overlap None: the card default, a quarter of the tile); consistency: the
    correction of ``geosr.consistency`` (then the output is also clamped to [-1, 1])."""
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    overlap = default_overlap(tile_size) if overlap is None else overlap
    y = tile_array(
        model_predictor(model, device, precision),
        x,
        scale=model.config.scale,
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
    )
    if consistency:
        y = project_rows(np.clip(y, -1, 1), x, model.config.scale)
    return torch.from_numpy(y)


def _run_groups(
    run, x: np.ndarray, channels: int, spread: bool, scale: int, tile: int, overlap: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The blended output of x's bands (and their spread, when ``run`` is ``with_spread``'s) in the model's band
    groups, as geosr upscale runs them (``geosr.plan.band_groups``: 1 band through a 3-channel model as (1, 1, 1),
    4 bands as (1, 2, 3), (4, 4, 4)); of each group the outputs of its real bands."""
    groups, real = band_groups(x.shape[0], channels)
    means, spreads = [], []
    for group, n in zip(groups, real):
        y = tile_array(run, x[list(group)], scale=scale, tile_size=tile, overlap=overlap, batch_size=batch_size)
        if spread:  # mean and spread, stacked (geosr.uncertainty.with_spread)
            y, sd = np.split(y, 2)
            spreads.append(sd[:n])
        means.append(y[:n])

    def joined(parts: list[np.ndarray]) -> np.ndarray:  # one group (the usual case): no copy
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return joined(means), (joined(spreads) if spreads else None)


@dataclass
class Outputs:
    """What evaluating one image produced, in the image's own units (for saving images and previews)."""

    pair: Pair
    bicubic: torch.Tensor
    sr: torch.Tensor | None


def evaluate_images(
    items: Sequence[ImageItem],
    scale: int,
    model: torch.nn.Module | None = None,
    *,
    bands: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    consistency: bool = True,
    self_ensemble: bool = False,
    uncertainty_k: float | None = None,
    on_image: Callable[[ImageResult, Outputs], None] | None = None,
) -> list[ImageResult]:
    """PSNR/SSIM of ``model`` (if given) and of bicubic on every image, by the protocol in the module docstring.

    tile_size, overlap: the tiling of the model's output in LR pixels, the model card's (``card.tile_size``,
    ``card.overlap``) to measure what ``geosr upscale`` produces with that model; None takes DEFAULT_TILE_SIZE and a
    quarter of the tile. consistency: correct the output as upscale does (``geosr.consistency``). self_ensemble: the
    mean over the 8 flips and transposes of each tile (``geosr.predictor.geometric_ensemble``). uncertainty_k: also
    measure upscale's error map with this k (geosr.uncertainty; implies the self-ensemble). on_image: called after
    each image with its result and outputs (progress, saving images).
    Raises DataError for unreadable images, ValueError for a model of another scale or an unusable tiling.
    """
    device = torch.device(device)
    if model is not None and model.config.scale != scale:
        raise ValueError(f"the model is x{model.config.scale}, the evaluation x{scale}")
    tile = DEFAULT_TILE_SIZE if tile_size is None else tile_size
    overlap = default_overlap(tile) if overlap is None else overlap
    predict = model_predictor(model, device, precision, self_ensemble) if model is not None else None
    results = []
    for item in items:
        pair = load_pair(item, scale, bands)
        if (why := left_out(pair)) is not None:
            log.warning("%s: %s", item.path, why)
            continue
        hr255 = pair.to_255(pair.hr)
        bic = bicubic(pair, scale)
        bic255 = pair.to_255(bic)
        psnr_bicubic = float(psnr(bic255, hr255, crop=scale))
        if (why := left_out(pair, psnr_bicubic)) is not None:
            log.warning("%s: %s", item.path, why)
            continue
        res = ImageResult(
            name=item.name,
            label=item.label,
            path=str(item.path),
            height=int(pair.hr.shape[-2]),
            width=int(pair.hr.shape[-1]),
            psnr_bicubic=psnr_bicubic,
            ssim_bicubic=float(ssim(bic255, hr255, crop=scale)),
        )
        sr = None
        if predict is not None:
            x = pair.radiometry.to_model(pair.lr.numpy())
            run = predict if uncertainty_k is None else with_spread(predict)  # mean and spread, blended alike
            y, spread = _run_groups(
                run, x, model.config.in_channels, uncertainty_k is not None, scale, tile, overlap, batch_size
            )
            if consistency:
                y = project_rows(np.clip(y, -1, 1), x, scale)
            if y.shape != tuple(pair.hr.shape):
                raise DataError(
                    f"{item.path}: the model gives {tuple(y.shape)} for an HR image of {tuple(pair.hr.shape)}; "
                    "does the model take this many bands?"
                )
            out = pair.radiometry.from_model(y)
            excess = pair.radiometry.excess(pair.lr.numpy())
            if excess is not None:  # what the clip to the range took, given back as geosr upscale gives it
                restore_excess(out, upsampled_points(excess, scale, (0, 0), out.shape[1:]), pair.radiometry.dtype)
            sr = torch.from_numpy(out.astype(np.float64))
            sr255 = pair.to_255(sr)
            res.psnr = float(psnr(sr255, hr255, crop=scale))
            res.ssim = float(ssim(sr255, hr255, crop=scale))
            res.residual = residual(sr.numpy(), pair.lr.numpy(), scale)
            if spread is not None:
                res.uncertainty = measure(error_map(spread, pair.radiometry, uncertainty_k), sr, pair.hr, bic, scale)
        results.append(res)
        if on_image is not None:
            on_image(res, Outputs(pair, bic, sr))
    return results
