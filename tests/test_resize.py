"""geosr.resize against an independent, loop-by-loop numpy transcription of MATLAB's imresize algorithm."""

import math

import numpy as np
import pytest
import torch

from geosr.resize import downscale, imresize, output_size, upscale


def keys_cubic(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def mirror(i: int, n: int) -> int:
    """0-based index into [0..n-1, n-1..0] repeated: symmetric padding with the edge repeated."""
    i %= 2 * n
    return i if i < n else 2 * n - 1 - i


def resize_axis0(a: np.ndarray, out_len: int, scale: float, integer: bool) -> np.ndarray:
    n = a.shape[0]
    width = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros((out_len,) + a.shape[1:])
    for k in range(1, out_len + 1):
        u = k / scale + 0.5 * (1 - 1 / scale)
        first = math.floor(u - width / 2)
        taps = list(range(first, first + math.ceil(width) + 2))
        if scale < 1:
            w = [scale * keys_cubic(scale * (u - j)) for j in taps]
        else:
            w = [keys_cubic(u - j) for j in taps]
        total = sum(w)
        out[k - 1] = sum(wj / total * a[mirror(j - 1, n)] for wj, j in zip(w, taps))
    if integer:
        out = np.clip(np.floor(out + 0.5), 0, 255)
    return out


def reference_imresize(img: np.ndarray, scale: float, integer: bool) -> np.ndarray:
    """img (H, W, C) float64; both axes by ``scale``, height first (equal scales)."""
    h, w = img.shape[:2]
    out = resize_axis0(img, math.ceil(h * scale - 1e-9), scale, integer)
    out = resize_axis0(out.transpose(1, 0, 2), math.ceil(w * scale - 1e-9), scale, integer)
    return out.transpose(1, 0, 2)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(37, 50, 3)), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 255
    return np.clip(smooth + rng.normal(scale=20, size=smooth.shape), 0, 255).round()


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2.0, 3.0, 4.0])
def test_float_resize_matches_the_reference(image, scale):
    x = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]  # (1, 3, H, W) float64
    got = imresize(x, scale)[0].numpy().transpose(1, 2, 0)
    want = reference_imresize(image, scale, integer=False)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 4, 4.0])
def test_integer_resize_rounds_after_each_pass_like_matlab(image, scale):
    x = torch.from_numpy(image.transpose(2, 0, 1).copy())
    got = imresize(x, scale, integer_range=(0, 255)).numpy().transpose(1, 2, 0)
    want = reference_imresize(image, scale, integer=True)
    assert np.array_equal(got, want)
    assert np.array_equal(got, np.round(got))


def test_output_sizes_follow_matlab():
    assert output_size(256, 1 / 4) == 64
    assert output_size(242, 1 / 4) == 61  # ceil(60.5)
    assert output_size(255, 1 / 3) == 85
    x = torch.zeros(2, 3, 242, 256)
    assert downscale(x, 4).shape == (2, 3, 61, 64)
    assert upscale(torch.zeros(1, 1, 61, 64), 4).shape == (1, 1, 244, 256)
    assert imresize(x, size=(100, 30)).shape == (2, 3, 100, 30)


def test_constant_image_stays_constant_and_float32_works():
    x = torch.full((1, 3, 40, 40), 77.0)
    for s in (0.25, 0.5, 2.0, 3.0):
        assert torch.allclose(imresize(x, s), torch.tensor(77.0), atol=1e-4)


def test_antialiasing_filters_what_plain_interpolation_aliases():
    # A pixel-scale checkerboard: antialiased shrinking averages it to grey, plain bicubic samples it.
    x = torch.from_numpy((np.indices((66, 66)).sum(0) % 2) * 255.0)[None, None]
    smooth = imresize(x, 1 / 3)
    aliased = imresize(x, 1 / 3, antialias=False)
    assert smooth.std() < 2.0 < aliased.std()


def test_bad_arguments():
    with pytest.raises(ValueError, match="floating-point"):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), 0.5)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(torch.zeros(4, 4), 0.5, size=(2, 2))
    with pytest.raises(ValueError, match="positive"):
        imresize(torch.zeros(4, 4), 0.0)
