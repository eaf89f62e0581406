"""`geosr upscale --report FILE.json`: one record per file and the summary, written however the batch ends; every
report read here is checked against the report's JSON Schema (geosr/schemas/batch_report.schema.json)."""

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
from jsonschema import Draft202012Validator
from testdata import interruptible, wait_for

from geosr.cli.main import cli
from geosr.report import STATUSES, report_schema

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCHEMA = Draft202012Validator(report_schema())
RECORD_KEYS = {"input", "output", "status", "message", "seconds", "output_pixels", "tiles", "model", "settings"}


def run(*args):
    return CliRunner().invoke(cli, ["upscale", *map(str, args)], catch_exceptions=False)


def load(path: Path) -> dict:
    """The report at ``path``, checked against its JSON Schema (geosr/schemas/batch_report.schema.json)."""
    report = json.loads(path.read_text())
    SCHEMA.validate(report)
    assert report["summary"]["files"] == len(report["files"]) == sum(report["summary"][s] for s in STATUSES)
    return report


@pytest.fixture
def three(tmp_path, make_geotiff, synthetic_image) -> Path:
    """A folder of three small GeoTIFFs, the second one corrupt."""
    folder = tmp_path / "tiles"
    folder.mkdir()
    for i, name in enumerate(("a.tif", "b.tif", "c.tif")):
        make_geotiff(folder / name, synthetic_image(3, 30, 40, seed=i))
    (folder / "b.tif").write_bytes(b"II*\x00 not a tiff")
    return folder


def test_a_batch_with_a_failing_file_leaves_a_report_naming_it(tiny_model, three, tmp_path):
    out, path = tmp_path / "sr", tmp_path / "logs" / "report.json"
    result = run(three, "-o", out, "--model", tiny_model, "--tile-size", 24, "--report", path)
    assert result.exit_code == 1
    report = load(path)
    assert report["state"] == "finished" and report["exit_code"] == 1 and report["error"] is None
    assert report["summary"] | {"seconds": 0, "output_pixels": 0, "megapixels_per_second": 0} == {
        "files": 3,
        "done": 2,
        "skipped": 0,
        "failed": 1,
        "interrupted": 0,
        "pending": 0,
        "seconds": 0,
        "output_pixels": 0,
        "megapixels_per_second": 0,
    }
    records = {Path(r["input"]).name: r for r in report["files"]}
    assert all(set(r) == RECORD_KEYS for r in records.values())
    failed = records["b.tif"]
    assert failed["status"] == "failed" and "b.tif" in failed["message"] and failed["output_pixels"] == 0
    for name in ("a.tif", "c.tif"):
        done = records[name]
        with rasterio.open(done["output"]) as d:
            assert done["status"] == "done" and done["output_pixels"] == d.width * d.height == 80 * 60
        assert done["input"] == str((three / name).absolute()) and done["seconds"] > 0 and done["tiles"] > 0
        assert done["model"].startswith("tiny-x2.safetensors") and done["settings"]["tile_size"] == 24
    assert report["summary"]["output_pixels"] == 2 * 80 * 60
    assert report["model"]["scale"] == 2 and report["settings"]["overlap"] == 8  # the card's, filled in
    assert (report["settings"]["rank"], report["settings"]["processes"]) == (0, 1)  # one process, all the files
    # the error line on the terminal is unchanged; a rerun with --skip-existing reports the skipped files
    assert "2 done, 0 skipped, 1 failed" in result.stderr
    run(three, "-o", out, "--model", tiny_model, "--skip-existing", "--report", path)
    assert [r["status"] for r in load(path)["files"]] == ["skipped", "failed", "skipped"]


def test_a_single_file_and_a_batch_that_cannot_start_leave_reports(tiny_model, three, rgb_tif, tmp_path):
    ok = run(rgb_tif, "-o", tmp_path / "one.tif", "--model", tiny_model, "--report", tmp_path / "one.json")
    assert ok.exit_code == 0
    [record] = load(tmp_path / "one.json")["files"]
    assert record["status"] == "done" and record["output_pixels"] == 140 * 180
    bad = run(three / "b.tif", "-o", tmp_path / "b_x2.tif", "--model", tiny_model, "--report", tmp_path / "b.json")
    assert bad.exit_code == 1
    report = load(tmp_path / "b.json")
    assert report["state"] == "failed" and report["exit_code"] == 1 and "b.tif" in report["error"]
    assert [(r["status"], "b.tif" in r["message"]) for r in report["files"]] == [("failed", True)]
    # a model that does not exist: the batch fails before any file; every file is pending
    none = run(three, "-o", tmp_path / "sr", "--model", tmp_path / "nope.safetensors", "--report", tmp_path / "n.json")
    assert none.exit_code == 1
    report = load(tmp_path / "n.json")
    assert report["state"] == "failed" and "nope.safetensors" in report["error"] and report["model"] is None
    assert [r["status"] for r in report["files"]] == ["pending"] * 3


def test_a_report_that_cannot_be_written_stops_the_batch_before_any_file(tiny_model, three, rgb_tif, tmp_path):
    result = run(three, "-o", tmp_path / "sr", "--model", tiny_model, "--report", rgb_tif / "report.json")
    assert result.exit_code == 1 and "cannot write the batch report" in result.stderr
    assert not (tmp_path / "sr").exists()


def _start_batch(model, tmp_path, make_geotiff, synthetic_image, *extra: str) -> subprocess.Popen:
    """``geosr upscale`` of tmp_path/tiles (a_small.tif, 20 x 20, then b_big.tif and c_big.tif, 600 x 600) into
    tmp_path/sr with the report tmp_path/report.json, started in a process that a signal can interrupt."""
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    make_geotiff(tiles / "a_small.tif", synthetic_image(3, 20, 20, seed=0))
    for name in ("b_big.tif", "c_big.tif"):
        make_geotiff(tiles / name, synthetic_image(3, 600, 600, seed=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "geosr.cli.main",
            "upscale",
            str(tiles),
            "-o",
            str(tmp_path / "sr"),
            "--model",
            str(model),
            "--tile-size",
            "32",
            "--overlap",
            "8",
            "-q",
            "--report",
            str(tmp_path / "report.json"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=interruptible,
    )


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_batch_leaves_a_valid_report(tiny_model_x4, tmp_path, make_geotiff, synthetic_image, sig, code):
    out, path = tmp_path / "sr", tmp_path / "report.json"
    proc = _start_batch(tiny_model_x4, tmp_path, make_geotiff, synthetic_image)
    try:  # a_small.tif is done once b_big.tif's temporary output appears
        assert wait_for(lambda: any(p.name.startswith(".b_big") for p in out.glob(".*")), 120), "never started b"
        running = load(path)  # written when the files started
        assert running["state"] == "running" and running["exit_code"] is None
        assert [r["status"] for r in running["files"]][1:] == ["pending", "pending"]
        time.sleep(0.3)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    report = load(path)
    assert report["state"] == "interrupted" and report["exit_code"] == code
    assert [r["status"] for r in report["files"]] == ["done", "interrupted", "pending"]
    assert "nothing of this file was written" in report["files"][1]["message"]
    assert report["summary"]["done"] == 1 and report["summary"]["pending"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_small.tif"]  # nothing of b, and no temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "sr", "tiles"]  # nor of the report


def test_a_batch_interrupted_with_files_in_flight_names_every_file_under_way(
    tiny_model_x4, tmp_path, make_geotiff, synthetic_image
):
    """Ctrl-C with two files in flight: both are reported interrupted, neither leaves a file, the exit code is 130."""
    out, path = tmp_path / "sr", tmp_path / "report.json"
    proc = _start_batch(tiny_model_x4, tmp_path, make_geotiff, synthetic_image, "--files-in-flight", "2")
    try:  # both big files under way: a_small.tif is done and c_big.tif has started
        assert wait_for(
            lambda: (out / "a_small.tif").exists() and any(p.name.startswith(".c_big") for p in out.glob(".*")), 120
        ), "never started c"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    report = load(path)
    assert report["state"] == "interrupted" and report["settings"]["files_in_flight"] == 2
    assert [(Path(r["input"]).name, r["status"]) for r in report["files"]] == [
        ("a_small.tif", "done"),
        ("b_big.tif", "interrupted"),
        ("c_big.tif", "interrupted"),
    ]
    assert sorted(p.name for p in out.iterdir()) == ["a_small.tif"]  # nothing of b or c, no temporary file


def test_a_resumed_run_whose_error_map_is_missing_reports_it_failed(tiny_model, rgb_tif, tmp_path):
    """--skip-existing --uncertainty with the output there but not its map: the report's record says failed and
    names the map and the remedy; the summary counts it."""
    out, emap, path = tmp_path / "out.tif", tmp_path / "u.tif", tmp_path / "report.json"
    assert run(rgb_tif, "-o", out, "--model", tiny_model, "-q").exit_code == 0
    result = run(rgb_tif, "-o", out, "--model", tiny_model, "--uncertainty", emap, "--skip-existing", "--report", path)
    assert result.exit_code == 1
    report = load(path)
    assert report["state"] == "finished" and report["exit_code"] == 1
    assert report["summary"]["failed"] == 1 and report["summary"]["skipped"] == 0
    [record] = report["files"]
    assert record["status"] == "failed" and record["output"] == str(out.absolute())
    assert f"its error map {emap} does not" in record["message"] and "--overwrite" in record["message"]
    assert not emap.exists()
