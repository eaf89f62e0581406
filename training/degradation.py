"""How LR training inputs are made from HR patches: the degradation the model learns to invert.

LR = MATLAB-style bicubic downsampling with antialiasing (``geosr.resize``), computed in the image's own units and,
for integer images, rounded half away from zero and clipped to the dtype's range after each pass, exactly as MATLAB's
``imresize`` treats a uint8 array. An LR training patch is therefore bit-identical to the LR image the evaluation
protocol makes from the same HR pixels: a real LR image would be stored on the same integer grid. Both patches are then
mapped to the model's range by the image's ``geosr.radiometry.Radiometry``, as ``geosr upscale`` maps a raster.
"""

from __future__ import annotations

import torch

from geosr.radiometry import integer_range
from geosr.resize import downscale


def bicubic_lr(hr: torch.Tensor, scale: int, dtype: str) -> torch.Tensor:
    """The LR of an HR patch (..., H, W) in image units (float), on the grid of ``dtype`` (e.g. 'uint8').

    H and W should be multiples of ``scale`` (the LR is then exactly H/scale x W/scale).
    """
    return downscale(hr, scale, integer_range=integer_range(dtype))
