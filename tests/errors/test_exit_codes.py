"""Exit codes as the README's table gives them: a value or a combination of options that is wrong whatever the files
is a usage error (exit 2) for one file and for a folder alike, before any work; an area of interest that misses
every file of a batch is a failure (exit 1) that says why, and one that misses some is a warning shown without -v.
"""

from __future__ import annotations

import pytest
import rasterio
from badinput import files_in, image, refused, run
from testdata import write_geotiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def upscale(model, *args):
    return run("upscale", *args, "--model", model, "-q")


@pytest.mark.parametrize("batch", [False, True], ids=["one-file", "folder"])
def test_an_overlap_the_model_cards_tile_cannot_take_is_a_usage_error(tiny_model, good_tif, tmp_path, batch):
    """The tiny model's card says tile 32: --overlap 17 alone is as wrong as --tile-size 32 --overlap 17."""
    src = good_tif.parent if batch else good_tif
    refused(
        upscale(tiny_model, src, "-o", tmp_path / ("sr" if batch else "out.tif"), "--overlap", 17),
        2,
        "overlap 17",
        "tile size of the model card",
    )
    refused(
        upscale(tiny_model, src, "-o", tmp_path / ("sr" if batch else "out.tif"), "--tile-size", 32, "--overlap", 17),
        2,
        "overlap 17",
    )
    assert files_in(tmp_path) == ["in/scene.tif"]


@pytest.mark.parametrize("batch", [False, True], ids=["one-file", "folder-of-pngs"])
def test_cog_with_a_png_output_is_a_usage_error(tiny_model, tmp_path, batch):
    png = tmp_path / "in" / "photo.png"
    png.parent.mkdir()
    with rasterio.open(png, "w", driver="PNG", width=16, height=16, count=3, dtype="uint8") as d:
        d.write(image(3, 16, 16))
    src, out = (png.parent, tmp_path / "sr") if batch else (png, tmp_path / "out.png")
    refused(upscale(tiny_model, src, "-o", out, "--cog"), 2, "--cog writes a GeoTIFF", "name the output .tif")
    assert not out.exists()


def test_an_aoi_that_misses_every_file_of_a_batch_fails_and_says_why(tiny_model, tmp_path):
    src = tmp_path / "tiles"
    for name in ("a", "b"):
        write_geotiff(src / f"{name}.tif", image(3, 16, 16))
    far = "POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0))"  # in the rasters' CRS, 500 km away
    line = refused(
        upscale(tiny_model, src, "-o", tmp_path / "sr", "--aoi", far),
        1,
        "meets none of the 2 input files",
        "does not meet the raster",
        "--aoi-crs",
    )
    assert "a.tif" in line and not (tmp_path / "sr").exists() or files_in(tmp_path / "sr") == []


def test_an_aoi_that_misses_some_files_of_a_batch_says_so_without_v(tiny_model, tmp_path, caplog):
    src = tmp_path / "tiles"
    write_geotiff(src / "a.tif", image(3, 16, 16))
    write_geotiff(src / "b.tif", image(3, 16, 16), transform=rasterio.Affine(10, 0, 600000, 0, -10, 4000000))
    aoi = "POLYGON ((500000 3999900, 500100 3999900, 500100 4000000, 500000 4000000, 500000 3999900))"
    result = run("upscale", src, "-o", tmp_path / "sr", "--model", tiny_model, "--aoi", aoi)
    assert result.exit_code == 0, result.output
    assert "1 done, 1 skipped, 0 failed" in result.stderr
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]  # shown without -v
    assert [r.getMessage() for r in warnings] == ["1 file(s) skipped: the area of interest does not meet them (b.tif)"]
    assert files_in(tmp_path / "sr") == ["a.tif"]
