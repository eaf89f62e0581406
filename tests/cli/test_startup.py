"""Start-up of the command line: help, option parsing and usage errors import neither PyTorch nor rasterio.

Each case runs geosr's entry point (geosr.cli.main:main, as the ``geosr`` script does) in a fresh interpreter and
reads that interpreter's sys.modules afterwards. benchmarks/startup.py measures the times; these tests only check
which modules were loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from geosr.cli import options
from geosr.cli.main import cli

HEAVY = ("torch", "rasterio")
PROBE = """
import json, sys
from geosr.cli.main import main
sys.argv = ["geosr", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"exit": code, "loaded": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)  # noqa: UP031 - the probe's own braces stay as they are


def geosr_modules(*args: str, cwd=None) -> dict:
    """Run ``geosr ARGS`` in a fresh interpreter: its exit code and which of HEAVY it imported."""
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd)
    return json.loads(result.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-h"],
        ["--version"],
        ["upscale", "--help"],
        ["evaluate", "--help"],
        ["export", "--help"],
        ["info", "--help"],
        ["train", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_neither_torch_nor_rasterio(args):
    assert geosr_modules(*args) == {"exit": 0, "loaded": []}


@pytest.mark.parametrize(
    "args",
    [
        ["upscale"],  # a missing argument
        ["upscale", "in.tif", "-o", "out.tif", "--precision", "int8"],
        ["upscale", "in.tif", "-o", "out.tif", "--scale", "5"],
        ["upscale", "in.tif", "-o", "out.tif", "--device", "tpu"],
        ["upscale", "in.tif", "-o", "out.tif", "--compress", "jpeg"],
        ["upscale", "in.tif", "-o", "out.tif", "--no-such-option"],
        ["evaluate", "-d", "data", "--precision", "fp8"],
        ["export", "m.safetensors", "-o", "x.safetensors", "--dtype", "int8"],
        ["nosuchcommand"],
    ],
    ids=" ".join,
)
def test_a_usage_error_imports_neither_torch_nor_rasterio(args, tmp_path):
    assert geosr_modules(*args, cwd=tmp_path) == {"exit": 2, "loaded": []}
    assert list(tmp_path.iterdir()) == []


def test_the_options_choices_are_their_owners_own():
    """One owner: the command line's choices are the very objects the library checks against (geosr.limits)."""
    from geosr import options as library_options
    from geosr.limits import ATTENTIONS, COMPRESSIONS, MAX_TILE, MIN_TILE, REFINERS, SCALES, default_overlap
    from geosr.models import generator
    from geosr.training import config

    assert options.SCALES is SCALES is generator.SCALES
    assert library_options.COMPRESSIONS is COMPRESSIONS and library_options.MAX_TILE == MAX_TILE
    assert (options.MIN_TILE, options.MAX_TILE) == (MIN_TILE, MAX_TILE)
    assert generator.ATTENTIONS is ATTENTIONS and generator.REFINERS is REFINERS

    assert (config.ATTENTIONS, config.REFINERS, config.default_overlap) == (ATTENTIONS, REFINERS, default_overlap)
    assert config.ATTENTIONS is ATTENTIONS and config.default_overlap is default_overlap


def test_a_lazy_rule_is_the_library_rule():
    from geosr.options import check_batch_size

    assert options.check_batch_size(3) == check_batch_size(3)
    assert options.check_batch_size.__name__ == "check_batch_size"


def test_train_has_its_setting_options_in_place():
    """geosr train makes its options from TrainConfig when first read; they sit after --print-config, as before."""
    names = [p.name for p in cli.commands["train"].params]
    assert names[:4] == ["config_file", "resume_dir", "print_config", "data"]
    assert names[-2:] == ["verbose", "quiet"] and len(names) == len(set(names))
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0 and "--n-blocks" in result.output and "--val-precision" in result.output


CTRL_C_MID_IMPORT = """
import os, signal, sys, time
os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the package's body runs
time.sleep(0.05)
sys.body_ran_to_its_end = True
"""


@pytest.mark.parametrize("held", [True, False])
def test_ctrl_c_during_a_held_import_arrives_when_the_import_is_done(tmp_path, held):
    """geosr's command line imports PyTorch with Ctrl-C held back (geosr.cli.exits.HeldImport): an interrupt inside
    PyTorch's C++ initialisers aborts the process. A package that interrupts itself mid-import shows the rule: held,
    its body runs to its end and KeyboardInterrupt comes after; not held, it comes in the middle."""
    (tmp_path / "interrupting").mkdir()
    (tmp_path / "interrupting" / "__init__.py").write_text(CTRL_C_MID_IMPORT)
    install = "HeldImport.install(frozenset({'interrupting'}))" if held else ""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from geosr.cli.exits import HeldImport\n"
        f"{install}\n"
        "try:\n"
        "    import interrupting\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', getattr(sys, 'body_ran_to_its_end', False))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"interrupted {held}"
