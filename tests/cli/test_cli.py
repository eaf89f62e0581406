"""The geosr command group: help, version, info, and one-line errors."""

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from geosr import __version__
from geosr.checkpoint import ModelCard, save_generator
from geosr.cli.main import cli
from geosr.models import Generator, GeneratorConfig


def test_help_lists_the_four_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("upscale", "train", "evaluate", "info"):
        assert f"  {command} " in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_entry_point_runs_as_a_program():
    out = subprocess.run([sys.executable, "-m", "geosr.cli.main", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


@pytest.fixture
def model_file(tmp_path):
    cfg = GeneratorConfig(scale=2, channels=16, n_blocks=1, refiner_base=8)
    card = ModelCard(config=cfg, name="tiny", training={"steps": 12}, metrics={"val_psnr": 30.5})
    return save_generator(tmp_path / "tiny.safetensors", Generator(cfg), card)


def test_info_prints_the_card(model_file):
    result = CliRunner().invoke(cli, ["info", str(model_file)])
    assert result.exit_code == 0, result.output
    assert "x2" in result.output and "tiny" in result.output and "val_psnr: 30.5" in result.output


def test_info_json(model_file):
    import json

    result = CliRunner().invoke(cli, ["info", "--json", str(model_file)])
    assert json.loads(result.output)["config"]["scale"] == 2


def test_info_refuses_a_pickle_with_one_line(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"a": torch.zeros(1)}, path)
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "weights.pth" in lines[0]
    assert "Traceback" not in result.output
