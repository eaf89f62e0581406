"""geosr.inference, the public face of inference for scripts: the names it re-exports are those of the modules that
own them; plan_outputs and upscale_batch as scripts call them (a batch goes on after a failed file, files in flight
give the one-at-a-time outputs and stop cleanly); the self-ensemble asked on the command line, down to the output
and its tags; distributed_rank, kept for scripts. Each module behind it has its own test file: test_upscale_options.py
(geosr.options), test_predictor.py, test_plan.py, test_strips.py, test_pipeline.py, test_batch.py and
test_batch_report.py (geosr.report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from testdata import FAST, file_names, read_raster

import geosr.batch
import geosr.inference
import geosr.options
import geosr.pipeline
import geosr.predictor
import geosr.raster
from geosr.errors import GeosrError, OptionError
from geosr.inference import UpscaleOptions, distributed_rank, plan_outputs, upscale_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_facade_re_exports_the_owners_names():
    owners = {
        geosr.options: ["UpscaleOptions"],
        geosr.predictor: ["Predictor", "load_predictor"],
        geosr.pipeline: ["FileResult", "Progress", "ProgressCallback", "upscale_raster"],
        geosr.batch: ["BatchSummary", "upscale_batch"],
        geosr.raster: ["output_name", "plan_outputs"],
    }
    for module, names in owners.items():
        for name in names:
            assert getattr(geosr.inference, name) is getattr(module, name), name
    assert sorted(geosr.inference.__all__) == sorted(
        [n for names in owners.values() for n in names] + ["distributed_rank"]
    )


# --- batches ----------------------------------------------------------------------------------------------------------


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
        ("4.png", "4.png"),
        ("a/1.tif", "a/1.tif"),
        ("a/2.TIF", "a/2.TIF"),
        ("b/c/3.vrt", "b/c/3.tif"),
    ]
    single = plan_outputs([tiles / "a" / "1.tif"], tmp_path / "one.tif")
    assert single == [(tiles / "a" / "1.tif", tmp_path / "one.tif")]
    into = plan_outputs([tiles / "b" / "c" / "3.vrt"], f"{tmp_path}/new/")  # a folder yet to be made: the slash says so
    assert into == [(tiles / "b" / "c" / "3.vrt", tmp_path / "new" / "3.tif")]
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
    assert file_names(tmp_path / "out") == ["t0.tif", "t2.tif"]
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
    for name in file_names(tmp_path / "one"):
        assert np.array_equal(read_raster(tmp_path / "one" / name), read_raster(tmp_path / "many" / name)), name
    assert file_names(tmp_path / "many") == file_names(tmp_path / "one")
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
    seen = []
    with pytest.raises(KeyboardInterrupt):
        upscale_batch(
            pairs,
            _SlowModel(predictor, 0.02),
            UpscaleOptions(tile_size=32, overlap=8, batch_size=2),
            progress=progress,
            files_in_flight=3,
            on_result=seen.append,
        )
    left = file_names(tmp_path / "out")
    assert len(left) < 6 and all(name.endswith(".tif") and not name.startswith(".") for name in left)
    for name in left:
        assert read_raster(tmp_path / "out" / name).shape == (3, 120, 120)
    # every output that ended whole is reported done, also one that ended while the batch was stopping (a report
    # would otherwise call it interrupted, nothing written)
    assert sorted(r.dst.name for r in seen if r.status == "done") == sorted(left)


def test_files_in_flight_must_be_a_positive_integer(predictor, tmp_path):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(OptionError, match="files in flight .*: must be an integer of at least 1"):
            upscale_batch([], predictor, files_in_flight=bad)


# --- the self-ensemble from the command line, distributed_rank --------------------------------------------------------


def test_self_ensemble_from_the_command_line_is_recorded_in_the_output(tiny_model, rgb_tif, tmp_path):
    from click.testing import CliRunner

    from geosr.cli.main import cli

    outs = {}
    for name, extra in (("plain", []), ("ens", ["--self-ensemble"])):
        outs[name] = tmp_path / f"{name}.tif"
        r = CliRunner().invoke(
            cli,
            [
                "-q",
                "upscale",
                str(rgb_tif),
                "-o",
                str(outs[name]),
                "--model",
                str(tiny_model),
                "--precision",
                "fp32",
                *extra,
            ],
        )
        assert r.exit_code == 0, r.output
    with rasterio.open(outs["ens"]) as d:
        tag = d.tags()["GEOSR_SELF_ENSEMBLE"]
        assert tag.startswith("on:") and "flips and transposes" in tag and d.shape == (140, 180)
    with rasterio.open(outs["plain"]) as d:
        assert d.tags()["GEOSR_SELF_ENSEMBLE"].startswith("off:")
    assert not np.array_equal(read_raster(outs["plain"]), read_raster(outs["ens"]))


def test_distributed_rank_is_kept_for_scripts(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed_rank() == (0, 1, None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed_rank() == (1, 2, 1)
