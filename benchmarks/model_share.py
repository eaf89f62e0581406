"""The share of an upscale's wall time spent inside the model's forward calls.

    python benchmarks/model_share.py [--model geosr/weights/degan-x4.safetensors] [--precision bf16] [--size 256]

Runs `upscale_raster` once on a synthetic size x size GeoTIFF (after a warm-up run) with the model's calls timed
inside the pipeline; what is left (reading, normalising, blending, writing, waiting) is the pipeline's own cost. One
process, measured within one run, so it does not depend on the machine's drift as a ratio of two runs does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import make_synthetic  # noqa: E402

from geosr.inference import Predictor, UpscaleOptions, load_predictor, upscale_raster  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "geosr/weights/degan-x4.safetensors"))
    p.add_argument("--precision", default="bf16")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="geosr-share-"))
    src = make_synthetic(tmp / "in.tif", args.size)
    predictor = load_predictor(args.model, device="cpu", precision=args.precision)
    spent = [0.0, 0]
    call = Predictor.__call__

    def timed(self, tiles):
        t0 = time.perf_counter()
        out = call(self, tiles)
        spent[0] += time.perf_counter() - t0
        spent[1] += len(tiles)
        return out

    Predictor.__call__ = timed
    options = UpscaleOptions(batch_size=args.batch, overwrite=True)
    upscale_raster(src, tmp / "out.tif", predictor, options)  # warm-up
    spent[:] = [0.0, 0]
    t0 = time.perf_counter()
    upscale_raster(src, tmp / "out.tif", predictor, options)
    total = time.perf_counter() - t0
    print(f"{Path(args.model).name} {args.precision} {args.size}^2 input, tile {predictor.card.tile_size} overlap "
          f"{predictor.card.overlap}: {total:.2f} s, of which {spent[0]:.2f} s in the model ({spent[1]} tiles): "
          f"{spent[0] / total:.1%}")


if __name__ == "__main__":
    main()
