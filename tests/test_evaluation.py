"""geosr.evaluation: paired LR, non-8-bit images, tiled inference of big images, the summary table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from testdata import smooth_image, write_image

from geosr.consistency import project
from geosr.datasets import ImageItem, find_images
from geosr.evaluation import (
    ImageResult,
    bicubic,
    evaluate_images,
    format_table,
    load_pair,
    summarise,
    super_resolve,
)
from geosr.models import Generator, GeneratorConfig
from geosr.resize import downscale

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_paired_layout_uses_its_own_lr(tmp_path):
    rng = np.random.default_rng(0)
    hr = smooth_image(3, 66, 66, seed=rng, look="scene")  # not a multiple of 4: cropped to 64 by the LR's size
    lr = np.ascontiguousarray(hr[:, 1:64:4, 1:64:4])  # a decimation, not the protocol's bicubic
    write_image(tmp_path / "HR" / "a.png", hr)
    write_image(tmp_path / "LR_x4" / "ax4.png", lr)
    item = find_images(tmp_path, "all").items[0]
    pair = load_pair(item, 4)
    assert pair.hr.shape == (3, 64, 64) and torch.equal(pair.lr, torch.from_numpy(lr).double())
    protocol = load_pair(ImageItem(item.path), 4)
    assert torch.equal(protocol.lr, downscale(protocol.hr, 4, integer_range=(0, 255)))
    assert not torch.equal(protocol.lr, pair.lr)


def test_uint16_images_are_measured_on_their_range_without_clipping(tmp_path):
    """Each band's percentile range maps linearly to 0..255 and values beyond it keep their whole error: a few
    bright pixels (a roof, a glint) count as much as in the data's own units."""
    rng = np.random.default_rng(1)
    data = smooth_image(3, 64, 64, seed=rng, look="scene").astype(np.uint16) * 100 + 1000
    data[:, 20, 30] = 60000  # beyond the 99.95th percentile of every band
    write_image(tmp_path / "u16" / "s.tif", data)
    item = find_images(tmp_path / "u16").items[0]
    (res,) = evaluate_images([item], 2)
    pair = load_pair(item, 2)
    assert max(pair.radiometry.high) < 60000
    low = np.array(pair.radiometry.low)[:, None, None]
    span = np.array(pair.radiometry.high)[:, None, None] - low
    hr = (data[:, 2:-2, 2:-2] - low) * 255 / span
    bic = (bicubic(pair, 2).numpy()[:, 2:-2, 2:-2] - low) * 255 / span
    expected = np.mean([10 * math.log10(255**2 / np.mean((bic[c] - hr[c]) ** 2)) for c in range(3)])
    assert res.psnr_bicubic == pytest.approx(expected, abs=1e-9)
    assert 15 < res.psnr_bicubic < 60 and 0 < res.ssim_bicubic <= 1


def test_images_the_protocol_cannot_measure_whole_are_left_out_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(2)
    good = smooth_image(4, 48, 48, seed=rng, look="scene")
    good[3] = 255
    holed = good.copy()
    holed[3, :8, :8] = 0  # transparent
    write_image(tmp_path / "d" / "a_good.png", good)
    write_image(tmp_path / "d" / "b_holed.png", holed)
    write_image(tmp_path / "d" / "c_flat.png", np.full((3, 48, 48), 90, np.uint8))
    with caplog.at_level("WARNING", logger="geosr"):
        results = evaluate_images(find_images(tmp_path / "d", "all").items, 2, bands=[1, 2, 3])
    assert [r.name for r in results] == ["a_good"]
    assert "b_holed.png: 64 of its pixels are nodata, transparent or masked" in caplog.text
    assert "c_flat.png: a band is flat" in caplog.text


def test_images_are_tiled_as_upscale_tiles_them_without_seams():
    # Without global attention or the transformer, a receptive field within overlap / 4 makes blended tiles exact.
    torch.manual_seed(0)
    model = Generator(GeneratorConfig(scale=2, channels=16, n_blocks=1, attention="none", refiner="none")).eval()
    x = torch.rand(3, 70, 83) * 2 - 1
    with torch.no_grad():
        whole = model(x[None])[0]
    tiled = super_resolve(
        model, x, device=torch.device("cpu"), tile_size=64, overlap=32, batch_size=3, consistency=False
    )
    assert tiled.shape == whole.shape == (3, 140, 166)
    assert torch.allclose(tiled, whole, atol=1e-5)
    # with the consistency correction: the whole image's, corrected at once
    corrected = super_resolve(model, x, device=torch.device("cpu"), tile_size=64, overlap=32, batch_size=3)
    expected = project(np.clip(whole.numpy(), -1, 1), x.numpy(), 2)
    np.testing.assert_allclose(corrected.numpy(), expected, atol=5e-5)  # a random model: residuals of ~0.5


def test_summary_means_and_table():
    def r(label, p, s):
        return ImageResult("n", label, "p", 8, 8, p - 1, s - 0.1, p, s)

    summary = summarise([r("a", 30, 0.8), r("a", 32, 0.9), r("b", 20, 0.5)])
    assert summary["a"]["psnr"] == 31 and summary["a"]["images"] == 2
    assert math.isclose(summary["mean"]["psnr"], 82 / 3) and summary["mean"]["images"] == 3
    table = format_table(summary)
    assert table.splitlines()[-1].split()[:3] == ["mean", "3", f"{82 / 3 - 1:.3f}"]
    assert "+1.000" in table  # the gain over bicubic


def test_the_report_written_is_the_report_read_back_for_a_card(tmp_path):
    """geosr.evaluation owns the report's format: what write_report writes, card_metrics reads (and refuses a report
    of another scale or one measured with the self-ensemble)."""
    from geosr.errors import DataError
    from geosr.evaluation import Report, card_metrics, write_report

    results = [
        ImageResult("a", "x", "a.tif", 8, 8, 25.0, 0.7, 27.0, 0.8, 0.05),
        ImageResult("b", "y", "b.tif", 8, 8, 26.0, 0.6, 28.0, 0.7, 0.07),
    ]
    report = Report("data", "folders", "val", 4, "m.safetensors", results, consistency=True, self_ensemble=False)
    write_report(report, tmp_path / "r.json")
    write_report(report, tmp_path / "r.csv")
    metrics = card_metrics(tmp_path / "r.json", 4)
    assert metrics["val_psnr"] == 27.5 and metrics["val_ssim_bicubic"] == 0.65 and metrics["val_images"] == 2
    assert metrics["val_residual"] == 0.06 and metrics["consistency"] is True and metrics["split"] == "val"
    assert (tmp_path / "r.csv").read_text().splitlines()[
        0
    ] == "level,class,name,images,psnr,ssim,psnr_bicubic,ssim_bicubic,residual"
    with pytest.raises(DataError, match="a x4 report for a x2 model"):
        card_metrics(tmp_path / "r.json", 2)
    ensemble = Report("data", "folders", "val", 4, "m", results, consistency=True, self_ensemble=True)
    write_report(ensemble, tmp_path / "e.json")
    with pytest.raises(DataError, match="self-ensemble"):
        card_metrics(tmp_path / "e.json", 4)
    with pytest.raises(DataError, match="not a geosr evaluate JSON report"):
        card_metrics(tmp_path / "r.csv", 4)
