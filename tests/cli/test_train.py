"""`geosr train`: config file and overrides, a short run and its resume, and the errors."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from testdata import tiny_train_args, write_geotiff

from geosr.checkpoint import read_card
from geosr.cli.main import cli

TINY = [*tiny_train_args(), "--val-images", "2"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """UC Merced layout: 2 classes, numbers 00-07 (train) and 50-51 (val), 48x48 px."""
    root = tmp_path_factory.mktemp("data") / "scenes"
    rng = np.random.default_rng(0)
    for cls in ("fields", "roofs"):
        for n in list(range(8)) + [50, 51]:
            path = root / cls / f"{cls}{n:02d}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(path, "w", driver="GTiff", width=48, height=48, count=3, dtype="uint8") as dst:
                dst.write(rng.integers(0, 256, size=(3, 48, 48), dtype=np.uint8))
    return root


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train(*args):
    return CliRunner().invoke(cli, ["-q", "train", *map(str, args)])


def test_config_file_base_and_overrides(tmp_path, scenes):
    (tmp_path / "base.toml").write_text("[model]\nscale = 2\nn_blocks = 6\n[optim]\nlr_g = 2e-4\n")
    (tmp_path / "run.toml").write_text(f'base = "base.toml"\n[data]\ndata = "{scenes}"\n[model]\nattention = "se"\n')
    result = train("--config", tmp_path / "run.toml", "--n-blocks", "3", "--betas", "0.5,0.9", "--print-config")
    assert result.exit_code == 0, result.output
    cfg = tomllib.loads(result.output)
    assert cfg["model"]["n_blocks"] == 3 and cfg["model"]["attention"] == "se" and cfg["model"]["scale"] == 2
    assert cfg["optim"]["lr_g"] == 2e-4 and cfg["optim"]["betas"] == [0.5, 0.9]
    assert cfg["data"]["data"] == str(scenes)


def test_a_short_run_then_resume_from_the_command_line(tmp_path, scenes):
    out = tmp_path / "run"
    result = train("--data", scenes, "--out", out, "--max-steps", "2", *TINY)
    assert result.exit_code == 0, result.output
    assert read_card(out / "best.safetensors").training["steps"] == 2
    result = train("--resume", out, "--max-steps", "3")
    assert result.exit_code == 0, result.output
    assert read_card(out / "last.safetensors").training["steps"] == 3
    result = train("--resume", out, "--n-blocks", "2")
    assert result.exit_code == 1 and "cannot change n_blocks when resuming" in result.output
    result = train("--resume", out, "-o", tmp_path / "other", "--max-steps", "4")  # -o never silently ignored
    assert result.exit_code == 2 and f"--resume continues {out} in that folder" in result.output
    assert not (tmp_path / "other").exists() and read_card(out / "last.safetensors").training["steps"] == 3
    result = train("--resume", out, "-o", out, "--max-steps", "3")  # its own folder: as without -o
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["train", "--resume", str(out), "--max-steps", "2"])  # not quiet: its message
    assert (
        result.exit_code == 0
        and "trained 3 steps and stops at step 2 (--max-steps or --epochs): nothing to train; give a larger --max-steps"
        in result.output
        and "3/2" not in result.output
    )
    assert read_card(out / "last.safetensors").training["steps"] == 3
    result = train("--data", scenes, "--out", out, "--max-steps", "2", *TINY)
    assert result.exit_code == 1 and f"--resume {out}" in result.output


def test_resuming_with_another_number_of_processes_says_the_run_goes_on_differently(tmp_path, scenes, caplog):
    import torch

    out = tmp_path / "run"
    assert train("--data", scenes, "--out", out, "--max-steps", "2", *TINY).exit_code == 0
    state_file = out / "checkpoints" / "state.pt"
    state = torch.load(state_file, weights_only=False)
    state["rng"] = state["rng"] * 2  # as two processes under torchrun save it
    torch.save(state, state_file)
    result = CliRunner().invoke(cli, ["train", "--resume", str(out), "--max-steps", "3"])
    assert result.exit_code == 0, result.output
    assert "saved by 2 process(es), resumed by 1: the random streams" in caplog.text


def test_errors(tmp_path, scenes):
    result = train("--max-steps", "1")
    assert result.exit_code == 2 and "--data DIR" in result.output
    result = train("--data", tmp_path / "missing", "--out", tmp_path / "r1", *TINY)
    assert result.exit_code == 1 and "no such data folder" in result.output
    only_val = tmp_path / "only_val"
    for p in (scenes / "fields").glob("fields5*.tif"):
        (only_val / "fields").mkdir(parents=True, exist_ok=True)
        (only_val / "fields" / p.name).write_bytes(p.read_bytes())
    result = train("--data", only_val, "--out", tmp_path / "r2", *TINY)
    assert result.exit_code == 1 and "train split is empty" in result.output and "00-49" in result.output
    (tmp_path / "bad.toml").write_text("[model]\nn_block = 3\n")
    result = train("--config", tmp_path / "bad.toml")
    assert result.exit_code == 1 and "unknown setting 'n_block'; did you mean 'n_blocks'?" in result.output
    (tmp_path / "bad2.toml").write_text("[loss]\nscale = 2\n")
    result = train("--config", tmp_path / "bad2.toml")
    assert result.exit_code == 1 and "scale belongs in [model]" in result.output
    result = train("--data", scenes, "--bands", "1,x")
    assert result.exit_code == 2 and "expected 1-based band numbers separated by commas" in result.output
    # a value out of range given on the command line is a usage error on its option (exit 2); one it did not give
    # (the default patch 256 at x3, or a config file's) a failure that names the option and the setting
    result = train("--data", scenes, "--patch-size", "33", "--scale", "2")
    assert (
        result.exit_code == 2 and "Invalid value for '--patch-size': must be a multiple of the scale" in result.output
    )
    result = train("--data", scenes, "--attention", "foo")  # a model setting as any other
    assert result.exit_code == 2 and "Invalid value for '--attention': must be one of" in result.output
    result = train("--data", scenes, "--scale", "3")
    assert (
        result.exit_code == 1
        and "the scale (3) and at least 32 (the discriminator's minimum), got 256; set "
        "--patch-size (or patch_size in the config file)"
        in result.output
    )
    (tmp_path / "patch.toml").write_text(f'[data]\ndata = "{scenes}"\npatch_size = 30\n')
    result = train("--config", tmp_path / "patch.toml")
    assert result.exit_code == 1 and "got 30; set --patch-size (or patch_size in the config file)" in result.output
    result = train("--resume", tmp_path)
    assert result.exit_code == 2 and "not a geosr run folder" in result.output
    for args, message in (
        (("--lr-g", "-1"), "'--lr-g': lr_g and lr_d must be positive, got -1.0 and"),
        (("--val-images", "-1"), "'--val-images': must be >= 0, got -1"),
        (("--grad-clip", "0"), "'--grad-clip': must be positive, got 0.0"),
    ):  # each option named with the value given
        result = train("--data", scenes, "--out", tmp_path / "r4", *TINY, *args)
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "r4").exists()
    result = train("--data", scenes, "--out", tmp_path / "r3", "--bands", "1,2,5", "--perceptual-weight", "0", *TINY)
    assert result.exit_code == 1 and "has 3 bands; --bands takes 1-based indices up to 3" in result.output


def sensor_tiles(root, n=3, bands=3):
    """``n`` small uint16 GeoTIFF tiles of ``bands`` bands: another sensor's imagery for --extra-data."""
    rng = np.random.default_rng(3)
    for i in range(n):
        write_geotiff(root / f"tile{i}.tif", rng.integers(0, 4000, size=(bands, 40, 40)).astype(np.uint16))
    return root


def test_a_short_run_with_extra_data(tmp_path, scenes):
    extra = sensor_tiles(tmp_path / "sensor")
    out = tmp_path / "run"
    result = train(
        "--data", scenes, "--extra-data", extra, "--extra-repeat", "2", "--out", out, "--max-steps", "2", *TINY
    )
    assert result.exit_code == 0, result.output
    saved = tomllib.loads((out / "config.toml").read_text())["data"]
    assert saved["extra_data"] == [str(extra)] and saved["extra_repeat"] == 2
    training = read_card(out / "best.safetensors").training
    assert training["steps"] == 2 and training["steps_per_epoch"] == (16 + 3 * 2) // 4
    assert [(e["data"], e["images"], e["repeat"]) for e in training["extra_data"]] == [(str(extra), 3, 2)]
    result = train("--resume", out, "--extra-repeat", "3")
    assert result.exit_code == 1 and "cannot change extra_repeat when resuming" in result.output


def test_extra_data_errors(tmp_path, scenes):
    def refused(*args):
        result = train("--data", scenes, "--out", tmp_path / "r", *args, *TINY)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output  # one line, no traceback
        return result.output.strip()

    missing = refused("--extra-data", tmp_path / "missing")
    assert missing.startswith("Error: --extra-data ") and "missing: no such data folder" in missing
    (tmp_path / "empty").mkdir()
    assert "no images found" in refused("--extra-data", tmp_path / "empty")
    pan = sensor_tiles(tmp_path / "pan", bands=1)
    assert "has 1 band, training takes bands 1,2,3: write 3-band tiles, or choose --bands" in refused(
        "--extra-data", pan
    )
    result = train("--data", scenes, "--out", tmp_path / "r", "--extra-data", pan, "--extra-repeat", "0", *TINY)
    assert result.exit_code == 2 and "'--extra-repeat': must be at least 1, got 0" in result.output
    assert "is given twice" in refused("--extra-data", pan, "--extra-data", pan)
    assert "overlaps the --data folder" in refused("--extra-data", scenes)
