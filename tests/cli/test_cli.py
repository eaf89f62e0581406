"""The geosr command group: help, version, info, and one-line errors."""

import hashlib
import signal
import subprocess
import sys
from pathlib import Path

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
    doc = json.loads(result.output)
    assert doc["config"]["scale"] == 2
    # what the text shows of the file too: the SHA-256 a raster geosr wrote records as GEOSR_MODEL_SHA256
    assert doc["file"]["sha256"] == hashlib.sha256(Path(model_file).read_bytes()).hexdigest()
    assert doc["file"]["size_bytes"] == Path(model_file).stat().st_size and doc["file"]["weights_stored_as"]


def test_info_refuses_a_pickle_with_one_line(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"a": torch.zeros(1)}, path)
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "weights.pth" in lines[0]
    assert "Traceback" not in result.output


# A process that sees a CPU without native bf16 (PyTorch's probes say no AMX and no AVX512-BF16), then runs geosr.
AVX2_ONLY_GEOSR = """
import sys
import torch
torch.cpu._is_amx_tile_supported = lambda: False
torch.cpu._is_avx512_bf16_supported = lambda: False
from geosr.cli.main import main
sys.argv = ["geosr", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("precision, warned", [("bf16", True), ("fp32", False), ("auto", False)])
def test_bf16_asked_for_on_a_cpu_without_native_bf16_is_one_warning_line(
    precision, warned, tiny_model, rgb_tif, tmp_path
):
    out = tmp_path / f"{precision}.tif"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            AVX2_ONLY_GEOSR,
            "upscale",
            str(rgb_tif),
            "-o",
            str(out),
            "--model",
            str(tiny_model),
            "--device",
            "cpu",
            "--precision",
            precision,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert out.is_file()  # bf16 still runs: the user asked for it
    warnings = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("WARNING:")]
    if warned:
        (line,) = warnings
        assert "AVX512-BF16" in line and "--precision fp32 or auto" in line
    else:
        assert warnings == [], result.stderr


@pytest.fixture
def signal_handlers():
    """The process's SIGINT and SIGTERM handlers, put back after a test that runs the program's entry point in-process
    (it ignores both once the command is over)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("signal_handlers")
@pytest.mark.parametrize(
    "argv, code, line",
    [
        (["upscale", "--help"], 0, "Usage: geosr upscale"),
        (["upscale", "in.tif", "-o", "out.tif", "--scale", "7"], 2, "Error: Invalid value for '-s' / '--scale'"),
        (["info", "missing.safetensors"], 1, "Error: missing.safetensors"),
    ],
)
def test_the_entry_point_exits_as_click_would(monkeypatch, capsys, tmp_path, argv, code, line):
    from geosr.cli import main as entry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["geosr", *argv])
    with pytest.raises(SystemExit) as exited:
        entry.main()
    assert exited.value.code == code
    captured = capsys.readouterr()
    assert line in captured.out + captured.err
    # the command is over: a late Ctrl-C or SIGTERM cannot turn its exit (and its report) into a death by signal
    assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


@pytest.mark.usefixtures("signal_handlers")
def test_ctrl_c_while_the_command_line_is_parsed_exits_130(monkeypatch, capsys):
    """Before a command's body runs (geosr.cli.exits handles Ctrl-C there), click would print "Aborted!" and exit 1."""
    from geosr.cli import main as entry

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(entry.cli, "make_context", interrupted)
    monkeypatch.setattr(sys, "argv", ["geosr", "upscale", "in.tif", "-o", "out.tif"])
    with pytest.raises(SystemExit) as exited:
        entry.main()
    assert exited.value.code == 130
    assert "Interrupted." in capsys.readouterr().err
