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

uint8 images are measured on their own values. Other dtypes are mapped to 0..255 by the per-band range of their
radiometry (the range the model sees), without rounding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import rasterio
import torch

from geosr.checkpoint import ModelCard
from geosr.consistency import project_rows, residual
from geosr.datasets import REMEDY, ImageItem, check_bands, image_info, image_radiometry, read_image
from geosr.errors import DataError
from geosr.limits import default_overlap
from geosr.metrics import psnr, ssim
from geosr.predictor import Predictor
from geosr.radiometry import Radiometry, integer_range, round_half_away
from geosr.raster import open_raster, quiet_georeferencing
from geosr.resize import downscale, upscale
from geosr.tiling import tile_array

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

    @property
    def dtype(self) -> str:
        return self.radiometry.dtype

    @property
    def integer(self) -> tuple[float, float] | None:
        return integer_range(self.dtype)

    def to_255(self, x: torch.Tensor) -> torch.Tensor:
        """Image values -> 0..255 for the metrics (identity for uint8): the radiometry's range, in float64."""
        if self.dtype == "uint8":
            return x.double()
        y = self.radiometry.to_model(x.double().numpy(), dtype=np.float64)  # clipped to the range
        y += 1.0
        y *= 127.5
        return torch.from_numpy(y)


def load_pair(item: ImageItem, scale: int, bands: Sequence[int] | None = None) -> Pair:
    """Read ``item`` and make its LR image by the protocol (or read the paired layout's LR)."""
    info = image_info(item.path)
    bands = list(bands) if bands is not None else list(range(1, info.count + 1))
    check_bands(item.path, info.count, bands)
    radiometry = image_radiometry(item.path, bands)
    hr = torch.from_numpy(read_image(item.path, bands, radiometry=radiometry).astype(np.float64))
    lr_path = item.lr_path(scale)
    if lr_path is not None:
        lr = torch.from_numpy(read_image(lr_path, bands, radiometry=radiometry).astype(np.float64))
        h, w = lr.shape[-2] * scale, lr.shape[-1] * scale
        if hr.shape[-2] < h or hr.shape[-1] < w:
            raise DataError(
                f"{lr_path}: LR image of {lr.shape[-1]}x{lr.shape[-2]} pixels is too large for x{scale} of its HR "
                f"image {item.path} ({hr.shape[-1]}x{hr.shape[-2]}); is it the right scale?"
            )
        hr = hr[:, :h, :w]
    else:
        h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale
        if h < scale * 8 or w < scale * 8:
            raise DataError(f"{item.path}: {hr.shape[-1]}x{hr.shape[-2]} pixels is too small for x{scale}")
        hr = hr[:, :h, :w]
        lr = downscale(hr, scale, integer_range=integer_range(info.dtype))
    return Pair(item, hr, lr, radiometry)


def bicubic(pair: Pair, scale: int) -> torch.Tensor:
    """The bicubic baseline: MATLAB-style upsampling of the LR to the HR size, on the image's integer grid."""
    return upscale(pair.lr, scale, integer_range=pair.integer)


def model_predictor(model: torch.nn.Module, device: torch.device, precision: str = "fp32",
                    self_ensemble: bool = False) -> Predictor:
    """``model`` (on ``device``, in eval mode) as the ``geosr.predictor.Predictor`` that ``geosr upscale`` runs: the
    same forward pass, memory format and precision (and self-ensemble, if asked). Its card is a stand-in built from
    the model's config (the predictor needs only the scale and the bands from it)."""
    return Predictor(model, ModelCard(config=model.config), torch.device(device), precision, "evaluation",
                     self_ensemble)


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
        model_predictor(model, device, precision), x, scale=model.config.scale, tile_size=tile_size,
        overlap=overlap, batch_size=batch_size,
    )
    if consistency:
        y = project_rows(np.clip(y, -1, 1), x, model.config.scale)
    return torch.from_numpy(y)


@dataclass
class ImageResult:
    """The metrics of one image (model metrics are None when only bicubic was measured)."""

    name: str
    label: str
    path: str
    height: int
    width: int
    psnr_bicubic: float
    ssim_bicubic: float
    psnr: float | None = None
    ssim: float | None = None
    residual: float | None = None  # mean |LR - D(SR)| in the image's units: how far the output is from consistent


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
    on_image: Callable[[ImageResult, Outputs], None] | None = None,
) -> list[ImageResult]:
    """PSNR/SSIM of ``model`` (if given) and of bicubic on every image, by the protocol in the module docstring.

    tile_size, overlap: the tiling of the model's output in LR pixels, the model card's (``card.tile_size``,
    ``card.overlap``) to measure what ``geosr upscale`` produces with that model; None takes DEFAULT_TILE_SIZE and a
    quarter of the tile. consistency: correct the output as upscale does (``geosr.consistency``). self_ensemble: the
    mean over the 8 flips and transposes of each tile (``geosr.predictor.geometric_ensemble``). on_image: called
    after each image with its result and outputs (progress, saving images).
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
        hr255 = pair.to_255(pair.hr)
        bic = bicubic(pair, scale)
        bic255 = pair.to_255(bic)
        res = ImageResult(
            name=item.name,
            label=item.label,
            path=str(item.path),
            height=int(pair.hr.shape[-2]),
            width=int(pair.hr.shape[-1]),
            psnr_bicubic=float(psnr(bic255, hr255, crop=scale)),
            ssim_bicubic=float(ssim(bic255, hr255, crop=scale)),
        )
        sr = None
        if predict is not None:
            x = pair.radiometry.to_model(pair.lr.numpy())
            y = tile_array(predict, x, scale=scale, tile_size=tile, overlap=overlap, batch_size=batch_size)
            if consistency:
                y = project_rows(np.clip(y, -1, 1), x, scale)
            if y.shape != tuple(pair.hr.shape):
                raise DataError(
                    f"{item.path}: the model gives {tuple(y.shape)} for an HR image of {tuple(pair.hr.shape)}; "
                    "does the model take this many bands?"
                )
            sr = torch.from_numpy(pair.radiometry.from_model(y).astype(np.float64))
            sr255 = pair.to_255(sr)
            res.psnr = float(psnr(sr255, hr255, crop=scale))
            res.ssim = float(ssim(sr255, hr255, crop=scale))
            res.residual = residual(sr.numpy(), pair.lr.numpy(), scale)
        results.append(res)
        if on_image is not None:
            on_image(res, Outputs(pair, bic, sr))
    return results


METRICS = ("psnr_bicubic", "ssim_bicubic", "psnr", "ssim", "residual")


def summarise(results: Sequence[ImageResult]) -> dict[str, dict[str, float | int | None]]:
    """Per-class and overall means: {label: {'images': n, 'psnr': ..., ...}, ..., 'mean': {...}} (mean over images)."""

    def mean_of(rs: Sequence[ImageResult]) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {"images": len(rs)}
        for m in METRICS:
            vals = [getattr(r, m) for r in rs]
            out[m] = None if not vals or any(v is None for v in vals) else float(np.mean(vals))
        return out

    by_label: dict[str, list[ImageResult]] = {}
    for r in results:
        by_label.setdefault(r.label, []).append(r)
    table = {label: mean_of(rs) for label, rs in sorted(by_label.items())}
    table["mean"] = mean_of(results)
    return table


@dataclass
class Report:
    """A whole evaluation: settings, per-image results and the summary."""

    data: str
    layout: str
    split: str
    scale: int
    model: str | None
    results: list[ImageResult]
    protocol: str = field(
        default=(
            "PSNR: mean over channels of per-channel PSNR on 0..255; SSIM: Gaussian 11/1.5 window, valid, mean over "
            "channels; `scale` pixels cropped at each border; LR by MATLAB-style bicubic downsampling with "
            "antialiasing of the HR cropped to a multiple of the scale (paired layouts: their own LR); the model's "
            "output made in blended tiles as geosr upscale makes it, rounded to the image's integer grid"
        )
    )
    consistency: bool | None = None  # whether the model's output was corrected for consistency (None: no model)
    self_ensemble: bool | None = None  # whether each tile was the mean over its 8 flips and transposes (None: no model)

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        return summarise(self.results)

    def to_dict(self) -> dict:
        return {
            "data": self.data,
            "layout": self.layout,
            "split": self.split,
            "scale": self.scale,
            "model": self.model,
            "protocol": self.protocol,
            "consistency": self.consistency,
            "self_ensemble": self.self_ensemble,
            "summary": self.summary(),
            "images": [asdict(r) for r in self.results],
        }


def format_table(summary: dict[str, dict[str, float | int | None]], with_model: bool = True) -> str:
    """The summary as a fixed-width text table, one row per class and a mean row; ``residual`` is the mean absolute
    difference between the LR and the bicubic downsampling of the model's output, in the image's units."""

    def num(v, fmt):
        if v is None:
            return "-"
        return "inf" if isinstance(v, float) and math.isinf(v) else format(v, fmt)

    width = max([len("class")] + [len(k) for k in summary])
    head = f"{'class':<{width}}  {'images':>6}  {'bicubic PSNR':>12}  {'SSIM':>6}"
    if with_model:
        head += f"  {'model PSNR':>10}  {'SSIM':>6}  {'gain dB':>7}  {'residual':>8}"
    lines = [head, "-" * len(head)]
    for label, row in summary.items():
        if label == "mean":
            lines.append("-" * len(head))
        line = (
            f"{label or '(root)':<{width}}  {row['images']:>6}  {num(row['psnr_bicubic'], '.3f'):>12}  "
            f"{num(row['ssim_bicubic'], '.4f'):>6}"
        )
        if with_model:
            gain = None
            if row["psnr"] is not None and row["psnr_bicubic"] is not None:
                gain = row["psnr"] - row["psnr_bicubic"]
            line += (f"  {num(row['psnr'], '.3f'):>10}  {num(row['ssim'], '.4f'):>6}  {num(gain, '+.3f'):>7}"
                     f"  {num(row.get('residual'), '.3f'):>8}")
        lines.append(line)
    return "\n".join(lines)


def to_uint8_image(x: torch.Tensor, pair: Pair) -> np.ndarray:
    """Image values (C, H, W) -> uint8 for a preview (the 0..255 mapping of the metrics, rounded half away)."""
    y = pair.to_255(x).numpy().astype(np.float64)  # a copy
    return round_half_away(np.clip(y, 0, 255, out=y)).astype(np.uint8)


def preview_strip(outputs: Outputs, size: int = 160, zoom: int = 2, gap: int = 4) -> np.ndarray:
    """A side-by-side crop HR | bicubic | model (uint8, (3 or C, h, w)) of the image's centre for a person to look at.

    size: crop side in HR pixels (smaller images are shown whole); zoom: nearest-neighbour enlargement; gap: white
    pixels between the panels.
    """
    pair = outputs.pair
    panels = [pair.hr, outputs.bicubic] + ([outputs.sr] if outputs.sr is not None else [])
    _, h, w = pair.hr.shape
    ch, cw = min(size, h), min(size, w)
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    crops = [to_uint8_image(p[:, r0 : r0 + ch, c0 : c0 + cw], pair) for p in panels]
    if crops[0].shape[0] > 3:
        crops = [c[:3] for c in crops]
    crops = [c.repeat(zoom, axis=1).repeat(zoom, axis=2) for c in crops]
    white = np.full((crops[0].shape[0], ch * zoom, gap), 255, np.uint8)
    pieces = []
    for i, c in enumerate(crops):
        if i:
            pieces.append(white)
        pieces.append(c)
    return np.concatenate(pieces, axis=2)


def save_image(path: str | Path, data: np.ndarray, like: str | Path | None = None) -> Path:
    """Write (C, H, W) ``data`` as an image: PNG for uint8 with 1-4 bands and no georeferencing, else GeoTIFF.

    like: the source image; its CRS and transform are copied (the SR output covers the same ground as the HR, on
    the HR pixel grid, cropped at the bottom and right to a multiple of the scale). Returns the path written.
    """
    path = Path(path)
    crs = transform = None
    if like is not None:
        with open_raster(like, DataError, REMEDY) as src:
            if src.crs is not None:
                crs, transform = src.crs, src.transform
    png = data.dtype == np.uint8 and data.shape[0] <= 4 and crs is None
    path = path.with_suffix(".png" if png else ".tif")
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="PNG" if png else "GTiff", width=data.shape[2], height=data.shape[1],
                   count=data.shape[0], dtype=data.dtype)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if not png:
        profile.update(compress="deflate", tiled=data.shape[1] >= 256 and data.shape[2] >= 256)
    with quiet_georeferencing(), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    aux = path.with_name(path.name + ".aux.xml")
    if png and aux.exists():
        aux.unlink()
    return path


def to_dtype(x: torch.Tensor, dtype: str) -> np.ndarray:
    """Image values (already on the dtype's grid for integers) -> a numpy array of ``dtype``."""
    rng = integer_range(dtype)
    y = x.clamp(*rng) if rng is not None else x
    return y.numpy().astype(dtype)
