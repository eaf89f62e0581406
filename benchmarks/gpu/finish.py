"""Here, after the device calls: measure the models a GPU run trained, as the shipped cards were measured.

    python benchmarks/gpu/finish.py FILES [--out benchmarks/results/gpu] [--models benchmarks/gpu/bundle/trained]
                                          [--data ../shared/data/ucmerced] [--geotiffs ../shared/data/geotiff]
                                          [--precision bf16] [--threads 2] [--max-images N]

FILES is the folder the last device call's files came back to (the device tool's ``files_at``): run.py's
``degan-x4-gpu.safetensors`` and ``degan-x2-gpu.safetensors``, ``summary.txt``, ``summary.json``, ``measure.json`` and
``logs.tar.gz``. With a bundle built by ``prepare.py --evaluate here`` (the default) the GPU machine trains and
exports; this script then, for each model:

1. measures it with ``geosr evaluate`` on the whole val split of ``--data`` (bf16 on this CPU, the card's tiles and
   consistency: the protocol of the shipped cards' figures, so the two compare directly);
2. measures it and the shipped ``degan-xN`` on the cross-sensor val set (``benchmarks/cross_sensor.py make`` from
   ``--geotiffs``: Wald's protocol on 7 real sensors), their gain over bicubic;
3. writes the model with the val metrics in its card to ``--models`` (gitignored: shipping it into
   ``geosr/weights/`` stays a person's decision) and the reports and a summary to ``--out``, beside the run's own
   files (summary, measure.json, the logs unpacked).

A model is a candidate to ship when it beats the shipped card's val PSNR by at least 0.01 dB (less is the noise of
one split; ``geosr.training.keep`` applies the same rule to the CPU cycles).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import evaluation_means  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MIN_GAIN_DB = 0.01


def geosr(*args: str, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "geosr.cli.main", *args]
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, env=env)
    if done.returncode:
        raise SystemExit(f"geosr {args[0]} failed with exit code {done.returncode}: {' '.join(cmd)}")


def means(report: Path) -> dict:
    """A geosr evaluate report's means (run.py's evaluation_means) and the gain over bicubic."""
    m = evaluation_means(report)
    return {**m, "gain_db": m["psnr"] - m["psnr_bicubic"]}


def unpack_run_files(files: Path, out: Path) -> None:
    """The device call's own files beside the measurements: the small ones copied, the logs unpacked."""
    for name in ("summary.txt", "summary.json", "measure.json"):
        if (files / name).is_file():
            shutil.copyfile(files / name, out / name)
    logs = files / "logs.tar.gz"
    if logs.is_file():
        with tarfile.open(logs) as tar:
            tar.extractall(out / "logs", filter="data")


def summary_lines(results: dict) -> list[str]:
    lines = [f"# benchmarks/gpu/finish.py, {results['date']}: the GPU run's models measured here ({results['cpu']})"]
    for scale, r in results["scales"].items():
        v, card = r["val"], r["shipped_card"]
        delta = v["psnr"] - card["val_psnr"]
        verdict = (
            "a candidate to ship"
            if delta >= MIN_GAIN_DB
            else f"not a candidate (it must beat the shipped model by {MIN_GAIN_DB} dB)"
        )
        lines.append(
            f"x{scale}: whole val split ({v['images']} images, {results['precision']}, card tiles, consistency): "
            f"{v['psnr']:.4f} dB / {v['ssim']:.4f}, shipped degan-x{scale} (its card) {card['val_psnr']:.4f} / "
            f"{card['val_ssim']:.4f}: {delta:+.4f} dB, {verdict}; bicubic {v['psnr_bicubic']:.4f} dB "
            f"(gain {v['gain_db']:+.4f} dB)"
        )
        x = r.get("cross_sensor")
        if x:
            t, s = x["trained"], x["shipped"]
            lines.append(
                f"x{scale}: cross-sensor set ({t['images']} crops): trained {t['psnr']:.4f} dB / {t['ssim']:.4f} "
                f"({t['gain_db']:+.4f} dB over bicubic), shipped {s['psnr']:.4f} / {s['ssim']:.4f} "
                f"({s['gain_db']:+.4f} dB)"
            )
        lines.append(f"x{scale}: model with its metrics: {r['model']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", type=Path, help="the folder the device call's files came back to")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu", help="reports and summary")
    p.add_argument(
        "--models",
        type=Path,
        default=REPO / "benchmarks" / "gpu" / "bundle" / "trained",
        help="where the models go with their metrics (gitignored)",
    )
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ucmerced"), help="the UC Merced folder")
    p.add_argument(
        "--geotiffs",
        default=str(REPO.parent / "shared" / "data" / "geotiff"),
        help="the real rasters the cross-sensor set is cut from ('' leaves the cross-sensor set out)",
    )
    p.add_argument("--precision", default="bf16", help="of the measurements (the shipped cards': bf16 on the CPU)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--max-images", type=int, default=0, help="measure on this many images only (tests)")
    a = p.parse_args(argv)

    sys.path.insert(0, str(REPO / "benchmarks"))
    import cross_sensor
    import torch

    from geosr.bundled import default_model
    from geosr.checkpoint import read_card
    from geosr.device import describe_hardware

    models = sorted(a.files.glob("degan-x*-gpu.safetensors"))
    if not models:
        raise SystemExit(f"{a.files}: no degan-xN-gpu.safetensors; give the folder the device call's files came to")
    a.out.mkdir(parents=True, exist_ok=True)
    a.models.mkdir(parents=True, exist_ok=True)
    unpack_run_files(a.files, a.out)
    limit = ["--max-images", str(a.max_images)] if a.max_images else []
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": describe_hardware(torch.device("cpu")),
        "precision": a.precision,
        "scales": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        xsensor = None
        if a.geotiffs:
            xsensor = Path(tmp) / "xsensor-val"
            cross_sensor.make(xsensor, Path(a.geotiffs), "val", 192)
        for model in models:
            scale = read_card(model).scale
            val = a.out / f"eval_val_here_x{scale}.json"
            evaluate = ["evaluate", "--scale", str(scale), "--precision", a.precision, *limit]
            geosr(*evaluate, "-m", str(model), "-d", a.data, "--split", "val", "-o", str(val), threads=a.threads)
            measured = a.models / model.name
            geosr("export", str(model), "-o", str(measured), "--metrics", str(val), "--overwrite", threads=a.threads)
            card = read_card(default_model(scale)).metrics
            entry: dict = {
                "val": means(val),
                "report": str(val.relative_to(REPO) if val.is_relative_to(REPO) else val),
                "shipped_card": {"val_psnr": card["val_psnr"], "val_ssim": card["val_ssim"]},
                "model": str(measured),
            }
            if xsensor is not None:
                reports = {}
                for who, path in (("trained", model), ("shipped", default_model(scale))):
                    report = a.out / f"eval_xsensor_here_{who}_x{scale}.json"
                    geosr(*evaluate, "-m", str(path), "-d", str(xsensor), "--split", "all", "-o", str(report),
                          threads=a.threads)  # fmt: skip
                    reports[who] = means(report)
                entry["cross_sensor"] = reports
            results["scales"][str(scale)] = entry
    (a.out / "finish.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = summary_lines(results)
    (a.out / "finish.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
