"""How LR training inputs are made from HR patches: the degradation the model learns to invert.

LR = MATLAB-style bicubic downsampling with antialiasing (``geosr.resize``), computed in the image's own units and,
for integer images, rounded half away from zero and clipped to the dtype's range after each pass, exactly as MATLAB's
``imresize`` treats a uint8 array. An LR training patch is therefore bit-identical to the LR image the evaluation
protocol makes from the same HR pixels: a real LR image would be stored on the same integer grid.
"""

from __future__ import annotations

import torch

from geosr.datasets import integer_range
from geosr.resize import downscale


def bicubic_lr(hr: torch.Tensor, scale: int, dtype: str) -> torch.Tensor:
    """The LR of an HR patch (..., H, W) in image units (float), on the grid of ``dtype`` (e.g. 'uint8').

    H and W should be multiples of ``scale`` (the LR is then exactly H/scale x W/scale).
    """
    return downscale(hr, scale, integer_range=integer_range(dtype))


def to_model_range(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Image units -> the model's [-1, 1] with per-band (C, 1, 1) ranges, clipped."""
    return ((x - low) / (high - low) * 2 - 1).clamp_(-1, 1)
