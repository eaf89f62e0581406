"""A truncated PNG or JPEG among the data: `geosr evaluate` and `geosr train` stop with one line naming it.

GDAL's whole-image PNG decoder returns the garbage of a truncated PNG without an error; geosr's readers turn that
decoder off (geosr.raster.READ_CHECKS), so the whole-image reads of evaluation and training fail as upscale's
windowed reads do. tests/test_raster_read.py covers every read path in the library.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from badinput import image, refused, run
from testdata import tiny_train_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = [*tiny_train_args(refiner=("--refiner", "none")), "--val-images", "2", "--num-workers", "0"]
FORMATS = {"png": "PNG", "jpg": "JPEG"}


def plain(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver=FORMATS[path.suffix[1:]],
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype="uint8",
    ) as dst:
        dst.write(data)
    for aux in path.parent.glob("*.aux.xml"):
        aux.unlink()
    return path


def truncate(path: Path, keep: float = 0.6) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def scenes(root: Path, suffix: str) -> Path:
    """UC Merced layout of plain images: 2 classes, numbers 00-03 (train) and 50 (val), 48 x 48 px."""
    for cls in ("fields", "roofs"):
        for n in (0, 1, 2, 3, 50):
            plain(root / cls / f"{cls}{n:02d}.{suffix}", image(3, 48, 48, seed=n))
    return root


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_evaluate_names_a_truncated_image(tiny_model, tmp_path, suffix):
    data = scenes(tmp_path / "scenes", suffix)
    bad = truncate(data / "roofs" / f"roofs50.{suffix}")
    result = run(
        "-q", "evaluate", "--model", tiny_model, "--data", data, "--split", "val", "--out", tmp_path / "r.json"
    )
    refused(result, 1, str(bad), "the file is damaged", "remove it from the data")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_train_names_a_truncated_image_before_anything_is_written(tmp_path, suffix):
    data = scenes(tmp_path / "scenes", suffix)
    bad = truncate(data / "fields" / f"fields01.{suffix}")
    out = tmp_path / "run"
    refused(
        run("-q", "train", "--data", data, "--out", out, "--max-steps", "2", *TINY),
        1,
        str(bad),
        "the file is damaged",
        "remove it from the data",
    )
    assert not out.exists()
