"""Two versions of geosr on one real upscale, in one run: is the newer one slower on this machine?

    python benchmarks/upscale_pair.py BEFORE_TREE . [--input examples/data/RGB.byte.tif] [--scale 4] [--rounds 2]

Each round runs ``upscale_raster`` (what ``geosr upscale INPUT -o OUT --scale 4`` runs, with its defaults: the
bundled model, the card's tiles, device and precision "auto", consistency on) once per source tree, in a process of
its own with that tree first on PYTHONPATH, the trees taking turns (in reverse order every other round) so that
both see the same machine. It prints each
run's wall seconds (the model load and the upscale, not the interpreter's start), the median per tree, the ratio of
the last tree to the first, and whether their outputs are equal pixel for pixel.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE_RUN = """
import hashlib, sys, tempfile, time
from pathlib import Path
import rasterio, torch
from geosr.inference import UpscaleOptions, load_predictor, upscale_raster
src, scale = Path(sys.argv[1]), int(sys.argv[2])
with tempfile.TemporaryDirectory(prefix="geosr-pair-") as work:
    out = Path(work) / "out.tif"
    t = time.perf_counter()
    predictor = load_predictor(None, scale=scale)
    upscale_raster(src, out, predictor, UpscaleOptions())
    seconds = time.perf_counter() - t
    with rasterio.open(out) as ds:
        digest = hashlib.sha1(ds.read().tobytes()).hexdigest()[:16]
print(f"{seconds:.2f} {digest} {predictor.device} {predictor.precision} torch-threads={torch.get_num_threads()}")
"""


def one_run(tree: Path, src: Path, scale: int) -> tuple[float, str, str]:
    """The upscale of ``src`` by the geosr of ``tree``: (seconds, pixel hash, device and precision)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", ONE_RUN, str(src), str(scale)], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), out[1], " ".join(out[2:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs="+", type=Path, help="source trees of geosr (a checkout of each version)")
    p.add_argument("--input", type=Path, default=REPO / "examples" / "data" / "RGB.byte.tif")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    trees = [t.resolve() for t in args.trees]
    seconds: dict[Path, list[float]] = {t: [] for t in trees}
    hashes: set[str] = set()
    for r in range(args.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:  # ABBA: neither tree always goes first
            s, digest, how = one_run(tree, args.input.resolve(), args.scale)
            seconds[tree].append(s)
            hashes.add(digest)
            print(f"round {r + 1}: {tree}: {s:.2f} s ({how}), output {digest}", flush=True)
    for tree in trees:
        print(f"{tree}: median {statistics.median(seconds[tree]):.2f} s, best {min(seconds[tree]):.2f} s")
    first, last = statistics.median(seconds[trees[0]]), statistics.median(seconds[trees[-1]])
    print(f"last to first, medians: {last / first:.3f}x the time; outputs equal pixel for pixel: {len(hashes) == 1}")


if __name__ == "__main__":
    main()
