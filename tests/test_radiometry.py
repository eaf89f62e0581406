"""geosr.radiometry, the one owner of "raster values <-> model range": the forward and inverse mapping, rounding to
the dtype's grid, the value range estimate, invalid pixels and extreme values.

The tests at the end check that upscale, evaluation and the training loader map one nodata GeoTIFF identically.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
import torch

from geosr.datasets import find_images, image_radiometry, read_image
from geosr.evaluation import load_pair
from geosr.inference import UpscaleOptions, load_predictor, upscale_raster
from geosr.pictures import to_uint8_image
from geosr.radiometry import (
    EXTREME,
    MODEL_RANGE,
    Radiometry,
    compute_radiometry,
    dtype_range,
    integer_range,
    restore_excess,
    round_half_away,
    to_dtype_grid,
    upsampled_points,
    valid_mask,
)
from geosr.resize import _round_clip
from geosr.training.data import PatchDataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HALVES = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]
AWAY = [-3, -2, -1, 1, 2, 3]  # np.rint gives -2, -2, -0, 0, 2, 2; floor(x + 0.5) gives -2, -1, 0, 1, 2, 3


def mapping(dtype: str, low, high, fill=None) -> Radiometry:
    n = len(low)
    return Radiometry(dtype, tuple(map(float, low)), tuple(map(float, high)), tuple(fill or [0.0] * n), "test")


# --- rounding -------------------------------------------------------------------------------------------------------


def test_halves_round_away_from_zero_in_numpy_and_torch():
    np.testing.assert_array_equal(round_half_away(np.array(HALVES)), AWAY)
    assert round_half_away(torch.tensor(HALVES, dtype=torch.float64)).tolist() == AWAY
    # the bicubic degradation of training and evaluation rounds its integer images by the same rule
    assert _round_clip(torch.tensor(HALVES, dtype=torch.float64), -10, 10).tolist() == AWAY
    np.testing.assert_array_equal(
        to_dtype_grid(np.array([-0.5, 0.5, 254.5, 255.5, 300.0]), "uint8"), [0, 1, 255, 255, 255]
    )


def test_the_inverse_mapping_and_the_preview_round_halves_the_same_way():
    # int16 over -8..8: model value m maps to 8 m (all exact in binary), so m = h / 8 lands on the half h
    r = mapping("int16", [-8], [8])
    m = np.array(HALVES, np.float64).reshape(1, 1, -1) / 8
    np.testing.assert_array_equal(r.from_model(m)[0, 0], AWAY)
    # uint8 previews of evaluation: 0.5 and 2.5 grey levels go up, as everywhere else
    pair = type("P", (), {"to_255": lambda self, x: x.double()})()
    assert to_uint8_image(torch.tensor([[[0.5, 2.5, 254.5]]]), pair).tolist() == [[[1, 3, 255]]]


@pytest.mark.parametrize(
    "dtype, low, high",
    [
        ("uint8", [0, 0], [255, 255]),
        ("uint16", [1200, 0], [4000.5, 65535]),
        ("int16", [-8, -300], [8, 2500]),
        ("float32", [0.1, -2.0], [0.9, 3.0]),
        ("int32", [-70000, 0], [90000, 1e6]),  # int32: float64 work, numpy path
        ("uint16", [-100, 0], [70000, 9]),  # a given range beyond the dtype's: clipped to it as well
        ("int16", [0, 5], [300, 3000]),
        ("int8", [-128, -3], [127, 4]),  # rounding without (with) negative values
    ],
)
def test_the_inverse_mapping_of_a_tensor_equals_the_arrays_bit_for_bit(dtype, low, high):
    """geosr.strips maps the blended values back on the model's device: the same values as the numpy path (rows
    enough for several of the passes the tensor path makes)."""
    r = mapping(dtype, low, high)
    rng = np.random.default_rng(3)
    m = rng.uniform(-1.2, 1.2, (2, 300, 640)).astype(np.float32)  # beyond the range too: the clamp
    m[:, 0, :6] = np.array(HALVES, np.float32) / 8  # and some halves
    expected = r.from_model(m)
    got = r.from_model(torch.from_numpy(m.copy()))
    assert got.dtype == expected.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, expected)


# --- forward and inverse ------------------------------------------------------------------------------------------


def test_uint8_maps_0_255_linearly_and_back_exactly():
    r = compute_radiometry(np.zeros((3, 1, 1)), np.ones((3, 1, 1), bool), "uint8")
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(3, axis=0)
    y = r.to_model(x)
    assert y.dtype == np.float32 and y.min() == -1 and y.max() == 1
    np.testing.assert_allclose(y, x / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(r.from_model(y), x)


def test_percentiles_ignore_invalid_pixels_and_constant_bands_keep_their_value():
    sample = np.stack([np.linspace(0, 1000, 10001), np.full(10001, 7.0)]).reshape(2, 1, -1)
    valid = np.ones_like(sample, bool)
    r = compute_radiometry(sample, valid, "int16")
    assert r.low[0] == pytest.approx(0.5) and r.high[0] == pytest.approx(999.5)
    assert r.high[1] == r.low[1] == 7.0 and r.fill[1] == -1.0
    x = np.array([[[0, 500, 1000]], [[7, 7, 9]]], np.int16)
    # 0 lies below the range: it comes back as the range's low end 0.5, rounded half away from zero; the constant
    # band maps to -1 whatever its value, and any model value back to 7; 0, 1000 and 9 are excess (upscale adds it)
    y = r.to_model(x)
    np.testing.assert_array_equal(y[1], -1.0)
    np.testing.assert_array_equal(r.from_model(y), [[[1, 500, 1000]], [[7, 7, 7]]])
    np.testing.assert_array_equal(r.from_model(np.full((2, 1, 3), 0.3, np.float32))[1], 7)
    assert [a.tolist() for a in r.excess(x)] == [[0, 0, 1], [0, 0, 0], [0, 2, 2], [-0.5, 0.5, 2.0]]
    valid[0, 0, :5000] = False  # the lower half is nodata: it takes no part in the range
    assert compute_radiometry(sample, valid, "int16").low[0] == pytest.approx(500.25)
    with pytest.raises(ValueError, match="empty"):
        compute_radiometry(sample, valid, "float32", value_range=(5, 5))


def test_the_inverse_clamps_model_values_so_outputs_stay_in_the_input_range():
    u16 = mapping("uint16", [1200, 1200], [4000, 4000])
    f32 = mapping("float32", [0.5, 0.5], [2.0, 2.0])
    overshoot = np.array([-1.4, -1.0001, -1.0, 0.0, 1.0, 1.5], np.float32).reshape(2, 1, 3)
    out = u16.from_model(overshoot)
    assert out.dtype == np.uint16 and out.min() == 1200 and out.max() == 4000  # no 0 from -1.4
    out = f32.from_model(overshoot)
    assert out.dtype == np.float32 and out.min() == 0.5 and out.max() == 2.0  # no negative value


def test_fill_values_are_on_the_dtype_grid_and_map_to_the_fill():
    r = mapping("uint16", [1000], [2000], fill=[0.1234])
    (fill,) = r.fill_values()
    assert fill == 1562  # 1000 + 1.1234 * 500 = 1561.7, on the uint16 grid
    data = np.array([[[0, 1500, 0]]], np.uint16)
    r.fill_invalid(data, data > 0)
    np.testing.assert_array_equal(data, [[[1562, 1500, 1562]]])
    np.testing.assert_allclose(r.to_model(data)[0, 0, [0, 2]], 0.1234, atol=1 / 500)


# --- invalid and extreme values ---------------------------------------------------------------------------------------


def test_valid_mask_takes_gdal_masks_non_finite_and_extreme_floats():
    data = np.array([[[1.0, np.nan, np.inf, -np.inf, -3.4028235e38, -1e30, 9.9e29, 0.0]]], np.float32)
    masks = np.full(data.shape, 255, np.uint8)
    masks[0, 0, -1] = 0
    np.testing.assert_array_equal(valid_mask(data, masks)[0, 0], [1, 0, 0, 0, 0, 0, 1, 0])
    assert valid_mask(np.zeros((1, 2, 2), np.uint16), None).all()


def float_with_fill(fill: float, seed: int = 0) -> np.ndarray:
    """A (2, 40, 50) all-positive float32 raster whose left 15 columns hold ``fill``."""
    rng = np.random.default_rng(seed)
    data = rng.uniform(0.2, 0.8, (2, 40, 50)).astype(np.float32)
    data[:, :, :15] = fill
    return data


def test_an_undeclared_extreme_fill_does_not_poison_valid_pixels():
    data = float_with_fill(-3.4028235e38)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw numpy warning on the way
        valid = valid_mask(data, None)
        r = compute_radiometry(data, valid, "float32")
        x = r.to_model(data, valid)
        back = r.from_model(x)
    clean = float_with_fill(np.nan)
    r_clean = compute_radiometry(clean, valid_mask(clean, None), "float32")
    assert r == r_clean and 0.2 <= r.low[0] < r.high[0] <= 0.8
    np.testing.assert_array_equal(x, r_clean.to_model(clean, valid_mask(clean, None)))
    assert np.isfinite(back).all() and back.min() >= min(r.low) and back.max() <= max(r.high)


def test_huge_finite_ranges_neither_overflow_nor_warn():
    data = np.array([[[-3.4e38, -1.0, 0.0, 1.0, 3.4e38]]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = compute_radiometry(data, np.ones(data.shape, bool), "float32", value_range=(-3.4e38, 3.4e38))
        x = r.to_model(data)
        back = r.from_model(x)
        # an extreme value among valid ones (not masked: the caller said it is valid) is clipped, not overflowed
        r2 = compute_radiometry(data, np.ones(data.shape, bool), "float32")
        y = r2.to_model(data)
    np.testing.assert_allclose(x[0, 0], [-1, 0, 0, 0, 1], atol=1e-6)
    assert np.isfinite(back).all() and back.dtype == np.float32 and np.isfinite(y).all()
    assert y.min() >= MODEL_RANGE[0] and y.max() <= MODEL_RANGE[1]
    with pytest.raises(ValueError, match="not finite"):
        compute_radiometry(data, np.ones(data.shape, bool), "float32", value_range=(0, np.inf))


def test_dtype_ranges():
    assert dtype_range("uint16") == (0.0, 65535.0) and integer_range("int8") == (-128.0, 127.0)
    assert integer_range("float32") is None and EXTREME == 1e30


# --- one mapping for upscale, evaluation and training -------------------------------------------------------------


class Recording:
    """A predictor that records the model-range tiles upscale gives it (everything else is the real predictor's)."""

    def __init__(self, predictor) -> None:
        self._predictor, self.tiles = predictor, []

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def run(self, tiles):
        self.tiles.append(tiles.cpu().numpy().copy())
        return self._predictor.run(tiles)


def nodata_raster(kind: str) -> tuple[np.ndarray, float]:
    """(3, 40, 40) pixels with a nodata border of 6 pixels on two sides, and the nodata value."""
    rng = np.random.default_rng(7)
    if kind == "uint16":
        data, nodata = rng.integers(1200, 4001, (3, 40, 40)).astype(np.uint16), 0.0
    else:
        data, nodata = rng.uniform(0.1, 0.9, (3, 40, 40)).astype(np.float32), -9999.0
    data[:, :6, :] = nodata
    data[:, :, -6:] = nodata
    return data, nodata


def symmetries(x: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(f, k, axes=(1, 2)) for f in (x, x[:, :, ::-1]) for k in range(4)]


@pytest.mark.parametrize("kind", ["uint16", "float32"])
def test_a_nodata_geotiff_is_mapped_identically_by_upscale_evaluation_and_training(
    kind, tiny_model, tmp_path, make_geotiff
):
    data, nodata = nodata_raster(kind)
    (tmp_path / "scenes").mkdir()
    src = make_geotiff(tmp_path / "scenes" / "a.tif", data, nodata=nodata)
    valid = data != nodata

    # upscale: one 64-pixel tile holds the whole raster; its top-left 40 x 40 are the mapped pixels
    predictor = Recording(load_predictor(tiny_model, device="cpu", precision="fp32"))
    upscale_raster(src, tmp_path / "up.tif", predictor, UpscaleOptions(tile_size=64, overlap=16))
    upscale_input = predictor.tiles[0][0, :, :40, :40]
    with rasterio.open(tmp_path / "up.tif") as out:
        described = json.loads(out.tags()["GEOSR_RADIOMETRY"])

    r = image_radiometry(src, [1, 2, 3])  # what evaluation and training use
    assert json.loads(r.describe()) == described
    assert min(r.low) >= (1200 if kind == "uint16" else 0.1)  # the nodata value is no part of the range
    np.testing.assert_array_equal(r.to_model(data, valid), upscale_input)

    # evaluation: the same radiometry; the HR's nodata pixels take its fill values before the LR is made
    pair = load_pair(find_images(tmp_path / "scenes").items[0], 2)
    assert pair.radiometry == r
    evaluated = pair.radiometry.to_model(pair.hr.numpy())
    np.testing.assert_array_equal(evaluated[valid], upscale_input[valid])
    # invalid pixels: the fill, up to its rounding to the dtype's grid (half a grey level: 1 / (high - low) in the
    # model's range) for integers, to float32 precision for floats
    grey = 1 / min(np.subtract(r.high, r.low)) if kind == "uint16" else 0.0
    np.testing.assert_allclose(evaluated[~valid], upscale_input[~valid], rtol=0, atol=grey + 1e-6)

    # training: the same radiometry, and a whole-image patch is one of the 8 symmetries of evaluation's mapping
    for cache_mb in (4096, 0):  # decoded into memory, or read by windows
        ds = PatchDataset(
            find_images(tmp_path / "scenes").items, scale=2, patch_size=40, bands=[1, 2, 3], cache_mb=cache_mb
        )
        assert ds.sources[0].radiometry == r
        hr, _ = ds[(0, 0, 0)]
        assert any(np.array_equal(hr.numpy(), s) for s in symmetries(evaluated))


def test_extreme_fill_values_are_filled_in_training_and_evaluation_data(tmp_path, make_geotiff):
    data = float_with_fill(-3.4e38)
    path = make_geotiff(tmp_path / "fill.tif", data)
    r = image_radiometry(path, [1, 2])
    assert min(r.low) >= 0.2 and max(r.high) <= 0.8
    filled = read_image(path, [1, 2], radiometry=r)
    np.testing.assert_array_equal(filled[:, :, 15:], data[:, :, 15:])
    np.testing.assert_array_equal(filled[:, :, :15], np.broadcast_to(r.fill_values()[:, None, None], (2, 40, 15)))


# --- upscale gets the clamp and the extreme-value handling without code of its own --------------------------------


class Overshooting(Recording):
    """A predictor whose output overshoots the model's range: 1.5 times the nearest upsampling of its input."""

    def run(self, tiles):
        s = self.scale
        return 1.5 * tiles.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)


@pytest.mark.parametrize("dtype, lo, hi", [("uint16", 1200, 4000), ("float32", 0.5, 2.0)])
def test_upscale_outputs_stay_in_the_input_range_when_the_model_overshoots(
    dtype, lo, hi, tiny_model, tmp_path, make_geotiff, synthetic_image
):
    data = synthetic_image(3, 40, 50, dtype=dtype, lo=lo, hi=hi)
    src = make_geotiff(tmp_path / "in.tif", data)
    predictor = Overshooting(load_predictor(tiny_model, device="cpu", precision="fp32"))
    upscale_raster(src, tmp_path / "out.tif", predictor, UpscaleOptions(tile_size=32, overlap=8))
    with rasterio.open(tmp_path / "out.tif") as out:
        r = json.loads(out.tags()["GEOSR_RADIOMETRY"])
        values = out.read()
    assert lo <= min(r["low"]) and max(r["high"]) <= hi
    # within the percentiles, and beyond them only where the input is (the clip's excess given back)
    assert values.min() >= data.min() and values.max() <= data.max()
    assert values.min() >= lo  # no 0 in a uint16 raster whose minimum is 1200; nothing negative from positive floats


def test_the_excess_is_what_the_clip_takes_and_is_given_back_on_the_dtype_grid():
    r = mapping("uint16", [1000], [4000])
    data = np.array([[[500, 2000, 60000, 65535]]], np.uint16)
    valid = np.array([[[True, True, True, False]]])
    b, i, j, v = r.excess(data, valid)  # only the valid pixels beyond the range
    assert (b.tolist(), i.tolist(), j.tolist(), v.tolist()) == ([0, 0], [0, 0], [0, 2], [-500, 56000])
    assert r.excess(np.array([[[1000, 4000]]], np.uint16)) is None  # nothing beyond the range
    assert mapping("uint8", [0], [255]).excess(np.array([[[0, 255]]], np.uint8)) is None
    b, i, j, v = mapping("float32", [0.0], [1.0]).excess(np.array([[[np.nan, 3.5, -1e31]]], np.float32), None)
    assert (j.tolist(), v.tolist()) == ([1], [2.5])  # NaN and fill values are not measurements
    out = np.array([[[1000, 2000, 3990, 4000]]], np.uint16)  # model values mapped back: within [low, high]
    points = (np.zeros(3, int), np.zeros(3, int), np.array([0, 2, 3]), np.array([-500.4, 56000.5, 62000]))
    restore_excess(out, upsampled_points(points, 1, (0, 0), (1, 4)), "uint16")
    np.testing.assert_array_equal(out, [[[500, 2000, 59991, 65535]]])  # rounded half away, clipped to uint16
    # x2, a block from output row 1 and column 2: each input pixel on its 2 x 2 output pixels, those in the block
    points = (np.array([0, 0]), np.array([0, 1]), np.array([2, 1]), np.array([7.0, 5.0]))
    b, r, c, v = upsampled_points(points, 2, (1, 2), (3, 3))
    assert sorted(zip(b.tolist(), r.tolist(), c.tolist(), v.tolist())) == [
        (0, 0, 2, 7.0),  # input (0, 2): output rows 0-1, columns 4-5 -> block row -1..0, columns 2..3 (inside: 0, 2)
        (0, 1, 0, 5.0),  # input (1, 1): output rows 2-3, columns 2-3 -> block rows 1-2, columns 0-1
        (0, 1, 1, 5.0),
        (0, 2, 0, 5.0),
        (0, 2, 1, 5.0),
    ]


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_values_beyond_the_range_come_back_where_they_were(dtype, tiny_model, tmp_path, make_geotiff, synthetic_image):
    """Spikes far beyond --value-range: the model sees them clipped, as it sees an image whose spikes are at the
    range's top; the outputs of the two differ only under the spikes, by what the clip took. The file and the array
    API alike."""
    import geosr

    plain = synthetic_image(3, 40, 50, dtype=dtype, lo=1200, hi=4000)
    spiky, at_top = plain.copy(), plain.copy()
    spiky[:, 10, 7], spiky[1, 30, 41], spiky[2, 5, 20] = 60000, 50000, 1  # one below the range too
    at_top[:, 10, 7], at_top[1, 30, 41], at_top[2, 5, 20] = 4000, 4000, 1200
    model = geosr.load_model(tiny_model, device="cpu", precision="fp32")
    outs = {}
    for name, data in (("spiky", spiky), ("top", at_top)):
        src = make_geotiff(tmp_path / f"{name}.tif", data)
        geosr.upscale(src, tmp_path / f"{name}_x2.tif", model=model, value_range=(1200, 4000))
        with rasterio.open(tmp_path / f"{name}_x2.tif") as out:
            outs[name] = out.read()
        np.testing.assert_array_equal(geosr.upscale_array(data, model=model, value_range=(1200, 4000)), outs[name])
    under = np.zeros(outs["top"].shape, bool)
    for b, y, x in ((0, 10, 7), (1, 10, 7), (2, 10, 7), (1, 30, 41), (2, 5, 20)):
        under[b, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2] = True
    np.testing.assert_array_equal(outs["spiky"][~under], outs["top"][~under])
    excess = spiky.astype(np.float64) - at_top
    expected = outs["top"].astype(np.float64) + excess.repeat(2, axis=1).repeat(2, axis=2)
    if dtype == "uint16":
        expected = np.clip(np.floor(expected + 0.5), 0, 65535)
    np.testing.assert_allclose(outs["spiky"][under], expected[under], rtol=1e-6)


@pytest.mark.parametrize("dtype, value", [("float32", 0.0), ("float32", -3.5), ("int16", 700)])
def test_a_constant_band_stays_constant(dtype, value, tiny_model, tmp_path, make_geotiff, synthetic_image):
    """A band of one value (a padding band, a flat layer) comes back as that value, with or without the consistency
    correction, in the file and the array API; one spike in it comes back where it was; the other bands' values do not
    change with it."""
    import geosr

    data = synthetic_image(3, 60, 50, dtype=dtype, lo=0, hi=200 if dtype == "int16" else 1)
    data[1] = value  # 3000 pixels: one spike lies beyond the 99.95th percentile, so the range stays one value
    spiky = data.copy()
    spiky[1, 12, 30] = value + 100
    model = geosr.load_model(tiny_model, device="cpu", precision="fp32")
    outs = {}
    for consistency in (True, False):
        for name, image in (("flat", data), ("spiky", spiky)):
            out = tmp_path / f"{name}_{consistency}.tif"
            geosr.upscale(make_geotiff(tmp_path / f"{name}.tif", image), out, model=model, consistency=consistency)
            with rasterio.open(out) as f:
                outs[name] = f.read()
            np.testing.assert_array_equal(geosr.upscale_array(image, model=model, consistency=consistency), outs[name])
        np.testing.assert_array_equal(outs["flat"][1], value)
        np.testing.assert_array_equal(outs["spiky"][[0, 2]], outs["flat"][[0, 2]])
        expected = np.full(outs["flat"][1].shape, value, outs["flat"].dtype)
        expected[24:26, 60:62] = value + 100
        np.testing.assert_array_equal(outs["spiky"][1], expected)


def test_upscale_of_an_undeclared_extreme_fill_leaves_valid_pixels_alone(tiny_model, tmp_path, make_geotiff):
    predictor = load_predictor(tiny_model, device="cpu", precision="fp32")
    outputs = {}
    for name, fill in (("extreme", -3.4028235e38), ("nan", np.nan)):
        src = make_geotiff(tmp_path / f"{name}.tif", float_with_fill(fill))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no raw numpy warning, in any thread
            upscale_raster(src, tmp_path / f"{name}_x2.tif", predictor, UpscaleOptions(tile_size=32, overlap=8))
        with rasterio.open(tmp_path / f"{name}_x2.tif") as out:
            outputs[name] = out.read()
    valid = outputs["extreme"][:, :, 30:]  # right of the fill (15 input columns, 30 output columns)
    assert np.isfinite(valid).all() and valid.min() >= 0.2 and valid.max() <= 0.8
    np.testing.assert_array_equal(outputs["extreme"], outputs["nan"])  # the fill is invalid, as NaN is
    assert np.isnan(outputs["extreme"][:, :, :30]).all()


@pytest.mark.shared_data
def test_a_real_uint16_scene_with_nodata_gets_one_mapping_everywhere(geotiff_dir, tiny_model, tmp_path):
    # the real Landsat RGB of rio-color (uint16, 6127..36082), its left 60 columns declared nodata
    with rasterio.open(geotiff_dir / "rio-color" / "rgb16.tif") as ds:
        data, profile = ds.read(), ds.profile
    data[:, :, :60] = 0
    profile.update(nodata=0)
    src = tmp_path / "rgb16_nodata.tif"
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
    predictor = load_predictor(tiny_model, device="cpu", precision="fp32")
    upscale_raster(src, tmp_path / "up.tif", predictor, UpscaleOptions(tile_size=128, overlap=16))
    with rasterio.open(tmp_path / "up.tif") as out:
        described = json.loads(out.tags()["GEOSR_RADIOMETRY"])
    r = image_radiometry(src, [1, 2, 3])  # evaluation's and training's
    assert json.loads(r.describe()) == described
    assert min(r.low) >= 6127 and np.percentile(data[0], 0.05) == 0  # unmasked percentiles would start at 0
