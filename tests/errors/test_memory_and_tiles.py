"""The model's work is bounded by the raster, and running out of memory is one line: a tile larger than the raster is
clamped to it (an 8 x 8 raster with --tile-size 1024 runs the model on 8 x 8 pixels, not 1024 x 1024), and a real
out-of-memory error (a process limited to a few hundred megabytes more than it holds) names the file, the batch, the
tile and the options to lower.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import rasterio
from badinput import files_in, image, recording, subprocess_env
from testdata import write_geotiff

from geosr.options import UpscaleOptions
from geosr.pipeline import upscale_raster
from geosr.predictor import load_predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "shape, tile, expected",
    [((8, 8), 1024, (8, 8)), ((6, 90), 64, (6, 64))],
    ids=["small-raster-huge-tile", "thin-strip"],
)
def test_tiles_never_exceed_the_raster(tiny_model, tmp_path, shape, tile, expected):
    src = write_geotiff(tmp_path / "small.tif", image(3, *shape))
    predictor = recording(load_predictor(tiny_model, device="cpu", precision="fp32"))
    upscale_raster(src, tmp_path / "x2.tif", predictor, UpscaleOptions(tile_size=tile, overlap=8))
    assert {c[2:] for c in predictor.calls} == {expected}  # the model never sees a tile padded beyond the raster
    with rasterio.open(tmp_path / "x2.tif") as d:
        assert d.shape == (2 * shape[0], 2 * shape[1])


OUT_OF_MEMORY_RUN = """
import resource, sys
import torch
from geosr.cli.main import cli
from geosr.predictor import Predictor
torch.set_num_threads(1)
run = Predictor.run


def limited(self, tiles):  # the model's calls may use only 100 MB more than the process holds when they start
    used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 100 * 2**20, resource.RLIM_INFINITY))
    try:
        return run(self, tiles)
    finally:  # the rest of the process (GDAL's threads, the reader, the writer) is not starved with it
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


Predictor.run = limited
cli(sys.argv[2:], prog_name="geosr")
"""


def test_running_out_of_memory_is_one_line_naming_the_options_to_lower(tiny_model, tmp_path):
    """A real out-of-memory error: the model's calls may use only 100 MB more than the process holds when they
    start, and a batch of tiles of 512 x 512 pixels needs more."""
    src = write_geotiff(tmp_path / "scene.tif", image(3, 512, 2048))
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            OUT_OF_MEMORY_RUN,
            str(tiny_model),
            "upscale",
            str(src),
            "-o",
            str(out / "x2.tif"),
            "--model",
            str(tiny_model),
            "-q",
            "--tile-size",
            "512",
            "--overlap",
            "0",
            "--batch-size",
            "4",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "scene.tif: out of memory running the model" in lines[0]
    assert re.search(
        r"\d tile\(s\) of 512 x 512 input pixels at x2 \(.*\); use a smaller --batch-size or "
        r"--tile-size",
        lines[0],
    ), lines[0]
    assert not out.exists() or files_in(out) == []


def test_every_way_pytorch_says_memory_ran_out_counts_as_out_of_memory():
    from geosr.predictor import is_out_of_memory

    for exc in (
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 268435456 bytes"
        ),
        RuntimeError("could not create a primitive"),
        RuntimeError("MPS backend out of memory"),
    ):
        assert is_out_of_memory(exc), exc
    assert not is_out_of_memory(RuntimeError("Given groups=1, weight of size [16, 3, 3, 3], expected input"))
