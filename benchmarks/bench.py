"""geosr speed and memory, measured against this machine's own limit in the same run.

    python benchmarks/bench.py [--model PATH] [--scale 4] [--tile 64] [--overlap 16] [--batch 8]
                               [--precisions fp32,bf16] [--synthetic 512] [--memory-sizes 1024,2048]
                               [--repeats 3] [--json results.json]
    python benchmarks/bench.py --sweep 16,32,64,128 [--model NAME|PATH] [--repeats 3] [--json sweep.json]

For each precision it prints (and writes as JSON):
1. FLOPs per output pixel of the generator and the measured peak of a large 128-channel 3x3 conv at that precision;
2. model-only throughput: output megapixels per second of the bare forward on batches of tiles, and its fraction
   of the peak;
3. end-to-end `upscale_raster` throughput (read, tile, forward, blend, write) on a real raster and on a synthetic
   one, and its ratio to the model-only throughput once the recomputed overlap is accounted for;
4. with --memory-sizes, the peak resident memory of upscale for square inputs of those sizes (in subprocesses);
5. training throughput of the full GAN step (benchmarks/train_throughput.py) unless --no-train;
and, with --baseline, the end-to-end time of a plain tile loop (batch of one, fp32, whole image in memory) over the
same model, against the default upscale. Each figure is the median of --repeats runs. Without --model, a randomly
initialised default DEGAN generator is used (speed does not depend on the weights).

--sweep TILES measures only the model: output megapixels per second of the forward pass at each tile size, in every
precision and in both memory formats that can reach the model (contiguous NCHW and channels-last), in interleaved
rounds, with a batch holding about as many pixels at every size (8 tiles of 64). Each row also names the reference
("slow") kernels PyTorch fell back to, from its profiler: on a CPU without native bf16 they are the reason bf16 is
slow. --precision auto's choice is printed beside the sweep, so one can see that it is never the slower one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import count_flops, median_time, peak_conv_flops  # noqa: E402

from geosr.checkpoint import ModelCard, load_generator, save_generator  # noqa: E402
from geosr.device import autocast, describe_hardware, resolve_device, resolve_precision  # noqa: E402
from geosr.inference import UpscaleOptions, load_predictor, upscale_raster  # noqa: E402
from geosr.models import Generator, GeneratorConfig  # noqa: E402
from geosr.tiling import TileGrid  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_RASTER = REPO / "examples" / "data" / "RGB.byte.tif"


def make_model(args, workdir: Path) -> Path:
    if args.model:
        return Path(args.model)
    torch.manual_seed(0)
    cfg = GeneratorConfig(scale=args.scale)
    path = workdir / f"degan-x{args.scale}-random.safetensors"
    save_generator(path, Generator(cfg), ModelCard(config=cfg, tile_size=args.tile or 64, overlap=args.overlap or 16))
    return path


def make_synthetic(path: Path, size: int, dtype: str = "uint8") -> Path:
    """A 3-band GeoTIFF of size x size with smooth structure and noise (compresses like real imagery): uint8 over
    0..255, or uint16 around 8000 with a spread of thousands (a 16-bit scene, mapped by percentiles)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype=dtype,
        crs="EPSG:32633",
        transform=rasterio.Affine(10, 0, 500000, 0, -10, 5000000),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        for b in range(3):
            wave = np.sin(xx / (17 + 5 * b)) * np.cos(yy / (23 + 3 * b))
            if dtype == "uint16":
                data = np.clip(8000 + 3000 * wave + rng.normal(0, 600, wave.shape), 0, 65535).astype(np.uint16)
            else:
                data = np.clip(127 + 60 * wave + rng.normal(0, 12, wave.shape), 0, 255).astype(np.uint8)
            dst.write(data, b + 1)
    return path


def crop_raster(src_path: Path, dst_path: Path, size: int) -> Path:
    """The central size x size window of a real raster (scene edges are often nodata), georeferencing kept."""
    from rasterio.windows import Window

    with rasterio.open(src_path) as src:
        w, h = min(size, src.width), min(size, src.height)
        window = Window((src.width - w) // 2, (src.height - h) // 2, w, h)
        profile = src.profile
        profile.update(width=int(window.width), height=int(window.height), transform=src.window_transform(window))
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return dst_path


def tiles_in(path: Path, tile: int, overlap: int) -> tuple[int, int]:
    """(tiles, input pixels) of the tile grid geosr uses on ``path``."""
    with rasterio.open(path) as src:
        h, w = src.height, src.width
    grid = TileGrid(h, w, tile, overlap)
    return len(grid), h * w


def model_only(predictor, tile: int, batch: int, repeats: int) -> float:
    """Output megapixels per second of the bare forward on batches of tiles."""
    x = np.random.default_rng(0).uniform(-1, 1, (batch, predictor.channels, tile, tile)).astype(np.float32)
    seconds = median_time(lambda: predictor(x), predictor.device, repeats=repeats, warmup=1)
    return batch * (tile * predictor.scale) ** 2 / seconds / 1e6


def end_to_end(path: Path, predictor, options: UpscaleOptions, repeats: int) -> float:
    """Median seconds of upscale_raster on ``path``."""
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "out.tif"
        opts = UpscaleOptions(**{**options.__dict__, "overwrite": True})
        return median_time(lambda: upscale_raster(path, dst, predictor, opts), predictor.device, repeats, warmup=0)


def plain_tile_loop(path: Path, model_path: Path, tile: int, overlap: int) -> float:
    """Seconds of the naive way: whole image in memory, one fp32 tile at a time, averaged overlaps."""
    t0 = time.perf_counter()
    model, card = load_generator(model_path)
    s = card.scale
    with rasterio.open(path) as src:
        img = src.read().astype(np.float32) / 127.5 - 1
        profile = src.profile
    c, h, w = img.shape
    out = np.zeros((c, h * s, w * s), np.float32)
    cnt = np.zeros((1, h * s, w * s), np.float32)
    grid = TileGrid(h, w, tile, overlap)
    with torch.inference_mode():
        for t in grid:
            y0, y1, x0, x1 = t.y, t.y + t.height, t.x, t.x + t.width
            x = torch.from_numpy(np.ascontiguousarray(img[None, :, y0:y1, x0:x1]))
            out[:, y0 * s : y1 * s, x0 * s : x1 * s] += model(x)[0].numpy()
            cnt[:, y0 * s : y1 * s, x0 * s : x1 * s] += 1
    result = np.clip((out / cnt + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    profile.update(width=w * s, height=h * s, transform=profile["transform"] * rasterio.Affine.scale(1 / s))
    with tempfile.TemporaryDirectory() as tmp, rasterio.open(Path(tmp) / "naive.tif", "w", **profile) as dst:
        dst.write(result)
    return time.perf_counter() - t0


MEMORY_SCRIPT = """
import sys
from geosr.inference import UpscaleOptions, load_predictor, upscale_raster
model, src, dst, precision, tile, overlap, batch = sys.argv[1:8]
p = load_predictor(model, device="cpu", precision=precision)
upscale_raster(src, dst, p, UpscaleOptions(tile_size=int(tile), overlap=int(overlap), batch_size=int(batch)))
# VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts from its parent's at fork time.
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(int(hwm.split()[1]) / 1024)
"""


def peak_memory_mb(model: Path, size: int, precision: str, args, workdir: Path) -> float:
    src = make_synthetic(workdir / f"mem{size}.tif", size)
    dst = workdir / f"mem{size}_out.tif"
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            MEMORY_SCRIPT,
            str(model),
            str(src),
            str(dst),
            precision,
            str(args.tile),
            str(args.overlap),
            str(args.batch),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    dst.unlink(missing_ok=True)
    return float(out.stdout.strip().splitlines()[-1])


def sweep_batch(tile: int) -> int:
    """Tiles per forward at ``tile``: about the pixels of 8 tiles of 64, at least one."""
    return max(1, (8 * 64 * 64) // (tile * tile))


def slow_kernels(model, x: torch.Tensor, device: torch.device, precision: str) -> list[str]:
    """Names of PyTorch's reference (slow) kernels that one forward of ``model`` on ``x`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode(), autocast(device, precision):
        model(x)
    return sorted({e.key for e in prof.key_averages() if "slow" in e.key})


def precision_sweep(model_path: Path, tiles: list[int], args) -> dict:
    """Model-only output Mpx/s per (tile, precision, memory format), in interleaved rounds; see the docstring."""
    device = resolve_device(args.device)
    precisions = (
        args.precisions.split(",")
        if args.precisions
        else (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    )
    net, card = load_generator(model_path, device=device)
    net.eval()
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    rng = np.random.default_rng(0)
    cases, inputs = {}, {}
    for tile in tiles:
        b = sweep_batch(tile)
        x = torch.from_numpy(rng.uniform(-1, 1, (b, card.config.in_channels, tile, tile)).astype(np.float32))
        inputs[tile] = x.to(device)
        for prec in precisions:
            for fmt in formats:
                cases[(tile, prec, fmt)] = []
    kernels = {}
    for tile, prec, fmt in cases:  # one warm-up each, and the profile of the slow kernels
        net = net.to(memory_format=formats[fmt])
        x = inputs[tile].contiguous(memory_format=formats[fmt])
        kernels[(tile, prec, fmt)] = slow_kernels(net, x, device, prec)
    for r in range(args.repeats):
        for (tile, prec, fmt), times in cases.items():
            net = net.to(memory_format=formats[fmt])
            x = inputs[tile].contiguous(memory_format=formats[fmt])

            def run(net=net, x=x, prec=prec):  # this round's values, bound now
                with torch.inference_mode(), autocast(device, prec):
                    net(x)

            times.append(median_time(run, device, repeats=1, warmup=0))
        print(f"round {r + 1} of {args.repeats} done", flush=True)
    rows = []
    for (tile, prec, fmt), times in cases.items():
        b = sweep_batch(tile)
        mpx = b * (tile * card.scale) ** 2 / 1e6
        rows.append(
            {
                "tile": tile,
                "batch": b,
                "precision": prec,
                "memory_format": fmt,
                "mpx_s": mpx / statistics.median(times),
                "seconds": [round(t, 3) for t in times],
                "slow_kernels": kernels[(tile, prec, fmt)],
            }
        )
    return {
        "hardware": describe_hardware(device),
        "torch": torch.__version__,
        "model": str(model_path),
        "scale": card.scale,
        "card_tile": card.tile_size,
        "repeats": args.repeats,
        "auto_precision": resolve_precision("auto", device),
        "load_average": os.getloadavg(),
        "sweep": rows,
    }


def print_sweep(r: dict) -> None:
    print(
        f"{r['hardware']} | torch {r['torch']} | {r['model']} x{r['scale']} (card tile {r['card_tile']}) | "
        f"--precision auto picks {r['auto_precision']}"
    )
    print(f"{'tile':>5} {'batch':>5} {'precision':<9} {'format':<13} {'output Mpx/s':>12}  slow kernels")
    for row in r["sweep"]:
        print(
            f"{row['tile']:>5} {row['batch']:>5} {row['precision']:<9} {row['memory_format']:<13} "
            f"{row['mpx_s']:>12.3f}  {', '.join(row['slow_kernels']) or '-'}"
        )
    best = {}
    for row in r["sweep"]:
        key = (row["tile"], row["precision"])
        best[key] = max(best.get(key, 0.0), row["mpx_s"])
    for tile in sorted({t for t, _ in best}):
        if (tile, "fp32") in best and (tile, "bf16") in best:
            print(f"tile {tile}: bf16 / fp32 (best format each) {best[(tile, 'bf16')] / best[(tile, 'fp32')]:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model file (default: a random default DEGAN at --scale)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--tile", type=int, default=None, help="tile size in input pixels (default: the model card's)")
    p.add_argument("--overlap", type=int, default=None, help="overlap in input pixels (default: the card's)")
    p.add_argument("--batch", type=int, default=8, help="tiles per forward")
    p.add_argument("--device", default="auto")
    p.add_argument("--precisions", default=None, help="comma-separated (default: fp32,bf16; fp16 too on CUDA)")
    p.add_argument("--raster", default=str(REAL_RASTER), help="real raster for the end-to-end figure")
    p.add_argument("--real-crop", type=int, default=256, help="use this central square of --raster (0: all)")
    p.add_argument("--synthetic", type=int, default=384, help="side of the synthetic raster (0: skip)")
    p.add_argument("--memory-sizes", default="", help="e.g. 1024,2048: peak RSS of upscale at these sizes")
    p.add_argument(
        "--memory-model",
        default=None,
        help="model for the memory figure (default: the benchmarked one; 'small' for a 32-channel, "
        "2-block DEGAN, whose constant activations leave the pipeline's own memory in view)",
    )
    p.add_argument("--baseline", action="store_true", help="also time a plain fp32 tile loop (batch 1)")
    p.add_argument("--no-train", action="store_true", help="skip the training throughput")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--sweep", default="", help="e.g. 16,32,64,128: only the model-only precision/format sweep")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="geosr-bench-") as work:
        run(args, Path(work))


def run(args: argparse.Namespace, workdir: Path) -> None:
    """The benchmark that ``args`` asks for, its files (models, rasters, outputs) in ``workdir``."""
    if args.sweep:
        from geosr.bundled import resolve_model

        model_path = resolve_model(args.model) if args.model else make_model(args, workdir)
        result = precision_sweep(model_path, [int(t) for t in args.sweep.split(",")], args)
        print_sweep(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return
    model_path = make_model(args, workdir)
    first = load_predictor(model_path, device=args.device, precision="fp32")
    card = first.card
    args.tile = args.tile or card.tile_size
    args.overlap = args.overlap if args.overlap is not None else card.overlap
    device = first.device
    precisions = (
        args.precisions.split(",")
        if args.precisions
        else (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    )

    flops = count_flops(first.model.cpu(), torch.zeros(1, card.config.in_channels, args.tile, args.tile))
    flops_per_px = flops / (args.tile * card.scale) ** 2
    rasters = [Path(args.raster)]
    if args.real_crop:
        rasters = [crop_raster(rasters[0], workdir / f"{rasters[0].stem}_{args.real_crop}.tif", args.real_crop)]
    if args.synthetic:
        rasters.append(make_synthetic(workdir / f"synthetic{args.synthetic}.tif", args.synthetic))
    options = UpscaleOptions(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch)

    results = {
        "hardware": describe_hardware(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "model": str(args.model or f"random default DEGAN x{args.scale}"),
        "scale": card.scale,
        "tile": args.tile,
        "overlap": args.overlap,
        "batch": args.batch,
        "repeats": args.repeats,
        "gflop_per_output_mpixel": flops_per_px / 1e3,
        "precisions": {},
    }
    for prec in precisions:
        predictor = load_predictor(model_path, device=args.device, precision=prec)
        peak = peak_conv_flops(device, prec, repeats=args.repeats)
        model_only(predictor, args.tile, args.batch, 1)  # warm-up
        end_to_end_runs = {r.name: [] for r in rasters}
        model_runs = []
        # Interleaved rounds (model-only, then each raster end to end), so that the ratios compare measurements
        # taken under the same conditions: on a shared machine the speed drifts by more than the ratios measure.
        for _ in range(args.repeats):
            mo_round = model_only(predictor, args.tile, args.batch, 5)
            model_runs.append(mo_round)
            for raster in rasters:
                end_to_end_runs[raster.name].append((end_to_end(raster, predictor, options, 1), mo_round))
        mo = statistics.median(model_runs)
        row = {
            "peak_conv_tflops": peak / 1e12,
            "model_only_mpx_s": mo,
            "model_only_fraction_of_peak": mo * 1e6 * flops_per_px / peak,
            "end_to_end": {},
        }
        for raster in rasters:
            runs = end_to_end_runs[raster.name]
            tiles, pixels = tiles_in(raster, args.tile, args.overlap)
            out_mpx = pixels * card.scale**2 / 1e6
            recompute = tiles * args.tile**2 / pixels  # input pixels the model sees per input pixel
            seconds = statistics.median(t for t, _ in runs)
            row["end_to_end"][raster.name] = {
                "seconds": seconds,
                "mpx_s": out_mpx / seconds,
                "recompute": recompute,
                # per round, against that round's model-only figure; the median over the rounds
                "ratio_to_model_only": statistics.median(out_mpx * recompute / t / m for t, m in runs),
            }
        results["precisions"][prec] = row

    if args.baseline:
        raster = rasters[-1]
        naive = plain_tile_loop(raster, model_path, args.tile, args.overlap)
        auto = load_predictor(model_path, device=args.device, precision="auto")
        default = end_to_end(raster, auto, UpscaleOptions(tile_size=args.tile, overlap=args.overlap), 1)
        results["baseline"] = {
            "raster": raster.name,
            "plain_tile_loop_s": naive,
            "geosr_default_s": default,
            "default_precision": auto.precision,
            "speedup": naive / default,
        }

    if args.memory_sizes:
        prec = "bf16" if "bf16" in precisions else precisions[0]
        memory_model = model_path
        if args.memory_model == "small":
            torch.manual_seed(0)
            small = GeneratorConfig(scale=card.scale, channels=32, n_blocks=2, refiner_base=16)
            memory_model = save_generator(
                workdir / "small.safetensors",
                Generator(small),
                ModelCard(config=small, tile_size=args.tile, overlap=args.overlap),
            )
        elif args.memory_model:
            memory_model = Path(args.memory_model)
        results["peak_rss_model"] = str(args.memory_model or results["model"])
        results["peak_rss_mb"] = {
            str(n): peak_memory_mb(memory_model, int(n), prec, args, workdir) for n in args.memory_sizes.split(",")
        }

    if not args.no_train:
        out = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parent / "train_throughput.py"),
                "--scale",
                str(card.scale),
                "--steps",
                str(args.repeats),
                "--json",
                str(workdir / "train.json"),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode == 0:
            results["training"] = json.loads((workdir / "train.json").read_text())["results"]
        else:
            results["training_error"] = out.stderr.strip().splitlines()[-1:]

    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def print_table(r: dict) -> None:
    print(
        f"{r['hardware']} | torch {r['torch']} | {r['model']} x{r['scale']} | tile {r['tile']} overlap "
        f"{r['overlap']} batch {r['batch']} | {r['gflop_per_output_mpixel']:.0f} GFLOP per output Mpx"
    )
    print(f"{'precision':<9} {'peak TFLOP/s':>12} {'model Mpx/s':>12} {'% of peak':>9}  end-to-end (Mpx/s, ratio)")
    for prec, row in r["precisions"].items():
        e2e = "  ".join(
            f"{name}: {v['mpx_s']:.3f} ({v['ratio_to_model_only']:.0%})" for name, v in row["end_to_end"].items()
        )
        print(
            f"{prec:<9} {row['peak_conv_tflops']:>12.2f} {row['model_only_mpx_s']:>12.3f} "
            f"{row['model_only_fraction_of_peak']:>9.0%}  {e2e}"
        )
    precs = r["precisions"]
    if "fp32" in precs and "bf16" in precs:
        for name in precs["fp32"]["end_to_end"]:
            ratio = precs["bf16"]["end_to_end"][name]["mpx_s"] / precs["fp32"]["end_to_end"][name]["mpx_s"]
            print(f"bf16 / fp32 end-to-end on {name}: {ratio:.2f}x")
    if "baseline" in r:
        b = r["baseline"]
        print(
            f"plain tile loop (fp32, batch 1, whole image) {b['plain_tile_loop_s']:.1f} s vs geosr default "
            f"({b['default_precision']}) {b['geosr_default_s']:.1f} s on {b['raster']}: {b['speedup']:.1f}x"
        )
    if "peak_rss_mb" in r:
        sizes = r["peak_rss_mb"]
        print(f"peak RSS ({r['peak_rss_model']}): " + ", ".join(f"{k}^2 input {v:.0f} MB" for k, v in sizes.items()))
    for t in r.get("training", []):
        print(f"training {t['mode']:<7} {t['precision']}: {t['patches_per_s_median']:.2f} HR patches/s (median)")


if __name__ == "__main__":
    main()
