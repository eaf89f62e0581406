"""The radiometry's decimated read of a large raster under geosr's GDAL settings: what planning a file costs.

    python benchmarks/sample_read.py [--trees BEFORE_TREE .] [--out /tmp/sample_read]

Makes two tiled (256 px), deflate-compressed, pixel-interleaved GeoTIFFs, as satellite products and geosr's own
outputs are laid out (4096 x 4096 uint8 RGB; 2048 x 2048 uint16 with 13 bands, as a Sentinel-2 stack), and times
``geosr.raster.raster_radiometry`` on each inside ``rasterio.Env(**gdal_options())``, the settings of a run. With
--trees, each source tree of geosr (a checkout of an older commit, and this one) runs in a process of its own
(PYTHONPATH), with a limit of 300 s per raster.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

RASTERS = {"rgb_4096_uint8.tif": (3, 4096, "uint8"), "s2_2048_uint16_13b.tif": (13, 2048, "uint16")}
LIMIT_S = 300


def make(folder: Path) -> list[Path]:
    """The test rasters in ``folder`` (made once): smooth patterns with noise, so that deflate has work to do."""
    paths = []
    rng = np.random.default_rng(0)
    for name, (bands, n, dtype) in RASTERS.items():
        path = folder / name
        paths.append(path)
        if path.exists():
            continue
        top = 255 if dtype == "uint8" else 4000
        profile = dict(
            driver="GTiff", width=n, height=n, count=bands, dtype=dtype, tiled=True, blockxsize=256, blockysize=256,
            compress="deflate", interleave="pixel", crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10),
        )  # fmt: skip
        yy, xx = np.mgrid[0:256, 0:n]
        with rasterio.open(path, "w", **profile) as dst:
            for r in range(0, n, 256):
                base = 0.5 + 0.3 * np.sin(0.05 * xx + r) * np.cos(0.07 * (yy + r))
                block = np.stack([base * top + rng.normal(0, top / 30, base.shape) for _ in range(bands)])
                dst.write(block.clip(0, top).astype(dtype), window=Window(0, r, n, 256))
    return paths


def measure(path: Path) -> float:
    from geosr.raster import gdal_options, open_raster, raster_radiometry

    with rasterio.Env(**gdal_options()), open_raster(path) as ds:
        t = time.perf_counter()
        raster_radiometry(ds, path, list(range(1, ds.count + 1)))
        return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", nargs="+", type=Path, help="source trees of geosr to compare, in one run")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "geosr-sample-read")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a child process: time this raster
    args = parser.parse_args(argv)
    if args.one is not None:
        print(f"{measure(args.one):.3f}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    paths = make(args.out)
    for tree in args.trees or [None]:
        env = {**os.environ, **({"PYTHONPATH": str(tree.resolve())} if tree else {})}
        for path in paths:
            try:
                out = subprocess.run(
                    [sys.executable, __file__, "--one", str(path)], env=env, capture_output=True, text=True,
                    timeout=LIMIT_S, check=True,
                ).stdout.strip()  # fmt: skip
                took = f"{float(out):.2f} s"
            except subprocess.TimeoutExpired:
                took = f"over {LIMIT_S} s"
            print(f"{tree or 'this tree'}: {path.name}: {took}")


if __name__ == "__main__":
    main()
