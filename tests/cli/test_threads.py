"""--threads N (geosr upscale, evaluate and train): PyTorch's CPU threads and GDAL_NUM_THREADS while the command runs,
the previous values after; recorded in the batch report; anything but a whole number of at least 1 is a usage error."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

import geosr.batch
from geosr.cli.main import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(*args):
    return CliRunner().invoke(cli, [*map(str, args)], catch_exceptions=False)


@pytest.mark.parametrize("command", ["upscale", "evaluate", "train"])
@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "100000"])
def test_a_bad_thread_count_is_a_one_line_usage_error(command, value, tmp_path):
    result = run(
        command,
        *(["in.tif", "-o", tmp_path / "out.tif"] if command == "upscale" else []),
        *(["--data", tmp_path] if command != "upscale" else []),
        "--threads",
        value,
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "'--threads'" in errors[0], result.stderr


@pytest.mark.parametrize("command", ["upscale", "evaluate", "train"])
def test_the_option_is_in_the_help(command):
    assert "--threads N" in run(command, "--help").output


def test_upscale_runs_on_the_threads_asked_and_gives_them_back(
    tiny_model, tmp_path, make_geotiff, synthetic_image, monkeypatch
):
    src = make_geotiff(tmp_path / "scene.tif", synthetic_image(3, 30, 40))
    monkeypatch.delenv("GDAL_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    seen = []
    original = geosr.batch.run_batch

    def spy(*args, **kwargs):
        seen.append((torch.get_num_threads(), os.environ.get("GDAL_NUM_THREADS")))
        return original(*args, **kwargs)

    monkeypatch.setattr(geosr.batch, "run_batch", spy)
    report = tmp_path / "report.json"
    result = run("upscale", src, "-o", tmp_path / "out.tif", "--model", tiny_model, "--threads", 1, "--report", report)
    assert result.exit_code == 0, result.output
    assert seen == [(1, "1")]
    assert json.loads(report.read_text())["settings"]["threads"] == 1
    assert torch.get_num_threads() == 2 and "GDAL_NUM_THREADS" not in os.environ

    result = run("upscale", src, "-o", tmp_path / "out2.tif", "--model", tiny_model, "--report", report)
    assert result.exit_code == 0, result.output
    assert seen[1] == (2, None)  # without --threads: the defaults in force
    assert json.loads(report.read_text())["settings"]["threads"] == 2
