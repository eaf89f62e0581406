"""Does geosr upscale keep a raster's brightest and darkest values? Input against output, band by band.

    python benchmarks/extremes.py [--model degan-x2] [--threads 2] [RASTER ...]

Upscales each raster (default: the non-uint8 rasters of ../shared/data/geotiff that geosr's tests use: 16-bit RGB,
16-bit with nodata, 13-band float32 Sentinel-2) with a bundled model in fp32 on the CPU at its card's settings, and
prints per band the valid input's minimum and maximum, the output's, the radiometry's range (GEOSR_RADIOMETRY: the
0.05/99.95 percentiles) and the share of valid input pixels beyond it. Valid: GDAL's masks (nodata, alpha). Before
geosr gave back what the clip to that range takes (geosr.radiometry.Radiometry.excess), an output's extremes were the
percentiles; run it on a source tree of each version (PYTHONPATH=TREE, from outside the repository) to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_GEOTIFFS as DATA  # noqa: E402

import geosr  # noqa: E402
from geosr.inference import UpscaleOptions, load_predictor, upscale_raster  # noqa: E402

RASTERS = ["rio-color/rgb16.tif", "rio-tiler/scene_band1.tif", "eo-learn/s2_l1c_reference_scene0.tif"]


def band_rows(src: Path, out: Path) -> list[str]:
    """One line per band: valid input range, output range, the radiometry's range, the share beyond it."""
    with rasterio.open(src) as a, rasterio.open(out) as b:
        x, valid = a.read(masked=False).astype(np.float64), a.read_masks() > 0
        y, kept = b.read(masked=False).astype(np.float64), b.read_masks() > 0
        r = json.loads(b.tags()["GEOSR_RADIOMETRY"])
    valid &= np.isfinite(x)
    kept &= np.isfinite(y)
    rows = []
    for i in range(x.shape[0]):
        v, w = x[i][valid[i]], y[i][kept[i]]
        lo, hi = r["low"][i], r["high"][i]
        beyond = float(((v < lo) | (v > hi)).mean()) if v.size else 0.0
        rows.append(
            f"  band {i + 1:2d}: input {v.min():.6g}..{v.max():.6g}, output {w.min():.6g}..{w.max():.6g}, "
            f"range {lo:.6g}..{hi:.6g}, beyond it {beyond:.3%} of the valid input"
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rasters", nargs="*", type=Path, help="rasters (default: RASTERS of ../shared/data/geotiff)")
    p.add_argument("--model", default="degan-x2")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rasters = args.rasters or [DATA / rel for rel in RASTERS]
    predictor = load_predictor(args.model, device="cpu", precision="fp32")
    print(f"geosr from {Path(geosr.__file__).parent}, {args.model} fp32, {args.threads} threads")
    with tempfile.TemporaryDirectory(prefix="geosr-extremes-") as work:
        for src in rasters:
            out = Path(work) / f"{src.stem}_sr.tif"
            upscale_raster(src, out, predictor, UpscaleOptions())
            print(f"{src.name}:")
            print("\n".join(band_rows(src, out)))


if __name__ == "__main__":
    main()
