"""geosr.upscale_dataarray on Dask-backed DataArrays (geosr.lazy): the result stays lazy (no pixel computed before
``.compute()``), its blocks run on a dask.distributed cluster of worker processes that load the model from its file,
its pixels are the eager path's within 1 grey level (measured here: equal), and one radiometry serves the whole
array, never one per chunk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from testdata import CRS, TRANSFORM

import geosr
import geosr.lazy
from geosr.arrays import upscale_pixels
from geosr.lazy import TOKEN, ModelRef, axis_blocks, worker_predictor
from geosr.tiling import AxisTiling

dask = pytest.importorskip("dask")
dsa = pytest.importorskip("dask.array")
xr = pytest.importorskip("xarray")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = {"device": "cpu", "precision": "fp32"}


class Recorder:
    """A Dask scheduler (``dask.config.set(scheduler=Recorder())``) that runs graphs in this thread and keeps the
    keys of every graph it is given: what was computed."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def __call__(self, dsk, keys, **kwargs):
        graph = dsk.__dask_graph__() if hasattr(dsk, "__dask_graph__") else dsk  # an expression (newer Dask)
        self.keys += [str(k) for k in graph]
        return dask.get(dsk, keys, **kwargs)

    def blocks(self) -> list[str]:
        return [k for k in self.keys if TOKEN in k]


def georeferenced(data: np.ndarray, **chunks) -> xr.DataArray:
    """A (band, y, x) DataArray as rioxarray lays it out (x/y pixel centres, ``spatial_ref`` with the CRS and the
    GeoTransform), Dask-backed when chunks are given; no rioxarray needed."""
    _, h, w = data.shape
    spatial_ref = xr.Variable(
        (),
        0,
        attrs={
            "crs_wkt": rasterio.crs.CRS.from_string(CRS).to_wkt(),
            "GeoTransform": " ".join(str(v) for v in TRANSFORM.to_gdal()),
        },
    )
    coords = {
        "band": np.arange(1, data.shape[0] + 1),
        "y": TRANSFORM.f + (np.arange(h) + 0.5) * TRANSFORM.e,
        "x": TRANSFORM.c + (np.arange(w) + 0.5) * TRANSFORM.a,
        "spatial_ref": spatial_ref,
    }
    da = xr.DataArray(data, dims=("band", "y", "x"), coords=coords, attrs={"AREA_OR_POINT": "Area"})
    da.encoding["grid_mapping"] = "spatial_ref"
    return da.chunk(chunks) if chunks else da


def assert_same_georeferencing(lazy: xr.DataArray, eager: xr.DataArray) -> None:
    assert lazy.dims == eager.dims and lazy.shape == eager.shape and lazy.dtype == eager.dtype
    assert lazy.attrs == eager.attrs and lazy.encoding == eager.encoding
    assert set(lazy.coords) == set(eager.coords)
    for name in eager.coords:
        np.testing.assert_array_equal(lazy[name].values, eager[name].values)
        assert lazy[name].attrs == eager[name].attrs


@pytest.fixture(scope="module")
def client():
    """A dask.distributed cluster of 2 worker processes, 1 thread each."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def model(tiny_model):
    return geosr.load_model(tiny_model, **CPU)


# --- the blocks -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "chunks"),
    [(96, (48, 48)), (160, (64, 64, 32)), (131, (20,) * 6 + (11,)), (30, (10, 10, 10)), (500, (100,) * 5)],
)
@pytest.mark.parametrize("halo", [0, 10])
def test_a_block_runs_the_whole_arrays_tiles_that_reach_it_and_its_halo(size, chunks, halo):
    axis = AxisTiling(size, 32, 8, 2)
    blocks = axis_blocks(axis, chunks, halo)
    starts, stops = set(axis.starts), {a + axis.length for a in axis.starts}
    sizes = np.diff(blocks.bounds)
    assert blocks.bounds[-1] == size and blocks.depth <= axis.tile + halo
    assert len(sizes) == 1 or blocks.depth <= sizes.min()
    for i, (r0, r1) in enumerate(blocks.runs):
        b0, b1 = blocks.bounds[i], blocks.bounds[i + 1]
        e0, e1 = blocks.extended(i)
        assert e0 <= r0 <= b0 < b1 <= r1 <= e1 and r0 in starts and r1 in stops
        needed = axis.tiles_for(2 * max(0, b0 - halo), 2 * min(size, b1 + halo))
        assert axis.extent(needed[0])[0] == r0 and axis.extent(needed[-1])[1] == r1


# --- on a cluster -----------------------------------------------------------------------------------------------------


def test_a_dask_dataarray_stays_lazy_and_its_blocks_on_a_cluster_give_the_eager_pixels(
    client, tiny_model, synthetic_image
):
    distributed = pytest.importorskip("distributed")
    data = synthetic_image(3, 96, 160, seed=2)
    eager = geosr.upscale_dataarray(georeferenced(data), model=tiny_model, **CPU)
    recorder = Recorder()
    with dask.config.set(scheduler=recorder):
        lazy = geosr.upscale_dataarray(georeferenced(data, y=48, x=64), model=tiny_model, **CPU)
    assert isinstance(lazy.data, dsa.Array) and recorder.keys == []  # uint8: not even a sample is computed
    assert lazy.chunks == ((3,), (96, 96), (128, 128, 64))
    assert any(TOKEN in str(k) for k in dict(lazy.data.dask))
    assert_same_georeferencing(lazy, eager)
    assert json.loads(lazy.attrs["GEOSR_RADIOMETRY"])["low"] == [0, 0, 0]

    with distributed.get_task_stream(client) as stream:
        values = lazy.compute().values  # on the cluster: the client is the default scheduler
    workers = {task["worker"] for task in stream.data if TOKEN in str(task["key"])}
    assert workers and workers <= set(client.scheduler_info()["workers"])
    diff = np.abs(values.astype(int) - eager.values.astype(int))
    assert diff.max() <= 1, f"{int((diff > 0).sum())} pixels differ, by up to {diff.max()}"


def test_the_halves_of_one_float_scene_get_one_radiometry(client, tiny_model, synthetic_image):
    data = synthetic_image(3, 64, 128, seed=4, dtype=np.float32, lo=0, hi=1)
    data[:, :, 64:] = 500 + 100 * data[:, :, 64:]  # a dark and a bright half, one chunk each
    eager = geosr.upscale_dataarray(georeferenced(data), model=tiny_model, **CPU)
    recorder = Recorder()
    with dask.config.set(scheduler=recorder):
        lazy = geosr.upscale_dataarray(georeferenced(data, x=64), model=tiny_model, **CPU)
    assert recorder.keys and not recorder.blocks()  # the sample for the radiometry, and no block
    assert lazy.attrs["GEOSR_RADIOMETRY"] == eager.attrs["GEOSR_RADIOMETRY"]
    halves = [
        geosr.upscale_dataarray(georeferenced(data[:, :, half]), model=tiny_model, **CPU)
        for half in (slice(0, 64), slice(64, 128))
    ]
    assert all(h.attrs["GEOSR_RADIOMETRY"] != eager.attrs["GEOSR_RADIOMETRY"] for h in halves)  # a per-chunk stretch
    values = lazy.compute().values
    np.testing.assert_allclose(values, eager.values, rtol=0, atol=1e-5 * 600)  # float rounding; measured 1.8e-4
    right = halves[1].values[:, :, 16:]  # away from the halves' seam, a per-chunk stretch still differs
    assert np.abs(right - eager.values[:, :, 128 + 16 :]).max() > 1


# --- on one machine ---------------------------------------------------------------------------------------------------


def test_rioxarray_chunks_written_with_to_raster_equal_geosr_upscale(
    tmp_path, make_geotiff, synthetic_image, model, monkeypatch
):
    rioxarray = pytest.importorskip("rioxarray")
    calls = []
    monkeypatch.setattr(geosr.lazy, "upscale_pixels", lambda *a, **k: calls.append(1) or upscale_pixels(*a, **k))
    src = make_geotiff(
        tmp_path / "in.tif", synthetic_image(3, 70, 90, seed=5, dtype=np.uint16, lo=10, hi=4000), nodata=0
    )
    geosr.upscale(src, tmp_path / "file.tif", model=model)
    with dask.config.set(scheduler="threads"):
        da = rioxarray.open_rasterio(src, chunks={"y": 32, "x": 48})
        sr = geosr.upscale_dataarray(da, model=model)  # a loaded model: blocks in this process use it
        assert isinstance(sr.data, dsa.Array) and not calls  # no block has run
        sr.rio.to_raster(tmp_path / "lazy.tif")
    assert len(calls) == sr.data.npartitions > 1  # one run per block (chunks too short for the tiles merged)
    with rasterio.open(tmp_path / "file.tif") as a, rasterio.open(tmp_path / "lazy.tif") as b:
        assert a.transform.almost_equals(b.transform) and a.crs == b.crs and a.nodata == b.nodata
        assert np.abs(a.read().astype(int) - b.read().astype(int)).max() <= 1
        assert b.tags()["GEOSR_RADIOMETRY"] == a.tags()["GEOSR_RADIOMETRY"]


def test_errors_come_with_the_call_not_with_the_compute(tiny_model, model, synthetic_image):
    da = georeferenced(synthetic_image(3, 40, 40, seed=6), y=20, x=20)
    with pytest.raises(geosr.OptionError, match="bands"):
        geosr.upscale_dataarray(da, model=model, bands=[4])
    with pytest.raises(geosr.OptionError, match="1 band"):
        geosr.upscale_dataarray(da.isel(band=0), model=model, bands=[2])
    with pytest.raises(geosr.ModelFileError, match="SHA-256"):
        worker_predictor(ModelRef(str(tiny_model), "cpu", "fp32", False, "0" * 64))
