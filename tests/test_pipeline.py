"""geosr.pipeline's upscale_raster on synthetic rasters: what is not valid in the input stays so in the output
(alpha, nodata, NaN) and never reaches valid pixels, progress and the file's result, a safe output (nothing left
after an interruption, an existing file kept without overwrite, too little disk space reported before starting, a
Cloud-Optimized GeoTIFF), the source opened once; and, marked slow, the peak memory of a 4x larger input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from testdata import FAST, file_names, read_raster

from geosr.errors import OutputExistsError, RasterError
from geosr.options import UpscaleOptions
from geosr.pipeline import FileResult, upscale_raster

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def up(a: np.ndarray, s: int) -> np.ndarray:
    return a.repeat(s, axis=-2).repeat(s, axis=-1)


# --- nodata, masks ----------------------------------------------------------------------------------------------------


def test_nodata_never_leaks_into_valid_pixels(predictor, tmp_path, make_geotiff, synthetic_image):
    rgb = synthetic_image(3, 90, 120)
    alpha = np.full((1, 90, 120), 255, np.uint8)
    alpha[:, 20:60, 30:70] = 0
    garbage = rgb.copy()
    garbage[:, 20:60, 30:70] = np.random.default_rng(0).integers(0, 256, (3, 40, 40))
    for name, colour in (("clean", rgb), ("garbage", garbage)):
        make_geotiff(tmp_path / f"{name}.tif", np.concatenate([colour, alpha]), photometric="RGB", alpha="YES")
        upscale_raster(tmp_path / f"{name}.tif", tmp_path / f"{name}_x2.tif", predictor, FAST)
    a, b = read_raster(tmp_path / "clean_x2.tif"), read_raster(tmp_path / "garbage_x2.tif")
    np.testing.assert_array_equal(a, b)  # what lies under alpha 0 changes nothing
    np.testing.assert_array_equal(a[3], up(alpha[0], 2))
    assert (a[:3][:, up(alpha[0], 2) == 0] == 0).all()


def test_nan_pixels_stay_nan_and_do_not_spread(predictor, tmp_path, make_geotiff, synthetic_image):
    data = synthetic_image(3, 80, 100, dtype=np.float32, lo=-50.0, hi=3000.0)
    data[:, 10:30, 40:45] = np.nan
    src = make_geotiff(tmp_path / "nan.tif", data)
    upscale_raster(src, tmp_path / "out.tif", predictor, FAST)
    out = read_raster(tmp_path / "out.tif")
    np.testing.assert_array_equal(np.isnan(out), up(np.isnan(data), 2))
    assert out.dtype == np.float32


# --- progress and the result ------------------------------------------------------------------------------------------


def test_progress_counts_tiles_and_pixels_up_to_the_result(predictor, tmp_path, rgb_tif):
    seen = []
    result = upscale_raster(
        rgb_tif, tmp_path / "out.tif", predictor, UpscaleOptions(tile_size=16, overlap=4), seen.append
    )
    assert isinstance(result, FileResult) and (result.src, result.dst) == (rgb_tif, tmp_path / "out.tif")
    assert result.status == "done" and result.message == "" and result.seconds > 0
    assert result.pixels == 140 * 180 and result.tiles > 1
    assert {(p.path, p.tiles_total, p.pixels_total) for p in seen} == {(tmp_path / "out.tif", result.tiles, 140 * 180)}
    assert (seen[0].tiles_done, seen[0].pixels_done) == (0, 0)
    assert (seen[-1].tiles_done, seen[-1].pixels_done) == (result.tiles, 140 * 180)
    assert all(a.tiles_done <= b.tiles_done and a.pixels_done <= b.pixels_done for a, b in zip(seen, seen[1:]))
    assert len(seen) > result.tiles // 8  # a report per model call (batches of 8) at least
    assert result.blank_tiles == 0


def test_tiles_without_a_valid_pixel_are_counted_apart(predictor, tmp_path, make_geotiff, synthetic_image):
    """The progress counts every tile; the result says how many the model ran and how many it had no pixel for."""
    data = synthetic_image(3, 64, 96)
    data[:, :, 48:] = 0  # the right half nodata
    seen = []
    src = make_geotiff(tmp_path / "half.tif", data, nodata=0)
    result = upscale_raster(src, tmp_path / "out.tif", predictor, UpscaleOptions(tile_size=16, overlap=4), seen.append)
    assert result.tiles > 0 and result.blank_tiles > 0
    assert seen[-1].tiles_done == seen[-1].tiles_total == result.tiles + result.blank_tiles


# --- safe output ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interruption_leaves_no_file(predictor, tmp_path, rgb_tif, exc):
    calls = []

    def progress(p):
        calls.append(p)
        if len(calls) == 3:
            raise exc("stop")

    with pytest.raises(exc):
        upscale_raster(rgb_tif, tmp_path / "out.tif", predictor, UpscaleOptions(tile_size=16, overlap=4), progress)
    assert file_names(tmp_path) == ["rgb.tif"]


def test_existing_outputs_are_kept_without_overwrite(predictor, tmp_path, rgb_tif):
    dst = tmp_path / "out.tif"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists.*--overwrite"):
        upscale_raster(rgb_tif, dst, predictor, FAST)
    assert dst.read_bytes() == b"precious"
    upscale_raster(rgb_tif, dst, predictor, UpscaleOptions(overwrite=True, tile_size=64, overlap=16))
    assert read_raster(dst).shape == (3, 140, 180) and file_names(tmp_path) == ["out.tif", "rgb.tif"]
    with pytest.raises(RasterError, match="the output is the input"):
        upscale_raster(rgb_tif, rgb_tif, predictor, UpscaleOptions(overwrite=True))


def test_no_room_on_disk_is_reported_before_starting(predictor, tmp_path, rgb_tif, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(RasterError, match="not enough disk space.*kB needed, 1.0 kB free"):
        upscale_raster(rgb_tif, tmp_path / "out.tif", predictor, FAST)
    assert file_names(tmp_path) == ["rgb.tif"]


def test_cog_output_is_cloud_optimized(predictor, tmp_path, make_geotiff, synthetic_image):
    src = make_geotiff(tmp_path / "r.tif", synthetic_image(3, 300, 280), nodata=0)
    dst = tmp_path / "cog.tif"
    upscale_raster(src, dst, predictor, UpscaleOptions(cog=True, compress="zstd", tile_size=64, overlap=16))
    with rasterio.open(dst) as b:
        assert b.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert b.overviews(1) and b.profile["blockxsize"] == 512 and b.nodata == 0
        assert b.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
    assert file_names(tmp_path) == ["cog.tif", "r.tif"]


def test_the_source_is_opened_once(predictor, tmp_path, rgb_tif, monkeypatch):
    opened = []
    real_open = rasterio.open

    def counting_open(fp, mode="r", *args, **kwargs):
        if mode == "r":
            opened.append(Path(fp))
        return real_open(fp, mode, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", counting_open)
    upscale_raster(rgb_tif, tmp_path / "out.tif", predictor, FAST)
    assert opened.count(rgb_tif) == 1


# --- slow: memory of a 4x larger input --------------------------------------------------------------------------------


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, rasterio, torch
    from geosr.inference import UpscaleOptions, load_predictor, upscale_raster
    torch.set_num_threads(1)
    model, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    src = out + ".in.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(src, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint8", tiled=True,
                       blockxsize=256, blockysize=256, crs="EPSG:32633",
                       transform=rasterio.Affine(10, 0, 500000, 0, -10, 4000000)) as d:
        for r in range(0, n, 256):
            d.write(rng.integers(0, 256, (3, 256, n), dtype=np.uint8), window=((r, r + 256), (0, n)))
    pred = load_predictor(model, device="cpu", precision="fp32")
    upscale_raster(src, out, pred, UpscaleOptions(tile_size=64, overlap=8, batch_size=16))
    # VmHWM: this process's peak RSS (ru_maxrss would include the parent's RSS, kept across fork and exec)
    with open("/proc/self/status") as f:
        print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc (Linux)")
def test_peak_memory_grows_little_for_a_4x_larger_input(make_model, tmp_path):
    model = make_model("mem-x2", scale=2, channels=16, n_blocks=0, attention="none", refiner="none")
    peaks = {}
    for n in (1024, 2048):
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(model), str(n), str(tmp_path / f"out{n}.tif")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        peaks[n] = int(out.stdout.split()[-1])  # kB
        with rasterio.open(tmp_path / f"out{n}.tif") as d:
            assert d.shape == (2 * n, 2 * n)
    growth = peaks[2048] / peaks[1024] - 1
    print(f"peak RSS {peaks[1024] / 1024:.0f} MB -> {peaks[2048] / 1024:.0f} MB (+{growth:.1%}) for 4x the input")
    assert growth < 0.30
