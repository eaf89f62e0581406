"""The public API (geosr.upscale, upscale_folder, load_model, upscale_array, upscale_dataarray): arrays give the
pixels the file path writes, DataArrays keep their geolocation, errors are geosr exceptions, `import geosr` is cheap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

import geosr
from geosr.arrays import array_radiometry
from geosr.raster import open_raster, raster_radiometry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tiny_model):
    """The tiny x2 RGB model (tile 32, overlap 8) on the CPU in fp32, as every call below uses it."""
    return geosr.load_model(tiny_model, device="cpu", precision="fp32")


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as d:
        return d.read()


def file_and_array(tmp_path, make_geotiff, data, model, nodata=None, **options):
    """(what geosr.upscale writes for a GeoTIFF of ``data``, what geosr.upscale_array returns for ``data``)."""
    src = make_geotiff(tmp_path / "in.tif", data, nodata=nodata)
    dst = tmp_path / "out.tif"
    geosr.upscale(src, dst, model=model, overwrite=True, **options)
    return read(dst), geosr.upscale_array(data, model=model, nodata=nodata, **options)


# --- the package ------------------------------------------------------------------------------------------------------


def test_import_geosr_is_cheap_and_offers_the_api():
    code = "import sys, geosr; print(sorted(m for m in ('torch', 'rasterio', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for name in geosr.__all__:
        assert getattr(geosr, name) is not None
    assert issubclass(geosr.OutputExistsError, geosr.WriteError) and issubclass(geosr.OptionError, geosr.GeosrError)
    assert all(issubclass(getattr(geosr, e), geosr.GeosrError) for e in ("DeviceError", "AOIError", "WorkTooLarge"))
    with pytest.raises(AttributeError):
        geosr.no_such_function  # noqa: B018


def test_a_loaded_model_says_what_it_is_in_one_line(model):
    n = sum(p.numel() for p in model.model.parameters())
    assert repr(model) == f"<geosr model tiny-x2.safetensors: x2, 3 bands, {n / 1e6:.2f} M parameters, on cpu in fp32>"


# --- arrays equal files -----------------------------------------------------------------------------------------------


def test_uint8_rgb_array_equals_the_file(tmp_path, make_geotiff, synthetic_image, model):
    data = synthetic_image(3, 70, 90, seed=1)
    from_file, from_array = file_and_array(tmp_path, make_geotiff, data, model)
    assert from_array.dtype == np.uint8 and from_array.shape == (3, 140, 180)
    np.testing.assert_array_equal(from_array, from_file)
    # without the consistency correction too, and with the batches and tiles of other settings
    from_file, from_array = file_and_array(
        tmp_path, make_geotiff, data, model, consistency=False, batch_size=3, tile_size=24, overlap=6
    )
    np.testing.assert_array_equal(from_array, from_file)


def test_an_array_smaller_than_the_tile_equals_the_file(tmp_path, make_geotiff, synthetic_image, model):
    """Tiles never exceed the raster, in both: a 6 x 40 strip with a tile of 64 runs as tiles of 6 x 40 pixels."""
    data = synthetic_image(3, 6, 40, seed=2)
    from_file, from_array = file_and_array(tmp_path, make_geotiff, data, model, tile_size=64, overlap=8)
    np.testing.assert_array_equal(from_array, from_file)


def test_uint16_array_with_nodata_equals_the_file_and_nodata_stays_nodata(
    tmp_path, make_geotiff, synthetic_image, model
):
    data = synthetic_image(3, 66, 75, seed=2, dtype=np.uint16, lo=1200, hi=9000)
    data[:, 10:30, 5:40] = 65535  # a hole
    data[1, 50, 60] = 65535  # one pixel of one band
    data[:, :, 70:] = 65535  # a nodata edge
    from_file, from_array = file_and_array(tmp_path, make_geotiff, data, model, nodata=65535)
    np.testing.assert_array_equal(from_array, from_file)
    up = data.repeat(2, axis=1).repeat(2, axis=2)
    assert ((from_array == 65535) == (up == 65535)).all()  # nodata stays, and no valid pixel becomes nodata
    valid = from_array[from_array != 65535]
    assert valid.min() >= 1200 and valid.max() <= 9000  # the hole's value never leaks into valid pixels


def test_float32_array_with_nan_equals_the_file(tmp_path, make_geotiff, synthetic_image, model):
    data = synthetic_image(3, 64, 80, seed=3, dtype=np.float32, lo=-5.0, hi=40.0)
    data[:, 20:28, 30:45] = np.nan
    data[2, 5, 5] = -3.4e38  # an undeclared fill
    from_file, from_array = file_and_array(tmp_path, make_geotiff, data, model, value_range=(-10, 50))
    np.testing.assert_array_equal(from_array, from_file)  # NaN where NaN
    up_invalid = (np.isnan(data) | (np.abs(data) > 1e30)).repeat(2, axis=1).repeat(2, axis=2)
    assert (np.isnan(from_array) == up_invalid).all()


def test_band_groups_panels_and_a_2d_array_equal_the_file(tmp_path, make_geotiff, synthetic_image, model):
    four = synthetic_image(4, 40, 1100, seed=4, dtype=np.int16, lo=-300, hi=2500)  # 4 bands: (1, 2, 3), (4, pad, pad)
    from_file, from_array = file_and_array(tmp_path, make_geotiff, four, model, panel_width=512)  # three panels
    np.testing.assert_array_equal(from_array, from_file)
    one = synthetic_image(1, 45, 50, seed=5)
    from_file, from_array = file_and_array(tmp_path, make_geotiff, one, model)
    flat = geosr.upscale_array(one[0], model=model)
    assert flat.shape == (90, 100)
    np.testing.assert_array_equal(flat, from_file[0])
    np.testing.assert_array_equal(from_array, from_file)
    picked = geosr.upscale_array(four, model=model, bands=[3, 1], panel_width=512)
    np.testing.assert_array_equal(picked, geosr.upscale_array(four[[2, 0]], model=model, panel_width=512))


def test_the_radiometry_of_a_large_array_is_the_files(tmp_path, make_geotiff, synthetic_image):
    """Above 2^20 pixels upscale samples the raster by a decimated read; the array path picks the same pixels."""
    data = synthetic_image(2, 1100, 1030, seed=6, dtype=np.uint16, lo=0, hi=60000)
    data[:, 0:400:7, :] = 0  # nodata rows on a period that the decimation meets
    src = make_geotiff(tmp_path / "big.tif", data, nodata=0)
    with open_raster(src) as ds:
        expected = raster_radiometry(ds, src, [1, 2])
    assert array_radiometry(data, 0.0) == expected


@pytest.mark.slow
def test_upscale_array_needs_little_memory_beyond_its_result(synthetic_image, model):
    """Numpy's allocations (tracemalloc) beyond the result: strips of tile rows, so 4x the rows add little."""
    import tracemalloc

    extra = []
    for height in (96, 384):
        data = synthetic_image(3, height, 256, seed=9, dtype=np.uint16, lo=0, hi=5000)
        geosr.upscale_array(data, model=model, nodata=0)  # warm caches (the consistency operators of its windows)
        tracemalloc.start()
        try:
            out = geosr.upscale_array(data, model=model, nodata=0)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        extra.append(peak - out.nbytes)
    # The radiometry's decimated sample is the whole array up to 2^20 pixels (as for a file), a float64 copy of it:
    # its growth is allowed for; anything that scaled with the output (a float32 copy of the larger output alone
    # would add 4.7 MB) is not.
    sample_growth = 8 * 3 * (384 - 96) * 256
    assert extra[1] < 1.25 * extra[0] + sample_growth, extra


# --- files and folders ------------------------------------------------------------------------------------------------


def test_upscale_writes_what_the_cli_writes(tmp_path, rgb_tif, tiny_model):
    """The same defaults: device and precision auto, the model card's tiles, consistency on."""
    from click.testing import CliRunner

    from geosr.cli.main import cli

    result = geosr.upscale(rgb_tif, tmp_path / "api.tif", model=tiny_model)
    assert result.status == "done" and result.pixels == 140 * 180
    cli_run = CliRunner().invoke(cli, ["upscale", str(rgb_tif), "-o", str(tmp_path / "cli.tif"), "-m", str(tiny_model)])
    assert cli_run.exit_code == 0, cli_run.output
    np.testing.assert_array_equal(read(tmp_path / "api.tif"), read(tmp_path / "cli.tif"))
    # an existing folder holds the output; skip_existing leaves it alone
    (tmp_path / "dir").mkdir()
    assert geosr.upscale(rgb_tif, tmp_path / "dir", model=tiny_model).dst == tmp_path / "dir" / "rgb.tif"
    again = geosr.upscale(rgb_tif, tmp_path / "dir", model=tiny_model, skip_existing=True)
    assert again.status == "skipped"


def test_upscale_folder_reports_a_failing_file(tmp_path, make_geotiff, synthetic_image, model):
    tiles = tmp_path / "tiles"
    (tiles / "sub").mkdir(parents=True)
    for rel in ("a.tif", "sub/c.tif"):
        make_geotiff(tiles / rel, synthetic_image(3, 30, 40))
    (tiles / "b.tif").write_bytes(b"II*\x00 not a tiff")
    seen = []
    summary = geosr.upscale_folder(
        tiles, tmp_path / "out", model=model, report=tmp_path / "r.json", on_result=seen.append, compress="zstd"
    )
    assert (summary.count("done"), summary.count("failed")) == (2, 1) and len(seen) == 3
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.tif")) == [
        "a.tif",
        "sub/c.tif",
    ]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["state"] == "finished" and report["exit_code"] == 1
    [failed] = [f for f in report["files"] if f["status"] == "failed"]
    assert failed["input"] == str((tiles / "b.tif").absolute()) and "b.tif" in failed["message"]
    assert report["settings"]["compress"] == "zstd" and report["settings"]["tile_size"] == 32
    seen.clear()  # again: the outputs exist, and the results say what to pass in Python's words
    summary = geosr.upscale_folder(tiles, tmp_path / "out", model=model, on_result=seen.append)
    done = [r for r in summary.results if "a.tif" in str(r.src)] + [r for r in seen if "a.tif" in str(r.src)]
    assert [r.message.split("; ", 1)[1] for r in done] == [
        "pass overwrite=True to replace it (or skip_existing=True to keep it)"
    ] * 2


# --- DataArrays -------------------------------------------------------------------------------------------------------


def test_a_dataarray_keeps_its_geolocation(tmp_path, make_geotiff, synthetic_image, model):
    rioxarray = pytest.importorskip("rioxarray")
    src = make_geotiff(
        tmp_path / "in.tif", synthetic_image(3, 50, 60, seed=7, dtype=np.uint16, lo=10, hi=4000), nodata=0
    )
    dst = tmp_path / "out.tif"
    geosr.upscale(src, dst, model=model)
    da = rioxarray.open_rasterio(src)
    sr = geosr.upscale_dataarray(da, model=model)
    with rasterio.open(dst) as out:
        transform, crs, values = out.transform, out.crs, out.read()
    np.testing.assert_array_equal(sr.values, values)
    assert transform.b == transform.d == 0
    centres_x = transform.c + (np.arange(out.width) + 0.5) * transform.a  # pixel centres of the written GeoTIFF
    centres_y = transform.f + (np.arange(out.height) + 0.5) * transform.e
    np.testing.assert_allclose(sr.x.values, centres_x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sr.y.values, centres_y, rtol=0, atol=1e-6)
    assert sr.rio.transform().almost_equals(transform) and sr.rio.crs == crs
    assert sr.rio.nodata == 0 and list(sr.band.values) == [1, 2, 3] and sr.dims == da.dims
    # the same coordinates from the coordinates alone (xarray without rioxarray's accessor)
    import xarray as xr

    plain = xr.DataArray(da.values, dims=da.dims, coords={"band": da.band, "y": da.y.values, "x": da.x.values})
    sr_plain = geosr.upscale_dataarray(plain, model=model, nodata=0)
    np.testing.assert_allclose(sr_plain.x.values, sr.x.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sr_plain.y.values, sr.y.values, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sr_plain.values, values)


def test_a_masked_dataarray_keeps_nan_as_nodata(tmp_path, make_geotiff, synthetic_image, model):
    rioxarray = pytest.importorskip("rioxarray")
    data = synthetic_image(3, 40, 44, seed=8, dtype=np.uint16, lo=100, hi=3000)
    data[:, 5:12, 7:20] = 0
    src = make_geotiff(tmp_path / "in.tif", data, nodata=0)
    da = rioxarray.open_rasterio(src, masked=True)  # float with NaN where nodata
    sr = geosr.upscale_dataarray(da.isel(band=[0, 2]), model=model)
    assert sr.dtype == da.dtype and list(sr.band.values) == [1, 3]
    assert (np.isnan(sr.values) == np.isnan(da.values[[0, 2]]).repeat(2, axis=1).repeat(2, axis=2)).all()


# --- errors -----------------------------------------------------------------------------------------------------------


def test_errors_are_geosr_exceptions(tmp_path, rgb_tif, tiny_model, model, make_geotiff, synthetic_image):
    with pytest.raises(geosr.RasterError, match="missing.tif"):
        geosr.upscale(tmp_path / "missing.tif", tmp_path / "o.tif", model=model)
    with pytest.raises(geosr.RasterError, match="upscale_folder"):
        geosr.upscale(tmp_path, tmp_path / "o.tif", model=model)
    with pytest.raises(geosr.OptionError, match="tile size"):
        geosr.upscale(rgb_tif, tmp_path / "o.tif", model=model, tile_size=3)
    with pytest.raises(geosr.OptionError):
        geosr.upscale(rgb_tif, tmp_path / "o.tif", model=model, overwrite=True, skip_existing=True)
    with pytest.raises(geosr.ModelFileError, match="x2 model"):
        geosr.upscale(rgb_tif, tmp_path / "o.tif", scale=4, model=model)
    with pytest.raises(geosr.ModelFileError, match="no such model"):
        geosr.load_model(tmp_path / "nope.safetensors")
    (tmp_path / "o.tif").write_bytes(b"")
    # messages name keyword arguments, not the command line's options
    with pytest.raises(geosr.OutputExistsError, match=r"pass overwrite=True to replace it \(or skip_existing=True"):
        geosr.upscale(rgb_tif, tmp_path / "o.tif", model=model)
    with pytest.raises(geosr.OptionError, match="card .*: lower overlap or give tile_size$") as caught:
        geosr.upscale(rgb_tif, tmp_path / "p.tif", model=model, overlap=30)
    assert caught.value.option == "--overlap" and "--" not in str(caught.value)
    with pytest.raises(geosr.RasterError, match="band"):
        geosr.upscale(rgb_tif, tmp_path / "p.tif", model=model, bands=[4])
    with pytest.raises(geosr.OptionError, match="expected a sequence"):
        geosr.upscale(rgb_tif, tmp_path / "p.tif", model=model, bands=2)
    with pytest.raises(geosr.OptionError, match="four numbers"):
        geosr.upscale(rgb_tif, tmp_path / "p.tif", model=model, bbox=(1, 2, 3))
    with pytest.raises(TypeError, match="tile_sizes"):
        geosr.upscale(rgb_tif, tmp_path / "p.tif", model=model, tile_sizes=32)
    rgb = synthetic_image(3, 20, 20)
    with pytest.raises(geosr.RasterError, match="shape"):
        geosr.upscale_array(rgb[None], model=model)
    with pytest.raises(geosr.RasterError, match="complex64"):
        geosr.upscale_array(rgb.astype(np.complex64), model=model)
    with pytest.raises(geosr.OptionError, match="nodata 300"):
        geosr.upscale_array(rgb, model=model, nodata=300)
    with pytest.raises(geosr.OptionError, match=r"value_range=\(5, 1\)"):
        geosr.upscale_array(rgb.astype(np.float32), model=model, value_range=(5, 1))
    with pytest.raises(TypeError, match="cog"):
        geosr.upscale_array(rgb, model=model, cog=True)
    with pytest.raises(geosr.OptionError, match="model 123: give a model file"):
        geosr.upscale_array(rgb, model=123)
    with pytest.raises(geosr.OptionError, match="consistency 'no': must be True or False"):  # never read as True
        geosr.upscale_array(rgb, model=model, consistency="no")
    # a loaded model keeps its device and precision: asking for others is an error, not silently ignored
    with pytest.raises(geosr.OptionError, match=r"device='cuda', but the model .* is on cpu; load it with"):
        geosr.upscale(rgb_tif, tmp_path / "p.tif", model=model, device="cuda")
    with pytest.raises(geosr.OptionError, match=r"precision='bf16', but the model .* runs in fp32"):
        geosr.upscale_array(rgb, model=model, precision="bf16")
    with pytest.raises(geosr.OptionError, match="device='gpu': expected auto, cpu, cuda, cuda:N or mps"):
        geosr.upscale_array(rgb, model=model, device="gpu")
    assert geosr.upscale_array(rgb, model=model, device="cpu", precision="fp32").shape == (3, 40, 40)
    assert not (tmp_path / "p.tif").exists()


def test_arguments_are_checked_in_pythons_words(tmp_path, rgb_tif, model, monkeypatch):
    """An empty path never means the current folder; scale, flags, precision, bands and value_range are refused
    with the keyword and its value; a folder batch of one file writes into the folder."""
    monkeypatch.chdir(tmp_path)
    rgb = np.full((3, 8, 8), 50, np.uint8)
    for call, message in (
        (lambda: geosr.upscale(rgb_tif, "", model=model), "dst='': an empty path"),
        (lambda: geosr.upscale("", "x.tif", model=model), "src='': an empty path"),
        (lambda: geosr.upscale_folder([rgb_tif], " ", model=model), "dst=' ': an empty path"),
        (lambda: geosr.upscale_folder(rgb_tif, "o", model=model, report=""), "report='': an empty path"),
        (lambda: geosr.upscale(rgb_tif, "http://example.invalid/x.tif", model=model), "geosr writes local files"),
        (lambda: geosr.upscale_array(rgb, scale=0), r"scale=0: expected 2, 3 or 4"),
        (lambda: geosr.upscale_array(rgb, scale="4"), r"scale='4': expected 2, 3 or 4"),
        (lambda: geosr.load_model("degan-x2", scale=True), r"scale=True: expected 2, 3 or 4"),
        (lambda: geosr.load_model("degan-x2", self_ensemble="yes"), "self_ensemble='yes': must be True or False"),
        (lambda: geosr.upscale(rgb_tif, "y.tif", model=model, skip_existing="no"), "skip_existing='no': must be"),
        (lambda: geosr.upscale_array(rgb, model=model, precision="fp64"), "precision='fp64': expected one of auto"),
        (lambda: geosr.upscale_array(rgb, model=model, bands=[1.5]), r"bands=\[1.5\]: expected 1-based band"),
        (lambda: geosr.upscale_array(rgb, model=model, value_range=(5, 1)), r"value_range=\(5, 1\): min must be"),
        (lambda: geosr.upscale_array(rgb, model="degan-x2", precision=5), "precision=5: expected one of"),
        (lambda: geosr.load_model("degan-x2", device=5), "device=5: expected auto, cpu"),
        (lambda: geosr.upscale_array(rgb, model=model, device="cpu:0"), "device='cpu:0': expected auto, cpu"),
        (lambda: geosr.load_model(5), r"name_or_path=5: expected a path \(a str or os.PathLike\)"),
        (lambda: geosr.upscale(None, "x.tif", model=model), "src=None: expected a path"),
        (lambda: geosr.upscale_folder(None, "o", model=model), "src=None: expected a path"),
        (lambda: geosr.upscale_array(rgb, model=model, nodata="0"), "nodata '0': expected a number"),
        (lambda: geosr.upscale_array(rgb, model=model, nodata=True), "nodata True: expected a number"),
        (lambda: geosr.upscale_array(rgb, model=model, tile_size=0), "^tile_size: tile size 0: must be"),
    ):
        with pytest.raises(geosr.OptionError, match=message):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(rgb_tif).name]  # nothing written, here least
    with pytest.raises(geosr.RasterError, match=r"dtype int64 is not supported; .* convert it, e.g. array.astype"):
        geosr.upscale_array(np.arange(64).reshape(8, 8), model=model)
    with pytest.raises(geosr.RasterError, match=r"got shape \(0, 12\)"):
        geosr.upscale_array(np.zeros((0, 12), np.uint8), model=model)
    # what is wrong with the model or the scale is the error, before an output that exists
    (tmp_path / "exists.tif").write_bytes(b"mine")
    for kwargs, error in (({"scale": "4"}, geosr.OptionError), ({"model": "nope"}, geosr.ModelFileError)):
        with pytest.raises(error):
            geosr.upscale(rgb_tif, "exists.tif", **kwargs)
    (tmp_path / "exists.tif").unlink()
    sixteen = np.full((3, 16, 16), 8400, np.uint16) + np.arange(16, dtype=np.uint16) * 90
    with pytest.raises(geosr.GeosrError, match=r"the array: band 1: .* of value_range 0..4e\+06; .* leave value_range"):
        geosr.upscale_array(sixteen, model=model, value_range=(0, 4_000_000))  # as geosr.upscale refuses it
    assert geosr.upscale_array(rgb, model=model, bands=np.array([3, 2, 1])).shape == (3, 16, 16)
    assert geosr.upscale_array(rgb, model=model, device=None, precision=None).shape == (3, 16, 16)  # None: auto
    summary = geosr.upscale_folder([rgb_tif], tmp_path / "outdir", model=model)  # one file: dst is still a folder
    assert summary.count("done") == 1 and (tmp_path / "outdir" / Path(rgb_tif).name).is_file()
    assert geosr.upscale(rgb_tif, "made/", model=model).dst == Path("made", Path(rgb_tif).name)  # as -o made/
    result = geosr.upscale(rgb_tif, "u_x2.tif", model=model, uncertainty="u_map.tif")  # a str path, as any path
    assert result.status == "done" and (tmp_path / "u_map.tif").is_file()
