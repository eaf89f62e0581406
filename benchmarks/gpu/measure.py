"""The GPU path of geosr, measured within a wall-clock budget (step (a) of benchmarks/gpu/run.sh).

    python benchmarks/gpu/measure.py --device cuda --out DIR [--budget-s 210] [--tiles 16,64,128] [--smoke]

1. **CUDA against the CPU**: ``upscale_raster`` on a central window of examples/data/RGB.byte.tif (a real Landsat
   scene), on the device at fp32, bf16 and fp16 and on the CPU at fp32 (the reference), with the card's tiles.
   The outputs' differences in grey levels (mean, 99.9th percentile, largest, share above one level, PSNR); the
   check passes when the device's fp32 output is within rounding of the CPU's (mean <= 0.05, p99.9 <= 1 level; with
   cuDNN's TF32 convolutions allowed, fp16's tolerance) and bf16/fp16 within their precision (mean <= 0.5, p99.9 <= 4
   levels). ``--device cpu`` compares the CPU with itself (that only tests the script).
2. **Speed per tile size and precision** (fp16 and bf16 on CUDA): model-only output Mpx/s on batches of random
   tiles, end-to-end output Mpx/s of ``upscale_raster`` on a synthetic uint8 raster with the same tiles and batches,
   their ratio counting the recomputed overlap (benchmarks/bench.py's functions), and the peak GPU memory of the
   end-to-end run (``torch.cuda.max_memory_allocated``).
3. **The pipeline's ceiling**: ``upscale_raster`` of the same synthetic raster with benchmarks/pipeline_only.py's
   stand-in model (almost free) on the device, with and without the consistency correction.
4. **A folder of small tiles**: ``upscale_batch`` over a folder of 64 synthetic 256 x 256 uint8 GeoTIFFs (what
   ``geosr upscale DIR -o DIR`` runs) with the card's tiles, one file at a time and 4 in flight sharing the model's
   calls (``--files-in-flight 4``): wall time and the share of it inside the model's calls
   (benchmarks/model_share.py, each call synchronised).
5. **A Sentinel-2-size tile at x4**: a 10980 x 10980 3-band uint16 synthetic GeoTIFF written to local disk first,
   then upscaled with the default output settings (deflate); when the budget runs out first the run stops and the
   time is extrapolated from the tiles done, and labelled so.

Writes ``measure.json`` and ``measure.txt`` to --out. Every section records its error instead of stopping the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
import shutil
import time
import traceback
from pathlib import Path

import numpy as np
import rasterio
import torch

REPO = Path(__file__).resolve().parents[2]
REAL_RASTER = REPO / "examples" / "data" / "RGB.byte.tif"
DEFAULT_MODEL = REPO / "geosr" / "weights" / "degan-x4.safetensors"


def _module(name: str):
    """benchmarks/NAME.py as a module (bench.py: its model-only and end-to-end timers and raster helpers;
    pipeline_only.py: its stand-in model)."""
    path = REPO / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"geosr_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _module("bench")
from geosr.device import describe_hardware  # noqa: E402
from geosr.inference import UpscaleOptions, load_predictor, upscale_raster  # noqa: E402


class OutOfBudget(Exception):
    """Raised from the progress callback to stop an upscale at the deadline."""


class Clock:
    """The wall-clock budget of the whole measurement."""

    def __init__(self, budget_s: float) -> None:
        self.t0, self.budget_s = time.monotonic(), budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


# --- 1. the device against the CPU --------------------------------------------------------------------------------


TOLERANCE = {"fp32": {"mean": 0.05, "p999": 1.0}, "bf16": {"mean": 0.5, "p999": 4.0},
             "fp16": {"mean": 0.5, "p999": 4.0}}


def difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Differences between two outputs of the same dtype, in grey levels."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float((d**2).mean())
    return {"mean": float(d.mean()), "p999": float(np.quantile(d, 0.999)), "max": float(d.max()),
            "share_above_1": float((d > 1).mean()), "psnr_db": 10 * np.log10(255**2 / mse) if mse else float("inf")}


def consistency(model: Path, device: str, precisions: list[str], crop: int, work: Path) -> dict:
    """upscale_raster on a real window on the device at each precision against the CPU at fp32."""
    src = bench.crop_raster(REAL_RASTER, work / f"rgb_{crop}.tif", crop)
    reference = work / "cpu_fp32.tif"
    t = time.perf_counter()
    upscale_raster(src, reference, load_predictor(model, device="cpu", precision="fp32"),
                   UpscaleOptions(overwrite=True))
    out = {"raster": f"{REAL_RASTER.name}, central {crop} x {crop} window", "cpu_fp32_s": time.perf_counter() - t,
           "tolerance": TOLERANCE, "cases": {}}
    ref = read(reference)
    # cuDNN may run fp32 convolutions in TF32 (10-bit mantissa, as fp16): then fp32 is held to fp16's tolerance
    tf32 = torch.device(device).type == "cuda" and torch.backends.cudnn.allow_tf32
    out["cudnn_allow_tf32"] = bool(tf32)
    for prec in ["fp32", *precisions]:
        dst = work / f"{device}_{prec}.tif"
        predictor = load_predictor(model, device=device, precision=prec)
        upscale_raster(src, dst, predictor, UpscaleOptions(overwrite=True))
        diff = difference(read(dst), ref)
        tol = TOLERANCE["fp16" if prec == "fp32" and tf32 else prec]
        diff["passed"] = diff["mean"] <= tol["mean"] and diff["p999"] <= tol["p999"]
        out["cases"][prec] = diff
    out["passed"] = all(c["passed"] for c in out["cases"].values())
    return out


# --- 2. speed per tile size and precision -----------------------------------------------------------------------------


def default_batch(tile: int, device: torch.device) -> int:
    """Tiles per forward: about 256 x 256 input pixels per batch on a GPU (at least 8), 4 tiles on a CPU."""
    return max(8, (256 * 256) // (tile * tile)) if device.type == "cuda" else 4


def speed(model: Path, device: str, precisions: list[str], tiles: list[int], batches: dict[int, int],
          synthetic: Path, repeats: int, clock: Clock, stop_at: float) -> dict:
    """Model-only and end-to-end output Mpx/s and peak GPU memory for every (tile, precision) while time lasts
    (the first case runs in any case)."""
    rows, skipped = [], []
    flops = {}
    for tile in tiles:
        for prec in precisions:
            if rows and clock.elapsed() > stop_at:
                skipped.append(f"tile {tile} {prec}")
                continue
            predictor = load_predictor(model, device=device, precision=prec)
            dev = predictor.device
            batch = batches[tile]
            overlap = tile // 4
            options = UpscaleOptions(tile_size=tile, overlap=overlap, batch_size=batch)
            mo = bench.model_only(predictor, tile, batch, repeats)
            first = None
            if dev.type == "cuda":  # the first file pays cuDNN's autotuning of each new batch shape: timed apart
                first = bench.end_to_end(synthetic, predictor, options, 1)
                torch.cuda.reset_peak_memory_stats(dev)
            seconds = bench.end_to_end(synthetic, predictor, options, 1)
            peak_gb = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
            n_tiles, pixels = bench.tiles_in(synthetic, tile, overlap)
            recompute = n_tiles * tile**2 / pixels
            out_mpx = pixels * predictor.scale**2 / 1e6
            if tile not in flops:
                flops[tile] = gflop_per_output_mpx(predictor, tile)
            rows.append({
                "tile": tile, "overlap": overlap, "batch": batch, "precision": prec,
                "model_only_mpx_s": mo, "model_only_tflop_s": mo * flops[tile] / 1e3,
                "end_to_end_mpx_s": out_mpx / seconds, "end_to_end_s": seconds, "first_run_s": first,
                "recompute": recompute,
                "end_to_end_over_model_only": out_mpx * recompute / seconds / mo,
                "peak_gpu_memory_gib": peak_gb,
            })
            del predictor
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return {"synthetic": synthetic.name, "repeats": repeats, "gflop_per_output_mpx": flops, "rows": rows,
            "skipped_for_time": skipped}


def pipeline_ceiling(model: Path, device: str, synthetic: Path, tile: int, batch: int, repeats: int) -> dict:
    """End-to-end output Mpx/s of ``upscale_raster`` with benchmarks/pipeline_only.py's stand-in model (a nearest
    enlargement, almost free) on the device: what the pipeline around the model allows, with and without the
    consistency correction. End to end can reach a share of model-only speed only below this ceiling."""
    stand_in = _module("pipeline_only").StandIn
    predictor = load_predictor(model, device=device, precision="fp32")
    predictor = dataclasses.replace(predictor, model=stand_in(predictor.scale).to(predictor.device))
    with rasterio.open(synthetic) as ds:
        out_mpx = ds.width * ds.height * predictor.scale**2 / 1e6
    rows = {}
    for consistency in (True, False):
        options = UpscaleOptions(tile_size=tile, overlap=tile // 8, batch_size=batch, consistency=consistency)
        seconds = bench.end_to_end(synthetic, predictor, options, repeats)
        rows["on" if consistency else "off"] = {"seconds": seconds, "output_mpx_s": out_mpx / seconds}
    return {"synthetic": synthetic.name, "tile": tile, "overlap": tile // 8, "batch": batch, "consistency": rows}


def folder_share(model: Path, device: str, precision: str, files: int, size: int, batch: int, work: Path,
                 in_flight: tuple[int, ...] = (1, 4)) -> dict:
    """benchmarks/model_share.py's share of wall time in the model, for a folder of ``files`` size x size tiles, one
    file at a time and with several in flight (``upscale --files-in-flight``): the wall times say which is faster."""
    predictor = load_predictor(model, device=device, precision=precision)
    share = _module("model_share").model_share
    rows = []
    for k in in_flight:
        folder = work / "folder"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        try:
            rows.append(share(predictor, folder, size, files, batch, in_flight=k))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return {"files": files, "size": size, "precision": precision, "batch": batch, "rows": rows}


def gflop_per_output_mpx(predictor, tile: int) -> float:
    """GFLOP per output megapixel of one forward at ``tile`` (counted on the predictor's device, in fp32)."""
    x = torch.zeros(1, predictor.channels, tile, tile, device=predictor.device)
    return bench.count_flops(predictor.model, x) / (tile * predictor.scale) ** 2 / 1e3


# --- 3. a Sentinel-2-size raster --------------------------------------------------------------------------------------


def write_uint16_raster(path: Path, size: int, bands: int = 3, rows_per_write: int = 1024) -> float:
    """A size x size uint16 GeoTIFF (tiled, uncompressed) with smooth structure and noise; returns seconds taken."""
    if path.exists():
        with rasterio.open(path) as src:
            if src.width == size and src.height == size and src.count == bands:
                return 0.0
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp.tif")
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype="uint16", crs="EPSG:32633",
                   transform=rasterio.Affine(10, 0, 600000, 0, -10, 5000040), tiled=True, blockxsize=512,
                   blockysize=512, BIGTIFF="IF_SAFER")
    xx = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, rows_per_write):
            n = min(rows_per_write, size - r0)
            yy = np.arange(r0, r0 + n, dtype=np.float32)[:, None]
            block = np.empty((bands, n, size), np.uint16)
            for b in range(bands):
                base = 1500 + 900 * np.sin(xx / (37 + 11 * b)) * np.cos(yy / (53 + 7 * b))
                noise = rng.normal(0, 120, (n, size)).astype(np.float32)
                block[b] = np.clip(base + noise, 0, 65535).astype(np.uint16)
            dst.write(block, window=rasterio.windows.Window(0, r0, size, n))
    tmp.replace(path)
    return time.perf_counter() - t


def big_raster(model: Path, device: str, precision: str, size: int, tile: int, batch: int, work: Path,
               deadline: float, clock: Clock) -> dict:
    """Upscale the size x size uint16 raster; stop at ``deadline`` (clock seconds, but not before the first batch of
    tiles is done) and extrapolate from the tiles done if it comes."""
    src = work / f"synthetic_{size}_uint16.tif"
    written_s = write_uint16_raster(src, size)
    dst = work / f"synthetic_{size}_x4.tif"
    predictor = load_predictor(model, device=device, precision=precision)
    options = UpscaleOptions(tile_size=tile, overlap=tile // 4, batch_size=batch, overwrite=True)
    state = {"done": 0, "total": 0}

    def progress(p) -> None:
        state["done"], state["total"] = p.tiles_done, p.tiles_total
        if p.tiles_done and clock.elapsed() > deadline:
            raise OutOfBudget

    out = {"size": size, "bands": 3, "dtype": "uint16", "scale": predictor.scale, "tile": tile,
           "overlap": tile // 4, "batch": batch, "precision": precision, "compress": options.compress,
           "write_input_s": written_s}
    if predictor.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(predictor.device)
    t = time.perf_counter()
    try:
        upscale_raster(src, dst, predictor, options, progress)
        seconds = time.perf_counter() - t
        out.update(complete=True, seconds=seconds, label=f"measured: the whole {size} x {size} raster")
    except OutOfBudget:
        seconds = time.perf_counter() - t
        frac = state["done"] / state["total"] if state["total"] else 0.0
        out.update(complete=False, seconds_run=seconds, fraction_done=frac,
                   seconds=seconds / frac if frac else None,
                   label=(f"extrapolated from {frac:.1%} of the tiles done in {seconds:.1f} s" if frac else
                          f"no tile finished in {seconds:.1f} s"))
    finally:
        dst.unlink(missing_ok=True)
    sync(predictor.device)
    if predictor.device.type == "cuda":
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(predictor.device) / 2**30
    out["output_mpx"] = (size * predictor.scale) ** 2 / 1e6
    if out.get("seconds"):
        out["output_mpx_s"] = out["output_mpx"] / out["seconds"]
    return out


# --- the report ------------------------------------------------------------------------------------------------------


def section(results: dict, name: str, fn) -> None:
    t = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # a failing section is recorded; the others still run
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    results[name]["section_s"] = time.perf_counter() - t
    print(f"[measure] {name}: {time.perf_counter() - t:.1f} s", flush=True)


def _consistency_lines(c: dict) -> list[str]:
    lines = [f"device vs CPU fp32 on {c['raster']}: {'PASSED' if c['passed'] else 'FAILED'}"]
    for prec, d in c["cases"].items():
        lines.append(f"  {prec:<5} mean {d['mean']:.3f}  p99.9 {d['p999']:.0f}  max {d['max']:.0f} levels, "
                     f"{d['share_above_1']:.3%} above 1, PSNR {d['psnr_db']:.1f} dB")
    return lines


def _speed_lines(s: dict) -> list[str]:
    lines = [f"{'tile':>5} {'batch':>5} {'prec':<5} {'model Mpx/s':>11} {'TFLOP/s':>8} {'e2e Mpx/s':>10} "
             f"{'e2e/model':>9} {'recompute':>9} {'peak GiB':>8}"]
    for row in s["rows"]:
        peak = f"{row['peak_gpu_memory_gib']:.2f}" if row["peak_gpu_memory_gib"] is not None else "-"
        lines.append(f"{row['tile']:>5} {row['batch']:>5} {row['precision']:<5} {row['model_only_mpx_s']:>11.3g} "
                     f"{row['model_only_tflop_s']:>8.3g} {row['end_to_end_mpx_s']:>10.3g} "
                     f"{row['end_to_end_over_model_only']:>9.0%} {row['recompute']:>9.2f} {peak:>8}")
    if s["skipped_for_time"]:
        lines.append(f"  skipped for time: {', '.join(s['skipped_for_time'])}")
    return lines


def _pipeline_lines(pc: dict) -> list[str]:
    c_on, c_off = pc["consistency"]["on"], pc["consistency"]["off"]
    return [f"pipeline with a stand-in model (tile {pc['tile']}, batch {pc['batch']}): "
            f"{c_on['output_mpx_s']:.3g} output Mpx/s with consistency, {c_off['output_mpx_s']:.3g} without"]


def _folder_lines(f: dict) -> list[str]:
    return [f"{row['input']}, {row['files_in_flight']} in flight ({row['precision']}, tile {row['tile']}, "
            f"batch {row['batch']}): {row['total_s']:.2f} s, {row['share']:.0%} of it in the model"
            for row in f["rows"]]


def _big_lines(b: dict) -> list[str]:
    t = f"{b['seconds']:.1f} s" if b.get("seconds") else "unknown"
    return [f"{b['size']} x {b['size']} x {b['bands']} {b['dtype']} at x{b['scale']} (tile {b['tile']}, "
            f"batch {b['batch']}, {b['precision']}): {t} ({b['label']})"]


# section name, the key a measured section has, its lines, the name its error is shown under
SUMMARIES = (("consistency", "cases", _consistency_lines, "consistency"), ("speed", "rows", _speed_lines, "speed"),
             ("pipeline", "consistency", _pipeline_lines, "pipeline"), ("folder", "rows", _folder_lines, "folder"),
             ("big", "label", _big_lines, "big raster"))


def summary_lines(r: dict) -> list[str]:
    lines = [f"{r['hardware']} | torch {r['torch']} | Python {r['python']} | model {r['model']}"]
    for name, key, format_lines, shown in SUMMARIES:
        part = r.get(name, {})
        if key in part:
            lines += format_lines(part)
        elif "error" in part:
            lines.append(f"{shown}: {part['error']}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--out", required=True, help="folder for measure.json, measure.txt and the work files")
    p.add_argument("--budget-s", type=float, default=210.0, help="wall-clock budget of the whole measurement")
    p.add_argument("--tiles", default=None, help="tile sizes in input pixels (default 16,64,128; smoke 16,32)")
    p.add_argument("--precisions", default=None, help="default fp16,bf16 on CUDA, bf16 on a CPU")
    p.add_argument("--batch", type=int, default=None, help="tiles per forward (default: by tile size)")
    p.add_argument("--crop", type=int, default=None, help="side of the real window (default 256; smoke 32)")
    p.add_argument("--synthetic", type=int, default=None, help="side of the uint8 raster timed end to end "
                   "(default 1024; smoke 48)")
    p.add_argument("--big", type=int, default=None, help="side of the uint16 raster (default 10980; smoke 512)")
    p.add_argument("--big-tile", type=int, default=64, help="tile for the big raster (64: a 256-px model's card)")
    p.add_argument("--folder-files", type=int, default=None, help="files in the folder (default 64; smoke 3)")
    p.add_argument("--folder-size", type=int, default=None, help="side of each file (default 256; smoke 48)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to test the script on a CPU")
    args = p.parse_args()

    clock = Clock(args.budget_s)
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model)
    device = torch.device(args.device)
    smoke = args.smoke
    tiles = [int(t) for t in (args.tiles or ("16,32" if smoke else "16,64,128")).split(",")]
    precisions = (args.precisions or ("fp16,bf16" if device.type == "cuda" else "bf16")).split(",")
    crop = args.crop or (32 if smoke else 256)
    synthetic_size = args.synthetic or (48 if smoke else 1024)
    big = args.big or (512 if smoke else 10980)
    repeats = args.repeats or (1 if smoke else 3)
    batches = {t: args.batch or default_batch(t, device) for t in tiles + [args.big_tile]}

    results = {
        "hardware": describe_hardware(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "model": str(model.relative_to(REPO) if model.is_relative_to(REPO)
                                                         else model),
        "device": str(device), "budget_s": args.budget_s, "smoke": smoke,
    }
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    section(results, "consistency", lambda: consistency(model, args.device, precisions, crop, work))
    synthetic = bench.make_synthetic(work / f"synthetic_{synthetic_size}.tif", synthetic_size)
    # the speed sweep may use up to 45 % of the budget; the big raster gets the rest (about 110 s of 210)
    section(results, "speed", lambda: speed(model, args.device, precisions, tiles, batches, synthetic, repeats,
                                            clock, stop_at=0.45 * args.budget_s))
    section(results, "pipeline", lambda: pipeline_ceiling(model, args.device, synthetic, args.big_tile,
                                                          batches[args.big_tile], repeats))
    big_prec = "bf16" if "bf16" in precisions else precisions[0]
    section(results, "folder", lambda: folder_share(model, args.device, big_prec, args.folder_files or (3 if smoke
                                                    else 64), args.folder_size or (48 if smoke else 256),
                                                    batches[args.big_tile], work))
    section(results, "big", lambda: big_raster(model, args.device, big_prec, big, args.big_tile,
                                               batches[args.big_tile], work, args.budget_s - 5, clock))
    results["elapsed_s"] = clock.elapsed()
    (out / "measure.json").write_text(json.dumps(results, indent=2) + "\n")
    text = "\n".join(summary_lines(results)) + "\n"
    (out / "measure.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
