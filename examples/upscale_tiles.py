"""Super-resolve a folder of tiles from Python, with the same options as `geosr upscale` and a progress callback.

    python examples/upscale_tiles.py TILES_DIR OUT_DIR MODEL.safetensors

The model is loaded once; outputs keep the folder layout; existing outputs are kept (rerun to resume).
"""

from __future__ import annotations

import sys

from geosr.inference import Progress, UpscaleOptions, load_predictor, plan_outputs, upscale_batch


def main(tiles: str, out: str, model: str) -> int:
    predictor = load_predictor(model, device="auto", precision="auto")
    pairs = plan_outputs([tiles], out)
    options = UpscaleOptions(compress="zstd", batch_size=16)

    def progress(p: Progress) -> None:
        if p.pixels_done == p.pixels_total:  # the last report of a file
            print(f"{p.path}: {p.tiles_total} tiles, {p.pixels_total / 1e6:.1f} output megapixels", file=sys.stderr)

    def report(result) -> None:
        if result.status == "failed":
            print(f"error: {result.message}", file=sys.stderr)

    summary = upscale_batch(pairs, predictor, options, skip_existing=True, progress=progress, on_result=report)
    print(summary.line(), file=sys.stderr)
    return 1 if summary.count("failed") else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
