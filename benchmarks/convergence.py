"""Convergence per unit of compute: the paper's generator (global_skip off) against global_skip on, UC Merced x4.

    python benchmarks/convergence.py [--steps 240] [--val-every 40] [--out benchmarks/results]

Both runs use the same seed, data stream, losses and schedule, and differ only in ``global_skip``. They run at the
same time, one CPU thread each, so a machine shared with other work slows both alike; the minutes are wall-clock
minutes of each run. The losses are the content loss alone (0.5 * MSE; no VGG19 weights offline, no discriminator,
to spend the compute on the generator); the curves compare how fast each architecture reaches a given val PSNR.
Writes convergence_x4_<steps>steps.csv (run, step, minutes, val PSNR/SSIM, bicubic), copies both runs' log.csv
(the loss per step) to logs_<steps>/, and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

RUNS = {"paper": [], "global_skip": ["--global-skip"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/ucmerced")
    p.add_argument("--steps", type=int, default=240)
    p.add_argument("--val-every", type=int, default=40)
    p.add_argument("--val-images", type=int, default=10)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--precision", default="auto")
    p.add_argument("--work", default="runs/convergence")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = {}
    for name, extra in RUNS.items():
        run_dir = Path(args.work) / name
        cmd = [
            sys.executable,
            "-m",
            "geosr.cli.main",
            "-q",
            "train",
            "--data",
            args.data,
            "--out",
            str(run_dir),
            "--scale",
            "4",
            "--patch-size",
            str(args.patch),
            "--batch-size",
            str(args.batch),
            "--mse-weight",
            "0.5",
            "--perceptual-weight",
            "0",
            "--adversarial-weight",
            "0",
            "--max-steps",
            str(args.steps),
            "--val-every",
            "0",
            "--val-every-steps",
            str(args.val_every),
            "--val-images",
            str(args.val_images),
            "--precision",
            args.precision,
            "--lr-decay-epochs",
            "",
            "--device",
            "cpu",
            *extra,
        ]
        procs[name] = subprocess.Popen(cmd, env=env)
    for name, proc in procs.items():
        if proc.wait() != 0:
            sys.exit(f"the {name} run failed (exit {proc.returncode})")
    rows = []
    for name in RUNS:
        with (Path(args.work) / name / "log.csv").open() as f:
            log = list(csv.DictReader(f))
        rows.append(
            {
                "run": name,
                "step": 0,
                "minutes": 0.0,
                "val_psnr": "",
                "val_ssim": "",
                "val_psnr_bicubic": "",
                "val_ssim_bicubic": "",
            }
        )
        for r in log:
            if r["kind"] == "val":
                rows.append(
                    {
                        "run": name,
                        "step": int(r["step"]),
                        "minutes": round(float(r["elapsed_s"]) / 60, 2),
                        **{k: r[k] for k in ("val_psnr", "val_ssim", "val_psnr_bicubic", "val_ssim_bicubic")},
                    }
                )
        train = [r for r in log if r["kind"] == "train"]
        rows[-1]["final_mse"] = train[-1]["mse"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["run", "step", "minutes", "val_psnr", "val_ssim", "val_psnr_bicubic", "val_ssim_bicubic"]
    logs = out / f"logs_{args.steps}"
    logs.mkdir(exist_ok=True)
    for name in RUNS:
        shutil.copyfile(Path(args.work) / name / "log.csv", logs / f"{name}_log.csv")
    with (out / f"convergence_x4_{args.steps}steps.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows([r for r in rows if r["step"]])
    print(f"{'run':12s} {'step':>5s} {'min':>6s} {'val PSNR':>9s} {'SSIM':>7s} {'bicubic':>8s}")
    for r in rows:
        if r["step"]:
            print(
                f"{r['run']:12s} {r['step']:5d} {r['minutes']:6.2f} {float(r['val_psnr']):9.3f} "
                f"{float(r['val_ssim']):7.4f} {float(r['val_psnr_bicubic']):8.3f}"
            )


if __name__ == "__main__":
    main()
