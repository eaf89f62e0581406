"""Reading input pixels (geosr.raster's read side): one reader each for a whole image, a window and a decimated
sample, one error mapping, and damaged files refused on every read path.

GDAL's whole-image PNG decoder returns the garbage of a truncated PNG without an error; these tests cut real PNG and
JPEG files short and read them every way geosr does (upscale, evaluation, the training loader).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from geosr.arrays import decimated
from geosr.datasets import image_radiometry, read_image
from geosr.errors import DataError, RasterError
from geosr.raster import READ_CHECKS, gdal_options, open_raster, read_decimated, read_whole, read_window

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def plain_image(path: Path, driver: str, h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    """Write a smooth 3-band uint8 image without georeferencing; returns its pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    data = np.stack([127 + 100 * np.sin(0.1 * x + b) * np.cos(0.07 * y) + rng.normal(0, 8, (h, w)) for b in range(3)])
    data = np.clip(data, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver=driver, width=w, height=h, count=3, dtype="uint8") as dst:
        dst.write(data)
    for aux in path.parent.glob(path.name + ".aux.xml"):
        aux.unlink()
    return data


def cut(path: Path, keep: float) -> Path:
    """Truncate ``path`` to ``keep`` of its bytes, in place."""
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


@pytest.fixture(
    params=[("PNG", ".png", 0.5), ("PNG", ".png", 0.97), ("JPEG", ".jpg", 0.6)], ids=["png-half", "png-end", "jpeg"]
)
def truncated(request, tmp_path) -> Path:
    driver, suffix, keep = request.param
    path = tmp_path / f"scene{suffix}"
    plain_image(path, driver)
    return cut(path, keep)


def one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}:"), message
    assert "the file is damaged" in message
    return message


@pytest.mark.parametrize("how", ["whole", "window", "decimated"])
def test_every_read_of_a_truncated_png_or_jpeg_fails_naming_the_file(truncated, how):
    with open_raster(truncated) as ds, pytest.raises(RasterError) as exc:
        if how == "whole":
            read_whole(ds, truncated, [1, 2, 3], masks=True)
        elif how == "window":
            read_window(ds, truncated, Window(0, 0, ds.width, ds.height), [1, 2, 3], masks=False)
        else:
            read_decimated(ds, truncated, [1, 2, 3], masks=False)
    one_line_naming(exc, truncated)


def test_data_set_reads_of_a_truncated_image_raise_data_errors(truncated):
    with pytest.raises(DataError) as exc:
        read_image(truncated, [1, 2, 3])
    assert one_line_naming(exc, truncated).endswith("remove it from the data or replace it")
    with pytest.raises(DataError) as exc:
        read_image(truncated, [1, 2, 3], window=(0, 0, 64, 80))
    one_line_naming(exc, truncated)
    with pytest.raises(DataError) as exc:
        image_radiometry(truncated, [1, 2, 3])
    one_line_naming(exc, truncated)


def test_evaluation_and_training_refuse_a_truncated_png(tmp_path):
    from geosr.datasets import find_images
    from geosr.evaluation import evaluate_images
    from geosr.training.data import PatchDataset

    root = tmp_path / "data"
    for i in range(2):
        plain_image(root / f"good{i}.png", "PNG", seed=i)
    cut(root / "good1.png", 0.5)
    items = find_images(root).items
    with pytest.raises(DataError, match="good1.png: read failed, the file is damaged"):
        evaluate_images(items, 2)
    for cache_mb in (4096, 0):
        with pytest.raises(DataError, match="good1.png: read failed, the file is damaged"):
            PatchDataset(items, scale=2, patch_size=32, bands=[1, 2, 3], cache_mb=cache_mb)


def test_intact_images_read_exactly_and_a_png_missing_only_its_end_marker_is_whole(tmp_path):
    png, jpg = tmp_path / "a.png", tmp_path / "a.jpg"
    data = plain_image(png, "PNG")
    plain_image(jpg, "JPEG")
    with open_raster(png) as ds:
        whole, masks = read_whole(ds, png, [1, 2, 3], masks=True)
        window, _ = read_window(ds, png, Window(10, 5, 30, 20), [2], masks=False)
    np.testing.assert_array_equal(whole, data)
    assert masks.shape == data.shape and (masks == 255).all()
    np.testing.assert_array_equal(window[0], data[1, 5:25, 10:40])
    assert read_image(jpg, [1, 2, 3]).shape == (3, 64, 80)
    raw = png.read_bytes()
    png.write_bytes(raw[:-12])  # the IEND chunk: every pixel is still there
    np.testing.assert_array_equal(read_image(png, [1, 2, 3]), data)


def test_opening_errors_name_the_file_in_the_callers_error_class(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not pixels")
    unreadable = r"notes.png: not a raster GDAL can read \(.+\); give a raster file .*complete$"
    with pytest.raises(RasterError, match=unreadable), open_raster(text):
        pass
    with pytest.raises(DataError, match=r"notes.png: not a raster GDAL can read .*; remove it from the data"):
        read_image(text)
    with pytest.raises(DataError, match="missing.png: no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(RasterError, match="is a folder"), open_raster(tmp_path):
        pass


def test_plain_images_read_without_the_georeferencing_warning(tmp_path):
    png = tmp_path / "a.png"
    plain_image(png, "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_raster(png) as ds:
            read_whole(ds, png, [1], masks=True)
        read_image(png, [1, 2, 3])


def test_the_read_checks_are_part_of_every_run_environment():
    assert READ_CHECKS.items() <= gdal_options().items()


@pytest.mark.parametrize("size, max_pixels", [((1500, 1100), 50_000), ((640, 480), 1 << 20), ((1001, 999), 4_001)])
def test_a_decimated_read_by_rows_takes_the_pixels_gdal_takes(tmp_path, size, max_pixels):
    """A pixel-interleaved raster of several bands is sampled row by row (each block decoded once for all bands):
    the values and masks GDAL's reduced read of the whole raster gives, for whole and fractional reductions."""
    w, h = size
    rng = np.random.default_rng(w)
    data = rng.integers(0, 1000, (4, h, w)).astype(np.uint16)
    data[:, :40, :70] = 9  # nodata
    path = tmp_path / "r.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=4, dtype="uint16", nodata=9, tiled=True,
        blockxsize=128, blockysize=128, interleave="pixel",
    ) as dst:  # fmt: skip
        dst.write(data)
    with open_raster(path) as ds:
        values, masks = read_decimated(ds, path, [3, 1, 2], masks=True, max_pixels=max_pixels)
        f = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
        shape = (3, max(1, h // f), max(1, w // f))
        expected = ds.read([3, 1, 2], out_shape=shape, resampling=Resampling.nearest)
        expected_masks = ds.read_masks([3, 1, 2], out_shape=shape, resampling=Resampling.nearest)
    assert np.array_equal(values, expected) and np.array_equal(masks, expected_masks)
    assert np.array_equal(values, decimated(data[[2, 0, 1]], max_pixels))  # and as arrays are sampled
