"""The share of an upscale's wall time spent inside the model's forward calls.

    python benchmarks/model_share.py [--model geosr/weights/degan-x4.safetensors] [--precision bf16] [--size 256]
    python benchmarks/model_share.py --files 64 --size 64      # a folder of 64 small tiles, as `geosr upscale DIR`
    python benchmarks/model_share.py --files 64 --size 64 --files-in-flight 4

Runs `upscale_raster` once on a synthetic size x size GeoTIFF (after a warm-up run), or with ``--files N`` the batch
of a folder of N such files (``upscale_batch``, what `geosr upscale DIR -o DIR` runs), with the model's calls timed
inside the pipeline; what is left (opening, planning, reading, normalising, blending, writing, verifying, waiting) is
the pipeline's own cost. One process, measured within one run, so it does not depend on the machine's drift as a
ratio of two runs does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench import make_synthetic  # noqa: E402

from geosr.batch import plan_outputs, upscale_batch  # noqa: E402
from geosr.inference import Predictor, UpscaleOptions, load_predictor, upscale_raster  # noqa: E402


class ModelClock:
    """Times every model call of the pipeline (``Predictor.run``, which ``__call__`` goes through too) while active;
    on a GPU each call is synchronised, so its kernels count where they run."""

    def __init__(self) -> None:
        self.seconds, self.tiles = 0.0, 0

    def __enter__(self) -> ModelClock:
        run = self._run = Predictor.run

        def timed(predictor, tiles):
            t0 = time.perf_counter()
            out = run(predictor, tiles)
            if out.device.type == "cuda":
                torch.cuda.synchronize(out.device)
            self.seconds += time.perf_counter() - t0
            self.tiles += len(tiles)
            return out

        Predictor.run = timed
        return self

    def __exit__(self, *exc) -> None:
        Predictor.run = self._run


def model_share(
    predictor: Predictor, work: Path, size: int, files: int = 0, batch: int = 8, in_flight: int = 1
) -> dict:
    """The share of wall time in the model: one synthetic size x size uint8 GeoTIFF (files=0) or a folder of
    ``files`` copies of it upscaled as one batch with ``in_flight`` files at once, after a warm-up run of one file;
    work: an empty folder. With several files in flight the model's calls still come one at a time, so their sum is
    the time the model was busy."""
    src = make_synthetic(work / "in.tif", size)
    options = UpscaleOptions(batch_size=batch, overwrite=True)
    upscale_raster(src, work / "warm-up.tif", predictor, options)
    if files:
        folder = work / "tiles"
        folder.mkdir(exist_ok=True)
        for i in range(files):
            (folder / f"tile{i:04d}.tif").write_bytes(src.read_bytes())
        pairs = plan_outputs([folder], work / "out")
    with ModelClock() as clock:
        t0 = time.perf_counter()
        if files:
            summary = upscale_batch(pairs, predictor, options, files_in_flight=in_flight)
            if summary.count("done") != files:
                raise RuntimeError(f"the folder's batch did not finish: {summary.line()}")
        else:
            upscale_raster(src, work / "out.tif", predictor, options)
        total = time.perf_counter() - t0
    return {
        "precision": predictor.precision,
        "device": str(predictor.device),
        "size": size,
        "files": files,
        "input": f"a folder of {files} files of {size}^2" if files else f"{size}^2 input",
        "files_in_flight": in_flight,
        "tile": predictor.card.tile_size,
        "overlap": predictor.card.overlap,
        "batch": batch,
        "total_s": round(total, 4),
        "model_s": round(clock.seconds, 4),
        "model_tiles": clock.tiles,
        "share": round(clock.seconds / total, 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "geosr/weights/degan-x4.safetensors"))
    p.add_argument("--precision", default="bf16")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--files", type=int, default=0, help="a folder of this many size x size files (0: one file)")
    p.add_argument("--files-in-flight", type=int, default=1, help="files at once (upscale --files-in-flight)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args()
    predictor = load_predictor(args.model, device=args.device, precision=args.precision)
    with tempfile.TemporaryDirectory(prefix="geosr-share-") as work:
        r = model_share(predictor, Path(work), args.size, args.files, args.batch, args.files_in_flight)
    flight = f", {args.files_in_flight} files in flight" if args.files_in_flight > 1 else ""
    print(
        f"{Path(args.model).name} {r['precision']} {r['input']}{flight}, tile {r['tile']} overlap {r['overlap']}, "
        f"batch {r['batch']}: {r['total_s']:.2f} s, of which {r['model_s']:.2f} s in the model "
        f"({r['model_tiles']} tiles): {r['share']:.1%}"
    )
    if args.json:
        args.json.write_text(json.dumps({"model": Path(args.model).name, **r}, indent=1) + "\n")


if __name__ == "__main__":
    main()
