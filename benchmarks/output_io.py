"""The CPU work around the model for a large output: compressing it as it is written, and reading it back to verify.

    python benchmarks/output_io.py [--size 4096] [--rounds 2]
    python benchmarks/output_io.py --levels OUTPUT.tif ...   # the codec's CPU and size on geosr's own outputs

Writes a size x size x 3 uint16 output with geosr's own output profile (``geosr.raster.output_spec`` of a synthetic
source at x1: tiled 512 x 512, pixel-interleaved, deflate with the horizontal predictor) in whole 512-row block rows
as geosr's writer does, once with GDAL compressing on one thread and once on every core (``num_threads`` ALL_CPUS,
geosr's setting); then times ``geosr.raster.verify_output`` on it, and the same read-back one block per read on one
thread (how it read before). Output Mpx/s of each; on a GPU these set how fast the CPU side can keep up with the
model (a 10980 x 10980 tile at x4 is 1929 output Mpx).

--levels rewrites the pixels of existing outputs (made by ``geosr upscale``; real ones compress unlike synthetic
rows) with geosr's profile at deflate levels 1, 3, 6 (GDAL's default) and 9 and at zstd level 1, on one thread, and
prints each one's CPU seconds (best of two) and file size: what ``geosr.raster.profile.DEFLATE_LEVEL`` was chosen by.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geosr.raster import BLOCK, READ_CHECKS, gdal_options, output_spec, verify_output


def synthetic_rows(size: int, r0: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(3, n, size) uint16 rows of smooth structure and sensor-like noise (compresses like real imagery)."""
    xx = np.arange(size, dtype=np.float32)[None, :]
    yy = np.arange(r0, r0 + n, dtype=np.float32)[:, None]
    out = np.empty((3, n, size), np.uint16)
    for b in range(3):
        base = 1500 + 900 * np.sin(xx / (37 + 11 * b)) * np.cos(yy / (53 + 7 * b))
        out[b] = np.clip(base + rng.normal(0, 120, (n, size)).astype(np.float32), 0, 65535).astype(np.uint16)
    return out


def profile_for(size: int, work: Path) -> dict:
    """geosr's output profile for a size x size x 3 uint16 output (from a 1-pixel-per-pixel synthetic source)."""
    src = work / "source.tif"
    with rasterio.open(
        src,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint16",
        crs="EPSG:32633",
        transform=rasterio.Affine(10, 0, 600000, 0, -10, 5000040),
    ):
        pass
    with rasterio.open(src) as ds:
        spec = output_spec(
            ds,
            src,
            scale=1,
            window=Window(0, 0, size, size),
            bands=[1, 2, 3],
            dtype="uint16",
            georef="transform",
            compress="deflate",
            internal_mask=False,
            tags={},
            nodata=None,
        )
    src.unlink()
    return dict(spec.profile)


def write(path: Path, profile: dict, rows: list[np.ndarray]) -> float:
    t = time.perf_counter()
    with rasterio.Env(**gdal_options()), rasterio.open(path, "w", **profile) as dst:
        for i, block in enumerate(rows):
            dst.write(block, window=Window(0, i * BLOCK, block.shape[2], block.shape[1]))
    return time.perf_counter() - t


def read_one_block_at_a_time(path: Path) -> float:
    t = time.perf_counter()
    with rasterio.Env(**READ_CHECKS, GDAL_NUM_THREADS="1"), rasterio.open(path) as ds:
        bh, bw = ds.block_shapes[0]
        for r in range(0, ds.height, bh):
            for c in range(0, ds.width, bw):
                ds.read(window=Window(c, r, min(bw, ds.width - c), min(bh, ds.height - r)))
    return time.perf_counter() - t


CODECS = [("deflate", {"zlevel": level}) for level in (1, 3, 6, 9)] + [("zstd", {"zstd_level": 1})]


def levels(paths: list[Path]) -> None:
    """Each output's pixels written with each of CODECS on one thread: CPU seconds and size against deflate 6."""
    with tempfile.TemporaryDirectory(prefix="geosr-levels-") as work:
        for path in paths:
            _levels_of(path, Path(work))


def _levels_of(path: Path, work: Path) -> None:
    """``levels`` of one output, its copies written in ``work``."""
    with rasterio.open(path) as ds:
        pixels, profile = ds.read(), dict(ds.profile)
    print(
        f"{path.name}: {pixels.shape[0]} x {pixels.shape[1]} x {pixels.shape[2]} {pixels.dtype}, "
        f"{pixels.nbytes / 1e6:.1f} MB raw"
    )
    rows = []
    for codec, options in CODECS:
        predictor = 3 if pixels.dtype.kind == "f" else 2  # geosr.raster.output_spec's choice
        written = {**profile, "compress": codec, "predictor": predictor, "num_threads": 1, **options}
        written.pop("zlevel" if codec != "deflate" else "zstd_level", None)
        seconds = []
        for _ in range(2):
            t = time.process_time()
            with rasterio.open(work / "out.tif", "w", **written) as dst:
                dst.write(pixels)
            seconds.append(time.process_time() - t)
        rows.append((f"{codec} {next(iter(options.values()))}", min(seconds), (work / "out.tif").stat().st_size))
    cpu6, size6 = next((c, s) for name, c, s in rows if name == "deflate 6")
    for name, cpu, size in rows:
        print(
            f"  {name:10} CPU {cpu:6.3f} s ({cpu / cpu6:4.0%} of deflate 6)  {size / 1e6:7.2f} MB "
            f"({size / size6 - 1:+.1%})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--levels", nargs="+", type=Path, metavar="OUTPUT", help="codec levels on these outputs instead")
    args = p.parse_args()
    if args.levels:
        levels(args.levels)
        return
    with tempfile.TemporaryDirectory(prefix="geosr-io-") as work:
        run(args, Path(work))


def run(args: argparse.Namespace, work: Path) -> None:
    """The write and read-back rounds, their file in ``work``."""
    size = args.size
    profile = profile_for(size, work)
    rng = np.random.default_rng(0)
    rows = [synthetic_rows(size, r0, min(BLOCK, size - r0), rng) for r0 in range(0, size, BLOCK)]
    mpx = size * size / 1e6
    out = work / "out.tif"
    print(
        f"{size} x {size} x 3 uint16, deflate + predictor {profile['predictor']}, blocks "
        f"{profile['blockxsize']} x {profile['blockysize']}; {math.ceil(size / BLOCK)} block rows"
    )
    for rnd in range(args.rounds):
        one = write(out, {**profile, "num_threads": 1}, rows)
        every = write(out, profile, rows)
        size_mb = out.stat().st_size / 1e6
        before = read_one_block_at_a_time(out)
        t = time.perf_counter()
        verify_output(out)
        now = time.perf_counter() - t
        print(
            f"round {rnd + 1}: write {mpx / one:.1f} Mpx/s on one thread, {mpx / every:.1f} on every core "
            f"({profile['num_threads']}); file {size_mb:.0f} MB; read-back one block at a time "
            f"{mpx / before:.1f} Mpx/s, verify_output {mpx / now:.1f} Mpx/s"
        )
    out.unlink()


if __name__ == "__main__":
    main()
