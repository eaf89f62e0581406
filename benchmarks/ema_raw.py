"""EMA weights against raw weights of the same training run, measured on the whole val split.

A run trained with ``--ema`` exports the moving average of its generator; its training state
(``RUN/checkpoints/state.pt``) still holds the raw weights of the same step. This writes those as a model file beside
the exported one (same card and dtype, a note saying what they are) and measures both with ``geosr evaluate``, so
the two differ in nothing but the averaging: no second run, no second seed.

    python benchmarks/ema_raw.py ~/geosr-runs/x4/cycle-0 ~/geosr-runs/x4/cycle-1 \\
        --data ../shared/data/ucmerced --precision bf16 --json benchmarks/results/models/cycles/x4_ema_raw.json

A run's EMA model is RUN/<name>-cycle<k>.safetensors when training.keep exported it (else ``--ema-model``), its
measurement RUN/val.json when there is one (else it is measured too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from geosr.checkpoint import load_generator, save_generator
from geosr.training.state import load_state


def raw_model(run: Path, ema_model: Path) -> tuple[Path, int]:
    """Write RUN/raw.safetensors: the raw generator of RUN's saved state, with the EMA model's card and dtype."""
    state = load_state(run / "checkpoints" / "state.pt")
    if state["ema"] is None:
        raise SystemExit(f"{run}: trained without --ema; its exported weights are the raw ones already")
    model, card = load_generator(ema_model)
    model.load_state_dict(state["g"])
    dtype = _weights_dtype(ema_model)
    note = f"raw generator weights at step {state['step']} (benchmarks/ema_raw.py), not the EMA"
    card = replace(card, training={**card.training, "notes": [*card.training.get("notes", []), note]})
    out = run / "raw.safetensors"
    save_generator(out, model, card, dtype=dtype)
    return out, int(state["step"])


def _weights_dtype(path: Path) -> torch.dtype:
    from safetensors import safe_open  # noqa: PLC0415

    with safe_open(str(path), "pt") as f:
        return f.get_tensor(next(iter(f.keys()))).dtype


def evaluate(model: Path, data: str, precision: str, report: Path, threads: int) -> dict[str, float]:
    """The mean PSNR/SSIM of ``geosr evaluate`` on the whole val split (report written to ``report``)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "geosr.cli.main", "evaluate", "--model", str(model), "--data", data]
    cmd += ["--split", "val", "--precision", precision, "-o", str(report), "-q"]
    subprocess.run(cmd, env=env, check=True)
    return _mean(report)


def _mean(report: Path) -> dict[str, float]:
    mean = json.loads(report.read_text())["summary"]["mean"]
    return {"psnr": mean["psnr"], "ssim": mean["ssim"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data", required=True)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ema-model", type=Path, help="the EMA model file (one run only)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    rows = []
    for run in a.runs:
        exported = a.ema_model or next(run.glob("*-cycle*.safetensors"), None)
        if exported is None:
            raise SystemExit(f"{run}: no exported EMA model; give --ema-model")
        raw, step = raw_model(run, exported)
        ema_report = run / "val.json"
        ema = (
            _mean(ema_report)
            if ema_report.is_file()
            else evaluate(exported, a.data, a.precision, ema_report, a.threads)
        )
        raw_metrics = evaluate(raw, a.data, a.precision, run / "val_raw.json", a.threads)
        rows.append({"run": str(run), "step": step, "ema": ema, "raw": raw_metrics})
        print(
            f"{run}: step {step}: EMA {ema['psnr']:.4f} dB / {ema['ssim']:.4f}, raw {raw_metrics['psnr']:.4f} dB / "
            f"{raw_metrics['ssim']:.4f}, EMA - raw {ema['psnr'] - raw_metrics['psnr']:+.4f} dB",
            flush=True,
        )
    if a.json:
        a.json.write_text(json.dumps({"precision": a.precision, "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
