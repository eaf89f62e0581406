"""training.degradation: the random blur, noise and JPEG of ``--degrade``, and how the patches use them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from testdata import smooth_image

from geosr.datasets import find_images
from geosr.training import degradation
from geosr.training.config import ConfigError, TrainConfig
from geosr.training.data import PatchDataset
from geosr.training.degradation import bicubic_lr, blur, degraded_lr, gaussian_kernel, jpeg


def _spread(k: torch.Tensor) -> tuple[float, float]:
    """The kernel's variance along rows (dy) and along columns (dx)."""
    r = k.shape[0] // 2
    axis = torch.arange(-r, r + 1, dtype=torch.float64)
    k = k.double()
    return float((k.sum(1) * axis**2).sum()), float((k.sum(0) * axis**2).sum())


def test_gaussian_kernels_are_normalised_and_oriented():
    iso = gaussian_kernel(1.5, 1.5, 0.7, 6)
    assert iso.shape == (13, 13) and abs(float(iso.sum()) - 1) < 1e-6
    assert torch.allclose(iso, gaussian_kernel(1.5, 1.5, 0.0, 6), atol=1e-7)  # no orientation when isotropic
    assert torch.allclose(iso, iso.flip(0, 1)) and torch.allclose(iso, iso.T, atol=1e-7)
    tall = gaussian_kernel(2.0, 1.0, 0.0, 8)
    vy, vx = _spread(tall)
    assert vy == pytest.approx(4.0, rel=0.02) and vx == pytest.approx(1.0, rel=0.02)
    wide = gaussian_kernel(2.0, 1.0, math.pi / 2, 8)  # a quarter turn swaps the axes
    assert _spread(wide) == pytest.approx((vx, vy), rel=1e-4)


def test_blur_keeps_flat_areas_and_the_mean():
    flat = torch.full((2, 40, 40), 77.0)
    assert torch.allclose(blur(flat, gaussian_kernel(2.0, 1.0, 0.3, 6)), flat)
    x = torch.from_numpy(smooth_image(3, 64, 64, seed=1, look="scene").astype(np.float32))
    y = blur(x, gaussian_kernel(1.2, 1.2, 0.0, 4))
    assert y.shape == x.shape and abs(float(y.mean() - x.mean())) < 0.5 and float(y.std()) < float(x.std())


def test_jpeg_goes_through_gdal_and_loses_more_at_lower_quality():
    x = smooth_image(3, 48, 48, seed=2, look="scene")
    assert x.dtype == np.uint8
    fine, coarse = jpeg(x, 95), jpeg(x, 30)
    assert fine.shape == x.shape and fine.dtype == np.uint8
    err = [np.abs(y.astype(int) - x.astype(int)).mean() for y in (fine, coarse)]
    assert 0 < err[0] < err[1]
    four = np.concatenate([x, x[:1]])  # other band counts: one grey image per band
    assert jpeg(four, 90).shape == (4, 48, 48)


def test_degraded_lr_is_reproducible_on_the_grid_and_not_bicubic():
    hr = torch.from_numpy(smooth_image(3, 64, 64, seed=3, look="scene").astype(np.float32))
    bic = bicubic_lr(hr, 4, "uint8")
    outs = [degraded_lr(hr, 4, "uint8", [255.0] * 3, np.random.default_rng(s)) for s in (0, 0, 1)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    for lr in outs:
        assert lr.shape == (3, 16, 16) and torch.equal(lr, lr.round()) and lr.min() >= 0 and lr.max() <= 255
        assert not torch.equal(lr, bic)


def test_noise_follows_the_bands_range_and_jpeg_only_for_8_bit(monkeypatch):
    flat = torch.full((2, 64, 64), 5000.0)
    monkeypatch.setitem(degradation.CHANCE, "blur", 0.0)
    monkeypatch.setitem(degradation.CHANCE, "jpeg", 0.0)
    monkeypatch.setitem(degradation.CHANCE, "noise", 1.0)
    lr = degraded_lr(flat, 2, "uint16", [10000.0, 100.0], np.random.default_rng(4))
    sd = lr.reshape(2, -1).std(dim=1)
    lo, hi = degradation.NOISE_SIGMA
    assert 10000 * lo * 0.7 < sd[0] < 10000 * hi * 1.3 and sd[1] < 100 * hi * 1.5 + 0.5
    assert torch.equal(lr, lr.round())  # back on the uint16 grid
    # JPEG drawn for a 16-bit patch: not applied, and the patch is blurred instead of left as the bicubic
    monkeypatch.setitem(degradation.CHANCE, "noise", 0.0)
    monkeypatch.setitem(degradation.CHANCE, "jpeg", 1.0)
    ramp = torch.arange(64.0).expand(2, 64, 64).contiguous() * torch.arange(64.0)[:, None]
    blurred = degraded_lr(ramp, 2, "uint16", [4000.0] * 2, np.random.default_rng(5))
    assert not torch.equal(blurred, bicubic_lr(ramp, 2, "uint16"))
    floats = degraded_lr(ramp / 4000, 2, "float32", [1.0] * 2, np.random.default_rng(6))
    assert floats.dtype == torch.float32 and not torch.equal(floats, floats.round())


def test_patches_with_degrade_keep_their_hr_and_stay_deterministic(scene_folder):
    items = find_images(scene_folder, "train").items
    args = dict(scale=2, patch_size=32, bands=[1, 2, 3], seed=0)
    plain, degraded = PatchDataset(items, **args), PatchDataset(items, **args, degrade=1.0)
    disk = PatchDataset(items, **args, degrade=1.0, cache_mb=0)
    changed = 0
    for key in [(i, e, p) for i, e, p in zip(range(20), (0, 1) * 10, range(3, 23))]:
        (hr0, lr0), (hr1, lr1), (hr2, lr2) = plain[key], degraded[key], disk[key]
        assert torch.equal(hr0, hr1) and torch.equal(hr1, hr2) and torch.equal(lr1, lr2)
        assert torch.equal(degraded[key][1], lr1)
        native = lr1.double() * 127.5 + 127.5
        assert torch.allclose(native, native.round(), atol=1e-4) and lr1.min() >= -1 and lr1.max() <= 1
        changed += not torch.equal(lr0, lr1)
    assert changed >= 18  # a draw can leave a patch unchanged only where it is flat


def test_degrade_is_a_share():
    assert TrainConfig(data="d", degrade=0.25).validate().degrade == 0.25
    with pytest.raises(ConfigError, match="degrade must be a share from 0 to 1, got 1.5"):
        TrainConfig(data="d", degrade=1.5).validate()
