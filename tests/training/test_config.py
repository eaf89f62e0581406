"""The training configuration: TOML round trip, base files, checks, and the example configs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from geosr.training.config import ConfigError, TrainConfig
from geosr.training.configfile import build_config, read_toml, resume_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "configs"


def test_defaults_are_the_papers():
    c = TrainConfig(data="x").validate()
    assert (c.mse_weight, c.perceptual_weight, c.adversarial_weight) == (0.5, 0.5, 0.1)
    assert (c.lr_g, c.lr_d, c.betas, c.lr_decay_epochs, c.lr_gamma) == (1e-4, 1e-4, [0.9, 0.999], [50], 0.1)
    assert (c.batch_size, c.patch_size, c.scale) == (16, 256, 4)
    assert c.generator_config().n_blocks == 14 and not c.global_skip and c.diffusion
    assert c.card_tile_size == 64 and c.card_overlap == 16
    assert c.uses_discriminator and not TrainConfig(data="x", adversarial_weight=0).uses_discriminator
    assert c.attention_dropout == 0.1


def test_toml_round_trip(tmp_path):
    c = TrainConfig(
        data="/d",
        bands=[1, 2, 3, 4],
        band_names=["r", "g", "b", "nir"],
        perceptual_weight=0.0,
        max_minutes=5.0,
        lr_decay_steps=[10, 20],
        description='say "hi"',
    ).validate()
    (tmp_path / "c.toml").write_text(c.to_toml())
    assert build_config(tmp_path / "c.toml") == c
    assert "max_steps" not in tomllib.loads(c.to_toml())["optim"]  # unset values are left out


def test_a_config_file_that_is_not_utf8_text_is_named_with_the_remedy(tmp_path):
    (tmp_path / "latin1.toml").write_bytes(b'[data]\npatch_size = 32\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8 text \(byte 0xe9 at offset 34\).*save it as UTF-8"):
        read_toml(tmp_path / "latin1.toml")
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf[data]\npatch_size = 32\n")  # Notepad's byte-order mark
    assert read_toml(tmp_path / "bom.toml") == {"patch_size": 32}
    with pytest.raises(ConfigError, match=r"folder, not a config file"):
        read_toml(tmp_path)


def test_checks_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="not a valid int"):
        (tmp_path / "a.toml").write_text("[data]\nbatch_size = 2.5\n")
        read_toml(tmp_path / "a.toml")
    with pytest.raises(ConfigError, match="unknown table"):
        (tmp_path / "b.toml").write_text("[training]\nlr = 1\n")
        read_toml(tmp_path / "b.toml")
    with pytest.raises(ConfigError, match="include each other in a loop"):
        (tmp_path / "c.toml").write_text('base = "c.toml"\n')
        read_toml(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="VGG perceptual loss needs 3"):
        TrainConfig(data="x", bands=[1, 2, 3, 4]).validate()
    with pytest.raises(ConfigError, match="every loss weight is 0"):
        TrainConfig(data="x", mse_weight=0, perceptual_weight=0, adversarial_weight=0).validate()
    with pytest.raises(ConfigError, match="attention must be one of"):
        TrainConfig(data="x", attention="transformer").validate()
    with pytest.raises(
        ConfigError,
        match=r"^tile_size, overlap \(the tiling the model card recommends, LR pixels\): "
        r"overlap 33: must be an integer of 0\.\.32",
    ):
        TrainConfig(data="x", overlap=33).validate()  # the default tile: patch 256 / scale 4 = 64 LR pixels
    with pytest.raises(ConfigError, match="tile size 5000: must be an integer of 8..4096 input pixels"):
        TrainConfig(data="x", tile_size=5000).validate()
    assert TrainConfig(data="x", tile_size=100, overlap=50).validate().card_overlap == 50
    cfg = TrainConfig(data="x").validate()
    assert resume_config(cfg, {"max_steps": 10, "val_images": 3}).max_steps == 10
    with pytest.raises(ConfigError, match="cannot change scale"):
        resume_config(cfg, {"scale": 2})
    assert resume_config(cfg, {"attention_dropout": 0.0}).attention_dropout == 0.0  # a recipe, not the model
    # the same values written otherwise are no change: the folder with a trailing slash, the default bands
    here = TrainConfig(data=str(Path.cwd())).validate()
    assert resume_config(here, {"data": ".", "bands": [1, 2, 3]}).data == str(Path.cwd())
    assert resume_config(here, {"data": str(Path.cwd()) + "/"}).bands is None
    with pytest.raises(ConfigError, match="cannot change bands"):
        resume_config(here, {"bands": [3, 2, 1]})
    with pytest.raises(ConfigError, match=r"attention_dropout must be in \[0, 1\), got 1.0"):
        TrainConfig(data="x", attention_dropout=1.0).validate()


def test_the_example_configs_are_valid():
    files = sorted(EXAMPLES.glob("*.toml"))
    assert {f.name for f in files} >= {
        "degan_x4.toml",
        "degan_x2.toml",
        "table4_attention_se.toml",
        "table5_refiner_none.toml",
        "table3_blocks_7.toml",
        "cpu_x4_content.toml",
    }
    configs = {f.stem: build_config(f) for f in files}
    main = configs["degan_x4"]
    assert main.scale == 4 and main.patch_size == 256 and main.perceptual_weight == 0.5
    assert configs["degan_x2"].scale == 2
    assert {configs[f"table4_attention_{v}"].attention for v in ("none", "se", "cam", "sam")} == {
        "none",
        "se",
        "cam",
        "sam",
    }
    assert configs["table5_refiner_unet"].refiner == "unet" and configs["table5_refiner_none"].refiner == "none"
    cpu = configs["cpu_x4_content"]
    assert not cpu.uses_discriminator and cpu.perceptual_weight == 0 and cpu.precision == "auto"
    assert len({c.out for c in configs.values()}) == len(configs)  # every config its own run folder
