"""Training patches: shapes, range, the LR degradation, determinism, padding, paired crops, the sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from testdata import smooth_image, write_image

from geosr.datasets import find_images
from geosr.errors import DataError
from geosr.resize import downscale
from geosr.training.data import PatchDataset, ResumableSampler, make_loader


def dataset(root, **kw) -> PatchDataset:
    args = dict(scale=2, patch_size=32, bands=[1, 2, 3], seed=0)
    args.update(kw)
    return PatchDataset(find_images(root, "train").items, **args)


def test_patches_are_in_range_and_lr_is_the_quantised_bicubic_of_hr(scene_folder):
    ds = dataset(scene_folder)
    assert ds.cached and len(ds) == 20
    hr, lr = ds[(3, 0, 7)]
    assert hr.shape == (3, 32, 32) and lr.shape == (3, 16, 16) and hr.dtype == torch.float32
    assert hr.min() >= -1 and hr.max() <= 1
    native = torch.round((hr.double() + 1) * 127.5)  # back to the uint8 values
    expected = downscale(native, 2, integer_range=(0, 255)) / 127.5 - 1
    assert torch.allclose(lr.double(), expected, atol=1e-6)
    assert torch.allclose(lr * 127.5 + 127.5, torch.round(lr * 127.5 + 127.5), atol=1e-4)  # on the uint8 grid


def test_patches_are_deterministic_and_identical_from_disk_and_memory(scene_folder):
    cached, disk = dataset(scene_folder), dataset(scene_folder, cache_mb=0)
    assert not disk.cached
    for key in [(0, 0, 0), (5, 1, 3), (19, 2, 11)]:
        a, b = cached[key], disk[key]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(cached[(0, 0, 0)][0], cached[(0, 1, 0)][0])  # another epoch, another crop


def test_small_images_are_mirror_padded_to_the_patch(tmp_path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "small" / "a.png", smooth_image(3, 20, 20, seed=rng, look="scene"))
    ds = dataset(tmp_path / "small", patch_size=32)
    assert ds.padded == 1
    hr, lr = ds[(0, 0, 0)]
    assert hr.shape == (3, 32, 32) and lr.shape == (3, 16, 16)


def test_paired_layout_uses_its_own_aligned_lr(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        hr = smooth_image(3, 64, 64, seed=rng, look="scene")
        write_image(tmp_path / "train" / "HR" / f"{i}.png", hr)
        block_means = np.floor(hr.reshape(3, 32, 2, 32, 2).mean(axis=(2, 4)) + 0.5).astype(np.uint8)
        write_image(tmp_path / "train" / "LR_x2" / f"{i}x2.png", block_means)
    ds = PatchDataset(find_images(tmp_path, "train").items, scale=2, patch_size=32, bands=[1, 2, 3])
    for pos in range(6):
        hr, lr = ds[(pos % 3, 0, pos)]
        native = torch.round((hr.double() + 1) * 127.5)
        means = torch.floor(torch.nn.functional.avg_pool2d(native[None], 2)[0] + 0.5)
        # 2x2 block means commute with the flips and rotations, so an aligned crop matches block for block
        assert torch.allclose((lr.double() + 1) * 127.5, means, atol=1e-4)


def test_uint16_images_use_their_band_range(tmp_path):
    rng = np.random.default_rng(2)
    data = smooth_image(3, 48, 48, seed=rng, look="scene").astype(np.uint16) * 40 + 5000
    write_image(tmp_path / "u16" / "scene.tif", data)
    ds = dataset(tmp_path / "u16", patch_size=32)
    hr, lr = ds[(0, 0, 0)]
    assert hr.min() >= -1 and hr.max() <= 1 and hr.max() - hr.min() > 1.0


def test_sampler_resumes_mid_epoch_and_shares_disjointly(scene_folder):
    ds = dataset(scene_folder)
    s = ResumableSampler(ds, seed=3)
    s.set_epoch(1)
    full = list(s)
    s.set_start(8)
    assert list(s) == full[8:] and len(s) == len(full) - 8
    shares = [ResumableSampler(ds, num_replicas=2, rank=r, seed=3) for r in range(2)]
    keys = [k for sh in shares for k in sh]
    assert sorted(k[0] for k in keys) == list(range(20))
    assert len({k[2] for k in keys}) == 20  # positions are global, so every patch draws its own crop


def test_loader_batches_and_too_small_data(scene_folder):
    ds = dataset(scene_folder)
    loader, sampler = make_loader(ds, batch_size=8, workers=0, device=torch.device("cpu"))
    batches = list(loader)
    assert len(batches) == 2 and batches[0][0].shape == (8, 3, 32, 32)
    with pytest.raises(DataError, match="fewer than a batch of 64"):
        make_loader(ds, batch_size=64, workers=0, device=torch.device("cpu"))


def test_worker_processes_give_the_same_batches(scene_folder):
    ds = dataset(scene_folder)
    batches = {}
    for workers in (0, 1):
        loader, sampler = make_loader(ds, batch_size=4, workers=workers, device=torch.device("cpu"), seed=5)
        sampler.set_epoch(2)
        sampler.set_start(4)
        batches[workers] = [hr for hr, _ in loader]
    assert len(batches[0]) == 4 and all(torch.equal(a, b) for a, b in zip(batches[0], batches[1]))
