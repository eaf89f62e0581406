"""The GPU path of geosr, measured within a wall-clock budget (step (a) of benchmarks/gpu/run.sh).

    python benchmarks/gpu/measure.py --device cuda --out DIR [--budget-s 210] [--tiles 64,128,16] [--smoke]

1. **CUDA against the CPU**: ``upscale_raster`` on a central window of examples/data/RGB.byte.tif (a real Landsat
   scene), on the device at fp32, bf16 and fp16 and on the CPU at fp32 (the reference), with the card's tiles.
   The outputs' differences in grey levels (mean, 99.9th percentile, largest, share above one level, PSNR); the
   check passes when the device's fp32 output is within rounding of the CPU's (mean <= 0.05, p99.9 <= 1 level; with
   cuDNN's TF32 convolutions allowed, fp16's tolerance) and bf16/fp16 within their precision (mean <= 0.5, p99.9 <= 4
   levels). ``--device cpu`` compares the CPU with itself (that only tests the script).
2. **Speed per tile size and precision** (fp16 and bf16 on CUDA; the card's tile first): model-only output Mpx/s on
   batches of random tiles, end-to-end output Mpx/s of ``upscale_raster`` on a synthetic uint8 raster with the same
   tiles and batches, their ratio counting the recomputed overlap (benchmarks/bench.py's functions), and the peak GPU
   memory of the end-to-end run (``torch.cuda.max_memory_allocated``). Cases start until 40 % of the budget (of
   210 s at most: 84 s).
3. **Where the time goes**: ``upscale_raster`` of a synthetic uint8 raster (2048 x 2048 at x4, smaller where the
   speed section's end-to-end rate says it would take more than --stages-s, 30 s) with the real model at the card's
   tile and overlap, bf16 on CUDA, the consistency correction on (the default), and geosr.stagetimer's timers on,
   each stage synchronised with the device as it ends: the seconds of each stage (read, normalise, host to device,
   model, blend, consistency, dtype mapping, device to host, compression and write, the waits) and their share of the
   wall time, in benchmarks/pipeline_only.py's table. Runs only before 50 % of the budget (105 s at most).
4. **The model nearer the card's peak**: model-only output Mpx/s at the card's tile and a GPU batch, bf16 then fp16,
   of the model as geosr runs it (eager; the same timer as section 2, so the figures agree), under ``torch.compile``
   (default mode) and under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs), each as the speed table times it
   (numpy in and out) and with the tiles and the output on the device (as the pipeline calls it). Each compilation's
   seconds are counted apart, from cold caches (a machine's first run), with the output Mpx a compilation must serve
   before it pays, and the largest difference from the eager output. A variant that raises (no Triton, no compiler)
   is recorded as unavailable and the next one runs. The section runs in a process of its own, stopped at its cap
   (--compile-s, 90 s; less where the budget is short) whatever it is doing, and only where it has 45 s before the
   last 40 % of the budget (84 s at most), which the sections below keep: at 210 s it must end by 126 s, and a larger
   budget gives its extra seconds to this section first.
5. **The pipeline's ceiling**: ``upscale_raster`` of the same synthetic raster with benchmarks/pipeline_only.py's
   stand-in model (almost free) on the device, with and without the consistency correction.
6. **A folder of small tiles**: ``upscale_batch`` over a folder of 64 synthetic 256 x 256 uint8 GeoTIFFs (what
   ``geosr upscale DIR -o DIR`` runs) with the card's tiles, one file at a time and 4 in flight sharing the model's
   calls (``--files-in-flight 4``): wall time and the share of it inside the model's calls
   (benchmarks/model_share.py, each call synchronised).
7. **A Sentinel-2-size tile at x4**: a 10980 x 10980 3-band uint16 synthetic GeoTIFF written to local disk first,
   then upscaled with the default output settings (deflate); when the budget runs out first the run stops and the
   time is extrapolated from the tiles done, and labelled so ("run to the end" or "extrapolated"). Beside the time,
   the peak GPU memory and the peak host memory: the resident memory sampled during the run, and the process's
   ``ru_maxrss`` before and after it (the peak of the whole process so far, so it names the run's own peak only where
   it rose during the run).

Writes ``measure.json`` and ``measure.txt`` to --out. Every section records its error instead of stopping the rest,
and a section the budget leaves no room for is recorded as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
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
from geosr.checkpoint import read_card  # noqa: E402
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


# --- the device against the CPU --------------------------------------------------------------------------------


TOLERANCE = {
    "fp32": {"mean": 0.05, "p999": 1.0},
    "bf16": {"mean": 0.5, "p999": 4.0},
    "fp16": {"mean": 0.5, "p999": 4.0},
}


def difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Differences between two outputs of the same dtype, in grey levels."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float((d**2).mean())
    return {
        "mean": float(d.mean()),
        "p999": float(np.quantile(d, 0.999)),
        "max": float(d.max()),
        "share_above_1": float((d > 1).mean()),
        "psnr_db": 10 * np.log10(255**2 / mse) if mse else float("inf"),
    }


def consistency(model: Path, device: str, precisions: list[str], crop: int, work: Path) -> dict:
    """upscale_raster on a real window on the device at each precision against the CPU at fp32."""
    src = bench.crop_raster(REAL_RASTER, work / f"rgb_{crop}.tif", crop)
    reference = work / "cpu_fp32.tif"
    t = time.perf_counter()
    upscale_raster(
        src, reference, load_predictor(model, device="cpu", precision="fp32"), UpscaleOptions(overwrite=True)
    )
    out = {
        "raster": f"{REAL_RASTER.name}, central {crop} x {crop} window",
        "cpu_fp32_s": time.perf_counter() - t,
        "tolerance": TOLERANCE,
        "cases": {},
    }
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


# --- speed per tile size and precision -----------------------------------------------------------------------------


def default_batch(tile: int, device: torch.device) -> int:
    """Tiles per forward: about 256 x 256 input pixels per batch on a GPU (at least 8), 4 tiles on a CPU."""
    return max(8, (256 * 256) // (tile * tile)) if device.type == "cuda" else 4


def speed(
    model: Path,
    device: str,
    precisions: list[str],
    tiles: list[int],
    batches: dict[int, int],
    synthetic: Path,
    repeats: int,
    clock: Clock,
    stop_at: float,
) -> dict:
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
            rows.append(
                {
                    "tile": tile,
                    "overlap": overlap,
                    "batch": batch,
                    "precision": prec,
                    "model_only_mpx_s": mo,
                    "model_only_tflop_s": mo * flops[tile] / 1e3,
                    "end_to_end_mpx_s": out_mpx / seconds,
                    "end_to_end_s": seconds,
                    "first_run_s": first,
                    "recompute": recompute,
                    "end_to_end_over_model_only": out_mpx * recompute / seconds / mo,
                    "peak_gpu_memory_gib": peak_gb,
                }
            )
            del predictor
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return {
        "synthetic": synthetic.name,
        "repeats": repeats,
        "gflop_per_output_mpx": flops,
        "rows": rows,
        "skipped_for_time": skipped,
    }


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


def folder_share(
    model: Path,
    device: str,
    precision: str,
    files: int,
    size: int,
    batch: int,
    work: Path,
    in_flight: tuple[int, ...] = (1, 4),
) -> dict:
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


# --- where the time goes, by stage, with the real model ---------------------------------------------------------------


def stages_size(default: int, rate_mpx_s: float | None, seconds: float, scale: int) -> int:
    """The side of the uint8 raster the stage table runs on: ``default``, or less where the end-to-end rate of the
    speed section (output Mpx/s at the same tile and precision) says it would take more than ``seconds`` (with the
    stage timer's synchronisations counted as 30 % more); a multiple of 128, at least 256 (unless default is less)."""
    if not rate_mpx_s:
        return default
    side = int(math.sqrt(rate_mpx_s * seconds / 1.3 * 1e6) / scale) // 128 * 128
    return min(default, max(256, side))


def stages(model: Path, device: str, precision: str, size: int, batch: int | None, work: Path) -> dict:
    """``upscale_raster`` of a size x size uint8 raster with the real model at the card's tile and overlap (the
    consistency correction on, as by default) and geosr.stagetimer's timers on, synchronised with the device as each
    stage ends: each stage's seconds, its share of the wall time and its thread's CPU seconds
    (benchmarks/pipeline_only.py's stage_seconds and stage_table)."""
    po = _module("pipeline_only")
    src = work / f"synthetic_{size}.tif"
    t = time.perf_counter()
    if not src.exists():
        bench.make_synthetic(src, size)
    written_s = time.perf_counter() - t
    predictor = load_predictor(model, device=device, precision=precision)
    card, dev = predictor.card, predictor.device
    batch = batch or default_batch(card.tile_size, dev)
    # the model's own label in the table (the table's is the stand-in's); this module's copy only
    po.STAGES = [
        (th, k, f"model ({predictor.source}, {precision})" if k == "model" else label) for th, k, label in po.STAGES
    ]
    t = time.perf_counter()  # one batch first: cuDNN picks its kernels for the shape outside the table
    predictor(np.zeros((batch, predictor.channels, card.tile_size, card.tile_size), np.float32))
    sync(dev)
    warm_s = time.perf_counter() - t
    opts = argparse.Namespace(tile=card.tile_size, overlap=card.overlap, batch=batch)
    dst = work / f"stages_{size}_x{predictor.scale}.tif"
    try:
        timer, wall = po.stage_seconds(src, dst, predictor, opts, consistency=True)
    finally:
        dst.unlink(missing_ok=True)
    rows = [
        {
            "thread": th,
            "stage": k,
            "seconds": s,
            "share": s / wall,
            "cpu_s": timer.cpu.get((th, k), 0.0),
            "calls": timer.calls.get((th, k), 0),
        }
        for (th, k), s in timer.seconds.items()
    ]
    rows.sort(key=lambda r: -r["seconds"])
    out_mpx = (size * predictor.scale) ** 2 / 1e6
    return {
        "size": size,
        "bands": 3,
        "dtype": "uint8",
        "scale": predictor.scale,
        "tile": card.tile_size,
        "overlap": card.overlap,
        "batch": batch,
        "precision": precision,
        "consistency": True,
        "write_input_s": written_s,
        "warm_up_s": warm_s,
        "wall_s": wall,
        "output_mpx": out_mpx,
        "output_mpx_s": out_mpx / wall,
        "rows": rows,
        "table": po.stage_table([(timer, wall)], ("consistency on",)).splitlines(),
    }


# --- torch.compile and CUDA graphs, the model alone -------------------------------------------------------------------

VARIANTS = {"eager": None, "compile": {}, "compile reduce-overhead": {"mode": "reduce-overhead"}}


def compile_variant(predictor, variant: str, x: np.ndarray, repeats: int) -> tuple[dict, np.ndarray]:
    """One way of running the model at the predictor's precision: output Mpx/s as the speed section times it
    (bench.model_only: numpy in and out) and with the tiles and the output on the device (Predictor.run, as the
    strip loop calls it), the first call's seconds (the compilation, for a compiled model) and those of the calls
    that follow until it is steady (CUDA graphs are recorded on the second and third calls). Returns the row and the
    first call's output."""
    dev = predictor.device
    run = predictor
    if VARIANTS[variant] is not None:
        import torch._dynamo as dynamo  # (here: a platform without it records the variant as unavailable)

        dynamo.reset()  # each variant compiles from scratch: its compile time is its own
        run = dataclasses.replace(predictor, model=torch.compile(predictor.model, **VARIANTS[variant]))
    t = time.perf_counter()
    y = run(x)
    sync(dev)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(2 if "reduce-overhead" in variant else 0):
        run(x)
    sync(dev)
    settle_s = time.perf_counter() - t
    batch, _, tile, _ = x.shape
    mo = bench.model_only(run, tile, batch, repeats)
    xd = torch.from_numpy(x).to(dev)
    on_device_s = bench.median_time(lambda: run.run(xd), dev, repeats=repeats, warmup=1)
    return {
        "model_only_mpx_s": mo,
        "on_device_mpx_s": batch * (tile * predictor.scale) ** 2 / on_device_s / 1e6,
        "first_call_s": first_s,
        "settle_s": settle_s,
    }, y


def compile_worker(spec_path: str) -> None:
    """The compile section's own process (``measure.py --compile-worker SPEC``): every (precision, variant) of the
    spec in turn, each row appended to the spec's rows file as it ends, a failure recorded as unavailable; a variant
    to compile starts only while the spec's cap leaves at least the last compilation's seconds."""
    t0 = time.monotonic()
    spec = json.loads(Path(spec_path).read_text())
    rows_path, cap = Path(spec["rows"]), spec["cap_s"]

    def emit(row: dict) -> None:
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    last_compile = 0.0
    for prec in spec["precisions"]:
        predictor = load_predictor(spec["model"], device=spec["device"], precision=prec)
        tile, batch = spec["tile"], spec["batch"]
        x = np.random.default_rng(0).uniform(-1, 1, (batch, predictor.channels, tile, tile)).astype(np.float32)
        reference = None
        for variant in spec["variants"]:
            row = {"precision": prec, "variant": variant}
            left = cap - (time.monotonic() - t0)
            if variant != "eager" and left < max(5.0, last_compile):
                row["skipped"] = f"{max(left, 0):.0f} s left of the section's {cap:.0f} s" + (
                    f", the last compilation took {last_compile:.0f} s" if last_compile else ""
                )
                emit(row)
                continue
            try:
                result, y = compile_variant(predictor, variant, x, spec["repeats"])
                row.update(result)
                if variant == "eager":
                    reference = y
                else:
                    last_compile = result["first_call_s"] + result["settle_s"]
                    if reference is not None:
                        row["max_abs_diff"] = float(np.abs(y - reference).max())  # model range [-1, 1]
                        row["mean_abs_diff"] = float(np.abs(y - reference).mean())
            except Exception as exc:  # no Triton, no C compiler, a graph dynamo cannot take: the next variant
                row["unavailable"] = f"{type(exc).__name__}: {one_line(str(exc))}"
            emit(row)
            if predictor.device.type == "cuda":
                torch.cuda.empty_cache()


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut at ``limit`` characters (a compiler's errors run over many lines)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def compiled(
    model: Path, device: str, precisions: list[str], tile: int, batch: int, repeats: int, cap_s: float, work: Path
) -> dict:
    """Model-only output Mpx/s of the model as geosr runs it (eager), under ``torch.compile`` (default mode) and
    under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs; CUDA only), at each precision (bf16 first), with
    each compilation's seconds and the largest difference from the eager output. It runs in a process of its own,
    stopped at ``cap_s`` whatever it is doing (a compilation cannot be interrupted otherwise), so that no compiler
    holds the rest of the measurement; the rows finished by then are kept."""
    cuda = torch.device(device).type == "cuda"
    variants = list(VARIANTS) if cuda else ["eager", "compile"]
    order = [p for p in ("bf16", "fp16", "fp32") if p in precisions] or precisions
    rows_path, spec_path, log_path = work / "compile_rows.jsonl", work / "compile_spec.json", work / "compile.log"
    rows_path.unlink(missing_ok=True)
    spec_path.write_text(
        json.dumps(
            {
                "model": str(model),
                "device": device,
                "precisions": order,
                "tile": tile,
                "batch": batch,
                "repeats": repeats,
                "variants": variants,
                "cap_s": cap_s,
                "rows": str(rows_path),
            }
        )
    )
    # cold caches, as on a machine's first run: each compilation's time is all of it
    cache = work / "compile-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"), TRITON_CACHE_DIR=str(cache / "triton"))
    t = time.monotonic()
    stopped = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--compile-worker", str(spec_path)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=cap_s + 5)
        except subprocess.TimeoutExpired:  # its process group: the compiler's workers go with it
            os.killpg(proc.pid, signal.SIGKILL)
            rc, stopped = proc.wait(), True
    shutil.rmtree(cache, ignore_errors=True)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["precision"], r["variant"]) for r in rows}
    missing = [(p, v) for p in order for v in variants if (p, v) not in done]
    if missing:
        tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        first = {"precision": missing[0][0], "variant": missing[0][1]}
        if stopped:
            first["stopped"] = f"at the section's cap of {cap_s:.0f} s while it ran (compilation included)"
        else:
            first["unavailable"] = f"the worker exited with {rc}: {one_line(tail[0]) if tail else 'no output'}"
        rows.append(first)
        rows += [{"precision": p, "variant": v, "skipped": "not started"} for p, v in missing[1:]]
    if not cuda:
        rows += [
            {"precision": p, "variant": "compile reduce-overhead", "skipped": "CUDA graphs: CUDA only"} for p in order
        ]
    eager = {r["precision"]: r for r in rows if r["variant"] == "eager" and "on_device_mpx_s" in r}
    for r in rows:  # how many output Mpx a compilation must serve before it pays (on-device rates, 3 % faster)
        e = eager.get(r["precision"])
        if e and r["variant"] != "eager" and r.get("on_device_mpx_s", 0) > 1.03 * e["on_device_mpx_s"]:
            saved = 1 / e["on_device_mpx_s"] - 1 / r["on_device_mpx_s"]  # seconds per output Mpx
            r["pays_after_output_mpx"] = (r["first_call_s"] + r["settle_s"]) / saved
    return {
        "tile": tile,
        "batch": batch,
        "repeats": repeats,
        "cap_s": cap_s,
        "worker_s": time.monotonic() - t,
        "stopped_at_cap": stopped,
        "rows": rows,
    }


# --- host memory ------------------------------------------------------------------------------------------------------


def max_rss_gib() -> float | None:
    """ru_maxrss of this process: the peak resident memory of the whole process so far (KiB on Linux, bytes on
    macOS); None where the resource module is missing."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def rss_gib() -> float | None:
    """The resident memory of this process now (/proc/self/status; None where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


class RssPeak:
    """The largest resident memory of this process seen while the block runs (sampled every 0.2 s on a thread):
    the peak of the block itself, which ru_maxrss cannot give once an earlier section went higher."""

    def __enter__(self) -> RssPeak:
        self.start = self.peak = rss_gib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            now = rss_gib()
            if now is not None and (self.peak is None or now > self.peak):
                self.peak = now
            if self._stop.wait(0.2):
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- a Sentinel-2-size raster --------------------------------------------------------------------------------------


def write_uint16_raster(path: Path, size: int, bands: int = 3, rows_per_write: int = 1024) -> float:
    """A size x size uint16 GeoTIFF (tiled, uncompressed) with smooth structure and noise; returns seconds taken."""
    if path.exists():
        with rasterio.open(path) as src:
            if src.width == size and src.height == size and src.count == bands:
                return 0.0
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp.tif")
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype="uint16",
        crs="EPSG:32633",
        transform=rasterio.Affine(10, 0, 600000, 0, -10, 5000040),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        BIGTIFF="IF_SAFER",
    )
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


def big_raster(
    model: Path,
    device: str,
    precision: str,
    size: int,
    tile: int,
    batch: int,
    work: Path,
    deadline: float,
    clock: Clock,
) -> dict:
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

    out = {
        "size": size,
        "bands": 3,
        "dtype": "uint16",
        "scale": predictor.scale,
        "tile": tile,
        "overlap": tile // 4,
        "batch": batch,
        "precision": precision,
        "compress": options.compress,
        "write_input_s": written_s,
    }
    if predictor.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(predictor.device)
    out["max_rss_before_gib"] = max_rss_gib()  # the peak of the whole process so far: earlier sections included
    t = time.perf_counter()
    with RssPeak() as rss:
        try:
            upscale_raster(src, dst, predictor, options, progress)
            seconds = time.perf_counter() - t
            out.update(complete=True, seconds=seconds, label=f"run to the end: the whole {size} x {size} raster")
        except OutOfBudget:
            seconds = time.perf_counter() - t
            frac = state["done"] / state["total"] if state["total"] else 0.0
            out.update(
                complete=False,
                seconds_run=seconds,
                fraction_done=frac,
                seconds=seconds / frac if frac else None,
                label=(
                    f"extrapolated from {frac:.1%} of the tiles done in {seconds:.1f} s"
                    if frac
                    else f"no tile finished in {seconds:.1f} s"
                ),
            )
        finally:
            dst.unlink(missing_ok=True)
            sync(predictor.device)
    out["max_rss_after_gib"] = max_rss_gib()
    out["rss_at_start_gib"], out["rss_peak_during_gib"] = rss.start, rss.peak  # sampled every 0.2 s
    if predictor.device.type == "cuda":
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(predictor.device) / 2**30
    out["output_mpx"] = (size * predictor.scale) ** 2 / 1e6
    if out.get("seconds"):
        out["output_mpx_s"] = out["output_mpx"] / out["seconds"]
    return out


# The big raster runs right after the stage table where the speed section's end-to-end rate says it will run to the
# end (issue 24 item 4 asks for it whole, not extrapolated) in what is left of the budget, less AFTER_BIG_S kept for
# the pipeline's ceiling and the folder; the compile section then gets what is left, if anything. Otherwise it runs
# last, as before, and is extrapolated where the budget ends first. The estimate: the output megapixels at the rate
# measured on the 1024 x 1024 raster with a 30 % margin, plus writing its uint16 input at the first run's pace
# (0.72 GB in 11.2 s on the H200's host).
AFTER_BIG_S, BIG_MARGIN, INPUT_S_PER_GB = 20.0, 1.3, 16.0


def big_expected_s(row: dict | None, size: int, scale: int, bands: int = 3) -> float | None:
    """Seconds the size x size uint16 raster is expected to take at ``row``'s end-to-end rate (None without one)."""
    rate = (row or {}).get("end_to_end_mpx_s")
    if not rate:
        return None
    return (size * scale) ** 2 / 1e6 / rate * BIG_MARGIN + size * size * bands * 2 / 1e9 * INPUT_S_PER_GB


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
        lines.append(
            f"  {prec:<5} mean {d['mean']:.3f}  p99.9 {d['p999']:.0f}  max {d['max']:.0f} levels, "
            f"{d['share_above_1']:.3%} above 1, PSNR {d['psnr_db']:.1f} dB"
        )
    return lines


def _speed_lines(s: dict) -> list[str]:
    lines = [
        f"{'tile':>5} {'batch':>5} {'prec':<5} {'model Mpx/s':>11} {'TFLOP/s':>8} {'e2e Mpx/s':>10} "
        f"{'e2e/model':>9} {'recompute':>9} {'peak GiB':>8}"
    ]
    for row in s["rows"]:
        peak = f"{row['peak_gpu_memory_gib']:.2f}" if row["peak_gpu_memory_gib"] is not None else "-"
        lines.append(
            f"{row['tile']:>5} {row['batch']:>5} {row['precision']:<5} {row['model_only_mpx_s']:>11.3g} "
            f"{row['model_only_tflop_s']:>8.3g} {row['end_to_end_mpx_s']:>10.3g} "
            f"{row['end_to_end_over_model_only']:>9.0%} {row['recompute']:>9.2f} {peak:>8}"
        )
    if s["skipped_for_time"]:
        lines.append(f"  skipped for time: {', '.join(s['skipped_for_time'])}")
    return lines


def _pipeline_lines(pc: dict) -> list[str]:
    c_on, c_off = pc["consistency"]["on"], pc["consistency"]["off"]
    return [
        f"pipeline with a stand-in model (tile {pc['tile']}, batch {pc['batch']}): "
        f"{c_on['output_mpx_s']:.3g} output Mpx/s with consistency, {c_off['output_mpx_s']:.3g} without"
    ]


def _folder_lines(f: dict) -> list[str]:
    return [
        f"{row['input']}, {row['files_in_flight']} in flight ({row['precision']}, tile {row['tile']}, "
        f"batch {row['batch']}): {row['total_s']:.2f} s, {row['share']:.0%} of it in the model"
        for row in f["rows"]
    ]


def _big_lines(b: dict) -> list[str]:
    head = (
        f"{b['size']} x {b['size']} x {b['bands']} {b['dtype']} at x{b['scale']} (tile {b['tile']}, "
        f"batch {b['batch']}, {b['precision']}): "
    )
    if b.get("complete"):
        head += f"run to the end in {b['seconds']:.1f} s, {b['output_mpx_s']:.3g} output Mpx/s"
    elif b.get("seconds"):
        head += (
            f"extrapolated to {b['seconds']:.1f} s, {b['output_mpx_s']:.3g} output Mpx/s (stopped for time "
            f"after {b['fraction_done']:.1%} of the tiles, {b['seconds_run']:.1f} s)"
        )
    else:
        head += f"unknown ({b['label']})"

    def gib(v: float | None) -> str:
        return f"{v:.2f} GiB" if v is not None else "-"

    gpu = f"GPU {gib(b['peak_gpu_memory_gib'])} (max_memory_allocated); " if "peak_gpu_memory_gib" in b else ""
    return [
        head,
        *([f"  ran {b['order']}"] if b.get("order") else []),
        f"  peak memory of the run: {gpu}host {gib(b.get('rss_peak_during_gib'))} resident, sampled "
        f"(from {gib(b.get('rss_at_start_gib'))} at its start); the process's ru_maxrss "
        f"{gib(b.get('max_rss_after_gib'))} after it, {gib(b.get('max_rss_before_gib'))} before it (the "
        "peak of the whole process so far, earlier sections included)",
    ]


def _stages_lines(st: dict) -> list[str]:
    return [
        f"where the time goes, {st['size']}^2 x {st['bands']} {st['dtype']} at x{st['scale']} with the model "
        f"({st['precision']}, tile {st['tile']}, overlap {st['overlap']}, batch {st['batch']}, consistency on, "
        f"each stage synchronised): {st['wall_s']:.2f} s, {st['output_mpx_s']:.3g} output Mpx/s",
        *st["table"],
    ]


def _compile_lines(c: dict) -> list[str]:
    lines = [
        f"the model alone, eager and compiled (tile {c['tile']}, batch {c['batch']}; output Mpx/s with numpy in "
        "and out as in the speed table / with tiles and output on the device):"
    ]
    for r in c["rows"]:
        label = f"  {r['precision']:<5} {r['variant']:<24}"
        status = next((k for k in ("skipped", "unavailable", "stopped") if k in r), None)
        if status:
            lines.append(f"{label} {status}: {r[status]}")
            continue
        text = f"{label} {r['model_only_mpx_s']:>8.3g} / {r['on_device_mpx_s']:<8.3g}"
        if r["variant"] == "eager":
            speed = f", speed table {r['speed_table_mpx_s']:.3g}" if r.get("speed_table_mpx_s") else ""
            lines.append(f"{text} first call {r['first_call_s']:.1f} s{speed}")
            continue
        text += f" compile {r['first_call_s']:.1f} s + {r['settle_s']:.1f} s to settle, " + (
            f"max |diff| from eager {r['max_abs_diff']:.2g} (model range [-1, 1])"
            if "max_abs_diff" in r
            else "no eager output to compare"
        )
        pays = r.get("pays_after_output_mpx")
        lines.append(text + (f"; pays after {pays:.3g} output Mpx" if pays else "; not 3 % faster on the device"))
    if c.get("stopped_at_cap"):
        lines.append(f"  (stopped at the section's cap of {c['cap_s']:.0f} s)")
    return lines


# section name, the key a measured section has, its lines, the name its error is shown under
SUMMARIES = (
    ("consistency", "cases", _consistency_lines, "consistency"),
    ("speed", "rows", _speed_lines, "speed"),
    ("stages", "table", _stages_lines, "where the time goes"),
    ("compile", "rows", _compile_lines, "torch.compile"),
    ("pipeline", "consistency", _pipeline_lines, "pipeline"),
    ("folder", "rows", _folder_lines, "folder"),
    ("big", "label", _big_lines, "big raster"),
)


def summary_lines(r: dict) -> list[str]:
    lines = [f"{r['hardware']} | torch {r['torch']} | Python {r['python']} | model {r['model']}"]
    for name, key, format_lines, shown in SUMMARIES:
        part = r.get(name, {})
        if key in part:
            lines += format_lines(part)
        elif "error" in part:
            lines.append(f"{shown}: {part['error']}")
        elif "skipped" in part:
            lines.append(f"{shown}: skipped ({part['skipped']})")
    return lines


# How the budget is shared, as fractions of the budget up to BASE_S (the default) in elapsed time: the speed sweep
# starts cases until SPEED_UNTIL of it, the stage table runs only before STAGES_UNTIL, and the compile section must
# end LATER_RESERVE of it before the end of the budget: that last part is kept for the pipeline's ceiling, the folder
# and the big raster (which stops 5 s before the end and extrapolates). At 210 s: 84 s, 105 s, and the compile section
# ends by 126 s; a larger budget gives its extra seconds to the compile section (up to its cap), then the big raster.
BASE_S, SPEED_UNTIL, STAGES_UNTIL, LATER_RESERVE = 210.0, 0.40, 0.50, 0.40


def skip(results: dict, name: str, reason: str) -> None:
    results[name] = {"skipped": reason, "section_s": 0.0}
    print(f"[measure] {name}: skipped ({reason})", flush=True)


def speed_row(results: dict, tile: int, precision: str) -> dict | None:
    """The speed section's row for ``tile`` at ``precision``, if it was measured."""
    return next(
        (r for r in results.get("speed", {}).get("rows", []) if r["tile"] == tile and r["precision"] == precision), None
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--compile-worker":  # the compile section's own process
        compile_worker(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--out", required=True, help="folder for measure.json, measure.txt and the work files")
    p.add_argument("--budget-s", type=float, default=210.0, help="wall-clock budget of the whole measurement")
    p.add_argument("--tiles", default=None, help="tile sizes in input pixels (default 64,128,16; smoke 16,32)")
    p.add_argument("--precisions", default=None, help="default fp16,bf16 on CUDA, bf16 on a CPU")
    p.add_argument("--batch", type=int, default=None, help="tiles per forward (default: by tile size)")
    p.add_argument("--crop", type=int, default=None, help="side of the real window (default 256; smoke 32)")
    p.add_argument(
        "--synthetic", type=int, default=None, help="side of the uint8 raster timed end to end (default 1024; smoke 48)"
    )
    p.add_argument(
        "--stages-size",
        type=int,
        default=None,
        help="side of the uint8 raster of the stage table "
        "(default 2048, less where the speed section's rate says it would take over --stages-s; smoke 48)",
    )
    p.add_argument("--stages-s", type=float, default=30.0, help="seconds the stage table's run may take")
    p.add_argument(
        "--compile-s",
        type=float,
        default=None,
        help="cap of the compile section, compilations included (default 90; smoke 20)",
    )
    p.add_argument(
        "--compile-tile",
        type=int,
        default=None,
        help="tile of the compile section (default the card's; smoke the first of --tiles)",
    )
    p.add_argument("--big", type=int, default=None, help="side of the uint16 raster (default 10980; smoke 512)")
    p.add_argument("--big-tile", type=int, default=64, help="tile for the big raster (64: a 256-px model's card)")
    p.add_argument("--folder-files", type=int, default=None, help="files in the folder (default 64; smoke 3)")
    p.add_argument("--folder-size", type=int, default=None, help="side of each file (default 256; smoke 48)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to test the script on a CPU")
    args = p.parse_args()

    clock = Clock(args.budget_s)
    budget = args.budget_s
    base = min(budget, BASE_S)
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model)
    device = torch.device(args.device)
    smoke = args.smoke
    tiles = [int(t) for t in (args.tiles or ("16,32" if smoke else "64,128,16")).split(",")]
    precisions = (args.precisions or ("fp16,bf16" if device.type == "cuda" else "bf16")).split(",")
    crop = args.crop or (32 if smoke else 256)
    synthetic_size = args.synthetic or (48 if smoke else 1024)
    big = args.big or (512 if smoke else 10980)
    repeats = args.repeats or (1 if smoke else 3)
    batches = {t: args.batch or default_batch(t, device) for t in tiles + [args.big_tile]}

    results = {
        "hardware": describe_hardware(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "model": str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
        "device": str(device),
        "budget_s": budget,
        "smoke": smoke,
        "budget_shares": {
            "speed_until_s": SPEED_UNTIL * base,
            "stages_until_s": STAGES_UNTIL * base,
            "compile_until_s": budget - LATER_RESERVE * base,
        },
    }
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    section(results, "consistency", lambda: consistency(model, args.device, precisions, crop, work))
    synthetic = bench.make_synthetic(work / f"synthetic_{synthetic_size}.tif", synthetic_size)
    section(
        results,
        "speed",
        lambda: speed(
            model, args.device, precisions, tiles, batches, synthetic, repeats, clock, stop_at=SPEED_UNTIL * base
        ),
    )
    big_prec = "bf16" if "bf16" in precisions else precisions[0]
    try:
        card = read_card(model)
        card_tile, scale = card.tile_size, card.scale
    except Exception:  # the sections that load the model record why
        card_tile, scale = args.big_tile, 4

    # where the time goes: sized from the speed section's end-to-end rate to fit its seconds
    left = min(args.stages_s, STAGES_UNTIL * base - clock.elapsed())
    if left < (1 if smoke else 10):
        skip(
            results,
            "stages",
            f"{clock.elapsed():.0f} s of the {budget:.0f} s budget spent; the stage table runs "
            f"only before {STAGES_UNTIL * base:.0f} s",
        )
    else:
        row = speed_row(results, card_tile, big_prec)
        size = stages_size(args.stages_size or (48 if smoke else 2048), row and row["end_to_end_mpx_s"], left, scale)
        section(results, "stages", lambda: stages(model, args.device, big_prec, size, args.batch, work))

    def run_big(deadline: float) -> None:
        section(
            results,
            "big",
            lambda: big_raster(
                model, args.device, big_prec, big, args.big_tile, batches[args.big_tile], work, deadline, clock
            ),
        )

    # the big raster next, where it is expected to run to the end before the pipeline and the folder need their time
    expected = big_expected_s(speed_row(results, args.big_tile, big_prec), big, scale)
    room = budget - 5 - AFTER_BIG_S - clock.elapsed()
    if expected is not None and expected <= room:
        run_big(budget - 5 - AFTER_BIG_S)
        results["big"]["order"] = (
            f"after the stage table: expected {expected:.0f} s at the speed table's end-to-end rate, "
            f"{room:.0f} s left before the last {AFTER_BIG_S:.0f} s"
        )

    # torch.compile / CUDA graphs, in a process stopped at the section's cap
    later = 0.0 if "big" in results else LATER_RESERVE * base  # kept for the sections after it
    cap = min(args.compile_s or (20.0 if smoke else 90.0), budget - max(later, AFTER_BIG_S) - clock.elapsed() - 5)
    if cap < (5 if smoke else 45):
        skip(
            results,
            "compile",
            f"{max(cap, 0):.0f} s left before the last {max(later, AFTER_BIG_S):.0f} s of the "
            f"{budget:.0f} s budget (kept for the pipeline, the folder"
            + (" and the big raster), " if "big" not in results else "; the big raster ran first), ")
            + f"{5 if smoke else 45} s needed",
        )
    else:
        tile = args.compile_tile or (tiles[0] if smoke else card_tile)
        section(
            results,
            "compile",
            lambda: compiled(
                model, args.device, precisions, tile, args.batch or default_batch(tile, device), repeats, cap, work
            ),
        )
        for r in results["compile"].get("rows", []):
            row = speed_row(results, tile, r["precision"])
            if r["variant"] == "eager" and row:
                r["speed_table_mpx_s"] = row["model_only_mpx_s"]

    section(
        results,
        "pipeline",
        lambda: pipeline_ceiling(model, args.device, synthetic, args.big_tile, batches[args.big_tile], repeats),
    )
    section(
        results,
        "folder",
        lambda: folder_share(
            model,
            args.device,
            big_prec,
            args.folder_files or (3 if smoke else 64),
            args.folder_size or (48 if smoke else 256),
            batches[args.big_tile],
            work,
        ),
    )
    if "big" not in results:
        run_big(budget - 5)
    results["elapsed_s"] = clock.elapsed()
    (out / "measure.json").write_text(json.dumps(results, indent=2) + "\n")
    text = "\n".join(summary_lines(results)) + "\n"
    (out / "measure.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
