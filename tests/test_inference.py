"""geosr.inference on synthetic rasters: exact tiling, nodata, radiometry, AOI, safe output, batches, devices;
and, marked slow, the seam index of a default-architecture DEGAN and the peak memory of a 4x larger input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.warp import transform as warp
from rasterio.windows import Window

from geosr.aoi import AOIMissError, bbox_aoi, load_aoi
from geosr.consistency import project
from geosr.device import cpu_supports_bf16
from geosr.errors import GeosrError, ModelFileError, OptionError, OutputExistsError, RasterError
from geosr.inference import (
    Predictor,
    UpscaleOptions,
    distributed_rank,
    load_predictor,
    plan_outputs,
    upscale_batch,
    upscale_raster,
)
from geosr.plan import make_plan
from geosr.raster import open_raster
from geosr.tiling import seam_index

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = UpscaleOptions(tile_size=64, overlap=16)


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return load_predictor(tiny_model, device="cpu", precision="fp32")


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as d:
        return d.read()


def up(a: np.ndarray, s: int) -> np.ndarray:
    return a.repeat(s, axis=-2).repeat(s, axis=-1)


# --- tiling is exact for a local model ----------------------------------------------------------------------------


@pytest.mark.parametrize("consistency", [False, True])
@pytest.mark.parametrize("shape,panel_width", [((150, 170), 2048), ((90, 1300), 512)])
def test_tiled_output_equals_whole_image_output_for_a_local_model(
    local_model, tmp_path, make_geotiff, synthetic_image, shape, panel_width, consistency
):
    pred = load_predictor(local_model, device="cpu", precision="fp32")
    h, w = shape
    data = synthetic_image(3, h, w, dtype=np.float32, lo=0.0, hi=1.0)
    src = make_geotiff(tmp_path / "f.tif", data)
    dst = tmp_path / "out.tif"
    # tile 80, overlap 40 (card): every tile ignores 10 input pixels along shared edges; the model reaches 9
    options = UpscaleOptions(value_range=(0.0, 1.0), batch_size=3, panel_width=panel_width, consistency=consistency)
    upscale_raster(src, dst, pred, options)
    x = data * 2 - 1
    with torch.inference_mode():
        whole = pred.model(torch.from_numpy(x)[None]).numpy()[0]
    if consistency:  # the correction over the whole image at once: tiles and panels must not show
        whole = project(np.clip(whole, -1, 1), x, pred.scale)
    np.testing.assert_allclose(read(dst), (np.clip(whole, -1, 1) + 1) / 2, rtol=0, atol=2e-5)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 9), (5, 3), (70, 2), (33, 65)])
def test_rasters_from_one_pixel_up_are_padded_and_cropped_back(predictor, tiny_model_x4, tmp_path, make_geotiff, h, w):
    data = np.arange(3 * h * w, dtype=np.uint8).reshape(3, h, w)
    src = make_geotiff(tmp_path / "small.tif", data)
    upscale_raster(src, tmp_path / "x2.tif", predictor)
    assert read(tmp_path / "x2.tif").shape == (3, 2 * h, 2 * w)
    upscale_raster(src, tmp_path / "x4.tif", load_predictor(tiny_model_x4, device="cpu", precision="fp32"))
    with rasterio.open(tmp_path / "x4.tif") as d:
        assert d.shape == (4 * h, 4 * w) and d.bounds == pytest.approx(rasterio.open(src).bounds)


# --- nodata, masks, radiometry ------------------------------------------------------------------------------------


def test_a_fully_nodata_raster_gives_a_fully_nodata_output_without_running_the_model(predictor, tmp_path,
                                                                                       make_geotiff):
    src = make_geotiff(tmp_path / "empty.tif", np.zeros((2, 300, 400), np.uint16), nodata=0)
    result = upscale_raster(src, tmp_path / "out.tif", predictor, FAST)
    assert result.tiles == 0
    with rasterio.open(tmp_path / "out.tif") as d:
        assert d.nodata == 0 and d.shape == (600, 800) and not d.read_masks().any()


def test_nodata_never_leaks_into_valid_pixels(predictor, tmp_path, make_geotiff, synthetic_image):
    rgb = synthetic_image(3, 90, 120)
    alpha = np.full((1, 90, 120), 255, np.uint8)
    alpha[:, 20:60, 30:70] = 0
    garbage = rgb.copy()
    garbage[:, 20:60, 30:70] = np.random.default_rng(0).integers(0, 256, (3, 40, 40))
    for name, colour in (("clean", rgb), ("garbage", garbage)):
        make_geotiff(tmp_path / f"{name}.tif", np.concatenate([colour, alpha]), photometric="RGB", alpha="YES")
        upscale_raster(tmp_path / f"{name}.tif", tmp_path / f"{name}_x2.tif", predictor, FAST)
    a, b = read(tmp_path / "clean_x2.tif"), read(tmp_path / "garbage_x2.tif")
    np.testing.assert_array_equal(a, b)  # what lies under alpha 0 changes nothing
    np.testing.assert_array_equal(a[3], up(alpha[0], 2))
    assert (a[:3][:, up(alpha[0], 2) == 0] == 0).all()


def test_nan_pixels_stay_nan_and_do_not_spread(predictor, tmp_path, make_geotiff, synthetic_image):
    data = synthetic_image(3, 80, 100, dtype=np.float32, lo=-50.0, hi=3000.0)
    data[:, 10:30, 40:45] = np.nan
    src = make_geotiff(tmp_path / "nan.tif", data)
    upscale_raster(src, tmp_path / "out.tif", predictor, FAST)
    out = read(tmp_path / "out.tif")
    np.testing.assert_array_equal(np.isnan(out), up(np.isnan(data), 2))
    assert out.dtype == np.float32


def test_all_nodata_tiles_are_skipped(predictor, tmp_path, make_geotiff, synthetic_image):
    data = synthetic_image(3, 100, 300, dtype=np.uint16, lo=1, hi=5000)
    data[:, :, :200] = 0
    src = make_geotiff(tmp_path / "half.tif", data, nodata=0)
    full = upscale_raster(make_geotiff(tmp_path / "all.tif", data), tmp_path / "a.tif", predictor, FAST)
    half = upscale_raster(src, tmp_path / "b.tif", predictor, FAST)
    assert half.tiles < full.tiles * 0.6
    out = read(tmp_path / "b.tif")
    assert (out[:, :, :400] == 0).all() and (out[:, :, 400:] != 0).all()  # valid pixels never become nodata


def test_radiometry_is_global_and_recorded(predictor, tmp_path, make_geotiff, synthetic_image):
    data = synthetic_image(3, 100, 150, dtype=np.uint16, lo=6000, hi=36000)
    src = make_geotiff(tmp_path / "u16.tif", data)
    upscale_raster(src, tmp_path / "p.tif", predictor, FAST)
    upscale_raster(src, tmp_path / "v.tif", predictor, UpscaleOptions(value_range=(0, 65535), tile_size=64, overlap=16))
    with rasterio.open(tmp_path / "p.tif") as p, rasterio.open(tmp_path / "v.tif") as v:
        rp, rv = json.loads(p.tags()["GEOSR_RADIOMETRY"]), json.loads(v.tags()["GEOSR_RADIOMETRY"])
        assert "percentiles" in rp["method"] and 6000 <= rp["low"][0] < rp["high"][0] <= 36000
        assert rv["low"] == [0, 0, 0] and rv["high"] == [65535] * 3 and "given" in rv["method"]
        assert p.dtypes[0] == v.dtypes[0] == "uint16"
        out = p.read()
        # the model's range maps back onto the input's range: values stay within the global low..high
        assert out.min() >= int(min(rp["low"])) and out.max() <= int(max(rp["high"])) + 1


# --- area of interest ---------------------------------------------------------------------------------------------


def test_aoi_in_another_crs_limits_the_output_and_masks_outside(predictor, tmp_path, make_geotiff, synthetic_image):
    t = Affine(10, 0, 700000, 0, -10, 4000000)  # EPSG:32633, 10 m, 2 degrees east of the central meridian
    src = make_geotiff(tmp_path / "utm.tif", synthetic_image(3, 200, 200), transform=t)
    # a lon/lat box around the raster's centre (about 600 x 600 m), not aligned with the UTM grid
    lon, lat = warp("EPSG:32633", "EPSG:4326", [700700, 701300], [3999300, 3998700])
    aoi = bbox_aoi((min(lon), min(lat), max(lon), max(lat)), "EPSG:4326")
    dst = tmp_path / "aoi.tif"
    upscale_raster(src, dst, predictor, UpscaleOptions(aoi=aoi, tile_size=64, overlap=16))
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert 110 <= b.width <= 140 and 110 <= b.height <= 140  # about 60 input pixels x2
        assert b.transform.a == 5 and b.transform.e == -5
        assert (b.transform.c - t.c) % 10 == 0 and (t.f - b.transform.f) % 10 == 0  # on the input's pixel grid
        left, bottom, right, top = b.bounds
        assert a.bounds.left < left <= 700700 < 701300 <= right < a.bounds.right
        mask = b.dataset_mask()
        assert mask[b.height // 2, b.width // 2] == 255
        # the lon/lat box is not aligned with the UTM grid: some corner pixels of the window are outside it
        assert (mask == 0).any() and (mask == 255).mean() > 0.9


def test_aoi_from_geojson_and_wkt(predictor, tmp_path, make_geotiff, synthetic_image):
    src = make_geotiff(tmp_path / "r.tif", synthetic_image(3, 100, 100, lo=1), nodata=0)
    geojson = tmp_path / "aoi.geojson"
    ring = [[500100, 3999900], [500300, 3999900], [500100, 3999700], [500100, 3999900]]
    poly = {"type": "Polygon", "coordinates": [ring]}
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": poly}]}))
    aoi = load_aoi(str(geojson), "EPSG:32633")
    upscale_raster(src, tmp_path / "tri.tif", predictor, UpscaleOptions(aoi=aoi, tile_size=64, overlap=16))
    with rasterio.open(tmp_path / "tri.tif") as b:
        assert b.shape == (40, 40) and b.nodata == 0
        m = b.read_masks(1)
        assert m[2, 2] == 255 and m[-3, -3] == 0  # the triangle's corner is in, the opposite corner out
    wkt = "POLYGON((500000 4000000, 500500 4000000, 500500 3999500, 500000 3999500, 500000 4000000))"
    upscale_raster(src, tmp_path / "sq.tif", predictor, UpscaleOptions(aoi=load_aoi(wkt), tile_size=64, overlap=16))
    with rasterio.open(tmp_path / "sq.tif") as b:
        assert b.shape == (100, 100) and b.read_masks().all()


def test_an_aoi_that_misses_the_raster_is_an_error(predictor, tmp_path, rgb_tif):
    aoi = bbox_aoi((0, 0, 1, 1), "EPSG:4326")
    with pytest.raises(AOIMissError, match="does not meet the raster"):
        upscale_raster(rgb_tif, tmp_path / "out.tif", predictor, UpscaleOptions(aoi=aoi))
    assert not (tmp_path / "out.tif").exists()


# --- safe output --------------------------------------------------------------------------------------------------


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interruption_leaves_no_file(predictor, tmp_path, rgb_tif, exc):
    calls = []

    def progress(p):
        calls.append(p)
        if len(calls) == 3:
            raise exc("stop")

    with pytest.raises(exc):
        upscale_raster(rgb_tif, tmp_path / "out.tif", predictor, UpscaleOptions(tile_size=16, overlap=4), progress)
    assert _files(tmp_path) == ["rgb.tif"]


def test_existing_outputs_are_kept_without_overwrite(predictor, tmp_path, rgb_tif):
    dst = tmp_path / "out.tif"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists.*--overwrite"):
        upscale_raster(rgb_tif, dst, predictor, FAST)
    assert dst.read_bytes() == b"precious"
    upscale_raster(rgb_tif, dst, predictor, UpscaleOptions(overwrite=True, tile_size=64, overlap=16))
    assert read(dst).shape == (3, 140, 180) and _files(tmp_path) == ["out.tif", "rgb.tif"]
    with pytest.raises(RasterError, match="the output is the input"):
        upscale_raster(rgb_tif, rgb_tif, predictor, UpscaleOptions(overwrite=True))


def test_no_room_on_disk_is_reported_before_starting(predictor, tmp_path, rgb_tif, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(RasterError, match="not enough disk space.*kB needed, 1.0 kB free"):
        upscale_raster(rgb_tif, tmp_path / "out.tif", predictor, FAST)
    assert _files(tmp_path) == ["rgb.tif"]


def test_cog_output_is_cloud_optimized(predictor, tmp_path, make_geotiff, synthetic_image):
    src = make_geotiff(tmp_path / "r.tif", synthetic_image(3, 300, 280), nodata=0)
    dst = tmp_path / "cog.tif"
    upscale_raster(src, dst, predictor, UpscaleOptions(cog=True, compress="zstd", tile_size=64, overlap=16))
    with rasterio.open(dst) as b:
        assert b.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert b.overviews(1) and b.profile["blockxsize"] == 512 and b.nodata == 0
        assert b.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
    assert _files(tmp_path) == ["cog.tif", "r.tif"]


# --- batches ------------------------------------------------------------------------------------------------------


def test_plan_outputs_keeps_the_layout(tmp_path, make_geotiff, synthetic_image):
    tiles = tmp_path / "tiles"
    for rel in ("a/1.tif", "a/2.TIF", "b/c/3.vrt", "4.png", ".hidden.tif", "notes.txt"):
        (tiles / rel).parent.mkdir(parents=True, exist_ok=True)
        (tiles / rel).write_bytes(b"x")
    out = tiles / "sr"  # an output folder inside the input folder is never searched
    (out / "old").mkdir(parents=True)
    (out / "old" / "x.tif").write_bytes(b"x")
    pairs = plan_outputs([tiles], out)
    assert [(s.relative_to(tiles).as_posix(), d.relative_to(out).as_posix()) for s, d in pairs] == [
        ("4.png", "4.png"), ("a/1.tif", "a/1.tif"), ("a/2.TIF", "a/2.TIF"), ("b/c/3.vrt", "b/c/3.tif"),
    ]
    single = plan_outputs([tiles / "a" / "1.tif"], tmp_path / "one.tif")
    assert single == [(tiles / "a" / "1.tif", tmp_path / "one.tif")]
    several = plan_outputs([tiles / "a" / "1.tif", tiles / "b"], tmp_path / "o")
    assert [d.relative_to(tmp_path / "o").as_posix() for _, d in several] == ["a/1.tif", "b/c/3.tif"]
    with pytest.raises(GeosrError, match="output folder is the input folder"):
        plan_outputs([tiles], tiles)
    with pytest.raises(GeosrError, match="is a file"):
        plan_outputs([tiles], tiles / "4.png")


def test_a_batch_goes_on_after_a_failed_file(predictor, tmp_path, make_geotiff, synthetic_image):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        make_geotiff(folder / f"t{i}.tif", synthetic_image(3, 40, 50, seed=i))
    (folder / "t1.tif").write_bytes(b"II*\x00corrupt")
    pairs = plan_outputs([folder], tmp_path / "out")
    seen = []
    summary = upscale_batch(pairs, predictor, FAST, on_result=seen.append)
    assert [r.status for r in summary.results] == ["done", "failed", "done"]
    assert "t1.tif" in summary.results[1].message and "\n" not in summary.results[1].message
    assert seen == summary.results and summary.megapixels_per_second > 0
    assert _files(tmp_path / "out") == ["t0.tif", "t2.tif"]
    assert "2 done, 0 skipped, 1 failed" in summary.line()
    again = upscale_batch(pairs, predictor, FAST, skip_existing=True)
    assert [r.status for r in again.results] == ["skipped", "failed", "skipped"]


def _small_files(folder: Path, make_geotiff, synthetic_image, sizes) -> None:
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        make_geotiff(folder / f"t{i}.tif", synthetic_image(3, h, w, seed=i))


class _SlowModel:
    """The predictor, each model call taking at least ``delay`` seconds (so that other files' tiles wait) and
    recorded by its number of tiles."""

    def __init__(self, predictor, delay: float = 0.05) -> None:
        self.predictor, self.delay, self.calls = predictor, delay, []

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def run(self, tiles):
        import time

        time.sleep(self.delay)
        self.calls.append(len(tiles))
        return self.predictor.run(tiles)


def test_files_in_flight_give_the_same_outputs_in_the_same_order(predictor, tmp_path, make_geotiff, synthetic_image):
    """Several files at once, their tiles merged into shared model calls: every output equals the one-at-a-time
    output bit for bit, a failed file is recorded in its place, results come in the order of the pairs."""
    sizes = [(40, 50), (24, 24), (90, 130), (24, 24), (30, 20), (24, 24), (50, 40)]
    _small_files(tmp_path / "in", make_geotiff, synthetic_image, sizes)
    (tmp_path / "in" / "t3.tif").write_bytes(b"II*\x00corrupt")
    options = UpscaleOptions(tile_size=32, overlap=8, batch_size=4)
    serial = upscale_batch(plan_outputs([tmp_path / "in"], tmp_path / "one"), predictor, options)
    slow = _SlowModel(predictor)
    seen = []
    pairs = plan_outputs([tmp_path / "in"], tmp_path / "many")
    summary = upscale_batch(pairs, slow, options, files_in_flight=3, on_result=seen.append)
    assert [(r.src, r.status) for r in summary.results] == [(r.src, r.status) for r in serial.results]
    assert [r.status for r in summary.results] == ["done"] * 3 + ["failed"] + ["done"] * 3
    assert "t3.tif" in summary.results[3].message
    assert sorted(seen, key=lambda r: pairs.index((r.src, r.dst))) == summary.results
    for name in _files(tmp_path / "one"):
        assert np.array_equal(read(tmp_path / "one" / name), read(tmp_path / "many" / name)), name
    assert _files(tmp_path / "many") == _files(tmp_path / "one")
    assert max(slow.calls) > 1 and max(slow.calls) <= 4  # tiles of several files in one call, never above the batch
    assert sum(slow.calls) == sum(r.tiles for r in summary.results)


def test_a_batch_with_files_in_flight_stops_cleanly(predictor, tmp_path, make_geotiff, synthetic_image):
    """KeyboardInterrupt on one file's thread stops the batch: raised here once the other files under way have
    ended, no temporary file left, every output present complete."""
    _small_files(tmp_path / "in", make_geotiff, synthetic_image, [(60, 60)] * 6)
    calls = []

    def progress(p):
        calls.append(p)
        if len(calls) == 8:
            raise KeyboardInterrupt

    pairs = plan_outputs([tmp_path / "in"], tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        upscale_batch(pairs, _SlowModel(predictor, 0.02), UpscaleOptions(tile_size=32, overlap=8, batch_size=2),
                      progress=progress, files_in_flight=3)
    left = _files(tmp_path / "out")
    assert len(left) < 6 and all(name.endswith(".tif") and not name.startswith(".") for name in left)
    for name in left:
        assert read(tmp_path / "out" / name).shape == (3, 120, 120)


def test_files_in_flight_must_be_a_positive_integer(predictor, tmp_path):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(OptionError, match="files in flight .*: must be an integer of at least 1"):
            upscale_batch([], predictor, files_in_flight=bad)


def test_the_self_ensemble_is_the_mean_over_the_squares_eight_symmetries(predictor):
    """Each of the 8 flips and transposes is undone by its inverse, all 8 differ, and the ensemble is the mean of the
    model's turned-back outputs: exact for a model that commutes with them (nearest upsampling), not the plain output
    for one that does not (a random generator)."""
    from geosr.predictor import _dihedral, geometric_ensemble

    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    assert all(torch.equal(_dihedral(_dihedral(x, k), k, inverse=True), x) for k in range(8))
    assert len({tuple(_dihedral(x[:, :, :5, :5], k).flatten().tolist()) for k in range(8)}) == 8
    nearest = torch.nn.Upsample(scale_factor=2, mode="nearest")
    assert torch.equal(geometric_ensemble(nearest, x), nearest(x))
    tiles = torch.rand(2, 3, 12, 20) * 2 - 1
    model = predictor.model
    with torch.inference_mode():
        expected = sum(_dihedral(model(_dihedral(tiles, k)), k, inverse=True) for k in range(8)) / 8
        plain = model(tiles)
    ensembled = dataclasses.replace(predictor, self_ensemble=True).run(tiles)
    assert ensembled.shape == (2, 3, 24, 40) and torch.allclose(ensembled, expected, atol=1e-5)
    assert not torch.allclose(ensembled, plain, atol=1e-3)


def test_self_ensemble_from_the_command_line_is_recorded_in_the_output(tiny_model, rgb_tif, tmp_path):
    from click.testing import CliRunner

    from geosr.cli.main import cli

    outs = {}
    for name, extra in (("plain", []), ("ens", ["--self-ensemble"])):
        outs[name] = tmp_path / f"{name}.tif"
        r = CliRunner().invoke(cli, ["-q", "upscale", str(rgb_tif), "-o", str(outs[name]), "--model", str(tiny_model),
                                     "--precision", "fp32", *extra])
        assert r.exit_code == 0, r.output
    with rasterio.open(outs["ens"]) as d:
        tag = d.tags()["GEOSR_SELF_ENSEMBLE"]
        assert tag.startswith("on:") and "flips and transposes" in tag and d.shape == (140, 180)
    with rasterio.open(outs["plain"]) as d:
        assert d.tags()["GEOSR_SELF_ENSEMBLE"].startswith("off:")
    assert not np.array_equal(read(outs["plain"]), read(outs["ens"]))


def test_distributed_rank_is_kept_for_scripts(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed_rank() == (0, 1, None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed_rank() == (1, 2, 1)


# --- options and the plan ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, option, message",
    [
        (dict(tile_size=4), "--tile-size", "tile size 4: must be an integer of 8..4096"),
        (dict(tile_size=32, overlap=17), "--overlap", "overlap 17: must be an integer of 0..16"),
        (dict(overlap=-1), "--overlap", "overlap -1"),
        (dict(batch_size=0), "--batch-size", "batch size 0"),
        (dict(bands=(0, 1)), "--bands", "1-based"),
        (dict(bands=[2, 2]), "--bands", "name each band once"),
        (dict(value_range=(1, 1)), "--value-range", "MIN must be below MAX"),
        (dict(value_range=(0, float("inf"))), "--value-range", "finite"),
        (dict(compress="jpeg"), "--compress", "expected one of deflate, zstd, lzw, none"),
        (dict(panel_width=100), None, "multiple of 512"),
    ],
)
def test_options_are_checked_when_made(kwargs, option, message):
    with pytest.raises(OptionError, match=message) as info:
        UpscaleOptions(**kwargs)
    assert info.value.option == option
    assert UpscaleOptions(bands=[3, 1]).bands == (3, 1)


def test_an_overlap_beyond_the_model_cards_tile_names_the_option(predictor, tmp_path, rgb_tif):
    with pytest.raises(GeosrError, match="overlap 20: .* 32 is the tile size of the model card") as info:
        upscale_raster(rgb_tif, tmp_path / "a.tif", predictor, UpscaleOptions(overlap=20))
    assert info.value.option == "--overlap" and isinstance(info.value, OptionError)  # as --tile-size 32 --overlap 20
    with pytest.raises(GeosrError, match="8 is the overlap of the model card") as info:
        upscale_raster(rgb_tif, tmp_path / "a.tif", predictor, UpscaleOptions(tile_size=12))
    assert info.value.option == "--tile-size" and isinstance(info.value, OptionError)
    assert _files(tmp_path) == ["rgb.tif"]


def test_the_plan_carries_the_destination_and_the_batch_size(predictor, tmp_path, rgb_tif):
    dst = tmp_path / "out.tif"
    options = UpscaleOptions(tile_size=16, overlap=4, batch_size=3, compress="zstd")
    with open_raster(rgb_tif) as ds:
        plan = make_plan(ds, rgb_tif, dst, predictor, options)
    assert (plan.src, plan.dst, plan.batch_size, plan.tile_size, plan.overlap) == (rgb_tif, dst, 3, 16, 4)
    assert (plan.compress, plan.cog, plan.overwrite, plan.scale) == ("zstd", False, False, 2)

    sizes = []

    class Recording(Predictor):
        def run(self, tiles):
            sizes.append(len(tiles))
            return super().run(tiles)

    recording = Recording(predictor.model, predictor.card, predictor.device, predictor.precision, predictor.source)
    result = upscale_raster(rgb_tif, dst, recording, options)
    assert max(sizes) <= 3 and sum(sizes) == result.tiles > 3


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


# --- models and precision ------------------------------------------------------------------------------------------


def test_model_scale_must_match(tiny_model):
    with pytest.raises(ModelFileError, match="x2 model but --scale 4"):
        load_predictor(tiny_model, scale=4, device="cpu")
    with pytest.raises(ModelFileError, match="pass --model"):
        load_predictor(None, scale=3, device="cpu")  # no x3 model ships


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has neither AMX nor AVX-512-BF16")
def test_bf16_output_is_close_to_fp32(tiny_model, tmp_path, rgb_tif):
    a = upscale_raster(rgb_tif, tmp_path / "a.tif", load_predictor(tiny_model, device="cpu", precision="fp32"), FAST)
    b = upscale_raster(rgb_tif, tmp_path / "b.tif", load_predictor(tiny_model, device="cpu", precision="bf16"), FAST)
    diff = np.abs(read(a.dst).astype(int) - read(b.dst).astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 8


# --- slow: seams of the default architecture, memory of a 4x larger input -----------------------------------------


@pytest.mark.slow
@pytest.mark.shared_data
def test_default_degan_shows_no_seams_with_the_card_defaults(make_model, geotiff_dir, tmp_path):
    """A random-weight DEGAN of the default architecture, card defaults (tile 64, overlap 16, x4), on real data."""
    model = make_model("degan-default-x4", scale=4, tile_size=64, overlap=16)
    pred = load_predictor(model, device="cpu")
    crop = tmp_path / "crop.tif"
    with rasterio.open(geotiff_dir / "rasterio" / "RGB.byte.tif") as ds:
        w = Window(230, 230, 320, 320)  # inside the scene, away from its nodata collar
        profile = dict(ds.profile, width=w.width, height=w.height, transform=ds.window_transform(w))
        with rasterio.open(crop, "w", **profile) as d:
            d.write(ds.read(window=w))
    upscale_raster(crop, tmp_path / "sr.tif", pred)
    with rasterio.open(tmp_path / "sr.tif") as d:
        out = d.read().astype(np.float64)
        valid = d.dataset_mask() > 0
    s, tile, overlap = 4, 64, 16
    period = s * (tile - overlap)
    # tile edges and the blend window's edges and centre; compared with other phases at the same sub-pixel position
    phases = [0, s * overlap // 4, s * overlap // 2, 3 * s * overlap // 4, s * overlap]
    worst = max(seam_index(out, period, p, valid=valid, subpixel=s) for p in phases)
    print(f"seam index, default DEGAN (random weights), tile {tile}, overlap {overlap}: {worst:.4f}")
    assert worst <= 1.05


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
            capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        peaks[n] = int(out.stdout.split()[-1])  # kB
        with rasterio.open(tmp_path / f"out{n}.tif") as d:
            assert d.shape == (2 * n, 2 * n)
    growth = peaks[2048] / peaks[1024] - 1
    print(f"peak RSS {peaks[1024] / 1024:.0f} MB -> {peaks[2048] / 1024:.0f} MB (+{growth:.1%}) for 4x the input")
    assert growth < 0.30
