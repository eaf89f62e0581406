"""geosr.training.keep: what a cycle's record says about how it trained comes from its run folder."""

from __future__ import annotations

import json

import numpy as np
import rasterio
from click.testing import CliRunner

from cli.main import cli
from geosr.bundled import default_model
from geosr.training.config import TrainConfig
from geosr.training.keep import _arguments, _cross_sensor, _recipe, _train_args, main


def test_a_cycle_records_the_settings_its_run_trained_with(tmp_path):
    """The run's config.toml, as geosr train writes it, decides; not the options of the invocation that ends it."""
    cfg = TrainConfig(
        mse_weight=0.0,
        l1_weight=1.0,
        patch_size=128,
        batch_size=8,
        lr_g=2e-5,
        lr_schedule="step",
        ema=False,
        max_steps=300,
        seed=7,
    )
    (tmp_path / "config.toml").write_text(cfg.to_toml())
    assert _recipe(tmp_path) == {
        "steps": 300,
        "patch_size": 128,
        "batch_size": 8,
        "lr": 2e-5,
        "lr_schedule": "step",
        "ema": False,
        "mse_weight": 0.0,
        "l1_weight": 1.0,
        "seed": 7,
    }


def test_the_ab_options_reach_the_runs_settings(tmp_path):
    """--lr-schedule and --no-ema travel through geosr train's own parser into the run's resolved settings."""

    def resolved(*options: str) -> str:
        args = _train_args(_arguments([*options, "--data", str(tmp_path)]), tmp_path / "c", "s.safetensors", seed=4)
        result = CliRunner().invoke(cli, [*args, "--print-config"])
        assert result.exit_code == 0, result.output
        return result.output

    ab = resolved("--lr-schedule", "step", "--no-ema")
    assert 'lr_schedule = "step"' in ab and "ema = false" in ab and "seed = 4" in ab
    default = resolved()
    assert 'lr_schedule = "cosine"' in default and "ema = true" in default


def test_extra_data_reaches_the_run_and_its_record(tmp_path):
    """--extra-data and --extra-repeat travel into the run's settings, and the cycle's record names them."""
    extra = tmp_path / "other-sensor"
    extra.mkdir()
    args = _train_args(
        _arguments(["--data", str(tmp_path / "ucm"), "--extra-data", str(extra), "--extra-repeat", "5"]),
        tmp_path / "c",
        "s.safetensors",
        seed=6,
    )
    result = CliRunner().invoke(cli, [*args, "--print-config"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(result.output)
    recipe = _recipe(run)
    assert recipe["extra_data"] == [str(extra)] and recipe["extra_repeat"] == 5 and recipe["seed"] == 6
    plain = _train_args(_arguments(["--data", str(tmp_path / "ucm")]), tmp_path / "c", "s.safetensors", seed=6)
    assert "--extra-data" not in plain and "--extra-repeat" not in plain


def test_a_cycle_is_measured_on_the_cross_sensor_set(tmp_path):
    """geosr evaluate of a model on a folder of classes: the record's mean and gain are its report's."""
    rng = np.random.default_rng(0)
    for sensor in ("sensor_a", "sensor_b"):
        (tmp_path / "xs" / sensor).mkdir(parents=True)
        smooth = rng.integers(0, 256, (3, 8, 8)).repeat(8, axis=1).repeat(8, axis=2).astype(np.uint8)
        profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 3, "dtype": "uint8"}
        with rasterio.open(tmp_path / "xs" / sensor / "crop0.tif", "w", **profile) as ds:
            ds.write(smooth)
    a = _arguments(["--data", str(tmp_path), "--cross-sensor", str(tmp_path / "xs"), "--eval-precision", "fp32"])
    measured = _cross_sensor(default_model(4), a.cross_sensor, tmp_path / "xs.json", a)
    assert measured is not None
    mean = json.loads((tmp_path / "xs.json").read_text())["summary"]["mean"]
    assert mean["images"] == 2
    assert measured["cross_sensor_psnr"] == mean["psnr"] and measured["cross_sensor_ssim"] == mean["ssim"]
    assert measured["cross_sensor_gain_db"] == mean["psnr"] - mean["psnr_bicubic"]
    assert _cross_sensor(default_model(4), str(tmp_path / "missing"), tmp_path / "m.json", a) is None


def test_one_cycle_runs_end_to_end_and_records_its_degradation(tmp_path, scene_folder):
    """--cycles 1 ends the invocation after one finished cycle: trained, exported, measured and recorded."""
    root = tmp_path / "root"
    rc = main(
        [
            "--scale", "4", "--root", str(root), "--data", str(scene_folder), "--cycles", "1", "--cycle-steps", "2",
            "--warmup-steps", "1", "--patch-size", "32", "--batch-size", "2", "--val-every-steps", "2",
            "--precision", "fp32", "--eval-precision", "fp32", "--degrade", "0.5",
        ]
    )  # fmt: skip
    assert rc == 0
    history = json.loads((root / "x4" / "cycles.json").read_text())
    assert len(history["cycles"]) == 1
    entry = history["cycles"][0]
    assert entry["steps"] == 2 and entry["degrade"] == 0.5 and entry["seed"] == 0
    assert entry["start"] == str(default_model(4)) and np.isfinite(entry["val_psnr"]) and 0 < entry["val_ssim"] <= 1
    assert (root / "x4" / "cycle-0" / "degan-x4-cycle0.safetensors").is_file()
    assert not (root / "x4" / "cycle-1").exists()  # no second cycle was started
