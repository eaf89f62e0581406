"""The batch report's JSON Schema (geosr/schemas/batch_report.schema.json): a valid schema, shipped with the package,
met by the report in every state it is written in, and strict enough to refuse a report that breaks its rules. The
reports of real batches (finished, with a failed file, failed, interrupted by SIGINT and SIGTERM) are checked against
it in tests/cli/test_report.py."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, ValidationError

from geosr.aoi import bbox_aoi
from geosr.errors import RasterError
from geosr.options import UpscaleOptions
from geosr.pipeline import FileResult
from geosr.report import SCHEMA_FILE, BatchReport, report_schema, settings_of

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Draft202012Validator(report_schema())


def test_the_schema_is_a_valid_json_schema_shipped_as_package_data():
    Draft202012Validator.check_schema(report_schema())
    assert (ROOT / "geosr" / "schemas" / SCHEMA_FILE).is_file()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "schemas/*.json" in cfg["options.package_data"]["geosr"].split()


def _report(tmp_path: Path, predictor, options: UpscaleOptions | None = None) -> BatchReport:
    options = options or UpscaleOptions()
    book = BatchReport(tmp_path / "report.json", command=None, settings=settings_of(options), interval=0.0)
    book.plan([(tmp_path / f"{n}.tif", tmp_path / "sr" / f"{n}.tif") for n in "abc"])
    book.use_model(predictor, settings_of(options, predictor, skip_existing=False, files_in_flight=1))
    return book


def _written(book: BatchReport) -> dict:
    report = json.loads(book.path.read_text())
    SCHEMA.validate(report)
    return report


def test_every_state_of_a_report_from_python_meets_the_schema(tmp_path, predictor):
    book = _report(tmp_path, predictor)
    book.running()
    assert _written(book)["state"] == "running"
    book.add(FileResult(tmp_path / "a.tif", tmp_path / "sr" / "a.tif", "done", seconds=1.5, pixels=4800, tiles=4))
    book.add(FileResult(tmp_path / "b.tif", tmp_path / "sr" / "b.tif", "failed", "b.tif: not a raster"))
    assert _written(book)["summary"]["failed"] == 1
    book.finish(KeyboardInterrupt())
    report = _written(book)
    assert report["state"] == "interrupted" and report["command"] is None and report["exit_code"] == 130
    assert report["settings"]["threads"] >= 1

    failed = _report(tmp_path, predictor)
    failed.running()
    failed.finish(RasterError("a.tif: cannot be read"))
    assert _written(failed)["state"] == "failed"


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda r: r.update(state="finished", exit_code=130), "exit_code"),
        (lambda r: r.update(exit_code=None), "exit_code"),
        (lambda r: r["files"][0].update(status="lost"), "status"),
        (lambda r: r["summary"].pop("pending"), "pending"),
        (lambda r: r.update(extra=1), "extra"),
        (lambda r: r["settings"].update(compress="jpeg"), "compress"),
    ],
    ids=["exit-code-of-state", "no-exit-code", "unknown-status", "summary-key-missing", "unknown-key", "compression"],
)
def test_the_schema_refuses_a_report_that_breaks_its_rules(tmp_path, predictor, change, where):
    book = _report(tmp_path, predictor)
    book.finish()
    report = _written(book)
    change(report)
    with pytest.raises(ValidationError, match=where):
        SCHEMA.validate(report)


def test_a_bbox_is_written_with_its_coordinates_exact(tmp_path, predictor):
    """2736910.123456789 stays itself in the report (%g wrote 2.73691e+06); whole numbers have no '.0'."""
    area = bbox_aoi((101985.0, 2611485.5, 2736910.123456789, 2826915.0), "EPSG:32618")
    book = _report(tmp_path, predictor, UpscaleOptions(aoi=area))
    book.finish()
    settings = _written(book)["settings"]
    assert settings["aoi"] == "bbox 101985,2611485.5,2736910.123456789,2826915"
    assert settings["aoi_crs"] == "EPSG:32618"
    assert [float(v) for v in settings["aoi"].split()[1].split(",")] == [
        101985.0,
        2611485.5,
        2736910.123456789,
        2826915.0,
    ]
