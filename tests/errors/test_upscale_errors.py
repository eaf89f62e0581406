"""`geosr upscale` under bad inputs and bad options: one line, the documented exit code, nothing left behind.

Cases already covered by tests/cli/test_upscale.py are not repeated here: a file that is not a TIFF at all, repeated
or out-of-range --bands, --overlap beyond the model card's tile, a --scale the model lacks, --scale 5, an AOI in
another CRS that misses the raster, a missing GeoJSON file, invalid WKT, an unknown --aoi-crs, an output equal to the
input, an existing output without --overwrite, a model file that is not one, Ctrl-C on one file.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
from badinput import (
    all_nodata,
    corrupt_tiles,
    files_in,
    huge_vrt,
    image,
    many_bands,
    nan_inf,
    not_a_raster,
    one_pixel,
    recording,
    refused,
    rpc_only,
    run,
    truncated,
)
from testdata import write_geotiff

from geosr.errors import RasterError
from geosr.pipeline import upscale_raster
from geosr.predictor import load_predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def upscale(model, *args):
    return run("upscale", *args, "--model", model, "-q")


# --- inputs ---------------------------------------------------------------------------------------------------------


def test_a_missing_input_is_named(tiny_model, tmp_path):
    line = refused(upscale(tiny_model, tmp_path / "nope.tif", "-o", tmp_path / "out.tif"), 1, "nope.tif", "no such")
    assert "Usage" not in line and files_in(tmp_path) == []


def test_a_folder_without_rasters(tiny_model, tmp_path, caplog):
    """Alone: the error, no warning saying it too; beside a folder with rasters: a warning, and the others run."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no rasters here")
    result = run("upscale", tmp_path / "docs", "-o", tmp_path / "out", "--model", tiny_model)  # not -q: warnings
    refused(result, 1, "no rasters found", "docs")
    assert not (tmp_path / "out").exists()
    assert not [r for r in caplog.records if "no rasters found" in r.getMessage()]
    write_geotiff(tmp_path / "tiles" / "a.tif", image(h=16, w=16))
    result = run("upscale", tmp_path / "docs", tmp_path / "tiles", "-o", tmp_path / "out", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    assert [r.levelname for r in caplog.records if "docs: no rasters found" in r.getMessage()] == ["WARNING"]
    assert (tmp_path / "out" / "tiles" / "a.tif").exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (not_a_raster, "not a raster GDAL can read"),
        (truncated, "truncated.tif"),
        (corrupt_tiles, "corrupt_tiles.tif"),
    ],
    ids=["not-a-raster", "truncated", "corrupt-tiles"],
)
def test_unreadable_rasters_leave_nothing(tiny_model, tmp_path, make, message):
    src = make(tmp_path / f"{make.__name__}.tif")
    out = tmp_path / "out"
    out.mkdir()
    refused(upscale(tiny_model, src, "-o", out / "x2.tif", "--tile-size", 32, "--overlap", 8), 1, message)
    assert files_in(out) == []  # no output, no temporary file


def test_a_one_pixel_raster_is_upscaled(tiny_model, tmp_path):
    src = one_pixel(tmp_path / "px.tif")
    result = upscale(tiny_model, src, "-o", tmp_path / "px_x2.tif")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "px_x2.tif") as d:
        assert d.shape == (2, 2) and d.count == 3 and d.transform.a == 5


def test_a_raster_without_valid_pixels_gives_an_all_nodata_output_and_a_warning(tiny_model, tmp_path, caplog):
    src = all_nodata(tmp_path / "empty.tif")
    result = run("upscale", src, "-o", tmp_path / "empty_x2.tif", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    assert "no valid pixel" in caplog.text  # a warning (pytest captures the log)
    with rasterio.open(tmp_path / "empty_x2.tif") as d:
        assert d.nodata == 0 and d.shape == (60, 60) and not d.read().any()


def test_nan_and_inf_are_nodata_and_never_leak(tiny_model, tmp_path):
    src = nan_inf(tmp_path / "float.tif")
    result = upscale(tiny_model, src, "-o", tmp_path / "float_x2.tif")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "float_x2.tif") as d:
        out = d.read()
    assert np.isnan(out[:, :10, :10]).all() and np.isnan(out[:, -10:, -10:]).all()
    assert np.isnan(out[0, 40:42, 40:42]).all()
    rest = out[:, 12:-12, 12:38]
    assert np.isfinite(rest).all() and rest.min() >= 0 and rest.max() <= 255


def test_two_hundred_bands_run_in_groups(tiny_model, tmp_path):
    src = many_bands(tmp_path / "hyper.tif")
    result = upscale(tiny_model, src, "-o", tmp_path / "hyper_x2.tif")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "hyper_x2.tif") as d:
        assert d.count == 200 and d.shape == (24, 24)


def test_an_output_too_large_for_the_disk_is_refused_before_any_work(tiny_model, tmp_path):
    src = huge_vrt(tmp_path / "huge.vrt", size=10_000_000)  # 10^14 pixels: petabytes at x2, however compressed
    out = tmp_path / "out"
    out.mkdir()
    refused(
        upscale(tiny_model, src, "-o", out / "huge_x2.tif"),
        1,
        "huge_x2.tif",
        "not enough disk space",
        "write the output elsewhere",
    )
    assert files_in(out) == []
    predictor = recording(load_predictor(tiny_model, device="cpu", precision="fp32"))
    with pytest.raises(RasterError, match="not enough disk space"):
        upscale_raster(src, out / "huge_x2.tif", predictor)
    assert predictor.calls == [] and files_in(out) == []  # refused before the model ran once


def test_a_raster_with_rpcs_only(tiny_model, tmp_path):
    src = rpc_only(tmp_path / "rpc.tif")
    refused(upscale(tiny_model, src, "-o", tmp_path / "rpc_x2.tif"), 1, "rpc.tif", "RPCs", "orthorectify")
    assert not (tmp_path / "rpc_x2.tif").exists()


# --- options --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tile-size", "0"], "--tile-size"),
        (["--tile-size", "-32"], "--tile-size"),
        (["--tile-size", "5000"], "must be an integer of 8..4096"),
        (["--tile-size", "32", "--overlap", "32"], "must be an integer of 0..16 (half the tile size 32)"),
        (["--tile-size", "32", "--overlap", "-1"], "--overlap"),
        (["--batch-size", "0"], "--batch-size"),
        (["--value-range", "0", "inf"], "finite"),
        (["--aoi", "LINESTRING (0 0, 1 1)"], "must be a polygon"),
        (["--aoi", "POLYGON ((0 0, 1 1, 2 2, 0 0))"], "encloses no area"),
        (["--bbox", "3,0,1,1"], "minx < maxx"),
        (["--bbox", "0,0,1,1", "--aoi-crs", "not a crs"], "not a CRS"),
    ],
    ids=[
        "tile-0",
        "tile-negative",
        "tile-too-large",
        "overlap-tile",
        "overlap-negative",
        "batch-0",
        "value-range-inf",
        "aoi-line",
        "aoi-no-area",
        "bbox-inverted",
        "aoi-crs-unknown",
    ],
)
def test_bad_option_values_are_usage_errors(tiny_model, good_tif, tmp_path, args, message):
    refused(upscale(tiny_model, good_tif, "-o", tmp_path / "out.tif", *args), 2, message)
    assert not (tmp_path / "out.tif").exists()


def test_an_aoi_outside_the_raster(tiny_model, good_tif, tmp_path):
    far = "POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0))"  # in the raster's CRS, 500 km away
    refused(
        upscale(tiny_model, good_tif, "-o", tmp_path / "out.tif", "--aoi", far),
        1,
        "scene.tif",
        "does not meet the raster",
    )
    assert not (tmp_path / "out.tif").exists()


def test_an_invalid_geometry_in_a_geojson_file(tiny_model, good_tif, tmp_path):
    bad = tmp_path / "field.geojson"
    bad.write_text(json.dumps({"type": "Polygon", "coordinates": [[1, 2]]}))
    refused(upscale(tiny_model, good_tif, "-o", tmp_path / "out.tif", "--aoi", bad), 1, "field.geojson")
    assert not (tmp_path / "out.tif").exists()


def test_an_output_that_is_the_input_through_a_symlink(tiny_model, good_tif, tmp_path):
    link = tmp_path / "link.tif"
    link.symlink_to(good_tif)
    before = good_tif.read_bytes()
    refused(upscale(tiny_model, good_tif, "-o", link, "--overwrite"), 1, "the output is the input")
    assert good_tif.read_bytes() == before and link.is_symlink()


def test_an_output_folder_that_is_the_input_folder_through_a_symlink(tiny_model, good_tif, tmp_path):
    link = tmp_path / "same"
    link.symlink_to(good_tif.parent, target_is_directory=True)
    refused(upscale(tiny_model, good_tif.parent, "-o", link, "--overwrite"), 1, "the output folder is the input")
    assert files_in(good_tif.parent) == ["scene.tif"]


@pytest.mark.parametrize("batch", [False, True], ids=["one-file", "folder"])
def test_an_output_location_that_cannot_be_written(tiny_model, good_tif, tmp_path, batch):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    src = good_tif.parent if batch else good_tif
    out = blocker / "sub" / ("sr" if batch else "out.tif")
    refused(upscale(tiny_model, src, "-o", out), 1, "a_file is a file, not a folder", "choose another output")
    assert blocker.read_text() == "a file where a folder should be"


def test_a_read_only_output_folder(tiny_model, good_tif, tmp_path, monkeypatch):
    """Root can write anywhere, so the refusal of a folder without write permission is shown through os.access."""
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(ro) else real(p, mode, **kw))
    refused(upscale(tiny_model, good_tif, "-o", ro / "out.tif"), 1, "cannot write in", "choose another output")
    assert files_in(ro) == []


def test_an_existing_output_in_a_batch_is_kept(tiny_model, tmp_path):
    src = tmp_path / "tiles"
    for name in ("a", "b"):
        write_geotiff(src / f"{name}.tif", image(3, 24, 24))
    out = tmp_path / "sr"
    out.mkdir()
    (out / "a.tif").write_bytes(b"someone else's")
    result = upscale(tiny_model, src, "-o", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "a.tif: already exists; pass --overwrite" in result.stderr
    assert (out / "a.tif").read_bytes() == b"someone else's" and files_in(out) == ["a.tif", "b.tif"]


# --- inputs that are not plain raster files -------------------------------------------------------------------------


def test_a_named_pipe_given_as_the_input(tiny_model, tmp_path):
    fifo = tmp_path / "stream.tif"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    refused(upscale(tiny_model, fifo, "-o", tmp_path / "out.tif"), 1, "stream.tif", "named pipe", "save the data")
    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "pipe.tif")
    write_geotiff(tmp_path / "in" / "a.tif", image(3, 8, 8))  # a folder search leaves the pipe alone
    result = upscale(tiny_model, tmp_path / "in", "-o", tmp_path / "sr")
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path / "sr") == ["a.tif"]


def test_a_vrt_whose_source_file_is_missing_names_it(tiny_model, tmp_path):
    (tmp_path / "mosaic").mkdir()
    vrt = huge_vrt(tmp_path / "mosaic" / "m.vrt", size=64)  # a VRT over small_m.tif
    (tmp_path / "mosaic" / "small_m.tif").unlink()
    refused(
        upscale(tiny_model, vrt, "-o", tmp_path / "out.tif"),
        1,
        "m.vrt",
        "small_m.tif does not exist",
        "restore that file",
    )
    assert files_in(tmp_path) == ["mosaic/m.vrt"]
