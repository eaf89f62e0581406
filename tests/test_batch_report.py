"""geosr.report: the batch report's document as a batch goes (every file pending, results in order, the summary) and
however it ends (finished, a failed file, failed, interrupted by Ctrl-C or SIGTERM), the settings it records, where
it may be written, is_report, and the report paths of the processes under torchrun. The command line's --report is
tested in tests/cli/test_report.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from geosr.errors import OptionError, OutputExistsError, RasterError
from geosr.options import UpscaleOptions
from geosr.pipeline import FileResult
from geosr.report import FORMAT, BatchReport, is_report, rank_path, settings_of
from geosr.version import __version__

DOCUMENT_KEYS = {
    "format",
    "geosr_version",
    "command",
    "started",
    "updated",
    "state",
    "exit_code",
    "error",
    "model",
    "settings",
    "summary",
    "files",
}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def pairs_of(folder: Path, *names: str) -> list[tuple[Path, Path]]:
    return [(folder / name, folder / "out" / name) for name in names]


def done(src: Path, dst: Path, pixels: int = 100, tiles: int = 4) -> FileResult:
    return FileResult(src, dst, "done", "", 1.5, pixels, tiles)


# --- settings ---------------------------------------------------------------------------------------------------------


def test_settings_fill_in_the_model_cards_tiling_and_the_device(predictor):
    options = UpscaleOptions(bands=[3, 2, 1], value_range=(0, 4000), batch_size=2)
    settings = settings_of(options, predictor, skip_existing=True)
    assert settings == {
        "tile_size": 32,
        "overlap": 8,
        "batch_size": 2,
        "bands": [3, 2, 1],
        "aoi": None,
        "aoi_crs": None,
        "value_range": [0.0, 4000.0],
        "consistency": True,
        "cog": False,
        "compress": "deflate",
        "overwrite": False,
        "device": "cpu",
        "precision": "fp32",
        "self_ensemble": False,
        "threads": torch.get_num_threads(),
        "skip_existing": True,
    }
    json.dumps(settings)  # JSON values only
    without = settings_of(options)  # no model yet: the values given, nothing of a device
    assert (without["tile_size"], without["overlap"]) == (None, None) and "device" not in without
    # a tiling that does not fit the card (overlap 20 > 32 / 2): every file fails on it; the values given stay
    misfit = settings_of(UpscaleOptions(overlap=20), predictor)
    assert (misfit["tile_size"], misfit["overlap"]) == (None, 20)


# --- the document as a batch goes -------------------------------------------------------------------------------------


def test_a_running_batch_lists_every_file_pending(predictor, tmp_path):
    path = tmp_path / "report.json"
    report = BatchReport(path, command=["geosr", "upscale", "in", "-o", "out"], settings=settings_of(UpscaleOptions()))
    report.plan(pairs_of(tmp_path, "a.tif", "b.tif"))
    assert not path.exists()  # written only once the files start
    report.use_model(predictor, settings_of(UpscaleOptions(), predictor))
    report.running()
    doc = load(path)
    assert set(doc) == DOCUMENT_KEYS and (doc["format"], doc["geosr_version"]) == (FORMAT, __version__)
    assert (doc["state"], doc["exit_code"], doc["error"]) == ("running", None, None)
    assert doc["command"] == ["geosr", "upscale", "in", "-o", "out"] and doc["started"].endswith("Z")
    assert doc["model"] == {
        "file": "tiny-x2.safetensors",
        "name": "degan",
        "scale": 2,
        "channels": 3,
        "device": "cpu",
        "precision": "fp32",
        "path": predictor.path,  # the file itself, and its SHA-256 as outputs record it: a copy is told apart
        "sha256": hashlib.sha256(Path(predictor.path).read_bytes()).hexdigest(),
    }
    assert doc["settings"]["tile_size"] == 32  # the settings given with the model replace the earlier ones
    assert [(f["input"], f["output"], f["status"], f["message"]) for f in doc["files"]] == [
        (str(tmp_path / "a.tif"), str(tmp_path / "out" / "a.tif"), "pending", "not started"),
        (str(tmp_path / "b.tif"), str(tmp_path / "out" / "b.tif"), "pending", "not started"),
    ]
    assert all(f["model"] == "tiny-x2.safetensors (degan, x2)" for f in doc["files"])
    assert doc["summary"]["files"] == doc["summary"]["pending"] == 2 and doc["summary"]["output_pixels"] == 0


def test_results_are_written_at_most_every_interval(tmp_path):
    path = tmp_path / "report.json"
    pairs = pairs_of(tmp_path, "a.tif", "b.tif")
    report = BatchReport(path, interval=3600)
    report.plan(pairs)
    report.running()
    report.add(done(*pairs[0]))
    assert [f["status"] for f in load(path)["files"]] == ["pending", "pending"]  # too soon to write again
    often = BatchReport(tmp_path / "often.json", interval=0)
    often.plan(pairs)
    often.running()
    often.add(done(*pairs[0]))
    assert [f["status"] for f in load(tmp_path / "often.json")["files"]] == ["done", "pending"]


def test_a_finished_batch_sums_its_files_and_exits_1_for_a_failed_one(tmp_path):
    path = tmp_path / "report.json"
    pairs = pairs_of(tmp_path, "a.tif", "b.tif", "c.tif")
    with BatchReport(path) as report:
        report.plan(pairs)
        report.running()
        report.add(done(*pairs[0], pixels=300))
        report.add(FileResult(*pairs[1], "failed", "b.tif: not a raster"))
        report.add(FileResult(*pairs[2], "skipped", "exists", reason="exists"))
    doc = load(path)
    assert (doc["state"], doc["exit_code"], doc["error"]) == ("finished", 1, None)
    assert [(f["status"], f["message"]) for f in doc["files"]] == [
        ("done", ""),
        ("failed", "b.tif: not a raster"),
        ("skipped", "exists"),
    ]
    summary = doc["summary"]
    assert {k: summary[k] for k in ("files", "done", "skipped", "failed", "interrupted", "pending")} == {
        "files": 3,
        "done": 1,
        "skipped": 1,
        "failed": 1,
        "interrupted": 0,
        "pending": 0,
    }
    assert summary["output_pixels"] == 300 and doc["files"][0]["seconds"] == 1.5 and doc["files"][0]["tiles"] == 4
    clean = BatchReport(tmp_path / "clean.json")
    clean.plan(pairs[:1])
    clean.add(done(*pairs[0]))
    clean.finish()
    assert (load(tmp_path / "clean.json")["state"], load(tmp_path / "clean.json")["exit_code"]) == ("finished", 0)


@pytest.mark.parametrize("exit_code, error", [(None, "interrupted (Ctrl-C)"), (143, "interrupted by SIGTERM")])
def test_an_interrupted_batch_marks_the_file_under_way(tmp_path, exit_code, error):
    path = tmp_path / "report.json"
    pairs = pairs_of(tmp_path, "a.tif", "b.tif", "c.tif")
    interrupt = KeyboardInterrupt()
    if exit_code is not None:
        interrupt.exit_code = exit_code  # as geosr's SIGTERM handler raises it
    with pytest.raises(KeyboardInterrupt), BatchReport(path) as report:
        report.plan(pairs)
        report.running()
        report.add(done(*pairs[0]))
        raise interrupt
    doc = load(path)
    assert (doc["state"], doc["exit_code"], doc["error"]) == ("interrupted", exit_code or 130, error)
    assert [f["status"] for f in doc["files"]] == ["done", "interrupted", "pending"]
    assert "nothing of this file was written" in doc["files"][1]["message"]


@pytest.mark.parametrize(
    "exc, exit_code, error",
    [
        (OptionError("--tile-size 4: too small"), 2, "--tile-size 4: too small"),
        (RasterError("a.tif: not a raster"), 1, "a.tif: not a raster"),
        (ValueError("bug"), 1, "unexpected error: ValueError: bug"),
    ],
)
def test_a_failed_batch_records_what_stopped_it(tmp_path, exc, exit_code, error):
    path = tmp_path / "report.json"
    with pytest.raises(type(exc)), BatchReport(path) as report:
        report.plan(pairs_of(tmp_path, "a.tif", "b.tif"))
        report.running()
        raise exc
    doc = load(path)
    assert (doc["state"], doc["exit_code"], doc["error"]) == ("failed", exit_code, error)
    assert [(f["status"], f["message"]) for f in doc["files"]] == [("failed", error), ("pending", "not started")]


# --- where it may be written ------------------------------------------------------------------------------------------


def test_a_report_replaces_an_earlier_report_and_nothing_else(tmp_path):
    path = tmp_path / "report.json"
    BatchReport(path).finish()
    assert is_report(path)
    BatchReport(path).finish()  # an earlier report: replaced without overwrite
    other = tmp_path / "notes.json"
    other.write_text('{"mine": true}')
    with pytest.raises(
        OutputExistsError, match="notes.json: already exists .*not the batch report of an earlier run.*--overwrite"
    ):
        BatchReport(other)
    assert other.read_text() == '{"mine": true}'
    BatchReport(other, overwrite=True).finish()
    assert is_report(other)


def test_a_report_never_takes_the_path_of_a_file_of_the_run(tmp_path):
    pairs = pairs_of(tmp_path, "a.tif")
    with pytest.raises(OptionError, match="is also an output raster of this run") as info:
        BatchReport(pairs[0][1]).plan(pairs)
    assert info.value.option == "--report"
    with pytest.raises(OptionError, match="is an input of this run"):
        BatchReport(pairs[0][0]).plan(pairs)
    assert not pairs[0][1].exists() and not pairs[0][0].exists()


def test_is_report_knows_a_geosr_report_from_other_files(tmp_path):
    report = tmp_path / "report.json"
    BatchReport(report).finish()
    assert is_report(report)
    for name, content in (
        ("list.json", "[1, 2]"),
        ("other.json", '{"format": 1, "files": []}'),
        ("broken.json", '{"format": 1,'),
        ("image.tif", "II*\x00"),
    ):
        (tmp_path / name).write_text(content)
        assert not is_report(tmp_path / name), name
    assert not is_report(tmp_path / "missing.json") and not is_report(tmp_path)


def test_each_process_under_torchrun_has_its_own_report(tmp_path):
    assert rank_path("logs/report.json", 0, 1) == Path("logs/report.json")
    assert rank_path("logs/report.json", 0, 2) == Path("logs/report.rank0.json")
    assert rank_path(Path("report.json"), 3, 4) == Path("report.rank3.json")
    fifo = tmp_path / "reports"
    os.mkfifo(fifo)  # written into by one process; under torchrun the processes' reports would mix in it
    assert rank_path(fifo, 0, 1) == fifo
    with pytest.raises(OptionError, match="under torchrun each process writes a report of its own; give a file path"):
        rank_path(fifo, 1, 2)


def test_the_report_of_an_aoi_that_meets_no_file_records_the_error(tiny_model, tmp_path, make_geotiff, synthetic_image):
    from click.testing import CliRunner

    from geosr.cli.main import cli

    folder = tmp_path / "tiles"
    folder.mkdir()
    for i in range(2):
        make_geotiff(folder / f"t{i}.tif", synthetic_image(3, 40, 40, seed=i))
    report = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["upscale", str(folder), "-o", str(tmp_path / "out"), "--model", str(tiny_model),
                                      "--bbox", "0,0,10,10", "--report", str(report)])  # fmt: skip
    assert result.exit_code == 1 and "meets none of the 2 input files" in result.output
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 1 and doc["state"] != "finished" and "meets none" in doc["error"]
