"""How LR training inputs are made from HR patches: the degradation the model learns to invert.

LR = MATLAB-style bicubic downsampling with antialiasing (``geosr.resize``), computed in the image's own units and,
for integer images, rounded half away from zero and clipped to the dtype's range after each pass, exactly as MATLAB's
``imresize`` treats a uint8 array. An LR training patch is therefore bit-identical to the LR image the evaluation
protocol makes from the same HR pixels: a real LR image would be stored on the same integer grid. Both patches are then
mapped to the model's range by the image's ``geosr.radiometry.Radiometry``, as ``geosr upscale`` maps a raster.

With ``geosr train --degrade P`` a share P of the patches is made otherwise (``degraded_lr``): the HR blurred by a
random Gaussian (isotropic or not) before the downsampling, Gaussian noise added to the LR, JPEG compression of an
8-bit LR, each drawn at random; the result is put back on the image's grid. The model then meets LR inputs that are
not the protocol's exact bicubic, as users' own sensors give. The HR target and the validation stay as they are.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from geosr.radiometry import integer_range, to_dtype_grid
from geosr.resize import downscale


def bicubic_lr(hr: torch.Tensor, scale: int, dtype: str) -> torch.Tensor:
    """The LR of an HR patch (..., H, W) in image units (float), on the grid of ``dtype`` (e.g. 'uint8').

    H and W should be multiples of ``scale`` (the LR is then exactly H/scale x W/scale).
    """
    return downscale(hr, scale, integer_range=integer_range(dtype))


# --- degradations beyond bicubic (``geosr train --degrade P``) ----------------------------------------------------
# A share P of the patches get an LR made otherwise: a sensor's optics blur more or less than bicubic's kernel, its
# detector adds noise, and archives hold JPEG. The ranges, chosen mild (remote-sensing products are not phone photos):
BLUR_SIGMA = (0.2, 0.6)  # Gaussian blur of the HR before the downsampling; sigma in HR pixels: 0.2 .. 0.6 * scale
BLUR_ANISOTROPIC = 0.5  # share of the blurs with two sigmas and a random orientation
NOISE_SIGMA = (0.002, 0.012)  # Gaussian noise on the LR; sigma as a share of the band's value range (uint8: 0.5-3 DN)
JPEG_QUALITY = (60, 95)  # JPEG compression of the LR, 8-bit images only (3 bands as one YCbCr image, else each band)
CHANCE = {"blur": 0.6, "noise": 0.5, "jpeg": 0.5}  # each independently; a patch drawing none is blurred


def gaussian_kernel(sigma_y: float, sigma_x: float, theta: float, radius: int) -> torch.Tensor:
    """A normalised (2r+1)^2 Gaussian kernel with standard deviations ``sigma_y``, ``sigma_x`` rotated by ``theta``."""
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([sigma_y**2, sigma_x**2], dtype=torch.float64)) @ rot.T
    axis = torch.arange(-radius, radius + 1, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1)  # (k, k, 2): (dy, dx)
    k = torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", grid, torch.linalg.inv(cov), grid))
    return (k / k.sum()).float()


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(C, H, W) convolved band by band with ``kernel`` (k, k), the edges mirrored."""
    r = kernel.shape[-1] // 2
    c = x.shape[0]
    padded = F.pad(x[None], (r, r, r, r), mode="reflect")
    return F.conv2d(padded, kernel.expand(c, 1, -1, -1), groups=c)[0]


@functools.cache
def jpeg_available() -> bool:
    """Whether this GDAL has its JPEG driver (nearly every build); without it the JPEG draws are left out."""
    with rasterio.Env() as env:
        return "JPEG" in env.drivers()


def jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """(C, h, w) uint8 through GDAL's JPEG driver and back: 3 bands as one colour image, others one band at a time."""
    groups = [x] if x.shape[0] == 3 else [x[i : i + 1] for i in range(x.shape[0])]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for g in groups:
            with MemoryFile() as mem:
                with mem.open(
                    driver="JPEG", width=g.shape[2], height=g.shape[1], count=g.shape[0], dtype="uint8", QUALITY=quality
                ) as dst:
                    dst.write(g)
                with mem.open() as src:
                    out.append(src.read())
    return np.concatenate(out)


def degraded_lr(
    hr: torch.Tensor, scale: int, dtype: str, span: Sequence[float], rng: np.random.Generator
) -> torch.Tensor:
    """The LR of an HR patch (C, H, W) in image units through a random blur, noise and JPEG (see the ranges above).

    span: each band's value range (the radiometry's high - low), the unit of the noise. Every random choice comes
    from ``rng``, so a patch is the same whenever it is drawn again (resumed runs, worker processes).
    """
    draw = {name: bool(rng.random() < p) for name, p in CHANCE.items()}
    jpeg_ok = np.dtype(dtype) == np.uint8 and jpeg_available()
    if not (draw["blur"] or draw["noise"] or (draw["jpeg"] and jpeg_ok)):
        draw["blur"] = True
    if draw["blur"]:
        lo, hi = BLUR_SIGMA[0], BLUR_SIGMA[1] * scale
        sy = float(rng.uniform(lo, hi))
        sx = float(rng.uniform(lo, hi)) if rng.random() < BLUR_ANISOTROPIC else sy
        theta = float(rng.uniform(0, math.pi))
        radius = min(math.ceil(3 * max(sy, sx)), min(hr.shape[-2:]) - 1)
        hr = blur(hr, gaussian_kernel(sy, sx, theta, radius))
    lr = bicubic_lr(hr, scale, dtype)
    if draw["noise"]:
        sigma = rng.uniform(*NOISE_SIGMA) * np.asarray(span, np.float64)[:, None, None]
        noise = rng.standard_normal(lr.shape) * sigma
        lr = to_dtype_grid(lr + torch.from_numpy(noise.astype(np.float32)), dtype)
    if draw["jpeg"] and jpeg_ok:
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        lr = torch.from_numpy(jpeg(lr.numpy().astype(np.uint8), quality).astype(np.float32))
    return lr
