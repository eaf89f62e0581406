"""The evaluation protocol on real UC Merced val images against an independent numpy implementation.

The reference below is written from the protocol's description (../shared/FIELD_NOTES.md) and MATLAB's imresize
algorithm, with different machinery from geosr's (gathered taps instead of weight matrices, sliding windows instead
of matrix products), all in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from testdata import tiny_train_args

from geosr.datasets import find_images
from geosr.evaluation import evaluate_images

pytestmark = [pytest.mark.shared_data, pytest.mark.usefixtures("one_torch_thread")]


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    out = np.zeros_like(a)
    near, far = a <= 1, (a > 1) & (a <= 2)
    out[near] = 1.5 * a[near] ** 3 - 2.5 * a[near] ** 2 + 1
    out[far] = -0.5 * a[far] ** 3 + 2.5 * a[far] ** 2 - 4 * a[far] + 2
    return out


def _resize_rows(img: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """Resize axis 0 of (H, W, C) uint8-valued float64 data; round half up and clip like MATLAB on uint8."""
    n = img.shape[0]
    width = 4 / scale if scale < 1 else 4
    u = np.arange(1, out_len + 1) / scale + 0.5 * (1 - 1 / scale)
    first = np.floor(u - width / 2).astype(int)
    taps = first[:, None] + np.arange(int(math.ceil(width)) + 2)[None]
    dist = u[:, None] - taps
    w = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    src = taps - 1
    src = np.where(src < 0, -src - 1, src)  # mirror at the top, edge repeated
    src = np.where(src >= n, 2 * n - 1 - src, src)  # mirror at the bottom
    out = np.einsum("ot,otwc->owc", w, img[src])
    return np.clip(np.floor(out + 0.5), 0, 255)


def ref_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    out = _resize_rows(img, int(round(h * scale)), scale)
    return _resize_rows(out.transpose(1, 0, 2), int(round(w * scale)), scale).transpose(1, 0, 2)


def ref_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a - b) ** 2).mean(axis=(0, 1))
    return float(np.mean(10 * np.log10(255.0**2 / mse)))


def ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    win = np.outer(g, g)
    win /= win.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for ch in range(a.shape[2]):
        pa = np.lib.stride_tricks.sliding_window_view(a[:, :, ch], (11, 11))
        pb = np.lib.stride_tricks.sliding_window_view(b[:, :, ch], (11, 11))
        ma, mb = (pa * win).sum(axis=(-2, -1)), (pb * win).sum(axis=(-2, -1))
        va = (pa**2 * win).sum(axis=(-2, -1)) - ma**2
        vb = (pb**2 * win).sum(axis=(-2, -1)) - mb**2
        cov = (pa * pb * win).sum(axis=(-2, -1)) - ma * mb
        vals.append(np.mean((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))))
    return float(np.mean(vals))


def reference_bicubic_scores(path, scale: int) -> tuple[float, float]:
    with rasterio.open(path) as src:
        hr = src.read().transpose(1, 2, 0).astype(np.float64)
    h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
    hr = hr[:h, :w]
    lr = ref_imresize(hr, 1 / scale)
    up = ref_imresize(lr, scale)
    s = scale
    return ref_psnr(up[s:-s, s:-s], hr[s:-s, s:-s]), ref_ssim(up[s:-s, s:-s], hr[s:-s, s:-s])


@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_scores_on_ucmerced_val_match_the_independent_reference(ucmerced, scale):
    val = find_images(ucmerced, "val")
    assert len(val) == 210
    picks = [val.items[i] for i in (0, 37, 95, 150, 209)]  # several classes
    results = evaluate_images(picks, scale)
    for item, res in zip(picks, results):
        want_psnr, want_ssim = reference_bicubic_scores(item.path, scale)
        assert abs(res.psnr_bicubic - want_psnr) < 0.01, item.path
        assert abs(res.ssim_bicubic - want_ssim) < 1e-4, item.path


def test_ucmerced_splits_follow_the_numbers_in_the_names(ucmerced):
    for split, numbers in (("train", range(0, 50)), ("val", range(50, 60))):
        items = find_images(ucmerced, split).items
        assert {int(it.name[-2:]) for it in items} == set(numbers)
        assert all(it.label == it.path.parent.name for it in items)
    assert len(find_images(ucmerced, "test")) == 0  # 60-99 are not in the shared copy


@pytest.mark.slow
def test_a_short_ucmerced_run_gives_a_model_that_evaluate_and_upscale_accept(ucmerced, tmp_path):
    """train (a tiny model, 3 steps, patches read from disk) -> evaluate on held-out val images -> upscale."""
    import json

    from click.testing import CliRunner

    from geosr.cli.main import cli

    run = tmp_path / "run"
    tiny = [*tiny_train_args(scale=4, patch=64), "--cache-mb", "0"]
    result = CliRunner().invoke(
        cli, ["-q", "train", "--data", str(ucmerced), "--out", str(run), "--max-steps", "3", "--val-images", "3", *tiny]
    )
    assert result.exit_code == 0, result.output
    model = run / "best.safetensors"
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(ucmerced),
            "--split",
            "val",
            "--max-images",
            "3",
            "--out",
            str(tmp_path / "e.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())
    for img in report["images"]:
        want_psnr, want_ssim = reference_bicubic_scores(img["path"], 4)
        assert abs(img["psnr_bicubic"] - want_psnr) < 0.01 and abs(img["ssim_bicubic"] - want_ssim) < 1e-4
        assert img["psnr"] is not None
    source = find_images(ucmerced, "val").items[0].path
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "upscale",
            str(source),
            "-o",
            str(tmp_path / "sr.tif"),
            "--model",
            str(model),
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ],
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "sr.tif") as src:
        assert (src.width, src.height, src.count) == (1024, 1024, 3)
