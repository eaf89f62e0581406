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
from geosr.options import UpscaleOptions
from geosr.pipeline import upscale_raster
from geosr.predictor import load_predictor
from testdata import write_geotiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("shape, tile, expected", [((8, 8), 1024, (8, 8)), ((6, 90), 64, (6, 64))],
                         ids=["small-raster-huge-tile", "thin-strip"])
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
from geosr.predictor import load_predictor
import geosr.cli.upscale, geosr.aoi, geosr.inference, geosr.report, tqdm  # what the command imports when it runs
torch.set_num_threads(1)
load_predictor(sys.argv[1], device="cpu", precision="fp32")  # imports and first allocations, within the limit
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 300 * 2**20, resource.RLIM_INFINITY))  # 300 MB more, no more
cli(sys.argv[2:], prog_name="geosr")
"""


def test_running_out_of_memory_is_one_line_naming_the_options_to_lower(tiny_model, tmp_path):
    """A real out-of-memory error: the process may use only 300 MB more than it holds after loading the model, and
    a batch of 4 tiles of 512 x 512 pixels needs gigabytes."""
    src = write_geotiff(tmp_path / "scene.tif", image(3, 512, 2048))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY_RUN, str(tiny_model), "upscale", str(src), "-o",
                           str(out / "x2.tif"), "--model", str(tiny_model), "-q", "--tile-size", "512",
                           "--overlap", "0", "--batch-size", "4"],
                          capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "scene.tif: out of memory running the model" in lines[0]
    assert re.search(r"\d tile\(s\) of 512 x 512 input pixels at x2 \(.*\); use a smaller --batch-size or "
                     r"--tile-size", lines[0]), lines[0]
    assert not out.exists() or files_in(out) == []
