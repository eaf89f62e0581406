"""Outputs in formats that cannot hold what the input has: nodata in JPEG, a fourth band that PNG would take as
alpha, a mask in PNG, per-band nodata in a GeoTIFF. Each is refused with the remedy (exit 1, nothing written) or kept
faithfully; never silently changed.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from badinput import files_in, image, per_band_nodata_vrt, refused, run
from rasterio.enums import ColorInterp
from testdata import write_geotiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def upscale(model, *args):
    return run("upscale", *args, "--model", model, "-q")


def test_jpeg_output_of_a_raster_with_nodata_is_refused(tiny_model, tmp_path):
    data = image(3, 24, 24)
    data[:, :6, :6] = 0
    src = write_geotiff(tmp_path / "in" / "scene.tif", data, nodata=0)
    refused(
        upscale(tiny_model, src, "-o", tmp_path / "out" / "scene.jpg"),
        1,
        "scene.jpg",
        "scene.tif",
        "JPEG cannot keep nodata apart",
        "valid and nodata pixels would swap",
        "name the output .png or .tif",
    )
    assert not (tmp_path / "out").exists() or files_in(tmp_path / "out") == []
    result = upscale(tiny_model, src, "-o", tmp_path / "out" / "scene.png")  # the remedy works
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out" / "scene.png") as d:
        assert d.nodatavals == (0, 0, 0) and not d.read_masks()[:, :12, :12].any()


@pytest.mark.parametrize(
    "suffix, count, message",
    [
        (".png", 4, "PNG takes the last of 4 bands as alpha"),
        (".png", 5, "PNG holds 1 to 4 bands, not 5"),
        (".jpg", 4, "JPEG holds 1 or 3 bands, not 4"),
        (".jpg", 2, "JPEG holds 1 or 3 bands, not 2"),
    ],
    ids=["png-4", "png-5", "jpg-4", "jpg-2"],
)
def test_band_counts_a_png_or_jpeg_cannot_hold(tiny_model, tmp_path, suffix, count, message):
    src = write_geotiff(tmp_path / "in" / "bands.tif", image(count, 16, 16), photometric="MINISBLACK")
    with rasterio.open(src) as d:
        assert ColorInterp.alpha not in d.colorinterp  # four measured bands (RGB + NIR), no transparency
    refused(
        upscale(tiny_model, src, "-o", tmp_path / "out" / f"x2{suffix}"),
        1,
        f"x2{suffix}",
        message,
        "name the output .tif",
    )
    assert not (tmp_path / "out").exists() or files_in(tmp_path / "out") == []


def test_a_png_keeps_the_mask_of_an_aoi(tiny_model, good_tif, tmp_path):
    """A PNG cannot hold a mask itself; GDAL writes it beside, as .msk, and that file travels with the output."""
    triangle = "POLYGON ((500000 3999600, 500400 4000000, 500400 3999600, 500000 3999600))"
    result = upscale(tiny_model, good_tif, "-o", tmp_path / "out" / "clip.png", "--aoi", triangle)
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path / "out") == ["clip.png", "clip.png.aux.xml", "clip.png.msk"]
    with rasterio.open(tmp_path / "out" / "clip.png") as d:
        mask = d.dataset_mask() > 0
    assert mask.shape == (80, 80) and 0.4 < mask.mean() < 0.6 and mask[70, 70] and not mask[5, 5]


def test_a_jpeg_keeps_the_mask_of_an_aoi_inside(tiny_model, good_tif, tmp_path):
    triangle = "POLYGON ((500000 3999600, 500400 4000000, 500400 3999600, 500000 3999600))"
    result = upscale(tiny_model, good_tif, "-o", tmp_path / "out" / "clip.jpg", "--aoi", triangle)
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path / "out") == ["clip.jpg", "clip.jpg.aux.xml"]
    with rasterio.open(tmp_path / "out" / "clip.jpg") as d:
        mask = d.dataset_mask() > 0
    assert 0.4 < mask.mean() < 0.6 and mask[70, 70] and not mask[5, 5]


def test_per_band_nodata_becomes_one_value_that_marks_every_bands_invalid_pixels(tiny_model, tmp_path, caplog):
    """Bands with nodata none, 20 and 0 (a VRT): a GeoTIFF holds one value, the first declared (20). Every band's
    invalid pixels read as nodata, and no valid pixel does, also in the band that had none."""
    src = per_band_nodata_vrt(tmp_path / "mixed.vrt", (None, 20, 0))
    result = run("upscale", src, "-o", tmp_path / "out.tif", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    assert "different nodata values (band 1: none, band 2: 20, band 3: 0)" in caplog.text
    with rasterio.open(tmp_path / "out.tif") as d:
        assert d.nodatavals == (20, 20, 20)
        out = d.read()
    invalid = np.zeros(out.shape, bool)
    invalid[1, -8:, -8:] = True  # band 2's nodata corner, at x2
    invalid[2, :8, -8:] = True  # band 3's
    assert (out[invalid] == 20).all()
    assert (out[~invalid] != 20).all()  # valid pixels, also of band 1 whose row 10 held 20, stay valid
