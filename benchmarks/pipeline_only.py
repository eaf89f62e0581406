"""The pipeline's own speed: `upscale_raster` with a stand-in model that costs almost nothing.

    python benchmarks/pipeline_only.py [--size 1024] [--tile 64] [--overlap 16] [--batch 16] [--repeats 2]

On a GPU the model is fast enough that the CPU side of the pipeline (reading, normalising, blending, the consistency
projection, rounding, writing) sets the pace; this measures that side alone, on any machine. The stand-in maps each
tile to its nearest-neighbour x4 enlargement (a bandwidth-bound op, about a tenth of the time here), so the figure is
an upper bound of end-to-end speed whatever the model. It prints output megapixels per second with and without the
consistency correction, and the functions that take the most time (cProfile) in the run with the correction.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench import make_synthetic  # noqa: E402

from geosr.inference import UpscaleOptions, load_predictor, upscale_raster  # noqa: E402


class StandIn(torch.nn.Module):
    """Nearest-neighbour enlargement by the scale: the model's shapes at almost none of its cost."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024, help="input side in pixels (3-band uint8 synthetic)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="geosr-pipeline-"))
    src = make_synthetic(tmp / "in.tif", args.size)
    predictor = load_predictor(None, scale=args.scale, device="cpu", precision="fp32")
    predictor = dataclasses.replace(predictor, model=StandIn(args.scale))
    out_mpx = (args.scale * args.size) ** 2 / 1e6
    print(f"{args.size}^2 x 3 uint8 input, x{args.scale}, tile {args.tile} overlap {args.overlap} batch "
          f"{args.batch}, torch threads {torch.get_num_threads()}:")
    for consistency in (True, False):
        options = UpscaleOptions(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, overwrite=True,
                                 consistency=consistency)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            upscale_raster(src, tmp / "out.tif", predictor, options)
            times.append(time.perf_counter() - t0)
        best = min(times)
        print(f"  consistency {'on ' if consistency else 'off'}: {best:.2f} s (best of {args.repeats}), "
              f"{out_mpx / best:.2f} output Mpx/s")
    prof = cProfile.Profile()
    prof.enable()
    upscale_raster(src, tmp / "out.tif", predictor, UpscaleOptions(tile_size=args.tile, overlap=args.overlap,
                                                                    batch_size=args.batch, overwrite=True))
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(8)
    print("\n".join(line for line in text.getvalue().splitlines() if "/" in line or "ncalls" in line))


if __name__ == "__main__":
    main()
