"""UC Merced val images with LR inputs worse than the protocol's bicubic: what ``geosr train --degrade`` is for.

    python benchmarks/degraded_val.py --out /tmp/degraded [--data ../shared/data/ucmerced] [--scale 4]
    geosr evaluate -m MODEL -d /tmp/degraded/jpeg75 --split all --scale 4 -o jpeg75.json

The protocol's LR (bicubic with antialiasing, on the uint8 grid) is what every figure of the cards uses. A user's LR
raster comes from other optics and detectors, and archives keep JPEG. Each set here is the whole UC Merced val split
(210 images) in the paired layout (``HR/`` beside ``LR_x<scale>/``), the HR the original, the LR made by one fixed
degradation from ``geosr.training.degradation`` (the same code that makes the training draws):

- ``blur``: the HR blurred by an isotropic Gaussian of sigma 0.4 x scale HR pixels (1.6 at x4), then the bicubic;
- ``noise``: the bicubic LR plus Gaussian noise of 2 grey levels, rounded and clipped to uint8 (seeded per image);
- ``jpeg75``: the bicubic LR through GDAL's JPEG driver at quality 75.

``geosr evaluate`` reads the paired LR and scores the model and bicubic on it against the original HR, so a model
trained with ``--degrade`` and one trained without compare on inputs of each kind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_GEOTIFFS  # noqa: E402

from geosr.datasets import find_images, read_image  # noqa: E402
from geosr.pictures import save_image  # noqa: E402
from geosr.radiometry import to_dtype_grid  # noqa: E402
from geosr.training.degradation import bicubic_lr, blur, gaussian_kernel, jpeg  # noqa: E402

KINDS = ("blur", "noise", "jpeg75")
BLUR_SIGMA_PER_SCALE = 0.4
NOISE_DN = 2.0
JPEG_QUALITY = 75


def degrade(hr: np.ndarray, kind: str, scale: int, seed: int) -> np.ndarray:
    """The LR (uint8) of an HR image (C, H, W uint8, H and W multiples of ``scale``) by ``kind``."""
    x = torch.from_numpy(hr.astype(np.float32))
    if kind == "blur":
        sigma = BLUR_SIGMA_PER_SCALE * scale
        x = blur(x, gaussian_kernel(sigma, sigma, 0.0, int(np.ceil(3 * sigma))))
    lr = bicubic_lr(x, scale, "uint8").numpy()
    if kind == "noise":
        noise = np.random.default_rng(seed).standard_normal(lr.shape) * NOISE_DN
        lr = to_dtype_grid(lr + noise, "uint8")
    lr = lr.astype(np.uint8)
    return jpeg(lr, JPEG_QUALITY) if kind == "jpeg75" else lr


def make(out: Path, data: Path, scale: int, kinds: tuple[str, ...] = KINDS) -> dict[str, int]:
    """Write ``out/<kind>/HR/<class>_<name>.png`` and ``LR_x<scale>/`` for every val image; images per kind."""
    items = find_images(data, "val").items
    for i, item in enumerate(items):  # each image read once, for every kind
        hr = read_image(item.path, [1, 2, 3])
        h, w = (hr.shape[1] // scale) * scale, (hr.shape[2] // scale) * scale
        hr = np.ascontiguousarray(hr[:, :h, :w]).astype(np.uint8)
        name = f"{item.label}_{item.path.stem}.png"
        for kind in kinds:
            save_image(out / kind / "HR" / name, hr)
            save_image(out / kind / f"LR_x{scale}" / name, degrade(hr, kind, scale, seed=i))
    return {kind: len(items) for kind in kinds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--data", type=Path, default=SHARED_GEOTIFFS.parent / "ucmerced", help="the UC Merced folder (its val split)"
    )
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    a = p.parse_args()
    kinds = tuple(k for k in a.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        p.error(f"--kinds: {', '.join(sorted(unknown))} not among {', '.join(KINDS)}")
    for kind, n in make(a.out, a.data, a.scale, kinds).items():
        print(f"{a.out / kind}: {n} HR images and their x{a.scale} LR ({kind})")


if __name__ == "__main__":
    main()
