"""Consistency with the input on real imagery, with the bundled models: what `geosr upscale` writes, downsampled
with the degradation the model was trained for, gives back the input; `geosr evaluate` measures the same."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from geosr.cli.main import cli
from geosr.consistency import degrade
from geosr.inference import UpscaleOptions, load_predictor, upscale_raster

pytestmark = [pytest.mark.shared_data, pytest.mark.usefixtures("one_torch_thread")]


def _crop(src_path, dst_path, window: Window, nodata=None):
    """A window of a real raster as a new lossless GeoTIFF; returns its pixels."""
    with rasterio.open(src_path) as src:
        profile = dict(
            driver="GTiff",
            width=int(window.width),
            height=int(window.height),
            count=src.count,
            dtype=src.dtypes[0],
            crs=src.crs,
            transform=src.window_transform(window),
            nodata=src.nodata if nodata is None else nodata,
        )
        data = src.read(window=window)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
    return data


@pytest.fixture(scope="module")
def x4():
    return load_predictor("degan-x4", device="cpu", precision="fp32")


def test_upscale_output_downsamples_to_the_uint8_input(x4, geotiff_dir, tmp_path):
    src = tmp_path / "cogeo.tif"
    lr = _crop(geotiff_dir / "rasterio" / "cogeo.tif", src, Window(400, 400, 72, 56)).astype(np.float32)
    upscale_raster(src, tmp_path / "on.tif", x4, UpscaleOptions())
    upscale_raster(src, tmp_path / "off.tif", x4, UpscaleOptions(consistency=False))
    with rasterio.open(tmp_path / "on.tif") as a, rasterio.open(tmp_path / "off.tif") as b:
        on, off = a.read().astype(np.float32), b.read().astype(np.float32)
    on_error, off_error = np.abs(degrade(on, 4) - lr), np.abs(degrade(off, 4) - lr)
    assert on_error.mean() < min(0.5, off_error.mean() / 2)
    assert np.percentile(on_error, 99) < 1.5  # rounding of the output to uint8 is all that remains


def test_nodata_pixels_put_no_constraint_and_stay_nodata(x4, geotiff_dir, tmp_path):
    # the scene's corner: a collar of nodata 0 around the Landsat scene
    src = tmp_path / "corner.tif"
    lr = _crop(geotiff_dir / "rasterio" / "RGB.byte.tif", src, Window(40, 300, 64, 48)).astype(np.float32)
    upscale_raster(src, tmp_path / "out.tif", x4, UpscaleOptions())
    with rasterio.open(tmp_path / "out.tif") as dst:
        out = dst.read().astype(np.float32)
        assert dst.nodata == 0
    valid = (lr != 0).any(axis=0)
    assert 0.2 < valid.mean() < 0.9  # the window holds both
    assert (out[:, ~valid.repeat(4, 0).repeat(4, 1)] == 0).all()
    # away from the collar (the degradation's support reaches 2 input pixels), the output matches the input
    inner = valid.copy()
    for axis in (0, 1):
        for shift in (-2, -1, 1, 2):
            inner &= np.roll(valid, shift, axis=axis)
    inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = False, False, False, False
    error = np.abs(degrade(out, 4) - lr)[:, inner]
    assert error.size and error.mean() < 0.5


def test_evaluate_reports_the_residual_and_consistency_helps(shared_data, tmp_path):
    runner = CliRunner()
    reports = {}
    for flag in ("--consistency", "--no-consistency"):
        out = tmp_path / f"{flag}.json"
        result = runner.invoke(
            cli,
            [
                "evaluate",
                "-m",
                "degan-x2",
                "-d",
                str(shared_data / "ucmerced"),
                "--split",
                "val",
                "--max-images",
                "2",
                flag,
                "-o",
                str(out),
                "-q",
            ],
        )
        assert result.exit_code == 0, result.output
        reports[flag] = json.loads(out.read_text())
    on, off = reports["--consistency"], reports["--no-consistency"]
    assert on["consistency"] is True and off["consistency"] is False
    assert on["summary"]["mean"]["residual"] < min(0.5, off["summary"]["mean"]["residual"] / 2)
    assert on["summary"]["mean"]["psnr"] > off["summary"]["mean"]["psnr"]
