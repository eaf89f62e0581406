"""geosr.strips: the strip loop that tiles, batches and blends. Through upscale_raster on synthetic rasters: tiles
and column panels blend to the whole-image output of a local model (with and without the consistency correction),
rasters from one pixel up, tiles without a valid pixel never run through the model; marked slow, the seam index of
a default-architecture DEGAN. On small grids: the column panels and tile rows that reach an output range, the tiles
a strip marks to do, and the input rows held under finished output rows."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from testdata import FAST, read_raster

from geosr.consistency import DEFAULT_HALO, project
from geosr.inputrows import InputRows, Strip
from geosr.options import UpscaleOptions
from geosr.pipeline import upscale_raster
from geosr.predictor import load_predictor
from geosr.radiometry import Radiometry
from geosr.strips import column_panels, make_strip, tile_rows
from geosr.tiling import TileGrid, seam_index

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- panels, tile rows, strips on small grids -------------------------------------------------------------------------


@pytest.mark.parametrize("consistency", [False, True])
def test_column_panels_split_the_output_columns_and_list_the_tiles_that_reach_them(consistency):
    grid = TileGrid(70, 300, 32, 8, scale=2)  # tile columns start at 0, 24, ..., 264 and 268 (the last moved in)
    panels = column_panels(grid, (0, 600), 128, consistency)
    assert [(p.c0, p.c1) for p in panels] == [(0, 256), (256, 512), (512, 600)]  # 128 input columns each
    halo = 2 * DEFAULT_HALO if consistency else 0
    for p in panels:
        assert (p.e0, p.e1) == (max(0, p.c0 - halo), min(600, p.c1 + halo))
        assert p.tiles == grid.cols.tiles_for(p.e0, p.e1) and p.tiles == tuple(range(p.tiles[0], p.tiles[-1] + 1))
        assert (p.x0, p.x1) == (grid.cols.extent(p.tiles[0])[0], grid.cols.extent(p.tiles[-1])[1])
        assert 2 * p.x0 <= p.e0 and 2 * p.x1 >= p.e1  # the input read covers the columns blended
    assert panels[-1].tiles[-1] == len(grid.cols) - 1 and panels[-1].x1 == 300
    # an output range inside the grid (an AOI's): one panel of its columns, from its first one
    [inner] = column_panels(grid, (100, 200), 512, consistency)
    assert (inner.c0, inner.c1, inner.e0, inner.e1) == (100, 200, 100 - halo, 200 + halo)


def test_tile_rows_are_those_that_reach_the_output_rows_or_their_halo():
    grid = TileGrid(200, 40, 32, 8, scale=2)  # tile rows start at 0, 24, ..., 168
    assert tile_rows(grid, (0, 400), False) == tuple(range(len(grid.rows)))
    assert tile_rows(grid, (100, 140), False) == grid.rows.tiles_for(100, 140) == (1, 2)
    widened = tile_rows(grid, (100, 140), True)  # 2 * halo output rows more on each side
    assert widened == grid.rows.tiles_for(100 - 2 * DEFAULT_HALO, 140 + 2 * DEFAULT_HALO) == (1, 2, 3)


def test_a_strip_marks_the_tiles_of_a_band_group_that_hold_a_valid_pixel():
    grid = TileGrid(32, 152, 32, 8, scale=2)  # one tile row; tile columns start at 0, 24, 48, 72, 96, 120
    [panel] = column_panels(grid, (0, 304), 512, False)
    radiometry = Radiometry("uint8", (0.0,) * 5, (255.0,) * 5, (0.0,) * 5, "given")
    raw = np.full((5, 32, 152), 51, np.uint8)
    masks = np.full(raw.shape, 255, np.uint8)
    masks[:, :, 48:80] = 0  # the whole of tile 2 (48..80), parts of tiles 1 and 3
    masks[3:, :, 96:] = 0  # bands 4 and 5 from column 96: tiles 4 and 5 of the second group
    groups, real = ((0, 1, 2), (3, 4, 4)), (3, 2)
    strip = make_strip(grid, panel, groups, real, radiometry, 0, raw, masks, raw[:0])
    assert isinstance(strip, Strip) and strip.y0 == 0 and strip.extra.shape == (0, 32, 152)
    assert strip.todo.T.tolist() == [[True, True, False, True, True, True], [True, True, False, True, False, False]]
    assert strip.x.dtype == np.float32 and strip.x[0, 0, 0] == pytest.approx(2 * 51 / 255 - 1)
    assert strip.x[0, 0, 50] == 0.0 and not strip.valid[0, 0, 50]  # invalid pixels: the fill, in model units


def test_input_rows_hold_overlapping_strips_once_and_give_them_under_output_rows():
    def strip(y0: int, h: int) -> Strip:
        rows = np.arange(y0, y0 + h)[None, :, None] * np.ones((1, 1, 6), int)  # each pixel holds its row number
        return Strip(y0, np.zeros((1, h, 6), np.float32), rows % 3 > 0, rows, np.zeros((0, 1), bool))

    held = InputRows(scale=2, x0=10)  # input column 10 is the first held
    held.add(strip(0, 8), 8)
    held.add(strip(5, 8), 8)  # rows 5..7 again
    assert held.start == 0 and held.extra[0, :, 0].tolist() == list(range(13))
    under = held.under(held.extra, r0=4, c0=21, h=4, w=3)  # output rows 4..7 lie over input rows 2, 2, 3, 3
    assert under.shape == (1, 4, 3) and under[0, :, 0].tolist() == [2, 2, 3, 3]
    np.testing.assert_array_equal(held.under(held.valid, 4, 21, 4, 3)[0, :, 0], [True, True, False, False])
    held.drop_before(6)
    assert held.start == 6 and held.extra[0, :, 0].tolist() == list(range(6, 13))
    assert held.under(held.extra, 14, 20, 2, 2)[0].tolist() == [[7, 7], [7, 7]]


# --- tiling is exact for a local model --------------------------------------------------------------------------------


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
    np.testing.assert_allclose(read_raster(dst), (np.clip(whole, -1, 1) + 1) / 2, rtol=0, atol=2e-5)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 9), (5, 3), (70, 2), (33, 65)])
def test_rasters_from_one_pixel_up_are_padded_and_cropped_back(predictor, tiny_model_x4, tmp_path, make_geotiff, h, w):
    data = np.arange(3 * h * w, dtype=np.uint8).reshape(3, h, w)
    src = make_geotiff(tmp_path / "small.tif", data)
    upscale_raster(src, tmp_path / "x2.tif", predictor)
    assert read_raster(tmp_path / "x2.tif").shape == (3, 2 * h, 2 * w)
    upscale_raster(src, tmp_path / "x4.tif", load_predictor(tiny_model_x4, device="cpu", precision="fp32"))
    with rasterio.open(tmp_path / "x4.tif") as d:
        assert d.shape == (4 * h, 4 * w) and d.bounds == pytest.approx(rasterio.open(src).bounds)


# --- tiles without a valid pixel --------------------------------------------------------------------------------------


def test_a_fully_nodata_raster_gives_a_fully_nodata_output_without_running_the_model(predictor, tmp_path, make_geotiff):
    src = make_geotiff(tmp_path / "empty.tif", np.zeros((2, 300, 400), np.uint16), nodata=0)
    result = upscale_raster(src, tmp_path / "out.tif", predictor, FAST)
    assert result.tiles == 0
    with rasterio.open(tmp_path / "out.tif") as d:
        assert d.nodata == 0 and d.shape == (600, 800) and not d.read_masks().any()


def test_all_nodata_tiles_are_skipped(predictor, tmp_path, make_geotiff, synthetic_image):
    data = synthetic_image(3, 100, 300, dtype=np.uint16, lo=1, hi=5000)
    data[:, :, :200] = 0
    src = make_geotiff(tmp_path / "half.tif", data, nodata=0)
    full = upscale_raster(make_geotiff(tmp_path / "all.tif", data), tmp_path / "a.tif", predictor, FAST)
    half = upscale_raster(src, tmp_path / "b.tif", predictor, FAST)
    assert half.tiles < full.tiles * 0.6
    out = read_raster(tmp_path / "b.tif")
    assert (out[:, :, :400] == 0).all() and (out[:, :, 400:] != 0).all()  # valid pixels never become nodata


# --- slow: seams of the default architecture --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.shared_data
def test_default_degan_shows_no_seams_with_the_card_defaults(make_model, geotiff_dir, tmp_path):
    """A random-weight DEGAN of the default architecture, card defaults (tile 64, overlap 16, x4), on real data; on
    every core (nothing else runs)."""
    from geosr.device import intra_op_threads, usable_cores

    model = make_model("degan-default-x4", scale=4, tile_size=64, overlap=16)
    pred = load_predictor(model, device="cpu")
    crop = tmp_path / "crop.tif"
    with rasterio.open(geotiff_dir / "rasterio" / "RGB.byte.tif") as ds:
        w = Window(230, 230, 320, 320)  # inside the scene, away from its nodata collar
        profile = dict(ds.profile, width=w.width, height=w.height, transform=ds.window_transform(w))
        with rasterio.open(crop, "w", **profile) as d:
            d.write(ds.read(window=w))
    with intra_op_threads(usable_cores()):
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


# --- threads ----------------------------------------------------------------------------------------------------------


class _CountingThreads(torch.nn.Module):
    """A model that records torch's intra-op threads at each call (and then fails, if asked to)."""

    def __init__(self, model: torch.nn.Module, fails: bool) -> None:
        super().__init__()
        self.model, self.fails, self.seen = model, fails, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        if self.fails:
            raise RuntimeError("the model fails")
        return self.model(x)


@pytest.mark.parametrize("fails", [False, True])
def test_on_a_cpu_the_model_runs_on_torch_s_threads_and_the_loop_s_own_work_on_one(
    predictor, tmp_path, make_geotiff, synthetic_image, fails
):
    """The model's calls see the thread count the caller set; the loop around them (here: the progress callback
    after each batch of tiles) sees one; the caller's count is back afterwards, also when the model fails."""
    import dataclasses

    counting = _CountingThreads(predictor.model, fails)
    pred = dataclasses.replace(predictor, model=counting)
    src = make_geotiff(tmp_path / "in.tif", synthetic_image(3, 90, 120))
    loop = []  # (tiles done, threads) at each progress call

    def progress(p) -> None:
        loop.append((p.tiles_done, torch.get_num_threads()))

    torch.set_num_threads(2)
    try:
        if fails:
            with pytest.raises(RuntimeError, match="the model fails"):
                upscale_raster(src, tmp_path / "out.tif", pred, FAST, progress)
            assert counting.seen == [2]
        else:
            upscale_raster(src, tmp_path / "out.tif", pred, FAST, progress)
            assert counting.seen and set(counting.seen) == {2}
            assert {n for done, n in loop if done > 0} == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
