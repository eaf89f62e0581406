"""Bicubic resizing with the semantics of MATLAB's ``imresize``, in PyTorch.

The super-resolution literature makes its LR images with MATLAB's ``imresize(HR, 1/s, 'bicubic')`` and reports a
"bicubic" baseline made with ``imresize(LR, s, 'bicubic')``. PyTorch's ``interpolate(mode='bicubic')`` differs in three
ways (kernel a = -0.75 instead of -0.5, clamped instead of mirrored borders, and no antialiasing filter unless asked),
so geosr carries its own implementation:

- the Keys cubic kernel with a = -0.5;
- when shrinking (scale < 1) with ``antialias`` (MATLAB's default), the kernel is stretched by 1/scale, so it is a
  low-pass filter of the right width;
- output pixel k (1-based) samples the input at u = k / scale + (1 - 1 / scale) / 2 (pixel centres aligned);
- borders are mirrored with the edge pixel repeated (MATLAB's symmetric padding), weights normalised to sum to 1;
- the output size is ceil(scale * input size);
- the dimension with the smaller scale is resized first (height first on a tie), one dimension at a time;
- integer images (``integer_range``) are rounded half away from zero (``geosr.radiometry.round_half_away``, the one
  rounding rule of geosr) and clipped after each dimension's pass, as MATLAB does for uint8 and uint16 arrays.

Each dimension is a dense (out, in) weight matrix, so resizing is two matrix products; the matrices are cached.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from geosr.radiometry import round_half_away


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


@functools.lru_cache(maxsize=128)
def _weight_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """The (out_len, in_len) float64 matrix that resizes one dimension."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel_width /= scale

        def h(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)

    else:
        h = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input positions, (out, taps)
    w = h(u[:, None] - idx)
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])  # symmetric padding
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    m = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(m, (np.repeat(np.arange(out_len), taps), idx0.ravel()), w.ravel())
    return m


def output_size(in_len: int, scale: float) -> int:
    """MATLAB's output length ceil(scale * in_len), immune to float noise such as 255 * (1/3) = 85.00000000000001."""
    return int(math.ceil(scale * in_len - 1e-9))


def _round_clip(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    # Round half away from zero, as MATLAB's integer conversion does (torch.round rounds half to even).
    return torch.clamp(round_half_away(x), lo, hi)


def imresize(
    x: torch.Tensor,
    scale: float | Sequence[float] | None = None,
    *,
    size: Sequence[int] | None = None,
    antialias: bool = True,
    integer_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Resize the last two dimensions of ``x`` (..., H, W) like MATLAB's ``imresize(x, scale, 'bicubic')``.

    x: a floating-point tensor in any units (it is not rescaled), e.g. (B, C, H, W); computed in x's dtype.
    scale: one factor or (height, width) factors (0.25 shrinks four times); the output is ceil(scale * size).
    size: (out_h, out_w) instead of ``scale``; the scales are then out / in per dimension.
    antialias: widen the kernel when shrinking (MATLAB's default); False gives plain bicubic interpolation.
    integer_range: (min, max) for an image of integers (e.g. (0, 255) for uint8): round half away from zero and
        clip after each dimension's pass, exactly as MATLAB does for integer arrays. None keeps float values.

    Raises ValueError for a non-float tensor, a missing or doubled size specification, or a non-positive scale.
    """
    if not torch.is_floating_point(x) or x.ndim < 2:
        raise ValueError(f"imresize needs a floating-point tensor (..., H, W), got {x.dtype} {tuple(x.shape)}")
    in_h, in_w = x.shape[-2:]
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    if scale is not None:
        sh, sw = (float(scale), float(scale)) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
        if sh <= 0 or sw <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out_h, out_w = output_size(in_h, sh), output_size(in_w, sw)
    else:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"size must be positive, got {tuple(size)}")
        sh, sw = out_h / in_h, out_w / in_w
    mh = torch.from_numpy(_weight_matrix(in_h, out_h, sh, antialias)).to(x.device, x.dtype)
    mw = torch.from_numpy(_weight_matrix(in_w, out_w, sw, antialias)).to(x.device, x.dtype)
    height_first = sh <= sw
    y = x
    for dim in ("h", "w") if height_first else ("w", "h"):
        y = torch.matmul(mh, y) if dim == "h" else torch.matmul(y, mw.T)  # (..., out_h, W) / (..., H, out_w)
        if integer_range is not None:
            y = _round_clip(y, *integer_range)
    return y


def downscale(x: torch.Tensor, factor: int, **kwargs) -> torch.Tensor:
    """``imresize(x, 1 / factor)``: shrink (..., H, W) by an integer factor (H, W multiples of it give H/f, W/f)."""
    return imresize(x, 1.0 / factor, **kwargs)


def upscale(x: torch.Tensor, factor: int, **kwargs) -> torch.Tensor:
    """``imresize(x, factor)``: enlarge (..., h, w) to (..., f*h, f*w); the literature's bicubic baseline."""
    return imresize(x, float(factor), **kwargs)
