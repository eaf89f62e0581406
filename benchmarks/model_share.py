"""The share of an upscale's wall time spent inside the model's forward calls.

    python benchmarks/model_share.py [--model geosr/weights/degan-x4.safetensors] [--precision bf16] [--size 256]
    python benchmarks/model_share.py --files 64 --size 64      # a folder of 64 small tiles, as `geosr upscale DIR`

Runs `upscale_raster` once on a synthetic size x size GeoTIFF (after a warm-up run), or with ``--files N`` the batch
of a folder of N such files (``upscale_batch``, what `geosr upscale DIR -o DIR` runs), with the model's calls timed
inside the pipeline; what is left (opening, planning, reading, normalising, blending, writing, verifying, waiting) is
the pipeline's own cost. One process, measured within one run, so it does not depend on the machine's drift as a
ratio of two runs does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import make_synthetic  # noqa: E402

from geosr.batch import plan_outputs, upscale_batch  # noqa: E402
from geosr.inference import Predictor, UpscaleOptions, load_predictor, upscale_raster  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "geosr/weights/degan-x4.safetensors"))
    p.add_argument("--precision", default="bf16")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--files", type=int, default=0, help="a folder of this many size x size files (0: one file)")
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
    if args.files:
        folder = tmp / "tiles"
        folder.mkdir()
        for i in range(args.files):
            (folder / f"tile{i:04d}.tif").write_bytes(src.read_bytes())
        pairs = plan_outputs([folder], tmp / "out")
        t0 = time.perf_counter()
        summary = upscale_batch(pairs, predictor, options)
        total = time.perf_counter() - t0
        assert summary.count("done") == args.files, summary.line()
        what = f"a folder of {args.files} files of {args.size}^2"
    else:
        t0 = time.perf_counter()
        upscale_raster(src, tmp / "out.tif", predictor, options)
        total = time.perf_counter() - t0
        what = f"{args.size}^2 input"
    print(f"{Path(args.model).name} {args.precision} {what}, tile {predictor.card.tile_size} overlap "
          f"{predictor.card.overlap}, batch {args.batch}: {total:.2f} s, of which {spent[0]:.2f} s in the model "
          f"({spent[1]} tiles): {spent[0] / total:.1%}")

if __name__ == "__main__":
    main()
