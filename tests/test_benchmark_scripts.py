"""The benchmark scripts' measuring code, run small: a benchmark that silently stops counting is worse than none.

The figures themselves are measured by running the scripts (benchmarks/README: results/); these tests only check
that what they count is there to count.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geosr.inference import load_predictor

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"geosr_benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("files, in_flight", [(0, 1), (3, 1), (3, 2)])
def test_model_share_counts_every_model_call(tiny_model, tmp_path, files, in_flight):
    """model_share.py times the pipeline's model calls (one tile per 24 x 24 file at tile 32), also with files in
    flight, and leaves the predictor as it found it."""
    share = _benchmark("model_share")
    predictor = load_predictor(tiny_model, device="cpu", precision="fp32")
    run = type(predictor).run
    r = share.model_share(predictor, tmp_path, size=24, files=files, batch=4, in_flight=in_flight)
    assert r["model_tiles"] == max(files, 1)
    assert 0 < r["model_s"] < r["total_s"]
    assert r["share"] == pytest.approx(r["model_s"] / r["total_s"], abs=0.01)
    assert type(predictor).run is run
    if files:
        assert len(list((tmp_path / "out").glob("*.tif"))) == files


def test_output_io_writes_geosrs_profile_and_times_the_read_back(tmp_path):
    """output_io.py measures geosr's own output profile (tiled, deflate) and its verify_output."""
    io = _benchmark("output_io")
    profile = io.profile_for(600, tmp_path)
    assert profile["tiled"] and profile["compress"] == "deflate" and profile["num_threads"] == "ALL_CPUS"
    rows = [io.synthetic_rows(600, r0, min(512, 600 - r0), np.random.default_rng(0)) for r0 in (0, 512)]
    out = tmp_path / "out.tif"
    assert io.write(out, profile, rows) > 0
    with rasterio.open(out) as ds:
        assert ds.shape == (600, 600) and ds.count == 3 and (ds.read()[:, 512:] == rows[1]).all()
    assert io.read_one_block_at_a_time(out) > 0


def test_pipeline_only_times_every_stage_of_the_real_pipeline(tmp_path):
    """pipeline_only.py --stages: the stage timer records each stage from the threads that run it, the main thread's
    stages add up to at most its wall time, and outside ``timing`` the pipeline records nothing."""
    import argparse
    import dataclasses

    from geosr.inference import UpscaleOptions, upscale_raster
    from geosr.stagetimer import StageTimer, stage, timing

    bench = _benchmark("pipeline_only")
    src = _benchmark("bench").make_synthetic(tmp_path / "in.tif", 96)
    predictor = dataclasses.replace(
        load_predictor(None, scale=4, device="cpu", precision="fp32"), model=bench.StandIn(4)
    )
    args = argparse.Namespace(tile=32, overlap=8, batch=4)
    runs = [bench.stage_seconds(src, tmp_path / "out.tif", predictor, args, c) for c in (True, False)]
    for (timer, wall), consistency in zip(runs, (True, False)):
        recorded = {key for key, s in timer.seconds.items() if s > 0}
        expected = {(t, k) for t, k, _ in bench.STAGES if k not in ("host to device", "device to host")}
        if not consistency:
            expected.discard((bench.MAIN, "consistency"))
        assert expected <= recorded, expected - recorded
        assert sum(s for (t, _), s in timer.seconds.items() if t == bench.MAIN) <= wall
    assert "consistency correction" in bench.stage_table(runs, ("on", "off"))
    timer = StageTimer()
    upscale_raster(src, tmp_path / "out.tif", predictor, UpscaleOptions(overwrite=True, tile_size=32, overlap=8))
    assert not timer.seconds and stage("model") is stage("blend")  # off: one shared do-nothing context
    with timing(timer), stage("outer"), stage("inner"):
        pass
    assert set(timer.calls) == {("MainThread", "outer"), ("MainThread", "inner")}


def test_output_io_levels_rewrites_an_output_with_each_codec(tmp_path, capsys):
    """output_io.py --levels: every codec of CODECS is written and timed, sized against deflate 6."""
    io = _benchmark("output_io")
    out = tmp_path / "out.tif"
    rows = io.synthetic_rows(200, 0, 200, np.random.default_rng(0))
    with rasterio.open(out, "w", driver="GTiff", width=200, height=200, count=3, dtype="uint16") as ds:
        ds.write(rows)
    io.levels([out])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("out.tif: 3 x 200 x 200 uint16")
    assert [line.split()[:2] for line in lines[1:]] == [[c, str(next(iter(o.values())))] for c, o in io.CODECS]
    assert "(+0.0%)" in next(line for line in lines if line.split()[:2] == ["deflate", "6"])


def test_pipeline_only_compares_source_trees_in_one_run(capsys, tmp_path, monkeypatch):
    """pipeline_only.py --trees: each tree runs in a process of its own; equal trees give equal outputs; the runs
    leave nothing in the temporary folder."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    bench = _benchmark("pipeline_only")
    bench.compare_trees([REPO, REPO], 1, ["--size=48", "--tile=32", "--overlap=8", "--batch=4", "--repeats=1"])
    out = capsys.readouterr().out
    assert out.count(f"{REPO}: consistency on: best") == 2
    assert "ratio, last to first: consistency on" in out
    assert "outputs equal pixel for pixel: True" in out
    assert not list(tmp_path.iterdir())


def test_pipeline_only_keeps_cores_busy_only_while_it_measures():
    """pipeline_only.py --busy K: K processes running while the block runs, all of them ended after it."""
    bench = _benchmark("pipeline_only")
    with bench.busy_cores(2) as others:
        assert len(others) == 2 and all(p.poll() is None for p in others)
    assert all(p.poll() is not None for p in others)


def test_upscale_pair_runs_geosr_upscale_from_a_source_tree(tmp_path, monkeypatch):
    """upscale_pair.py: one run of a tree upscales the input with geosr upscale's defaults in a process of its own,
    and removes its output."""
    pair = _benchmark("upscale_pair")
    src = _benchmark("bench").make_synthetic(tmp_path / "in.tif", 24)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    seconds, digest, how = pair.one_run(REPO, src, 4)
    assert seconds > 0 and len(digest) == 16 and how.startswith("cpu ")
    assert not list((tmp_path / "tmp").iterdir())


@pytest.mark.shared_data
def test_cross_sensor_train_crops_never_overlap_the_val_crops(tmp_path):
    """cross_sensor.py make --split train cuts the other half of each raster: no train crop shares a pixel with a
    val crop of the same sensor, and each is at least a training patch."""
    from testdata import require_shared_data

    xs = _benchmark("cross_sensor")
    data = require_shared_data("geotiff")
    val, train = xs.make(tmp_path / "val", data), xs.make(tmp_path / "train", data, "train", 192)
    assert train and val

    def bounds(path):
        with rasterio.open(path) as ds:
            return ds.bounds, ds.width

    for t in train:
        (tb, side) = bounds(t)
        assert side >= 192
        for v in (v for v in val if v.parent.name == t.parent.name):
            vb, _ = bounds(v)
            apart = tb.right <= vb.left or vb.right <= tb.left or tb.top <= vb.bottom or vb.top <= tb.bottom
            assert apart, (t.name, v.name)


def test_degraded_val_pairs_each_val_image_with_its_degraded_lr(scene_folder):
    """degraded_val.py writes the paired layout geosr evaluate reads: one LR per HR, a quarter of its side, made by
    the kind named (the bicubic LR for none of them: each kind moves it)."""
    dv = _benchmark("degraded_val")
    from geosr.datasets import find_images
    from geosr.training.degradation import bicubic_lr

    out = scene_folder.parent / "degraded"
    assert dv.make(out, scene_folder, 4) == {kind: 4 for kind in dv.KINDS}  # 2 classes x 2 val images
    for kind in dv.KINDS:
        items = find_images(out / kind, "all").items
        assert len(items) == 4 and all(item.lr_path(4) is not None for item in items)
        for item in items:
            with rasterio.open(item.path) as hr_file, rasterio.open(item.lr_path(4)) as lr_file:
                hr, lr = hr_file.read(), lr_file.read()
            assert lr.shape == (3, hr.shape[1] // 4, hr.shape[2] // 4) and lr.dtype == np.uint8
            bicubic = bicubic_lr(torch.from_numpy(hr.astype(np.float32)), 4, "uint8").numpy()
            assert not np.array_equal(lr, bicubic)


def test_extremes_compares_each_bands_valid_range_with_the_outputs(tiny_model, tmp_path, make_geotiff, synthetic_image):
    """extremes.py: per band, the valid input's and the output's range, the radiometry's and the share beyond it."""
    from geosr.inference import UpscaleOptions, upscale_raster

    extremes = _benchmark("extremes")
    data = synthetic_image(3, 40, 50, dtype="uint16", lo=1200, hi=4000)
    data[0, 3, 4], data[0, 0, 0] = 9000, 0  # a bright pixel, and a nodata one
    src = make_geotiff(tmp_path / "in.tif", data, nodata=0)
    predictor = load_predictor(tiny_model, device="cpu", precision="fp32")
    upscale_raster(src, tmp_path / "out.tif", predictor, UpscaleOptions(tile_size=32, overlap=8))
    rows = extremes.band_rows(src, tmp_path / "out.tif")
    assert len(rows) == 3
    numbers = re.fullmatch(
        r"  band  1: input (\S+)\.\.(\S+), output (\S+)\.\.(\S+), range (\S+)\.\.(\S+), beyond it (\S+)% of the "
        r"valid input",
        rows[0],
    )
    assert numbers, rows[0]
    low_in, high_in, low_out, high_out, low, high, beyond = (float(v) for v in numbers.groups())
    assert (low_in, high_in) == (data[0][data[0] > 0].min(), 9000)  # the nodata pixel is left out
    assert low_in <= low_out and high < high_out <= high_in  # the bright pixel beyond the range, given back
    assert 0 < beyond < 1


def test_lr_rounding_compares_a_once_rounded_lr_with_the_protocols(tmp_path):
    """lr_rounding.py: the LR resized in float and rounded once differs from geosr's (rounded after each pass) on
    some pixels, not all; the two bicubic baselines are close."""
    from testdata import smooth_image, write_image

    from geosr.datasets import find_images
    from geosr.evaluation import load_pair

    write_image(tmp_path / "d" / "a.png", smooth_image(3, 64, 64, seed=np.random.default_rng(3), look="scene"))
    pair = load_pair(find_images(tmp_path / "d", "all").items[0], 2)
    dp, ds, share = _benchmark("lr_rounding").compare(pair, 2)
    assert 0.01 < share < 0.9 and 0 < abs(dp) < 0.5 and abs(ds) < 0.01


def test_sample_read_makes_tiled_pixel_interleaved_rasters_and_times_their_radiometry(tmp_path, monkeypatch):
    sample_read = _benchmark("sample_read")
    monkeypatch.setattr(sample_read, "RASTERS", {"small.tif": (4, 512, "uint16")})
    (path,) = sample_read.make(tmp_path)
    with rasterio.open(path) as ds:
        assert ds.block_shapes[0] == (256, 256) and ds.interleaving.name.lower() == "pixel" and ds.count == 4
        assert ds.read(1).std() > 0
    assert sample_read.measure(path) > 0
