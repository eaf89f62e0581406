"""`geosr export`: a run's model file as a model to publish (fp16, named, with a geosr evaluate report in its card)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from geosr.checkpoint import load_generator, read_card
from geosr.cli.main import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """One class of 10 smooth 32x32 PNG scenes (folder rule: one of them is in the val split)."""
    root = tmp_path_factory.mktemp("scenes") / "data"
    (root / "Farm").mkdir(parents=True)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(10):
        img = np.stack([127 + 90 * np.sin((0.1 + 0.02 * i) * xx + c) * np.cos(0.15 * yy) for c in range(3)])
        with rasterio.open(
            root / "Farm" / f"farm_{i}.png", "w", driver="PNG", width=32, height=32, count=3, dtype="uint8"
        ) as dst:
            dst.write(img.round().astype(np.uint8))
    return root


def test_export_casts_to_fp16_renames_and_records_the_evaluate_report(tiny_model, scenes, tmp_path):
    out, report = tmp_path / "pub.safetensors", tmp_path / "val.json"
    run = CliRunner().invoke
    r = run(cli, ["export", str(tiny_model), "-o", str(out), "--name", "farm-x2", "--tile-size", "24"])
    assert r.exit_code == 0, r.output
    stored = load_file(str(out))
    assert all(v.dtype == torch.float16 for v in stored.values())
    source, _ = load_generator(tiny_model)
    for k, v in source.state_dict().items():
        assert torch.equal(stored[k], v.half()), k
    card = read_card(out)
    assert card.name == "farm-x2" and card.tile_size == 24 and card.overlap == 6 and card.metrics == {}

    r = run(cli, ["evaluate", "-m", str(out), "-d", str(scenes), "--split", "val", "-o", str(report)])
    assert r.exit_code == 0, r.output
    r = run(cli, ["export", str(out), "-o", str(out), "--metrics", str(report), "--note", "fp16 export"])
    assert r.exit_code == 1 and "--overwrite" in r.output  # never replaced without asking
    r = run(cli, ["export", str(out), "-o", str(out), "--metrics", str(report), "--note", "fp16 export", "--overwrite"])
    assert r.exit_code == 0, r.output
    mean = json.loads(report.read_text())["summary"]["mean"]
    card = read_card(out)
    assert card.metrics["val_psnr"] == pytest.approx(mean["psnr"], abs=1e-4)
    assert card.metrics["val_psnr_bicubic"] == pytest.approx(mean["psnr_bicubic"], abs=1e-4)
    assert card.metrics["val_images"] == 1 and card.metrics["split"] == "val"
    assert card.training["notes"] == ["fp16 export"]
    assert all(torch.equal(load_file(str(out))[k], v) for k, v in stored.items())  # fp16 -> fp16 is exact


def test_export_refuses_a_report_of_another_scale(tiny_model, tmp_path):
    report = tmp_path / "x4.json"
    report.write_text(
        json.dumps(
            {
                "scale": 4,
                "summary": {"mean": {"psnr": 30, "ssim": 0.9, "psnr_bicubic": 28, "ssim_bicubic": 0.8, "images": 3}},
            }
        )
    )
    r = CliRunner().invoke(
        cli, ["export", str(tiny_model), "-o", str(tmp_path / "m.safetensors"), "--metrics", str(report)]
    )
    assert r.exit_code == 1 and "x4 report for a x2 model" in r.output
    assert not (tmp_path / "m.safetensors").exists()


def test_info_without_a_model_lists_the_bundled_models():
    r = CliRunner().invoke(cli, ["info"])
    assert r.exit_code == 0, r.output
    from geosr.bundled import bundled_models

    for name in bundled_models():
        assert name in r.output
