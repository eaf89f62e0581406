"""Seam index of a model on a real raster at given tile settings (geosr.tiling.seam_index).

    python benchmarks/seams.py MODEL.safetensors [--tile N] [--overlap N] [--raster PATH]

Upscales a 320 x 320 window from inside the scene of the raster (rasterio's RGB.byte.tif by default; written without
compression, at an odd offset so that a JPEG source's 8-px blocks do not line up with the tile grid) with the model
and prints the seam index at the tile period for the phases of the tile edges and of the blend window (1.0: no
stronger steps there than at other phases of the same sub-pixel position), for the tiled output and for the same crop
run as one tile. A scene has structure of its own at any period (a JPEG source's 8-px blocks, rows of fields), which
the one-tile output shows as well; the ratio of the two is what the tiles add, and its worst phase is the figure.
Without --tile/--overlap the model card's defaults are used.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geosr.inference import UpscaleOptions, load_predictor, upscale_raster
from geosr.tiling import seam_index

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--tile", type=int)
    p.add_argument("--overlap", type=int)
    p.add_argument("--raster", default=str(REPO / "examples" / "data" / "RGB.byte.tif"))
    args = p.parse_args()
    pred = load_predictor(args.model, device="cpu")
    s = pred.scale
    tile = args.tile or pred.card.tile_size
    overlap = args.overlap if args.overlap is not None else pred.card.overlap
    with tempfile.TemporaryDirectory() as tmp:
        crop = Path(tmp) / "crop.tif"
        with rasterio.open(args.raster) as ds:
            # An odd offset: JPEG-compressed sources (cogeo.tif, NAIP) have 8-px block edges, which at an even
            # offset fall on the measured phases of every tile period (a multiple of 8 input pixels here) and
            # read as seams. The crop itself is written losslessly for the same reason.
            w = Window(231, 231, 320, 320)
            profile = dict(
                driver="GTiff",
                width=w.width,
                height=w.height,
                count=ds.count,
                dtype=ds.dtypes[0],
                crs=ds.crs,
                transform=ds.window_transform(w),
                nodata=ds.nodata,
            )
            with rasterio.open(crop, "w", **profile) as d:
                d.write(ds.read(window=w))
        outputs = {}
        # the tiled output, and the same crop in one tile: no tile edges at all, so what the seam index finds there
        # is the scene's own structure at the tile period (JPEG blocks, field patterns), not seams
        for name, (t, o) in {"tiled": (tile, overlap), "one tile": (320, 0)}.items():
            dst = Path(tmp) / f"{name}.tif"
            upscale_raster(crop, dst, pred, UpscaleOptions(tile_size=t, overlap=o))
            with rasterio.open(dst) as d:
                outputs[name] = (d.read().astype(np.float64), d.dataset_mask() > 0)
    period = s * (tile - overlap)
    phases = [0, s * overlap // 4, s * overlap // 2, 3 * s * overlap // 4, s * overlap]
    values = {
        name: [seam_index(out, period, ph, valid=valid, subpixel=s) for ph in phases]
        for name, (out, valid) in outputs.items()
    }
    ratio = [a / b for a, b in zip(values["tiled"], values["one tile"])]
    print(
        f"tile {tile}, overlap {overlap}, x{s}, seam index at phases {phases} (output px): "
        + ", ".join(f"{v:.3f}" for v in values["tiled"])
        + "; the same crop in one tile: "
        + ", ".join(f"{v:.3f}" for v in values["one tile"])
        + "; tiled / one tile: "
        + ", ".join(f"{v:.3f}" for v in ratio)
        + f"; worst {max(ratio):.3f}"
    )


if __name__ == "__main__":
    main()
