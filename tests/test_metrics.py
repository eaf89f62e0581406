"""PSNR/SSIM on hand-checked cases and against an independent window-by-window SSIM."""

import math

import numpy as np
import pytest
import torch

from geosr.metrics import gaussian_window, psnr, psnr_per_channel, ssim, to_image_range

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def test_identical_images_have_infinite_psnr_and_ssim_one():
    a = torch.rand(3, 32, 32) * 255
    assert psnr(a, a.clone()).item() == math.inf
    assert ssim(a, a.clone()).item() == pytest.approx(1.0, abs=1e-12)


def test_constant_offset_by_hand():
    a = torch.full((1, 40, 40), 100.0)
    b = torch.full((1, 40, 40), 110.0)
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(255**2 / 100))
    # No structure: the contrast/structure term is (0 + C2) / (0 + C2) = 1.
    assert ssim(a, b).item() == pytest.approx((2 * 100 * 110 + C1) / (100**2 + 110**2 + C1))


def test_known_shift_by_hand():
    ramp = torch.arange(64, dtype=torch.float64).expand(2, 64, 64) * 3  # 0, 3, ..., 189 along x
    shifted = torch.roll(ramp, shifts=1, dims=-1)  # every pixel takes its left neighbour: error 3, except column 0
    # Cropping 2 pixels at each border removes the wrapped column; the error is then 3 everywhere.
    assert psnr(ramp, shifted, crop=2).item() == pytest.approx(10 * math.log10(255**2 / 9))
    assert psnr(ramp, shifted).item() < psnr(ramp, shifted, crop=2).item()


def test_psnr_is_the_mean_of_per_channel_psnr_not_of_pooled_mse():
    a = torch.zeros(2, 16, 16)
    b = torch.stack([torch.full((16, 16), 1.0), torch.full((16, 16), 4.0)])
    per = psnr_per_channel(a, b)
    assert per.tolist() == pytest.approx([10 * math.log10(255**2 / 1), 10 * math.log10(255**2 / 16)])
    assert psnr(a, b).item() == pytest.approx(per.mean().item())
    assert psnr(a, b).item() != pytest.approx(10 * math.log10(255**2 / 8.5))


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Window by window, no convolution: mean over valid 11x11 windows, then over channels."""
    w1 = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(w1, w1) / np.outer(w1, w1).sum()
    per_channel = []
    for x, y in zip(a, b):
        vals = []
        for i in range(x.shape[0] - 10):
            for j in range(x.shape[1] - 10):
                px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cxy = (w * (px - mx) * (py - my)).sum()
                vals.append((2 * mx * my + C1) * (2 * cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
        per_channel.append(np.mean(vals))
    return float(np.mean(per_channel))


def test_ssim_matches_a_window_by_window_computation():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(3, 24, 30)).astype(np.float64)
    b = np.clip(a + rng.normal(scale=25, size=a.shape), 0, 255).round()
    got = ssim(torch.from_numpy(a), torch.from_numpy(b), crop=2).item()
    assert got == pytest.approx(reference_ssim(a[:, 2:-2, 2:-2], b[:, 2:-2, 2:-2]), abs=1e-10)


def test_batches_give_one_value_per_image():
    a = torch.rand(4, 3, 20, 20) * 255
    b = a + torch.randn_like(a)
    assert psnr(a, b).shape == (4,) and ssim(a, b).shape == (4,)
    assert psnr(a, b)[2].item() == pytest.approx(psnr(a[2], b[2]).item())


def test_model_range_rounds_to_the_8_bit_grid():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
    assert to_image_range(x).tolist() == [0.0, 0.0, 128.0, 255.0, 255.0, 255.0]
    assert gaussian_window().sum().item() == pytest.approx(1.0)


def test_errors_name_the_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(3, 12, 12), torch.zeros(3, 12, 12), crop=2)
    with pytest.raises(ValueError, match="cannot crop"):
        psnr(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), crop=2)
