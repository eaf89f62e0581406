"""PSNR and SSIM with the protocol of the UC Merced super-resolution literature (HSENet, TransENet).

- Images are compared on 0..255 (``data_range``); model outputs are first rounded to the image's integer grid
  (``to_image_range``), as a saved 8-bit result would be.
- ``crop`` pixels (the scale factor in the protocol) are removed from every border before measuring.
- PSNR: per channel 10 log10(range^2 / MSE), then the mean over channels (not the PSNR of the pooled MSE). A channel
  with zero error has infinite PSNR, and so has the image.
- SSIM: Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5) normalised to sum 1, C1 = (0.01 range)^2,
  C2 = (0.03 range)^2, population (not sample) statistics, computed only where the window fits inside the image
  ("valid", as MATLAB's ssim reference code and skimage's ``structural_similarity(gaussian_weights=True)`` do); the
  mean of the SSIM map per channel, then the mean over channels.

Everything is computed in float64; inputs are (C, H, W) or (B, C, H, W) tensors and results have shape () or (B,).
"""

from __future__ import annotations

import torch

from geosr.radiometry import round_half_away

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def to_image_range(x: torch.Tensor, data_range: float = 255.0, integer: bool = True) -> torch.Tensor:
    """Model values in [-1, 1] -> 0..data_range, clipped, rounded to integers when ``integer`` (float64; half away
    from zero, geosr's one rounding rule)."""
    y = (x.double() + 1.0) * (data_range / 2.0)
    if integer:
        y = round_half_away(y)
    return y.clamp_(0.0, data_range)


def _prepare(a: torch.Tensor, b: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim not in (3, 4):
        raise ValueError(f"expected (C, H, W) or (B, C, H, W), got {tuple(a.shape)}")
    single = a.ndim == 3
    a, b = (a[None], b[None]) if single else (a, b)
    if crop:
        if min(a.shape[-2:]) <= 2 * crop:
            raise ValueError(f"cannot crop {crop} pixels from each border of a {a.shape[-2]}x{a.shape[-1]} image")
        a = a[..., crop:-crop, crop:-crop]
        b = b[..., crop:-crop, crop:-crop]
    return a.double(), b.double(), single


def psnr_per_channel(a: torch.Tensor, b: torch.Tensor, *, crop: int = 0, data_range: float = 255.0) -> torch.Tensor:
    """PSNR in dB of every channel, shape (C,) or (B, C); inf where the channel is identical."""
    a, b, single = _prepare(a, b, crop)
    mse = ((a - b) ** 2).mean(dim=(-2, -1))  # (B, C)
    out = 10.0 * torch.log10(data_range**2 / mse)  # inf where mse == 0
    return out[0] if single else out


def psnr(a: torch.Tensor, b: torch.Tensor, *, crop: int = 0, data_range: float = 255.0) -> torch.Tensor:
    """The protocol's PSNR in dB: the mean over channels of the per-channel PSNR, shape () or (B,)."""
    return psnr_per_channel(a, b, crop=crop, data_range=data_range).mean(dim=-1)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The 1-D Gaussian of ``size`` taps, normalised to sum 1 (float64); the 2-D window is its outer product."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _valid_matrix(n: int, g: torch.Tensor) -> torch.Tensor:
    """The (n - k + 1, n) banded matrix that filters a length-n signal with g where the window fits."""
    k = g.numel()
    m = torch.zeros(n - k + 1, n, dtype=g.dtype, device=g.device)
    for i in range(k):
        m.diagonal(i).copy_(g[i].expand(n - k + 1))
    return m


def _filter_valid(x: torch.Tensor, mh: torch.Tensor, mw: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of (..., H, W), only where the window fits (valid): two matrix products."""
    return mh @ x @ mw.T


def ssim_per_channel(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    crop: int = 0,
    data_range: float = 255.0,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> torch.Tensor:
    """The mean SSIM of every channel, shape (C,) or (B, C). Images need H, W >= ``window`` after cropping."""
    a, b, single = _prepare(a, b, crop)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {a.shape[-2]}x{a.shape[-1]}")
    g = gaussian_window(window, sigma).to(a.device)
    mh, mw = _valid_matrix(a.shape[-2], g), _valid_matrix(a.shape[-1], g)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, mh, mw), _filter_valid(b, mh, mw)
    var_a = _filter_valid(a * a, mh, mw) - mu_a**2
    var_b = _filter_valid(b * b, mh, mw) - mu_b**2
    cov = _filter_valid(a * b, mh, mw) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    out = (num / den).mean(dim=(-2, -1))  # (B, C)
    return out[0] if single else out


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    crop: int = 0,
    data_range: float = 255.0,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> torch.Tensor:
    """The protocol's SSIM: the mean over channels of the per-channel mean SSIM, shape () or (B,)."""
    return ssim_per_channel(a, b, crop=crop, data_range=data_range, window=window, sigma=sigma).mean(dim=-1)
