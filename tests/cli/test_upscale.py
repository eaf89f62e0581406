"""`geosr upscale` from the command line: outputs, batches, exit codes and one-line errors, Ctrl-C, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner
from testdata import error_line, interruptible, wait_for

from geosr.cli.main import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GEOSR = Path(sys.executable).parent / "geosr"


def run(*args: str):
    return CliRunner().invoke(cli, ["upscale", *map(str, args)], catch_exceptions=False)


@pytest.fixture
def three(tmp_path, make_geotiff, synthetic_image) -> Path:
    """A folder of three small GeoTIFFs, one in a subfolder."""
    folder = tmp_path / "tiles"
    (folder / "sub").mkdir(parents=True)
    for i, rel in enumerate(("a.tif", "b.tif", "sub/c.tif")):
        make_geotiff(folder / rel, synthetic_image(3, 40, 60, seed=i))
    return folder


def test_one_file(tiny_model, rgb_tif, tmp_path):
    out = tmp_path / "out" / "x2.tif"
    result = run(rgb_tif, "-o", out, "--model", tiny_model, "--tile-size", 32, "--overlap", 8)
    assert result.exit_code == 0, result.output
    assert "tile" in result.stderr  # the progress bar
    with rasterio.open(out) as d:
        assert d.shape == (140, 180) and d.tags()["GEOSR_SCALE"] == "2"
    quiet = run(rgb_tif, "-o", tmp_path / "q.tif", "--model", tiny_model, "-q", "--bands", "3,2", "--compress", "zstd")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    with rasterio.open(tmp_path / "q.tif") as d:
        assert d.count == 2 and d.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"


def test_a_folder_keeps_its_layout_and_a_summary_closes_the_run(tiny_model, three, tmp_path):
    out = tmp_path / "sr"
    result = run(three, "-o", out, "--model", tiny_model, "--cog")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tif")) == ["a.tif", "b.tif", "sub/c.tif"]
    assert "3 done, 0 skipped, 0 failed" in result.stderr and "megapixels/s" in result.stderr


def test_files_in_flight_from_the_command_line(tiny_model, three, tmp_path):
    (three / "b.tif").write_bytes(b"II*\x00 not a tiff")
    out = tmp_path / "sr"
    report = tmp_path / "report.json"
    result = run(three, "-o", out, "--model", tiny_model, "--files-in-flight", 2, "--report", report)
    assert result.exit_code == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tif")) == ["a.tif", "sub/c.tif"]
    assert "2 done, 0 skipped, 1 failed" in result.stderr and "b.tif" in error_or_warning(result)
    assert json.loads(report.read_text())["settings"]["files_in_flight"] == 2
    bad = run(three, "-o", tmp_path / "x", "--model", tiny_model, "--files-in-flight", 0)
    assert bad.exit_code == 2 and "--files-in-flight" in bad.stderr and "0 is not in the range x>=1" in bad.stderr


def error_or_warning(result) -> str:
    return "\n".join(line for line in result.stderr.splitlines() if line.startswith("error:"))


def test_a_corrupt_file_fails_alone_and_the_batch_exits_1(tiny_model, three, tmp_path):
    (three / "b.tif").write_bytes(b"II*\x00 not a tiff")
    out = tmp_path / "sr"
    result = run(three, "-o", out, "--model", tiny_model)
    assert result.exit_code == 1
    assert sorted(p.name for p in out.rglob("*.tif")) == ["a.tif", "c.tif"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "b.tif" in errors[0]
    assert "2 done, 0 skipped, 1 failed" in result.stderr
    # a rerun with --skip-existing does only what is left (and the corrupt file fails again)
    again = run(three, "-o", out, "--model", tiny_model, "--skip-existing")
    assert again.exit_code == 1 and "0 done, 2 skipped, 1 failed" in again.stderr


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--overwrite", "--skip-existing"], 2, "exclude each other"),
        (["--aoi", "POLYGON((0 0,1 0,1 1,0 0))", "--bbox", "0,0,1,1"], 2, "not both"),
        (["--aoi-crs", "EPSG:4326"], 2, "--aoi-crs needs --aoi or --bbox"),
        (["--bands", "0"], 2, "band numbers are 1-based"),
        (["--bands", "1,1"], 2, "each band once"),
        (["--bands", "x"], 2, "band numbers"),
        (["--bbox", "1,2,3"], 2, "four numbers"),
        (["--value-range", "5", "1"], 2, "MIN must be below MAX"),
        (["--device", "tpu"], 2, "expected auto, cpu, cuda"),
        (["--precision", "int8"], 2, "int8"),
        (["--tile-size", "4"], 2, "4"),
        (["--compress", "jpeg"], 2, "jpeg"),
        (["--scale", "5"], 2, "5"),
        (["--bands", "5"], 1, "rgb.tif has 3 bands; --bands takes 1-based indices up to 3, got 5"),
        (
            ["--overlap", "40"],
            2,
            "overlap 40: must be an integer of 0..16 (half the tile size 32); 32 is the tile size of the model card",
        ),
        (
            ["--tile-size", "10"],
            2,
            "overlap 8: must be an integer of 0..5 (half the tile size 10); 8 is the overlap of the model card",
        ),
        (["--tile-size", "32", "--overlap", "17"], 2, "overlap 17: must be an integer of 0..16"),
        (["--overlap", "17", "--tile-size", "32"], 2, "Invalid value for '--overlap'"),
        (["--scale", "4"], 1, "x2 model but --scale=4"),
        (["--bbox", "0,0,1,1", "--aoi-crs", "EPSG:4326"], 1, "does not meet the raster"),
        (["--aoi", "missing.geojson"], 1, "no such file"),
        (["--aoi", "POLYGON((0 0, 1 0"], 2, "neither a GeoJSON file nor valid WKT"),
        (["--aoi-crs", "EPSG:999999", "--bbox", "0,0,1,1"], 2, "not a CRS"),
    ],
)
def test_every_bad_option_gives_a_one_line_error(tiny_model, rgb_tif, tmp_path, args, code, message):
    result = run(rgb_tif, "-o", tmp_path / "out.tif", "--model", tiny_model, "-q", *args)
    assert result.exit_code == code, result.output
    assert message in error_line(result)
    assert not (tmp_path / "out.tif").exists()


def test_errors_about_files_name_the_file_and_the_remedy(tiny_model, rgb_tif, tmp_path):
    no_model = run(rgb_tif, "-o", tmp_path / "a.tif", "-q", "--scale", "3")  # no x3 model ships
    assert no_model.exit_code == 1 and "pass --model PATH" in error_line(no_model)
    bad_model = tmp_path / "bad.safetensors"
    bad_model.write_bytes(b"\x00" * 16)
    assert "bad.safetensors" in error_line(run(rgb_tif, "-o", tmp_path / "a.tif", "--model", bad_model, "-q"))
    missing = run(tmp_path / "nope.tif", "-o", tmp_path / "a.tif", "--model", tiny_model)
    assert missing.exit_code == 1 and "nope.tif" in error_line(missing)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 garbage")
    result = run(corrupt, "-o", tmp_path / "a.tif", "--model", tiny_model, "-q")
    assert result.exit_code == 1 and "corrupt.tif: not a raster GDAL can read" in error_line(result)
    same = run(rgb_tif, "-o", rgb_tif, "--model", tiny_model, "-q", "--overwrite")
    assert same.exit_code == 1 and "the output is the input" in error_line(same)
    (tmp_path / "kept.tif").write_bytes(b"mine")
    exists = run(rgb_tif, "-o", tmp_path / "kept.tif", "--model", tiny_model, "-q")
    assert exists.exit_code == 1 and "--overwrite" in error_line(exists)
    assert (tmp_path / "kept.tif").read_bytes() == b"mine"
    cog_png = run(rgb_tif, "-o", tmp_path / "a.png", "--model", tiny_model, "-q", "--cog")
    assert cog_png.exit_code == 2 and "name the output .tif" in error_line(cog_png)  # options that exclude
    jp2 = run(rgb_tif, "-o", tmp_path / "a.jp2", "--model", tiny_model, "-q")
    assert jp2.exit_code == 2 and "not .jp2; name the output .tif" in error_line(jp2)  # a bad -o value
    cuda = run(rgb_tif, "-o", tmp_path / "a.tif", "--model", tiny_model, "-q", "--device", "cuda:7")
    assert cuda.exit_code == 1 and "--device cuda:7" in error_line(cuda)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "corrupt.tif", "kept.tif", "rgb.tif"]


def test_verbose_adds_the_traceback(tiny_model, rgb_tif, tmp_path, caplog):
    result = run(rgb_tif, "-o", tmp_path / "a.tif", "--model", tiny_model, "--bands", "9", "-v")
    assert result.exit_code == 1 and "Traceback" in result.stderr + caplog.text  # logged (pytest captures logs)


def test_plain_images_make_no_warning_noise(tiny_model, tmp_path, synthetic_image):
    png = tmp_path / "tile.png"
    with (
        rasterio.Env(),
        pytest.warns(rasterio.errors.NotGeoreferencedWarning),
        rasterio.open(png, "w", driver="PNG", width=40, height=30, count=3, dtype="uint8") as d,
    ):
        d.write(synthetic_image(3, 30, 40))
    result = run(png, "-o", tmp_path / "tile_x2.png", "--model", tiny_model)
    assert result.exit_code == 0
    assert "warning" not in result.stderr.lower()


def test_ctrl_c_exits_130_and_leaves_no_file(tiny_model_x4, tmp_path, make_geotiff, synthetic_image):
    src = make_geotiff(tmp_path / "big.tif", synthetic_image(3, 600, 600))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "geosr.cli.main",
            "upscale",
            str(src),
            "-o",
            str(out / "big_x4.tif"),
            "--model",
            str(tiny_model_x4),
            "--tile-size",
            "32",
            "--overlap",
            "8",
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=interruptible,
    )
    try:
        assert wait_for(lambda: any(out.iterdir()), 120), "the run never started writing"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Interrupted." in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_torchrun_splits_the_files_between_processes(tiny_model, three, tmp_path):
    if not GEOSR.exists():
        pytest.skip(f"no geosr script beside {sys.executable}")
    out = tmp_path / "sr"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(GEOSR),
            "upscale",
            str(three),
            "-o",
            str(out),
            "--model",
            str(tiny_model),
            "--device",
            "cpu",
            "-v",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tif")) == ["a.tif", "b.tif", "sub/c.tif"]
    # rank 0 takes files 0 and 2, rank 1 file 1 (sorted order)
    assert "rank 0/2: 2 done" in proc.stderr and "rank 1/2: 1 done" in proc.stderr


def test_empty_paths_several_inputs_into_a_file_name_and_an_input_twice_are_refused(tiny_model, three, tmp_path):
    """An empty INPUT or -o (an unset shell variable) never means the current folder; several inputs never go into
    a folder named like a raster file; the same file given twice is named as such. Nothing is written."""
    a, b = three / "a.tif", three / "b.tif"
    cases = [
        (("", "-o", tmp_path / "sr"), 2, "an empty path"),
        ((a, "-o", ""), 2, "an empty path"),
        ((a, "--model", "", "-o", tmp_path / "x.tif"), 2, "an empty path"),
        ((a, b, "-o", tmp_path / "multi.tif"), 1, "names a file, but several inputs or a folder need an output folder"),
        ((three, "-o", tmp_path / "multi.TIF"), 1, "give -o a folder name (without .TIF)"),
        ((a, three / "sub" / ".." / "a.tif", "-o", tmp_path / "sr"), 1, "given twice"),
    ]
    for args, code, message in cases:
        args = [*args, "--model", tiny_model] if "--model" not in args else list(args)
        result = run(*args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
    assert not [p for p in ("sr", "x.tif", "multi.tif", "multi.TIF") if (tmp_path / p).exists()]


@pytest.mark.parametrize(
    "dtype, value_range, warning",
    [
        ("uint16", ("9000", "10000"), "100% of its values lie outside --value-range 9000..10000"),
        ("uint8", ("0", "100"), "uint8 always maps 0..255; --value-range is ignored"),
        ("uint16", ("1000", "5000"), None),
    ],
)
def test_a_value_range_that_serves_the_data_badly_is_warned_about(
    tiny_model, tmp_path, make_geotiff, synthetic_image, caplog, dtype, value_range, warning
):
    data = (
        synthetic_image(3, 40, 50, dtype=dtype, lo=1200, hi=4000) if dtype == "uint16" else synthetic_image(3, 40, 50)
    )
    src = make_geotiff(tmp_path / "in.tif", data)
    result = run(src, "-o", tmp_path / "out.tif", "--model", tiny_model, "--value-range", *value_range)
    assert result.exit_code == 0, result.output
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]  # pytest captures the log
    if warning is None:
        assert not [w for w in warned if "value-range" in w], warned
    else:
        assert any(warning in w for w in warned), warned


@pytest.mark.parametrize("value_range", [("0", "1e30"), ("0", "1e6")])
def test_a_value_range_the_data_fill_under_1_percent_of_is_refused(
    tiny_model, tmp_path, make_geotiff, synthetic_image, value_range
):
    """The model would see a nearly flat image, and its errors stretched back by the range swamp the data."""
    src = make_geotiff(tmp_path / "in.tif", synthetic_image(3, 40, 50, dtype="uint16", lo=1200, hi=4000))
    result = run(src, "-o", tmp_path / "out.tif", "--model", tiny_model, "--value-range", *value_range)
    assert result.exit_code == 1, result.output
    assert (
        f"of --value-range {float(value_range[0]):g}..{float(value_range[1]):g}; the model would see a nearly flat"
        in result.output
    )
    assert "leave --value-range out" in result.output and not (tmp_path / "out.tif").exists()


def test_skip_existing_does_not_keep_an_output_whose_error_map_is_missing_or_damaged(
    tiny_model, tmp_path, make_geotiff, synthetic_image, caplog
):
    """--skip-existing with --uncertainty: an output kept without its map is a failure (exit 1) that names the map
    and the remedy, never a silent success; nothing is replaced or written. Output and map present: skipped."""
    src = make_geotiff(tmp_path / "small.tif", synthetic_image(3, 16, 16))
    out, emap = tmp_path / "out.tif", tmp_path / "maps" / "u.tif"
    assert run(src, "-o", out, "--model", tiny_model, "-q").exit_code == 0  # an earlier run, without the map
    kept = out.read_bytes()

    def resume(*extra):
        return run(src, "-o", out, "--model", tiny_model, "--uncertainty", emap, *extra)

    missing = resume("--skip-existing")
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert missing.exit_code == 1 and len(errors) == 1, missing.output
    assert f"{out}: exists but its error map {emap} does not" in errors[0]
    assert f"delete {out} to redo both, or rerun with --overwrite instead of --skip-existing" in errors[0]
    assert out.read_bytes() == kept and not emap.exists() and not emap.parent.exists()
    assert resume("--overwrite", "-q").exit_code == 0  # the remedy: both made
    assert emap.exists() and out.read_bytes() != kept
    caplog.clear()
    assert resume("--skip-existing").exit_code == 0
    assert f"skipped: {out}: exists (--skip-existing)" in [r.getMessage() for r in caplog.records]
    emap.write_bytes(emap.read_bytes()[:600])  # cut short
    damaged = resume("--skip-existing")
    assert damaged.exit_code == 1 and f"error map {emap} is damaged" in damaged.stderr
    same = run(src, "-o", out, "--model", tiny_model, "--uncertainty", src, "--skip-existing")  # path rules still
    assert same.exit_code == 2 and "small.tif: is the input" in same.stderr


@pytest.mark.slow
def test_under_torchrun_a_failed_file_or_an_aoi_that_misses_one_process_stops_no_other(
    tiny_model, tmp_path, make_geotiff, synthetic_image
):
    if not GEOSR.exists():
        pytest.skip(f"no geosr script beside {sys.executable}")
    from affine import Affine

    folder = tmp_path / "tiles"
    folder.mkdir()
    for i in range(4):  # sorted: rank 0 takes a0 and a2, rank 1 a1 and a3
        if i == 2:
            (folder / "a2.tif").write_bytes(b"not a raster" * 50)
        else:
            t = Affine(10, 0, 500000 + 1000 * i, 0, -10, 4000000)  # side by side, 600 m wide, 1000 m apart
            make_geotiff(folder / f"a{i}.tif", synthetic_image(3, 40, 60, seed=i), transform=t)

    def torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   str(GEOSR), "upscale", str(folder), "-o", str(out), "--model", str(tiny_model), "--device", "cpu",
                   *extra]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              timeout=300)  # fmt: skip

    # rank 0 fails a2 at once: it waits for rank 1 instead of exiting 1, which made torchrun stop rank 1's files
    proc = torchrun(tmp_path / "sr", "--report", str(tmp_path / "r.json"))
    assert proc.returncode != 0
    assert sorted(p.name for p in (tmp_path / "sr").glob("*.tif")) == ["a0.tif", "a1.tif", "a3.tif"]
    reports = [json.loads((tmp_path / f"r.rank{k}.json").read_text()) for k in (0, 1)]
    assert [[f["status"] for f in r["files"]] for r in reports] == [["done", "failed"], ["done", "done"]]
    assert [r["exit_code"] for r in reports] == [1, 0]

    # a box on a1 alone (rank 1's): rank 0's files are all missed, which is no error while the batch meets a file
    box = "500000,3999700,501500,4000000"  # a0 (500000..500600) and a1 (501000..501600)
    proc = torchrun(tmp_path / "aoi", "--bbox", box, "--report", str(tmp_path / "a.json"))
    assert proc.returncode != 0  # a2 still fails
    assert sorted(p.name for p in (tmp_path / "aoi").glob("*.tif")) == ["a0.tif", "a1.tif"]
    (folder / "a2.tif").unlink()  # now rank 0 takes a0 and a3, rank 1 a1
    proc = torchrun(tmp_path / "aoi1", "--bbox", "501000,3999700,501500,4000000")  # a1 only: none of rank 0's
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "aoi1").glob("*.tif")) == ["a1.tif"] and "meets none" not in proc.stderr
    proc = torchrun(tmp_path / "none", "--bbox", "0,0,10,10")  # no file of the batch: the error, from each process
    assert proc.returncode != 0 and "meets none of the 3 input files" in proc.stderr


def test_a_value_range_warning_names_the_files_band_numbers(
    tiny_model, tmp_path, make_geotiff, synthetic_image, caplog
):
    data = synthetic_image(5, 40, 50, dtype="uint16", lo=1200, hi=4000)
    src = make_geotiff(tmp_path / "s2.tif", data)
    result = run(src, "-o", tmp_path / "out.tif", "--model", tiny_model, "--bands", "4,3,2", "--value-range", "9000",
                 "10000")  # fmt: skip
    assert result.exit_code == 0, result.output
    warned = [r.getMessage() for r in caplog.records if "lie outside --value-range" in r.getMessage()]
    assert sorted(w.split(": band ")[1][0] for w in warned) == ["2", "3", "4"]  # B4, B3, B2: not 1, 2, 3
