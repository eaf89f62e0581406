"""How much the rounding of the protocol's LR moves the bicubic baseline: geosr's against HSENet's data script.

    python benchmarks/lr_rounding.py [--data ../shared/data/ucmerced] [--split val]

geosr makes the LR as MATLAB's ``imresize`` does on a uint8 image: each pass (rows, then columns) rounds to the uint8
grid, and the bicubic baseline is upsampled from that LR, on the same grid. HSENet's ``generate_mod_LR_bic.m``
converts to double first (``im2double``), resizes without rounding, saves the LR rounded once, and saves a bicubic
image upsampled from the unrounded LR, rounded once. This prints, per scale, the mean and largest difference of
the bicubic PSNR and SSIM (HSENet's minus geosr's) over the split, and the share of LR pixels that differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from geosr.datasets import find_images
from geosr.evaluation import bicubic, load_pair
from geosr.metrics import psnr, ssim
from geosr.radiometry import round_half_away
from geosr.resize import downscale, upscale

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucmerced"


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return round_half_away(x).clamp(0, 255)


def compare(pair, scale: int) -> tuple[float, float, float]:
    """(PSNR difference, SSIM difference, share of LR pixels that differ) of HSENet's pipeline against geosr's."""
    hr = pair.hr
    ours = bicubic(pair, scale)
    lr_double = downscale(hr, scale)  # no rounding between the passes
    theirs = _to_uint8(upscale(lr_double, scale))
    dp = float(psnr(theirs, hr, crop=scale) - psnr(ours, hr, crop=scale))
    ds = float(ssim(theirs, hr, crop=scale) - ssim(ours, hr, crop=scale))
    return dp, ds, float((_to_uint8(lr_double) != pair.lr).double().mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="val")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    items = find_images(args.data, args.split).items
    print(f"{args.data} ({args.split} split, {len(items)} images); HSENet's minus geosr's bicubic baseline")
    for scale in (2, 4):
        rows = np.array([compare(load_pair(item, scale), scale) for item in items])
        dp, ds, share = rows[:, 0], rows[:, 1], rows[:, 2]
        print(
            f"x{scale}: PSNR {dp.mean():+.4f} dB (largest {dp.max():+.4f}), SSIM {ds.mean():+.5f} (largest "
            f"{ds.max():+.5f}); LR pixels that differ {100 * share.mean():.1f} %"
        )


if __name__ == "__main__":
    main()
