"""The pipeline's own speed: `upscale_raster` with a stand-in model that costs almost nothing.

    python benchmarks/pipeline_only.py [--size 1024] [--tile 64] [--overlap 16] [--batch 16] [--repeats 2] [--stages]
    python benchmarks/pipeline_only.py --trees BEFORE_TREE . [--rounds 3]    # two versions of geosr, in one run

On a GPU the model is fast enough that the CPU side of the pipeline (reading, normalising, blending, the consistency
projection, rounding, writing) sets the pace; this measures that side alone, on any machine. The stand-in maps each
tile to its nearest-neighbour x4 enlargement (a bandwidth-bound op, about a tenth of the time here), so the figure is
an upper bound of end-to-end speed whatever the model. It prints output megapixels per second with and without the
consistency correction, and the functions that take the most time (cProfile) in the run with the correction.

--stages adds where the time goes, by stage, in one more run of each setting: the busy seconds of each stage of the
real pipeline (geosr.stagetimer.StageTimer: timers in the code path, off unless asked for) and their share of the run's
wall time. Reading and writing run on their own threads, beside the main thread's work; the main thread's waits for
them are lines of their own, and the main thread's lines and waits add up to the wall time.

--trees compares source trees of geosr (a checkout of an older commit, and this one) in one run: rounds of this
benchmark, each tree in turn in a process of its own (PYTHONPATH; every other round in reverse order), so that all
see the same machine; it prints the best and the median of each tree's runs, the ratio of the last tree to the
first, and whether their outputs are equal pixel for pixel.

--busy K runs K other processes that keep one core each busy (a Python loop) while it measures: the machine shared
with other work, as a workstation or a batch of files in flight often is.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import hashlib
import io
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import rasterio
import torch

import geosr

sys.path.insert(0, str(Path(__file__).parent))
from bench import make_synthetic  # noqa: E402

from geosr.inference import UpscaleOptions, load_predictor, upscale_raster  # noqa: E402

MAIN, READER, WRITER = "MainThread", "geosr-reader", "geosr-writer"  # the pipeline's thread names
# (thread, stage, what it is), in the order of the pipeline
STAGES = [
    (READER, "read", "read (GDAL: decompress the input's blocks)"),
    (READER, "normalise", "normalise (masks, to the model's range)"),
    (MAIN, "host to device", "host to device (the strip)"),
    (MAIN, "gather tiles", "gather the batch's tiles"),
    (MAIN, "model", "model (the stand-in)"),
    (MAIN, "blend", "blend (StripAccumulator)"),
    (MAIN, "consistency", "consistency correction (RowStream)"),
    (MAIN, "dtype mapping", "dtype mapping (Radiometry.from_model)"),
    (MAIN, "device to host", "device to host (finished rows)"),
    (MAIN, "finish rows", "nodata, alpha and mask of finished rows"),
    (WRITER, "copy to blocks", "copy into whole 512-row blocks"),
    (WRITER, "write", "compression and write (GDAL)"),
    (MAIN, "plan", "plan (statistics, output room, compression sample)"),
    (MAIN, "finish", "finish the output (verify, rename)"),
    (MAIN, "strip (wait for the reader)", "main thread waits for the reader"),
    (MAIN, "wait for the writer", "main thread waits for the writer"),
]


class StandIn(torch.nn.Module):
    """Nearest-neighbour enlargement by the scale: the model's shapes at almost none of its cost."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")


def stage_seconds(src: Path, dst: Path, predictor, args, consistency: bool):
    """One run of upscale_raster with the stage timer on: the StageTimer and the run's wall seconds."""
    from geosr.stagetimer import StageTimer, timing  # here: the rest of this script also measures code without them

    sync = torch.cuda.synchronize if predictor.device.type == "cuda" else None
    options = UpscaleOptions(
        tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, overwrite=True, consistency=consistency
    )
    with timing(StageTimer(sync)) as timer:
        t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
        upscale_raster(src, dst, predictor, options)
        wall = time.perf_counter() - t0
        timer.cpu[(MAIN, "(all)")] = time.thread_time() - m0
        timer.cpu[("", "(all)")] = time.process_time() - c0
    return timer, wall


def stage_table(runs: list, names: tuple[str, ...]) -> str:
    """Each stage's wall seconds, their share of the run's wall time and the thread's CPU seconds in them, one set
    of columns per run (StageTimer, wall seconds)."""
    cells = " {:>8s} {:>7s} {:>7s}"
    lines = [
        f"  {'':54s} {'':6s}" + "".join(f" {n:>24s}" for n in names),
        f"  {'stage':54s} {'thread':6s}" + cells.format("wall s", "% wall", "cpu s") * len(runs),
    ]

    def row(label: str, thread: str, values: list[tuple[float, float | None]]) -> str:
        text = "".join(
            f" {v:8.3f} {100 * v / wall:6.1f}%" + (f" {c:7.3f}" if c is not None else " " * 8)
            for (v, c), (_, wall) in zip(values, runs)
        )
        return f"  {label:54s} {thread:6s}{text}"

    known = {(t, k) for t, k, _ in STAGES}
    keys = [(t, k, label) for t, k, label in STAGES]
    keys += sorted((t, k, k) for timer, _ in runs for t, k in timer.seconds if (t, k) not in known)  # never dropped
    for thread, key, label in keys:
        short = thread.removeprefix("geosr-").replace("MainThread", "main")
        lines.append(
            row(
                label,
                short,
                [(timer.seconds.get((thread, key), 0.0), timer.cpu.get((thread, key), 0.0)) for timer, _ in runs],
            )
        )
    busy = [
        [sum(v[(t, k)] for t, k in v if t == MAIN and k != "(all)") for v in (timer.seconds, timer.cpu)]
        for timer, _ in runs
    ]
    lines.append(
        row(
            "main thread, outside the stages above",
            "main",
            [(w - b, timer.cpu[(MAIN, "(all)")] - c) for (b, c), (timer, w) in zip(busy, runs)],
        )
    )
    lines.append(
        row(
            "wall time of upscale_raster; CPU time of the main thread",
            "main",
            [(w, timer.cpu[(MAIN, "(all)")]) for timer, w in runs],
        )
    )
    lines.append(
        row(
            "  CPU time of the other threads (reader, writer, GDAL's)",
            "",
            [(0.0, timer.cpu[("", "(all)")] - timer.cpu[(MAIN, "(all)")]) for timer, _ in runs],
        )
    )
    return "\n".join(lines)


@contextlib.contextmanager
def busy_cores(k: int) -> Iterator[list[subprocess.Popen]]:
    """``k`` processes that each keep a core busy while the block runs (ended with it)."""
    others = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]
    try:
        yield others
    finally:
        for p in others:
            p.kill()
            p.wait()


def compare_trees(trees: list[Path], rounds: int, passed: list[str]) -> None:
    """This benchmark on each tree in turn, ``rounds`` times; best and median output Mpx/s per tree and setting."""
    speeds: dict[Path, dict[str, list[float]]] = {t: {"on": [], "off": []} for t in trees}
    hashes: dict[Path, set[str]] = {t: set() for t in trees}
    for r in range(rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:  # ABBA: neither tree always goes first
            env = {**os.environ, "PYTHONPATH": str(tree)}
            out = subprocess.run(
                [sys.executable, __file__, "--no-profile", *passed], env=env, check=True, capture_output=True, text=True
            ).stdout
            for line in out.splitlines():
                if line.strip().startswith("consistency"):
                    setting = "on" if "on " in line.split(":")[0] else "off"
                    speeds[tree][setting].append(float(re.search(r"([\d.]+) output Mpx/s", line)[1]))
                if line.startswith("output pixels"):
                    hashes[tree].add(line.split()[-1])
        print(f"round {r + 1} of {rounds} done", file=sys.stderr)
    for tree in trees:
        row = "  ".join(
            f"consistency {k}: best {max(v):.2f}, median {statistics.median(v):.2f}" for k, v in speeds[tree].items()
        )
        print(f"{tree}: {row} output Mpx/s ({rounds} runs, each the best of its repeats)")
    first, last = speeds[trees[0]], speeds[trees[-1]]
    print(
        "ratio, last to first: "
        + ", ".join(
            f"consistency {k} {max(last[k]) / max(first[k]):.2f}x (best), "
            f"{statistics.median(last[k]) / statistics.median(first[k]):.2f}x "
            "(median)"
            for k in ("on", "off")
        )
    )
    print(f"outputs equal pixel for pixel: {len(set.union(*hashes.values())) == 1}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024, help="input side in pixels (3-band synthetic)")
    p.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8", help="the synthetic input's dtype")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--stages", action="store_true", help="also print the seconds of each stage (one more run each)")
    p.add_argument("--trees", nargs="+", type=Path, metavar="TREE", help="compare these source trees of geosr")
    p.add_argument("--rounds", type=int, default=3, help="with --trees: runs of each tree, alternating")
    p.add_argument("--no-profile", action="store_true", help="leave out the cProfile run")
    p.add_argument("--busy", type=int, default=0, metavar="K", help="K other processes keep a core busy each")
    args = p.parse_args()
    if args.trees:
        keys = ("size", "dtype", "scale", "tile", "overlap", "batch", "repeats")
        passed = [f"--{k}={getattr(args, k)}" for k in keys]
        with busy_cores(args.busy):
            compare_trees([t.resolve() for t in args.trees], args.rounds, passed)
        return
    with busy_cores(args.busy):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    """This benchmark on the geosr that is imported (see the module's doc)."""
    with tempfile.TemporaryDirectory(prefix="geosr-pipeline-") as tmp:
        _measure(args, Path(tmp))


def _measure(args: argparse.Namespace, tmp: Path) -> None:
    """``measure``, its input and output rasters in ``tmp``."""
    src = make_synthetic(tmp / "in.tif", args.size, args.dtype)
    predictor = load_predictor(None, scale=args.scale, device="cpu", precision="fp32")
    predictor = dataclasses.replace(predictor, model=StandIn(args.scale))
    out_mpx = (args.scale * args.size) ** 2 / 1e6
    print(f"geosr from {Path(geosr.__file__).parent}")
    print(
        f"{args.size}^2 x 3 {args.dtype} input, x{args.scale}, tile {args.tile} overlap {args.overlap} batch "
        f"{args.batch}, torch threads {torch.get_num_threads()}:"
    )
    for consistency in (True, False):
        options = UpscaleOptions(
            tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, overwrite=True, consistency=consistency
        )
        times, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            upscale_raster(src, tmp / "out.tif", predictor, options)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        best = min(times)
        print(
            f"  consistency {'on ' if consistency else 'off'}: {best:.2f} s (best of {args.repeats}), "
            f"{out_mpx / best:.2f} output Mpx/s; CPU time of the process {min(cpu):.2f} s"
        )
        if consistency:
            with rasterio.open(tmp / "out.tif") as ds:
                print(f"output pixels, sha1: {hashlib.sha1(ds.read().tobytes()).hexdigest()[:16]}")
    if args.stages:
        runs = [stage_seconds(src, tmp / "out.tif", predictor, args, consistency) for consistency in (True, False)]
        print(stage_table(runs, ("consistency on", "consistency off")))
    if args.no_profile:
        return
    prof = cProfile.Profile()
    prof.enable()
    upscale_raster(
        src,
        tmp / "out.tif",
        predictor,
        UpscaleOptions(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, overwrite=True),
    )
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(8)
    print("\n".join(line for line in text.getvalue().splitlines() if "/" in line or "ncalls" in line))


if __name__ == "__main__":
    main()
