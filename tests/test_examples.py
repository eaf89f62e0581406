"""examples/upscale_tiles.py and examples/upscale_tiles.sh, run as a user runs them (real processes) on folders of
tiny GeoTIFF tiles with a tiny model: their outputs, their one-line errors and exit codes, Ctrl-C, --overwrite and
the GPUS setting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from testdata import REPO, interruptible, smooth_image, wait_for, write_geotiff

PY = REPO / "examples" / "upscale_tiles.py"
SH = REPO / "examples" / "upscale_tiles.sh"
BIN = Path(sys.executable).parent  # the geosr program the .sh runs: this interpreter's


def env() -> dict[str, str]:
    """One torch thread, and this interpreter's geosr first on PATH."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(*args, **extra_env: str) -> subprocess.CompletedProcess:
    """A script (PY or SH) with ``args``, to its end."""
    script, *rest = args
    command = [sys.executable, str(script)] if script == PY else ["bash", str(script)]
    return subprocess.run(
        [*command, *map(str, rest)],
        capture_output=True,
        text=True,
        env={**env(), **extra_env},
        timeout=300,
    )


def tiles(folder: Path, n: int = 3, size: int = 40) -> Path:
    for i in range(n):
        write_geotiff(folder / f"t{i:02d}.tif", smooth_image(3, size, size, seed=i))
    return folder


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden ones (temporary files) included, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def upscaled(path: Path, size: int = 40) -> bool:
    """An x2 output of a ``size`` tile that opens and reads to the end."""
    with rasterio.open(path) as d:
        d.read()
        return (d.count, d.height, d.width) == (3, 2 * size, 2 * size)


def one_error(stderr: str) -> str:
    """The one line of a refusal: exactly one 'error: ...' line, nothing else, no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture
def needs_geosr_program():
    if not (BIN / "geosr").exists():
        pytest.skip(f"no geosr program beside {sys.executable} (pip install -e .)")


# --- upscale_tiles.py -------------------------------------------------------------------------------------------------


def test_py_upscales_a_folder_keeps_existing_outputs_and_redoes_them_with_overwrite(tiny_model, tmp_path):
    src, out = tiles(tmp_path / "in"), tmp_path / "out"
    first = run(PY, src, out, tiny_model)
    assert first.returncode == 0, first.stderr
    assert "3 done, 0 skipped, 0 failed" in first.stderr
    assert files_in(out) == ["t00.tif", "t01.tif", "t02.tif"] and all(upscaled(out / f) for f in files_in(out))
    inodes = {f: (out / f).stat().st_ino for f in files_in(out)}

    again = run(PY, src, out, tiny_model)
    assert again.returncode == 0 and "0 done, 3 skipped, 0 failed" in again.stderr, again.stderr
    assert {f: (out / f).stat().st_ino for f in files_in(out)} == inodes  # left alone

    redo = run(PY, src, out, tiny_model, "--overwrite")
    assert redo.returncode == 0 and "3 done, 0 skipped, 0 failed" in redo.stderr, redo.stderr
    assert all((out / f).stat().st_ino != inodes[f] for f in inodes)  # each replaced by a new file
    assert files_in(out) == list(inodes) and all(upscaled(out / f) for f in inodes)


@pytest.mark.parametrize("case", ["empty folder", "missing folder", "not a model file", "missing model file"])
def test_py_bad_input_is_one_error_line_and_exit_1(tiny_model, tmp_path, case):
    src, model = tiles(tmp_path / "in"), tiny_model
    if case == "empty folder":
        src = tmp_path / "empty"
        src.mkdir()
        needles = ["no rasters found", str(src)]
    elif case == "missing folder":
        src = tmp_path / "nowhere"
        needles = [str(src), "no such file or folder"]
    elif case == "not a model file":
        model = tmp_path / "notes.safetensors"
        model.write_text("not a model")
        needles = [str(model), "not a safetensors model file"]
    else:
        model = tmp_path / "gone.safetensors"
        needles = [str(model), "no such model file"]
    out = tmp_path / "out"
    result = run(PY, src, out, model)
    assert result.returncode == 1, result.stderr
    line = one_error(result.stderr)
    for needle in needles:
        assert needle in line, line
    assert not out.exists() or files_in(out) == []  # nothing written


def test_py_a_damaged_tile_fails_alone_with_one_error_line(tiny_model, tmp_path):
    src, out = tiles(tmp_path / "in"), tmp_path / "out"
    damaged = src / "t01.tif"
    damaged.write_bytes(damaged.read_bytes()[:3000])  # header whole, pixels cut short
    result = run(PY, src, out, tiny_model)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr  # GDAL's own lines stay hidden
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"error: {damaged}:"), result.stderr
    assert "2 done, 0 skipped, 1 failed" in result.stderr
    assert files_in(out) == ["t00.tif", "t02.tif"] and all(upscaled(out / f) for f in files_in(out))


@pytest.mark.parametrize("args", [[], ["only-one"], ["a", "b"], ["a", "b", "c", "d"], ["a", "b", "c", "--bogus"]])
def test_py_wrong_arguments_are_a_usage_error_exit_2(tmp_path, args):
    result = run(PY, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("usage: ")
    assert "error: " in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_py_ctrl_c_or_sigterm_exits_130_or_143_keeps_finished_files_and_a_rerun_resumes(
    tiny_model, tmp_path, sig, code
):
    n = 24
    src, out = tiles(tmp_path / "in", n, 96), tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(PY), str(src), str(out), str(tiny_model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        preexec_fn=interruptible,
    )
    try:
        assert wait_for(lambda: (out / "t00.tif").exists(), 120), "the first file never finished"
        wait_for(lambda: any(p.name.startswith(".") for p in out.iterdir()), 20)  # the next one under way
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted" if sig == signal.SIGINT else "stopped")
    done = files_in(out)
    assert done and len(done) < n  # stopped in the middle
    assert not [f for f in done if f.startswith(".")]  # nothing of the file under way
    assert all(upscaled(out / f, 96) for f in done)  # only complete files

    again = run(PY, src, out, tiny_model)
    assert again.returncode == 0, again.stderr
    assert f"{n - len(done)} done, {len(done)} skipped, 0 failed" in again.stderr
    assert files_in(out) == [f"t{i:02d}.tif" for i in range(n)]


# --- upscale_tiles.sh -------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("needs_geosr_program")
def test_sh_overwrite_replaces_skip_existing_and_redoes_the_outputs(tiny_model, tmp_path):
    src, out = tiles(tmp_path / "in"), tmp_path / "out"
    first = run(SH, src, out, tiny_model)
    assert first.returncode == 0, first.stderr
    assert files_in(out) == ["t00.tif", "t01.tif", "t02.tif"]
    inodes = {f: (out / f).stat().st_ino for f in files_in(out)}

    again = run(SH, src, out, tiny_model)
    assert again.returncode == 0 and "0 done, 3 skipped, 0 failed" in again.stderr, again.stderr

    redo = run(SH, src, out, tiny_model, "--overwrite")
    assert redo.returncode == 0, redo.stderr
    assert "skip-existing" not in redo.stderr and "3 done, 0 skipped, 0 failed" in redo.stderr
    assert all((out / f).stat().st_ino != inodes[f] for f in inodes)  # each replaced by a new file
    assert files_in(out) == list(inodes) and all(upscaled(out / f) for f in inodes)


@pytest.mark.usefixtures("needs_geosr_program")
def test_sh_bad_input_is_geosrs_one_error_line_and_exit_1(tiny_model, tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    result = run(SH, empty, out, tiny_model)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "no rasters found" in line and str(empty) in line
    assert not out.exists()


@pytest.mark.parametrize("gpus", ["abc", "0", "-1", "1.5", "2 3"])
def test_sh_refuses_gpus_that_is_not_a_whole_number_of_at_least_1(tiny_model, tmp_path, gpus):
    src, out = tiles(tmp_path / "in"), tmp_path / "out"
    result = run(SH, src, out, tiny_model, GPUS=gpus)
    assert result.returncode == 2, result.stderr
    line = one_error(result.stderr)
    assert f"GPUS={gpus}:" in line and "whole number of at least 1" in line
    assert not out.exists()  # nothing ran


def test_sh_wrong_arguments_are_a_usage_error_exit_2(tmp_path):
    result = run(SH, tmp_path, tmp_path / "out")
    assert result.returncode == 2 and result.stderr.startswith("usage: "), result.stderr
