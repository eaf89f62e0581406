"""Data-parallel training under torchrun: 2 CPU processes (gloo) for a few steps; rank 0 alone writes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from testdata import tiny_train_args

from geosr.checkpoint import load_generator
from geosr.training.state import load_state, read_log


@pytest.mark.slow
def test_torchrun_two_cpu_processes(scene_folder, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "geosr.cli.main",
        "train",
        "--data",
        str(scene_folder),
        "--out",
        str(run),
        *tiny_train_args(),
        *("--max-steps", "3", "--val-images", "3"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert out.stdout.count("model file:") == 1  # rank 0 alone reports
    rows = read_log(run / "log.csv")
    assert [r["step"] for r in rows if r["kind"] == "train"] == ["1", "2", "3"]  # one row per step, not per process
    assert [r["val_images"] for r in rows if r["kind"] == "val"] == ["3"]  # the val images shared out and summed
    state = load_state(run / "checkpoints" / "state.pt")
    assert state["step"] == 3 and len(state["rng"]) == 2  # every process's RNG state, for resume
    _, card = load_generator(run / "best.safetensors")
    assert card.training["processes"] == 2 and card.training["batch_size"] == 4
    assert card.training["steps_per_epoch"] == 5  # 20 images, 10 per process, batches of 2 per process


@pytest.mark.slow
def test_processes_that_do_not_see_the_same_data_stop_with_one_line(scene_folder, tmp_path):
    import shutil

    # a per-node copy of the data that differs on one node: process 1 reads its own folder
    part = tmp_path / "part"
    shutil.copytree(scene_folder, part)
    for p in (part / "roofs").glob("roofs0[5-9].tif"):
        p.unlink()
    wrapper = tmp_path / "node.py"
    wrapper.write_text(
        "import os, sys\n"
        "from geosr.cli.main import main\n"
        f"if os.environ.get('RANK') == '1':\n"
        f"    sys.argv = [a.replace({str(scene_folder)!r}, os.environ['RANK1_DATA']) for a in sys.argv]\n"
        "main()\n"
    )

    def torchrun(rank1_data, out):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(wrapper), "train", "--data", str(scene_folder), "--out", str(out), *tiny_train_args(),
               "--max-steps", "2"]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS="1", RANK1_DATA=str(rank1_data))
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    proc = torchrun(part, tmp_path / "run")
    assert proc.returncode != 0
    assert (
        "do not see the same images (process 0: " in proc.stderr and "give every process the same data" in proc.stderr
    )
    assert "unexpected error" not in proc.stderr and "geosr/training" not in proc.stderr  # no traceback of geosr's
    assert not (tmp_path / "run" / "checkpoints").exists()
    proc = torchrun(tmp_path / "missing", tmp_path / "run2")  # the folder absent on one node
    assert proc.returncode != 0 and "process 1 of 2: " in proc.stderr and "missing" in proc.stderr
    assert "unexpected error" not in proc.stderr
