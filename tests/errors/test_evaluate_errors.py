"""`geosr evaluate` under bad data and bad options: one line naming the image and the remedy, no report written.

An unreadable image stops the evaluation with an error that names it (a mean over fewer images would silently be
another measurement). tests/cli/test_evaluate.py covers a missing data folder, an empty split, a --scale the model
lacks and a missing model file; tests/errors/test_model_files.py the bad model files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from badinput import (
    corrupt_tiles,
    huge_sparse_tif,
    image,
    many_bands,
    nan_inf,
    not_a_raster,
    one_pixel,
    refused,
    rpc_only,
    run,
    truncated,
)
from testdata import write_geotiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def data_with(tmp_path: Path, make=None) -> Path:
    """A flat folder of two good 24-pixel images, and one made by ``make`` (named z_<make>.tif, measured last)."""
    root = tmp_path / "data"
    for i in range(2):
        write_geotiff(root / f"img{i}.tif", image(3, 24, 24, seed=i))
    if make is not None:
        make(root / f"z_{make.__name__}.tif")
    return root


def evaluate(model, data, tmp_path, *args):
    return run(
        "-q", "evaluate", "--model", model, "--data", data, "--split", "all", "--out", tmp_path / "r.json", *args
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (not_a_raster, "not a raster GDAL can read"),
        (truncated, "the file is damaged"),
        (corrupt_tiles, "the file is damaged"),
        (one_pixel, "too small for x2"),
        (nan_inf, "NaN or infinite values"),
        (huge_sparse_tif, "too large to read as one image"),
    ],
    ids=["not-a-raster", "truncated", "corrupt-tiles", "one-pixel", "nan-inf", "huge"],
)
def test_a_bad_image_is_named_and_no_report_is_written(tiny_model, tmp_path, make, message):
    data = data_with(tmp_path, make)
    refused(evaluate(tiny_model, data, tmp_path), 1, f"z_{make.__name__}.tif", message)
    assert not (tmp_path / "r.json").exists()


def test_a_folder_without_images(tiny_model, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("nothing to measure")
    refused(evaluate(tiny_model, tmp_path / "data", tmp_path), 1, "no images found")


def two_hundred_bands(path: Path) -> Path:
    return many_bands(path, 200, size=24)


@pytest.mark.parametrize("make", [two_hundred_bands, rpc_only], ids=["200-bands", "rpc-only"])
def test_images_evaluate_takes(tiny_model, tmp_path, make):
    """200 bands: the model's first bands are measured; RPCs: georeferencing plays no part in a measurement."""
    data = data_with(tmp_path, make)
    result = evaluate(tiny_model, data, tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--bands", "1,1,2"], 2, "name each band once"),
        (["--bands", "0,1,2"], 2, "1-based"),
        (["--max-images", "-1"], 2, "--max-images"),
        (["--bands", "1,2,9"], 1, "has 3 bands; --bands takes 1-based indices up to 3"),
    ],
    ids=["bands-repeated", "bands-zero", "max-images-negative", "bands-out-of-range"],
)
def test_bad_options(tiny_model, tmp_path, args, code, message):
    refused(evaluate(tiny_model, data_with(tmp_path), tmp_path, *args), code, message)
    assert not (tmp_path / "r.json").exists()


def test_a_report_that_cannot_be_written(tiny_model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = run(
        "-q",
        "evaluate",
        "--model",
        tiny_model,
        "--data",
        data_with(tmp_path),
        "--split",
        "all",
        "--out",
        blocker / "r.json",
    )
    refused(result, 1, "a_file")
    assert blocker.read_text() == "x"
