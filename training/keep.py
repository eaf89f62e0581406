"""Training that does not stop: cycles of ``geosr train`` that continue a shipped model whenever a machine is free.

    python -m geosr.training.keep --scale 4 --root ~/geosr-runs --minutes 150 --threads 1

Each cycle is one run folder ``ROOT/x<scale>/cycle-<k>``: a new run started with ``--init-from`` the best model so
far (at first the bundled one) and a short learning-rate warm-up (a fresh Adam on trained weights otherwise takes a
few harmful steps), then a cosine decay to a small rate over ``--cycle-steps`` steps (``--lr-schedule step``: the
rate throughout), content loss only, at ``--patch-size`` HR pixels. Invocations end after ``--minutes``; the next
one resumes the cycle under way (``geosr train --resume``, with the run's own settings), so the process may be
killed at any time and started again. When a cycle has run all its steps, its weights (EMA, or with ``--no-ema`` the
raw ones) are exported (fp16, the card's tiles) and measured on the whole val split by ``geosr evaluate`` at the
shipped model's settings; the result, with the settings the run trained with, joins ``ROOT/x<scale>/cycles.json``.
A cycle that beats the best val PSNR so far by at least 0.01 dB becomes the start of the next cycle and is copied to
``ROOT/x<scale>/ship.safetensors``: the candidate to ship (committing it to ``geosr/weights`` stays a decision made
by a person, with its reports).
A cycle that does not beat it is kept for the record and the next cycle starts again from the best, with another
seed. When the run folders are gone, the next cycle starts from the bundled model again.

Other sensors: ``--extra-data DIR`` (e.g. the training crops of ``benchmarks/cross_sensor.py make --split train``)
mixes their images into the training items, ``--extra-repeat`` times each; ``--cross-sensor DIR`` measures every
finished cycle on a cross-sensor val set too (``benchmarks/cross_sensor.py make``), beside the whole val split.
``--degrade P`` trains a share P of the patches on blurred, noisy or JPEG-compressed LR (``training.degradation``).
``--cycles N`` ends the invocation after N finished cycles (an A/B run of one cycle in a root of its own).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from geosr.bundled import default_model
from geosr.checkpoint import read_card
from geosr.fileio import atomic_write


def _geosr(*args: str, threads: int) -> int:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "geosr.cli.main", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env)


def _last_train_step(run: Path) -> int:
    log = run / "log.csv"
    if not log.is_file():
        return 0
    with log.open(newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["kind"] == "train"]
    return max(steps, default=0)


def _load_history(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"cycles": []}


MIN_GAIN_DB = 0.01  # a cycle must beat the best by this much on the whole val split: less is the noise of one split


def _best(history: dict[str, Any], shipped: dict[str, Any]) -> dict[str, Any]:
    """The best measured model so far: the shipped one until a cycle beats it on the whole val split."""
    best = {"model": shipped["model"], "val_psnr": shipped["val_psnr"], "val_ssim": shipped["val_ssim"]}
    for entry in history["cycles"]:
        if entry["val_psnr"] >= best["val_psnr"] + MIN_GAIN_DB and Path(entry["model"]).is_file():
            best = entry
    return best


def _recipe(run: Path) -> dict[str, Any]:
    """How a cycle's run trained, from its config.toml (an invocation that resumes a cycle trains with the run's own
    settings, whatever its options say): the record of an A/B cycle names the settings that differ."""
    config = tomllib.loads((run / "config.toml").read_text())
    data, loss, optim, seed = config["data"], config["loss"], config["optim"], config["run"]["seed"]
    return {
        "steps": int(optim["max_steps"]),
        "patch_size": int(data["patch_size"]),
        "batch_size": int(data["batch_size"]),
        "lr": float(optim["lr_g"]),
        "lr_schedule": str(optim["lr_schedule"]),
        "ema": bool(optim["ema"]),
        "mse_weight": float(loss["mse_weight"]),
        "l1_weight": float(loss["l1_weight"]),
        "seed": int(seed),
        **(
            {"extra_data": list(data["extra_data"]), "extra_repeat": int(data["extra_repeat"])}
            if data.get("extra_data")
            else {}
        ),
        **({"degrade": float(data["degrade"])} if data.get("degrade") else {}),
    }


def _cross_sensor(model: Path, data: str, report: Path, a: argparse.Namespace) -> dict[str, Any] | None:
    """The model on the cross-sensor set (every image, the model's scale): its mean PSNR/SSIM and gain over bicubic,
    with the report's path; None when the evaluation failed."""
    report.unlink(missing_ok=True)
    args = ["evaluate", "--model", str(model), "--data", data, "--split", "all", "--scale", str(a.scale)]
    if _geosr(*args, "--precision", a.eval_precision, "-o", str(report), threads=a.threads):
        return None
    mean = json.loads(report.read_text())["summary"]["mean"]
    return {
        "cross_sensor_report": str(report),
        "cross_sensor_psnr": mean["psnr"],
        "cross_sensor_ssim": mean["ssim"],
        "cross_sensor_gain_db": mean["psnr"] - mean["psnr_bicubic"],
    }


def _train_args(a: argparse.Namespace, run: Path, start: str, seed: int) -> list[str]:
    return [
        "train",
        "--data",
        a.data,
        "--out",
        str(run),
        "--scale",
        str(a.scale),
        "--init-from",
        start,
        "--global-skip",
        "--res-scale",
        "0.1",
        "--no-diffusion",
        "--attention-dropout",
        "0",
        "--patch-size",
        str(a.patch_size),
        "--batch-size",
        str(a.batch_size),
        "--mse-weight",
        str(a.mse_weight),
        "--l1-weight",
        str(a.l1_weight),
        "--perceptual-weight",
        "0",
        "--adversarial-weight",
        "0",
        "--feature-matching-weight",
        "0",
        "--lr-g",
        str(a.lr),
        "--lr-decay-epochs",
        "",
        "--lr-schedule",
        a.lr_schedule,
        "--lr-min-factor",
        "0.02",
        "--lr-warmup-steps",
        str(a.warmup_steps),
        "--max-steps",
        str(a.cycle_steps),
        "--epochs",
        "100000",
        "--val-every",
        "0",
        "--val-every-steps",
        str(a.val_every_steps),
        "--val-images",
        "21",
        "--checkpoint-every-steps",
        "10",
        "--precision",
        a.precision,
        "--device",
        a.device,
        "--name",
        f"degan-x{a.scale}",
        "--seed",
        str(seed),
        "--ema" if a.ema else "--no-ema",
        *(option for folder in a.extra_data for option in ("--extra-data", folder)),
        *(("--extra-repeat", str(a.extra_repeat)) if a.extra_data else ()),
        *(("--degrade", str(a.degrade)) if a.degrade else ()),
    ]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``python -m geosr.training.keep``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, choices=(2, 4), default=4)
    p.add_argument("--root", type=Path, default=Path.home() / "geosr-runs")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ucmerced"))
    p.add_argument("--minutes", type=float, default=150.0, help="Stop after this many minutes (resumable).")
    p.add_argument("--cycles", type=int, default=0, help="Stop after this many finished cycles (0: no limit).")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--patch-size", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cycle-steps", type=int, default=600)
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument(
        "--lr-schedule",
        choices=("cosine", "step"),
        default="cosine",
        help="cosine: down to 0.02 times --lr at the cycle's end; step: --lr throughout (after the warm-up).",
    )
    p.add_argument(
        "--ema", action=argparse.BooleanOptionalAction, default=True, help="Export EMA weights (else the raw ones)."
    )
    p.add_argument("--mse-weight", type=float, default=1.0)
    p.add_argument("--l1-weight", type=float, default=0.0)
    p.add_argument(
        "--extra-data",
        action="append",
        default=[],
        metavar="DIR",
        help="A folder of other images to train on as well (geosr train --extra-data; once per folder), e.g. "
        "the training crops of benchmarks/cross_sensor.py make --split train.",
    )
    p.add_argument("--extra-repeat", type=int, default=1, help="geosr train --extra-repeat, with --extra-data.")
    p.add_argument(
        "--degrade",
        type=float,
        default=0.0,
        metavar="P",
        help="geosr train --degrade: the share of patches whose LR is blurred, noisy or JPEG-compressed.",
    )
    p.add_argument(
        "--cross-sensor",
        metavar="DIR",
        help="Also measure each finished cycle on this set with geosr evaluate --split all (benchmarks/cross_sensor.py "
        "make --out DIR: Wald's protocol on other sensors' rasters) and record its mean and its gain over bicubic.",
    )
    p.add_argument("--val-every-steps", type=int, default=200)
    p.add_argument(
        "--eval-precision",
        default="bf16",
        help="Precision of the whole-val measurement (the shipped cards' figures are bf16 on the development CPU).",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run cycles for ``--minutes``; the exit code of the last ``geosr`` command that failed, else 0."""
    a = _arguments(argv)

    t0 = time.monotonic()
    home = a.root / f"x{a.scale}"
    home.mkdir(parents=True, exist_ok=True)
    history_path = home / "cycles.json"
    shipped_path = default_model(a.scale)
    card = read_card(shipped_path)
    shipped = {"model": str(shipped_path), "val_psnr": card.metrics["val_psnr"], "val_ssim": card.metrics["val_ssim"]}

    def minutes_left() -> float:
        return a.minutes - (time.monotonic() - t0) / 60

    finished = 0
    while minutes_left() > 1 and not (a.cycles and finished >= a.cycles):
        history = _load_history(history_path)
        best = _best(history, shipped)
        k = len(history["cycles"])
        run = home / f"cycle-{k}"
        steps = _recipe(run)["steps"] if (run / "config.toml").is_file() else a.cycle_steps  # a resumed run's own
        if _last_train_step(run) < steps:
            if (run / "checkpoints" / "state.pt").is_file():
                args = ["train", "--resume", str(run)]
            else:
                if run.exists():
                    shutil.rmtree(run)  # a cycle that never saved a state: start it again
                args = _train_args(a, run, best["model"], seed=k)
            rc = _geosr(*args, "--max-minutes", f"{max(1.0, minutes_left() - 1):.1f}", threads=a.threads)
            if rc not in (0, 130):
                print(f"geosr train exited with {rc}; stopping", file=sys.stderr)
                return rc
            if _last_train_step(run) < _recipe(run)["steps"]:
                break  # out of time (or interrupted): the next invocation resumes this cycle
        # The cycle is complete: export its EMA weights and measure them on the whole val split.
        exported = run / f"degan-x{a.scale}-cycle{k}.safetensors"
        report = run / "val.json"
        if _geosr(
            "export",
            str(run / "last.safetensors"),
            "-o",
            str(exported),
            "--name",
            f"degan-x{a.scale}",
            "--overwrite",
            threads=a.threads,
        ):
            return 1
        report.unlink(missing_ok=True)
        if _geosr(
            "evaluate",
            "--model",
            str(exported),
            "--data",
            a.data,
            "--split",
            "val",
            "--precision",
            a.eval_precision,
            "-o",
            str(report),
            threads=a.threads,
        ):
            return 1
        summary = json.loads(report.read_text())["summary"]["mean"]
        entry = {
            "cycle": k,
            "model": str(exported),
            "report": str(report),
            "start": best["model"],
            "val_psnr": summary["psnr"],
            "val_ssim": summary["ssim"],
            **_recipe(run),
            "beats": best["val_psnr"],
        }
        if a.cross_sensor:
            measured = _cross_sensor(exported, a.cross_sensor, run / "cross_sensor.json", a)
            if measured is None:
                return 1
            entry.update(measured)
        history["cycles"].append(entry)
        finished += 1
        atomic_write(history_path, json.dumps(history, indent=1).encode(), what="the cycle history")
        better = entry["val_psnr"] >= best["val_psnr"] + MIN_GAIN_DB
        verdict = "beats" if better else f"does not beat (by {MIN_GAIN_DB} dB or more)"
        print(
            f"cycle {k}: val {entry['val_psnr']:.4f} dB / {entry['val_ssim']:.4f} {verdict} "
            f"{best['val_psnr']:.4f} dB ({best['model']})",
            flush=True,
        )
        if better:
            shutil.copyfile(exported, home / "ship.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
