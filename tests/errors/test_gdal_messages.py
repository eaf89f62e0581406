"""GDAL's, PROJ's and libtiff's own lines are folded into geosr's one-line error: without -v stderr holds that line
alone (and click's usage lines before a usage error); with -v the raw message is there too, as a log record.

These run geosr as a process: GDAL and libtiff write their lines to the process's stderr themselves, where the
CliRunner of the other tests does not look.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from badinput import files_in, fill_when_written, image, small_disk
from testdata import write_geotiff

GEOSR = Path(sys.executable).parent / "geosr"


def geosr(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([str(GEOSR), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def one_error(done: subprocess.CompletedProcess, code: int) -> str:
    """The one 'Error:' line of a refusal with exit ``code``; no other line but click's usage lines."""
    assert done.returncode == code, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert [line for line in lines if not line.startswith(("Error:", "Usage:", "Try "))] == [], done.stderr
    return errors[0]


def test_an_unknown_aoi_crs_is_one_line_with_projs_reason(tiny_model, tmp_path):
    src = write_geotiff(tmp_path / "scene.tif", image(3, 40, 48))
    args = (
        "upscale",
        src,
        "-o",
        tmp_path / "out.tif",
        "--model",
        tiny_model,
        "--bbox",
        "0,0,1,1",
        "--aoi-crs",
        "EPSG:999999",
    )
    line = one_error(geosr(*args), 2)
    assert "--aoi-crs 'EPSG:999999'" in line and "crs not found: EPSG:999999" in line
    assert "internal_proj" not in line  # PROJ's function names are left out
    verbose = geosr(*args, "-v")
    assert verbose.returncode == 2
    raw = [line for line in verbose.stderr.splitlines() if "crs not found" in line and not line.startswith("Error:")]
    assert raw, verbose.stderr


def test_a_full_disk_is_one_line_and_libtiffs_lines_only_with_v(tiny_model, tmp_path):
    src = write_geotiff(tmp_path / "scene.tif", image(3, 96, 96))
    for verbose in ([], ["-v"]):
        with small_disk(tmp_path / "disk", "1m") as disk:
            stop = threading.Event()
            filler = fill_when_written(disk, stop)
            done = geosr("upscale", src, "-o", disk / "out.tif", "--model", tiny_model, *verbose)
            stop.set()
            filler.join()
            assert files_in(disk) == ["filler"]
        if not verbose:
            assert "the disk is full" in one_error(done, 1)
        else:
            assert done.returncode == 1
            raw = [
                line
                for line in done.stderr.splitlines()
                if "No space left on device" in line and not line.startswith("Error:")
            ]
            assert raw and all(line.startswith(("ERROR: ", "WARNING: ", "INFO: ")) for line in raw), done.stderr
