"""How much overlap a model needs: PSNR of the tiled output at several overlaps on crops of real rasters.

    python benchmarks/overlap.py [--model degan-x4] [--tile 64] [--overlaps 16,8,4] [--size 1024]

UC Merced's val images fit in one tile at the cards' sizes, so they cannot show what tile edges cost; this cuts
size x size HR crops (the centre, rasters with three 8-bit bands) from the real GeoTIFFs of ../shared/data/geotiff,
and runs `geosr evaluate` on them (LR by the training degradation, so each LR crop spans several tiles) once per
overlap. It prints the mean PSNR/SSIM per overlap, the recompute factor (input pixels computed per input pixel),
and the largest per-image PSNR change against the largest overlap. Seams: benchmarks/seams.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import crop_raster  # noqa: E402
from common import SHARED_GEOTIFFS as DATA  # noqa: E402

RASTERS = ["rasterio/RGB.byte.tif", "rasterio/cogeo.tif", "opengeos-data/naip/m_4709963_se_14_1_20180716.tif"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="degan-x4")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--overlaps", default="16,8,4")
    p.add_argument("--size", type=int, default=1024, help="HR crop side")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="geosr-overlap-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> None:
    """The comparison of ``args.overlaps``, its crops and reports in ``tmp``."""
    crops = tmp / "crops"
    crops.mkdir()
    for rel in RASTERS:
        src = args.data / rel
        if src.exists():
            crop_raster(src, crops / f"{src.stem}.tif", args.size)
    overlaps = [int(v) for v in args.overlaps.split(",")]
    results = {}
    for ov in overlaps:
        report = tmp / f"overlap{ov}.json"
        subprocess.run(
            [
                "geosr",
                "-q",
                "evaluate",
                "--data",
                str(crops),
                "--split",
                "all",
                "--scale",
                str(args.scale),
                "--model",
                args.model,
                "--tile-size",
                str(args.tile),
                "--overlap",
                str(ov),
                "-o",
                str(report),
            ],
            check=True,
        )
        r = json.loads(report.read_text())
        stride = args.tile - ov  # tiles start every tile - overlap input pixels
        results[ov] = {
            "mean": r["summary"]["mean"],
            "images": {im["name"]: im["psnr"] for im in r["images"]},
            "recompute": (args.tile / stride) ** 2,
        }
    ref = results[max(overlaps)]
    print(
        f"{args.model}, tile {args.tile}, {len(ref['images'])} HR crops of {args.size}^2 "
        f"({', '.join(sorted(ref['images']))}):"
    )
    for ov in overlaps:
        r = results[ov]
        worst = max(abs(r["images"][k] - ref["images"][k]) for k in ref["images"])
        print(
            f"  overlap {ov:3d}: PSNR {r['mean']['psnr']:.4f} SSIM {r['mean']['ssim']:.5f} (bicubic "
            f"{r['mean']['psnr_bicubic']:.4f}), recompute {r['recompute']:.2f}, largest per-image change "
            f"{worst:.4f} dB"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
