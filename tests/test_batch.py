"""geosr.batch's SharedModel under concurrency: many threads, tiles of several shapes, more files than slots; every
thread gets back its own tiles' output, and a folder batch with files in flight equals the one-at-a-time batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from testdata import write_geotiff

from geosr.batch import SharedModel
from geosr.inference import UpscaleOptions, load_predictor, plan_outputs, upscale_batch
from geosr.sources import input_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return load_predictor(tiny_model, device="cpu", precision="fp32")


def test_threads_with_tiles_of_different_shapes_each_get_their_own_output(predictor):
    """12 threads x 6 calls, tiles of three shapes (two of them transposed) and equal tiles in several requests:
    each call returns what the predictor alone returns for its tiles."""
    shapes = [(37, 91), (91, 37), (32, 32)]
    gen = torch.Generator().manual_seed(0)
    counts = (1, 2, 3, 1, 2, 3)
    requests = [
        [torch.rand(n, 3, *shapes[(t + c) % 3], generator=gen) * 2 - 1 for c, n in enumerate(counts)] for t in range(12)
    ]
    requests[5][0] = requests[4][0].clone()  # equal tiles in two requests at once
    expected = [[predictor.run(tiles) for tiles in calls] for calls in requests]
    shared = SharedModel(predictor, limit=4)
    got: dict[int, list] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(requests))

    def work(t: int) -> None:
        try:
            barrier.wait()
            got[t] = [shared.run(tiles) for tiles in requests[t]]
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(len(requests))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors[0]
    for t, calls in enumerate(expected):
        for c, want in enumerate(calls):
            # the same tiles in a batch of another size: equal up to float32 rounding of the convolutions
            torch.testing.assert_close(got[t][c], want, rtol=0, atol=1e-5, msg=f"thread {t}, call {c}")


def test_a_folder_of_mixed_shapes_with_files_in_flight_equals_one_at_a_time(
    predictor, tmp_path, make_geotiff, synthetic_image
):
    """A large raster beside thin ones of transposed shapes and more files than slots, four times over: every file
    done and every output equal to the one-at-a-time output bit for bit."""
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = [(160, 160), (37, 91), (91, 37), (37, 91), (91, 37), (20, 20), (45, 45), (91, 37), (37, 91)]
    for i, (h, w) in enumerate(sizes):
        make_geotiff(folder / f"f{i}.tif", synthetic_image(3, h, w, seed=i))
    options = UpscaleOptions(tile_size=32, overlap=8, batch_size=4)
    serial = upscale_batch(plan_outputs([folder], tmp_path / "one"), predictor, options)
    slow = _SlowModel(predictor)
    assert all(r.status == "done" for r in serial.results)
    for run in range(4):
        out = tmp_path / f"many{run}"
        summary = upscale_batch(plan_outputs([folder], out), slow, options, files_in_flight=4)
        assert [r.status for r in summary.results] == ["done"] * len(sizes), [r.message for r in summary.results]
        for i in range(len(sizes)):
            assert np.array_equal(_read(tmp_path / "one" / f"f{i}.tif"), _read(out / f"f{i}.tif")), (run, i)


def test_files_in_flight_run_the_model_on_the_callers_threads(predictor, tmp_path, make_geotiff, synthetic_image):
    """Each file's thread runs the model's calls on the intra-op threads of the thread that started the batch,
    however the strip loops of the other files set theirs meanwhile; the caller's setting is as before afterwards."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        make_geotiff(folder / f"f{i}.tif", synthetic_image(3, 70, 50, seed=i))
    slow, seen = _SlowModel(predictor), []
    run = slow.run
    slow.run = lambda tiles: seen.append(torch.get_num_threads()) or run(tiles)  # type: ignore[method-assign]
    torch.set_num_threads(2)
    try:
        options = UpscaleOptions(tile_size=32, overlap=8, batch_size=4)
        summary = upscale_batch(plan_outputs([folder], tmp_path / "out"), slow, options, files_in_flight=3)
        assert [r.status for r in summary.results] == ["done"] * 6
        assert seen and set(seen) == {2}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


class _SlowModel:
    """The predictor with every model call taking at least 20 ms, so that the other files' requests pile up."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def run(self, tiles):
        time.sleep(0.02)
        return self.predictor.run(tiles)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as d:
        return d.read()


def test_files_that_end_together_finish_in_batch_order_whatever_their_kind(predictor, tmp_path):
    """Remote and local inputs ending in the same wait (here all skipped at once) are taken in the batch's order."""
    pairs = [
        (tmp_path / "a.tif", tmp_path / "out" / "a.tif"),
        (input_spec("https://example.invalid/b.tif"), tmp_path / "out" / "b.tif"),
        (tmp_path / "c.tif", tmp_path / "out" / "c.tif"),
    ]
    for _, dst in pairs:  # finished outputs of an earlier run
        write_geotiff(dst, np.zeros((3, 8, 8), np.uint8))
        with rasterio.open(dst, "r+") as ds:
            ds.update_tags(GEOSR_SCALE=str(predictor.scale))
    heard: list[str] = []

    def on_result(result) -> None:
        heard.append(result.dst.name)
        if len(heard) == 1:
            time.sleep(0.2)  # the other two end meanwhile and come back from one wait

    summary = upscale_batch(pairs, predictor, skip_existing=True, on_result=on_result, files_in_flight=3)
    assert [r.reason for r in summary.results] == ["exists"] * 3
    assert [r.dst.name for r in summary.results] == ["a.tif", "b.tif", "c.tif"]
    assert sorted(heard) == ["a.tif", "b.tif", "c.tif"]  # each heard of once, in whatever order the waits gave
