"""geosr.training.keep: what a cycle's record says about how it trained comes from its run folder."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import cli
from geosr.training.config import TrainConfig
from geosr.training.keep import _arguments, _recipe, _train_args


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
