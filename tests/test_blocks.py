"""geosr.blocks: finished rows into the output's block (dtype, nodata, alpha, mask) and the error map's block."""

from __future__ import annotations

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from testdata import write_geotiff

from geosr.blocks import finish_rows, map_block, map_spec
from geosr.inference import UpscaleOptions, load_predictor
from geosr.inputrows import InputRows
from geosr.plan import make_plan
from geosr.raster import read_window
from geosr.strips import column_panels, make_strip

SIZE = 16


def _plan_and_rows(tmp_path, data, **profile):
    """The plan for ``data`` (bands, SIZE, SIZE) at x2 and the input rows of its first strip, held as the loop
    holds them."""
    src = write_geotiff(tmp_path / "in.tif", data, **profile)
    predictor = load_predictor(None, scale=2, device="cpu", precision="fp32")
    with rasterio.open(src) as ds:
        plan = make_plan(ds, src, tmp_path / "out.tif", predictor, UpscaleOptions(tile_size=16, overlap=8))
        panel = column_panels(plan.grid, (0, 2 * SIZE), plan.panel_width, plan.consistency)[0]
        raw, masks = read_window(ds, src, Window(0, 0, SIZE, SIZE), plan.colour + plan.alpha, plan.masks)
    n = len(plan.colour)
    strip = make_strip(
        plan.grid,
        panel,
        plan.groups,
        plan.real,
        plan.radiometry,
        0,
        raw[:n],
        None if masks is None else masks[:n],
        raw[n:],
    )
    held = InputRows(2, panel.x0)
    held.add(strip, SIZE)
    return plan, held


def test_nodata_pixels_get_the_fill_and_valid_values_stay_off_the_nodata_value(tmp_path):
    data = np.full((3, SIZE, SIZE), 100, np.uint8)
    data[:, :4, :4] = 0  # nodata in the input's corner
    plan, held = _plan_and_rows(tmp_path, data, nodata=0)
    values = torch.full((3, 2 * SIZE, 2 * SIZE), -1.0)  # the model's lowest value: 0, which is nodata
    block = finish_rows(plan, values, 0, 0, held)
    assert block.data.dtype == np.uint8 and block.data.shape == (3, 2 * SIZE, 2 * SIZE)
    assert (block.data[:, :8, :8] == 0).all()  # under the nodata input pixels: nodata
    assert (block.data[:, 8:, 8:] == 1).all()  # a valid value that would be nodata moves off it
    errors = map_block(plan, torch.ones((3, 2 * SIZE, 2 * SIZE)), 0, 0, held, 2.0)
    assert errors.data.dtype == np.float32 and np.isnan(errors.data[:, :8, :8]).all()
    assert np.isfinite(errors.data[:, 8:, 8:]).all() and (errors.data[:, 8:, 8:] > 0).all()


def test_an_alpha_band_is_copied_nearest_and_its_error_is_zero_where_opaque(tmp_path):
    data = np.full((4, SIZE, SIZE), 120, np.uint8)
    data[3] = 255
    data[3, SIZE // 2 :, :] = 0  # the bottom half transparent
    plan, held = _plan_and_rows(tmp_path, data, photometric="RGB", alpha="YES")
    assert plan.alpha, "the fourth band should be read as alpha"
    block = finish_rows(plan, torch.zeros((3, 2 * SIZE, 2 * SIZE)), 0, 0, held)
    alpha = block.data[[i for i, (kind, _) in enumerate(plan.layout) if kind == "a"][0]]
    assert (alpha[:SIZE] == 255).all() and (alpha[SIZE:] == 0).all()
    errors = map_block(plan, torch.ones((3, 2 * SIZE, 2 * SIZE)), 0, 0, held, 2.0)
    assert errors.data.shape[0] == 4 and (errors.data[3][:SIZE] == 0).all()
    assert np.isnan(errors.data[:, SIZE:]).all()  # transparent: no value, in every band of the map
    spec = map_spec(plan, "test")
    assert spec.profile["dtype"] == "float32" and np.isnan(spec.profile["nodata"]) and spec.profile["count"] == 4
