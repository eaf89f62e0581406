"""The models that ship inside the package: present, small, honest cards, used when no --model is given."""

from __future__ import annotations

import json

import pytest
import rasterio
import torch
from click.testing import CliRunner
from safetensors import safe_open

from geosr.bundled import bundled_models, default_model
from geosr.checkpoint import load_generator, read_card
from geosr.cli.main import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The quality bar of the shipped PSNR models over bicubic on the UC Merced val split (dB).
BAR = {2: 2.0, 4: 1.5}
MAX_BYTES = 16 * 1024 * 1024


@pytest.mark.parametrize("scale", [2, 4])
def test_a_default_model_ships_for_x2_and_x4(scale):
    path = default_model(scale)
    assert path.stat().st_size <= MAX_BYTES
    with safe_open(str(path), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 - safe_open is no dict == {"F16"}
    card = read_card(path)
    assert card.scale == scale and card.name == f"degan-x{scale}"
    t, m = card.training, card.metrics
    assert "ucmerced" in t["data"] and t["split"] == "train" and t["steps"] > 0 and t["wall_time_s"] > 0
    assert t["hardware"] and card.tile_size * scale == t["patch_size"] and 0 < card.overlap <= card.tile_size // 4
    if card.overlap != card.tile_size // 4:  # less than the quarter only by measurement, which the card names
        assert any("overlap" in note and "benchmarks/overlap.py" in note for note in t.get("notes", []))
    assert m["split"] == "val" and m["val_images"] == 210  # the whole val split, measured by geosr evaluate
    assert m["val_psnr"] - m["val_psnr_bicubic"] >= BAR[scale]
    assert m["val_ssim"] > m["val_ssim_bicubic"]


def test_every_bundled_model_loads_and_runs():
    assert {"degan-x2", "degan-x4"} <= set(bundled_models())
    for name, path in bundled_models().items():
        model, card = load_generator(name)
        assert path.stat().st_size <= MAX_BYTES
        x = torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
        with torch.inference_mode():
            y = model(x)
        assert y.shape == (1, 3, 16 * card.scale, 16 * card.scale) and torch.isfinite(y).all(), name


def test_upscale_without_model_uses_the_bundled_default(tmp_path, make_geotiff, synthetic_image):
    src = make_geotiff(tmp_path / "in.tif", synthetic_image(3, 40, 36))
    out = tmp_path / "out.tif"
    result = CliRunner().invoke(cli, ["-q", "upscale", str(src), "--scale", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height) == (72, 80)
        assert "degan-x2" in ds.tags()["GEOSR_MODEL"]


def test_info_lists_the_bundled_models_with_their_numbers():
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0
    assert "degan-x4" in result.output and "degan-x2" in result.output and "val PSNR" in result.output


@pytest.mark.shared_data
def test_the_default_x4_model_beats_bicubic_on_uc_merced_val_images(tmp_path, shared_data):
    data = shared_data / "ucmerced"
    report = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli,
        ["-q", "evaluate", "-d", str(data), "--split", "val", "--scale", "4", "--max-images", "3", "-o", str(report)],
    )
    assert result.exit_code == 0, result.output
    mean = json.loads(report.read_text())["summary"]["mean"]
    assert mean["images"] == 3 and mean["psnr"] > mean["psnr_bicubic"] + 0.5 and mean["ssim"] > mean["ssim_bicubic"]
