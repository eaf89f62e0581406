"""Fit the calibration factor k of geosr's error map (geosr.uncertainty) on the UC Merced train split.

k = mean |error| / mean spread-in-raster-units over the images, so that the calibrated map's mean equals the mean
absolute error of upscale's output (self-ensemble mean, consistency-corrected, rounded). Train images only (NN 00-49,
spread evenly over the classes); the val split is for reporting.

    python benchmarks/uncertainty_k.py --model degan-x4 --images 50 [--precision auto] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from geosr.checkpoint import load_generator, read_card
from geosr.datasets import default_bands, find_images, spread
from geosr.device import resolve_device, resolve_precision
from geosr.evaluation import evaluate_images
from geosr.predictor import select_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="degan-x4")
    ap.add_argument("--data", default="/work/shared/data/ucmerced")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    path = select_model(args.model, None)
    card = read_card(path)
    dev = resolve_device("cpu")
    prec = resolve_precision(args.precision, dev)
    train = [it for it in find_images(args.data, "all").items if int(it.path.stem[-2:]) < 50]
    items = spread(train, args.images)
    model, card = load_generator(path, device=dev)
    t0 = time.perf_counter()
    results = evaluate_images(
        items,
        card.scale,
        model,
        bands=default_bands(items[0].path, 3),
        device=dev,
        precision=prec,
        tile_size=card.tile_size,
        overlap=card.overlap,
        self_ensemble=True,
        uncertainty_k=1.0,
    )
    seconds = time.perf_counter() - t0
    err = sum(r.uncertainty["mean_error"] for r in results)
    spr = sum(r.uncertainty["mean_map"] for r in results)
    out = {
        "model": path.name,
        "images": len(results),
        "precision": prec,
        "threads": torch.get_num_threads(),
        "k": err / spr,
        "mean_error": err / len(results),
        "mean_spread": spr / len(results),
        "seconds": seconds,
    }
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
