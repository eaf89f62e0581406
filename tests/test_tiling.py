"""The tile grid, the blend weights, the strip accumulator, tiling a whole array and the seam index (no model)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geosr.tiling import AxisTiling, StripAccumulator, TileGrid, even_splits, seam_index, tile_array, tile_starts


@st.composite
def axes(draw, max_size=400):
    tile = draw(st.integers(1, 96))
    overlap = draw(st.integers(0, tile // 2))
    size = draw(st.integers(1, max_size))
    scale = draw(st.sampled_from([1, 2, 3, 4]))
    return AxisTiling(size, tile, overlap, scale)


@settings(max_examples=300, deadline=None)
@given(axes())
def test_tiles_cover_the_axis_and_never_shrink(ax: AxisTiling):
    covered = np.zeros(ax.size, bool)
    for i in range(len(ax)):
        a, b = ax.extent(i)
        assert 0 <= a < b <= ax.size
        assert b - a == min(ax.tile, ax.size)  # edge tiles move inward rather than shrink
        covered[a:b] = True
    assert covered.all()
    assert list(ax.starts) == sorted(set(ax.starts))
    for a, b in zip(ax.starts, ax.starts[1:]):
        assert a + ax.tile - b >= ax.overlap  # neighbours overlap by at least the overlap


@settings(max_examples=300, deadline=None)
@given(axes())
def test_weights_sum_to_one_everywhere(ax: AxisTiling):
    s = ax.scale
    total = np.zeros(s * ax.size, np.float64)
    for i in range(len(ax)):
        a, b = ax.extent(i)
        w = ax.weights(i)
        assert w.shape == (s * (b - a),)
        assert (w >= 0).all() and (w <= 1).all()
        total[s * a : s * b] += w
        lo, hi = ax.support(i)
        assert s * a <= lo < hi <= s * b
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(axes())
def test_no_ramp_at_the_raster_border_and_a_margin_on_shared_edges(ax: AxisTiling):
    s = ax.scale
    assert ax.weights(0)[0] == 1.0
    assert ax.weights(len(ax) - 1)[-1] == 1.0
    margin = s * ax.overlap // 4  # output pixels that a tile ignores along an edge shared with a neighbour
    for i in range(len(ax)):
        w = ax.weights(i)
        if margin:
            if i > 0:
                assert (w[:margin] == 0).all()
            if i < len(ax) - 1:
                assert (w[-margin:] == 0).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 150), st.integers(1, 150), st.integers(8, 64), st.data())
def test_2d_weights_sum_to_one_whatever_the_order(h, w, tile, data):
    overlap = data.draw(st.integers(0, tile // 2))
    s = data.draw(st.sampled_from([1, 2, 3]))
    g = TileGrid(h, w, tile, overlap, s)
    tiles = list(g)
    assert len(tiles) == len(g)
    order = data.draw(st.permutations(range(len(tiles))))
    total = np.zeros((s * h, s * w), np.float64)
    for k in order:
        t = tiles[k]
        total[s * t.y : s * (t.y + t.height), s * t.x : s * (t.x + t.width)] += g.weight(t.row, t.col)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_grid_examples():
    assert tile_starts(100, 64, 16) == (0, 36)
    assert tile_starts(64, 64, 16) == (0,)
    assert tile_starts(1, 64, 16) == (0,)
    assert tile_starts(200, 64, 16) == (0, 48, 96, 136)
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 64, 33)
    with pytest.raises(ValueError, match="size"):
        tile_starts(0, 64, 16)


def _blend(image: np.ndarray, g: TileGrid, order, scale: int) -> np.ndarray:
    """Blend nearest-upsampled tiles of ``image`` tile row by tile row through a StripAccumulator."""
    bands, h, w = image.shape
    acc = StripAccumulator(bands, scale * g.rows.length, 0, scale * w)
    out = []
    for r in range(len(g.rows)):
        cols = list(range(len(g.cols)))
        order.shuffle(cols)
        for c in cols:
            t = g.tile_at(r, c)
            tile = image[:, t.y : t.y + t.height, t.x : t.x + t.width]
            up = tile.repeat(scale, 1).repeat(scale, 2)
            acc.add(up, g.weight(r, c), scale * t.y, scale * t.x)
        stop = scale * (g.rows.starts[r + 1] if r + 1 < len(g.rows) else h)
        out.append(acc.pop(stop))
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("h,w,tile,overlap,scale", [(70, 130, 32, 8, 2), (33, 200, 16, 8, 3), (5, 7, 16, 4, 4)])
def test_accumulator_reassembles_the_image(h, w, tile, overlap, scale):
    rng = np.random.default_rng(0)
    image = rng.random((2, h, w)).astype(np.float32)
    g = TileGrid(h, w, tile, overlap, scale)
    out = _blend(image, g, random.Random(1), scale)
    np.testing.assert_allclose(out, image.repeat(scale, 1).repeat(scale, 2), atol=1e-6)
    # a different tile order gives the same result
    np.testing.assert_allclose(_blend(image, g, random.Random(2), scale), out, atol=1e-6)


def test_accumulator_crops_columns_and_refuses_rows_outside():
    acc = StripAccumulator(1, 4, 2, 6)
    acc.add(np.ones((1, 2, 8), np.float32), np.ones((2, 8), np.float32), 0, 0)
    assert acc.pop(2).tolist() == [[[1, 1, 1, 1]] * 2]
    with pytest.raises(ValueError, match="outside"):
        acc.add(np.ones((1, 8, 8), np.float32), np.ones((8, 8), np.float32), 0, 0)


def test_accumulator_sums_into_the_bands_named_and_keeps_popped_rows():
    """Band groups add into their own bands (consecutive or not); rows taken before an advance keep their values."""
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 2, 4, 5), dtype=np.float32)
    w = rng.random((4, 5), dtype=np.float32)
    acc = StripAccumulator(3, 8, 0, 5)
    acc.add(a, w, 0, 0, bands=[0, 2])
    acc.add(torch.from_numpy(b), torch.from_numpy(w), 2, 0, bands=[1, 2])
    expected = np.zeros((3, 8, 5), np.float32)
    expected[[0, 2], 0:4] += a * w
    expected[1:3, 2:6] += b * w
    first = acc.rows(3)
    acc.advance(3)
    acc.add(a, w, 4, 0, bands=[0, 2])
    expected2 = expected[:, 3:].copy()
    expected2 = np.concatenate([expected2, np.zeros((3, 3, 5), np.float32)], axis=1)
    expected2[[0, 2], 1:5] += a * w
    np.testing.assert_array_equal(first.numpy(), expected[:, :3])  # unchanged by the advance and the add after it
    np.testing.assert_array_equal(acc.pop(11).numpy(), expected2)


def test_seam_index_finds_a_seam_and_ignores_smooth_images():
    rng = np.random.default_rng(0)
    smooth = rng.random((3, 300, 300))
    assert seam_index(smooth, 50, 10) == pytest.approx(1.0, abs=0.05)
    seamed = smooth.copy()
    seamed[:, :, 10::50] += 0.3  # a brighter column every 50 pixels: steps at phases 10 and 11
    assert seam_index(seamed, 50, 10) > 1.15
    assert seam_index(seamed, 50, 11) > 1.15
    assert seam_index(seamed, 50, 30) == pytest.approx(1.0, abs=0.05)
    # invalid pixels are ignored
    valid = np.ones((300, 300), bool)
    valid[:, 5:15] = valid[:, 55:65] = valid[:, 105:115] = valid[:, 155:165] = False
    valid[:, 205:215] = valid[:, 255:265] = False
    assert seam_index(seamed, 50, 10, valid=valid) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError):
        seam_index(smooth, 1)


def test_seam_index_subpixel_discounts_a_pattern_at_the_scale():
    rng = np.random.default_rng(0)
    img = rng.random((200, 400))
    img[:, ::4] += 1.0  # a pattern every 4 pixels, like an untrained pixel-shuffle upsampler
    assert seam_index(img, 40, 0) > 1.5  # the seam phase falls on the pattern
    assert seam_index(img, 40, 0, subpixel=4) == pytest.approx(1.0, abs=0.05)


# --- a whole array, as upscale tiles a raster ------------------------------------------------------------------------


def nearest(scale: int, calls: list | None = None):
    """A predictor that upsamples by nearest neighbour (a model without context: tiling cannot change its output)."""

    def predict(tiles: np.ndarray) -> np.ndarray:
        if calls is not None:
            calls.append(tiles.copy())
        return tiles.repeat(scale, axis=2).repeat(scale, axis=3)

    return predict


@pytest.mark.parametrize("h, w, tile, overlap, scale", [(70, 83, 32, 8, 2), (50, 50, 16, 8, 3), (64, 64, 64, 0, 4)])
def test_tile_array_blends_to_the_whole_array_result(h, w, tile, overlap, scale):
    x = np.random.default_rng(0).uniform(-1, 1, (3, h, w)).astype(np.float32)
    calls = []
    y = tile_array(nearest(scale, calls), x, scale=scale, tile_size=tile, overlap=overlap, batch_size=3)
    assert y.dtype == np.float32 and y.shape == (3, scale * h, scale * w)
    np.testing.assert_allclose(y, x.repeat(scale, axis=1).repeat(scale, axis=2), atol=1e-6)  # weights sum to 1
    grid = TileGrid(h, w, tile, overlap, scale)
    assert sum(len(c) for c in calls) == len(grid) and max(len(c) for c in calls) <= 3
    assert all(c.shape[1:] == (3, tile, tile) for c in calls)


def test_tile_array_clamps_the_tile_to_an_array_smaller_than_it():
    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    calls = []
    y = tile_array(nearest(2, calls), x, scale=2, tile_size=1024, overlap=4)
    (tiles,) = calls
    np.testing.assert_array_equal(tiles[0], x)  # one 5 x 7 tile: never padded to 1024 x 1024
    np.testing.assert_array_equal(y, x.repeat(2, axis=1).repeat(2, axis=2))
    calls.clear()
    tile_array(nearest(2, calls), np.zeros((1, 6, 40), np.float32), scale=2, tile_size=16, overlap=4)
    assert [c.shape for c in calls] == [(3, 1, 6, 16)]  # a thin strip: tiles 6 rows high, 16 wide


def test_tile_array_refuses_unusable_settings_and_wrong_predictors():
    x = np.zeros((1, 40, 40), np.float32)
    with pytest.raises(ValueError, match="overlap 20"):
        tile_array(nearest(2), x, scale=2, tile_size=32, overlap=20)
    with pytest.raises(ValueError, match="batch size 0"):
        tile_array(nearest(2), x, scale=2, tile_size=32, overlap=8, batch_size=0)
    with pytest.raises(ValueError, match="the predictor gave"):
        tile_array(nearest(3), x, scale=2, tile_size=32, overlap=8)


def test_even_splits():
    assert even_splits(17, 3) == [(0, 5), (5, 11), (11, 17)]
    assert even_splits(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)] and even_splits(0, 0) == []
