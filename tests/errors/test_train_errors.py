"""`geosr train` under bad data and faults: one line, exit 1, and a run folder that can always be resumed.

An unreadable image (or one with NaN/Inf values) stops the run before anything is written, naming the image: a
training set that silently shrinks would be a different experiment. tests/cli/test_train.py covers an empty train
split, a missing data folder, bad config files and bands out of range.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from badinput import (
    corrupt_tiles,
    files_in,
    image,
    nan_inf,
    not_a_raster,
    refused,
    run,
    subprocess_env,
    truncated,
)
from testdata import tiny_train_args, write_geotiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = [*tiny_train_args(refiner=("--refiner", "none")), "--val-images", "2", "--num-workers", "0"]


@pytest.fixture
def scenes(tmp_path) -> Path:
    """UC Merced layout: 2 classes, numbers 00-03 (train) and 50 (val), 40 x 40 px."""
    root = tmp_path / "scenes"
    for cls in ("fields", "roofs"):
        for n in (0, 1, 2, 3, 50):
            write_geotiff(root / cls / f"{cls}{n:02d}.tif", image(3, 40, 40, seed=n))
    return root


def train(*args):
    return run("-q", "train", *args)


def state_step(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "state.pt", weights_only=True)["step"]


@pytest.mark.parametrize(
    "make, message",
    [
        (not_a_raster, "not a raster GDAL can read"),
        (truncated, "the file is damaged"),
        (corrupt_tiles, "the file is damaged"),
        (nan_inf, "NaN or infinite values"),
    ],
    ids=["not-a-raster", "truncated", "corrupt-tiles", "nan-inf"],
)
def test_an_unreadable_image_among_the_data_is_named_before_anything_is_written(tmp_path, scenes, make, message):
    bad = make(scenes / "roofs" / "roofs02.tif")
    out = tmp_path / "run"
    refused(
        train("--data", scenes, "--out", out, "--max-steps", "2", *TINY),
        1,
        str(bad),
        message,
        "remove it from the data" if make is not nan_inf else "leave the image out",
    )
    assert not out.exists()


def test_a_damaged_image_read_by_a_loader_worker_is_still_one_line(tmp_path, scenes):
    """Uncached data (--cache-mb 0) is read by worker processes; their error comes back as one line, not the worker's
    traceback."""
    corrupt_tiles(scenes / "roofs" / "roofs02.tif")
    # the decimated read of the percentile ranges is not involved for uint8, so the damage is met mid-training
    out = tmp_path / "run"
    result = train(
        "--data", scenes, "--out", out, "--max-steps", "4", "--cache-mb", "0", *TINY[:-2], "--num-workers", "1"
    )
    line = refused(result, 1, "roofs02.tif", "the file is damaged")
    assert "Original Traceback" not in line and "worker" not in line


def test_a_nan_loss_stops_without_saving_over_the_last_good_state(tmp_path, scenes):
    out = tmp_path / "run"
    result = train(
        "--data",
        scenes,
        "--out",
        out,
        "--max-steps",
        "6",
        "--checkpoint-every-steps",
        "1",
        "--lr-g",
        "1e30",
        "--lr-d",
        "1e30",
        *TINY,
    )
    line = refused(result, 1, "= nan", "training stopped without saving", "lower --lr-g")
    good = state_step(out)
    assert f"(step {good})" in line and good >= 1
    assert not (out / "last.safetensors").exists()
    assert [f for f in files_in(out) if f.endswith(".tmp")] == []


KILLER = """
import os, signal, sys
real_fsync = os.fsync
writes = 0
def fsync(fd):
    global writes
    if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and ".state.pt." in os.readlink(f"/proc/self/fd/{fd}"):
        writes += 1
        if writes == int(os.environ["GEOSR_KILL_AT_STATE_WRITE"]):
            os.ftruncate(fd, os.fstat(fd).st_size // 2)  # half of the new state on disk, then the power goes
            os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)
os.fsync = fsync
from geosr.cli.main import cli
cli(sys.argv[1:], prog_name="geosr")
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name a file descriptor's file")
def test_kill_9_during_a_checkpoint_write_then_resume(tmp_path, scenes):
    """SIGKILL (nothing can catch it) half-way through writing the third state: the second one is intact and the
    run resumes from it; the half-written temporary file is cleared."""
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    out = tmp_path / "run"
    env = {**subprocess_env(), "GEOSR_KILL_AT_STATE_WRITE": "3"}
    proc = subprocess.run(
        [
            sys.executable,
            str(killer),
            "-q",
            "train",
            "--data",
            str(scenes),
            "--out",
            str(out),
            "--max-steps",
            "5",
            "--checkpoint-every-steps",
            "1",
            *TINY,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    leftovers = [f for f in files_in(out) if f.endswith(".tmp")]
    assert len(leftovers) == 1  # the half-written state
    assert state_step(out) == 2
    result = train("--resume", out, "--max-steps", "4")
    assert result.exit_code == 0, result.output
    assert state_step(out) == 4 and [f for f in files_in(out) if f.endswith(".tmp")] == []


def test_a_full_disk_at_a_checkpoint_keeps_the_last_good_one(tmp_path, scenes, monkeypatch):
    """The disk fills up while the second state is written (ENOSPC at fsync, where a full disk shows itself with
    delayed allocation): one line naming the file, the first state intact, no temporary file, and the run resumes."""
    real_fsync = os.fsync
    state_writes = []

    def full_disk(fd):
        if ".state.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            state_writes.append(fd)
            if len(state_writes) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    out = tmp_path / "run"
    result = train("--data", scenes, "--out", out, "--max-steps", "3", "--checkpoint-every-steps", "1", *TINY)
    refused(result, 1, "state.pt", "No space left on device", "its previous version is kept", "--resume")
    assert state_step(out) == 1
    assert [f for f in files_in(out) if f.endswith(".tmp")] == []
    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed
    result = train("--resume", out, "--max-steps", "3")
    assert result.exit_code == 0, result.output
    assert state_step(out) == 3


def test_an_unreadable_state_is_refused_on_resume(tmp_path, scenes):
    out = tmp_path / "run"
    assert train("--data", scenes, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    state = out / "checkpoints" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    refused(train("--resume", out, "--max-steps", "2"), 1, "state.pt", "unreadable training state")


def test_a_state_that_is_not_plain_data_is_named_in_whole_sentences(tmp_path):
    """torch.load's refusal of a pickled function: the message says what the file holds, never cut mid-sentence, and
    not PyTorch's advice to load it unsafely."""
    from geosr.training.state import ResumeError, load_state

    state = tmp_path / "state.pt"
    torch.save({"format": 1, "hook": os.getcwd}, state)
    with pytest.raises(ResumeError) as info:
        load_state(state)
    message = str(info.value)
    assert "holds objects other than tensors and plain data: Trying to load unsupported GLOBAL posix.getcwd" in message
    assert message.endswith("blocked.); start a new run with another -o/--output") and "weights_only" not in message
    assert "\n" not in message


def test_a_config_file_without_data_is_a_usage_error_like_a_missing_data_option(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("[model]\nscale = 2\n")
    refused(train("--config", config, "--out", tmp_path / "run"), 2, "--data", "no training data")
    refused(train("--data", tmp_path, "--device", "tpu", "--out", tmp_path / "run"), 2, "--device", "'tpu'")
    config.write_text('[data]\ndata = "x"\nbands = [1, 1, 2]\n')
    refused(train("--config", config, "--out", tmp_path / "run"), 2, "--bands", "name each band once")
    assert not (tmp_path / "run").exists()


def test_ctrl_c_saves_the_state_at_the_current_step_and_exits_130(tmp_path, scenes):
    """SIGINT stops the run after the step under way: its state and last.safetensors are written, exit 130, and
    --resume continues from that step."""
    import signal
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "geosr.cli.main",
            "-q",
            "train",
            "--data",
            str(scenes),
            "--out",
            str(out),
            "--max-steps",
            "100000",
            "--adversarial-weight",
            "0",
            *TINY,
        ],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = out / "log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.is_file() and log.read_text().count("\ntrain,") >= 2):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and f"--resume {out}" in err
    steps = [line for line in log.read_text().splitlines() if line.startswith("train,")]
    assert state_step(out) == len(steps) >= 2  # saved at the step it stopped on, nothing lost
    assert (out / "last.safetensors").is_file()
    result = train("--resume", out, "--max-steps", str(len(steps) + 1))
    assert result.exit_code == 0, result.output
    assert state_step(out) == len(steps) + 1


@pytest.mark.parametrize(
    "make, message",
    [
        (not_a_raster, "not a raster GDAL can read"),
        (corrupt_tiles, "the file is damaged"),
        (
            lambda p: write_geotiff(p, image(3, 12, 20)),
            "20x12 pixels is too small for x2, which measures images of at least 16x16",
        ),
        (lambda p: write_geotiff(p, image(1, 40, 40)), "(a validation image) has 1 band, training takes bands 1,2,3"),
    ],
    ids=["not-a-raster", "corrupt-tiles", "too-small", "one-band"],
)
def test_a_bad_validation_image_is_named_before_the_first_step(tmp_path, scenes, make, message):
    """The val split's images are read (and made into LR pairs) up front, like the training images: a bad one would
    otherwise stop the run at its first validation, after the steps and before any state or model is saved."""
    bad = make(scenes / "roofs" / "roofs50.tif")
    out = tmp_path / "run"
    refused(train("--data", scenes, "--out", out, "--max-steps", "2", *TINY), 1, str(bad), message)
    assert not out.exists()


def test_a_run_killed_before_its_first_checkpoint_is_started_anew_over(tmp_path, scenes, caplog):
    """Only geosr's config.toml and log.csv there (nothing to resume, no model): the same command starts again."""
    out = tmp_path / "run"
    assert train("--data", scenes, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    for name in ("checkpoints/state.pt", "best.safetensors", "last.safetensors"):  # as a kill -9 at step 0 leaves it
        (out / name).unlink(missing_ok=True)
    caplog.set_level(logging.WARNING)
    result = run("train", "--data", scenes, "--out", out, "--max-steps", "1", *TINY)  # not -q: the warning
    assert result.exit_code == 0, result.output
    assert "stopped before its first checkpoint; this run starts anew over it" in caplog.text
    assert (out / "checkpoints" / "state.pt").exists()


def test_two_runs_in_one_run_folder_at_once_are_refused(tmp_path, scenes):
    """A second --resume of a run under way would write the state, models and log over the first's."""
    out = tmp_path / "run"
    assert train("--data", scenes, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from geosr.training.setup import "
         f"hold_run_dir; hold_run_dir(Path({str(out)!r})); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        refused(train("--resume", out, "--max-steps", "2"), 1, "another geosr train is running in this folder")
    finally:
        holder.kill()
        holder.wait()
    assert train("--resume", out, "--max-steps", "2").exit_code == 0  # the lock goes with its process


def test_a_new_run_never_replaces_another_runs_files_or_writes_into_the_data(tmp_path, scenes):
    out = tmp_path / "run"
    assert train("--data", scenes, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    (out / "checkpoints" / "state.pt").unlink()  # space freed after the run: its models and log stay
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    refused(
        train("--data", scenes, "--out", out, "--max-steps", "1", *TINY),
        1,
        f"{out} already holds config.toml, log.csv, best.safetensors, last.safetensors",
        "choose another -o/--output",
    )
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "log.csv").write_text("my notes\n")
    refused(train("--data", scenes, "--out", mine, "--max-steps", "1", *TINY), 1, "already holds log.csv")
    assert (mine / "log.csv").read_text() == "my notes\n"
    for inside, option in ((scenes / "runs" / "a", "--data"), (tmp_path / "val" / "run", "--val-data")):
        (tmp_path / "val" / "fields").mkdir(parents=True, exist_ok=True)
        write_geotiff(tmp_path / "val" / "fields" / "v.tif", image(3, 40, 40))
        refused(
            train("--data", scenes, "--val-data", tmp_path / "val", "--out", inside, "--max-steps", "1", *TINY),
            1,
            f"lies in the {option} folder",
            "choose an output folder outside it",
        )
        assert not inside.exists()


def test_validation_data_that_overlaps_the_training_data_is_refused(tmp_path, scenes):
    for val in (scenes, scenes / "roofs"):
        refused(
            train("--data", scenes, "--val-data", val, "--out", tmp_path / "run", "--max-steps", "1", *TINY),
            1,
            f"--val-data {val} overlaps the --data folder {scenes}",
            "validate on images it trains on",
        )
    assert not (tmp_path / "run").exists()


def test_paired_data_with_lr_images_of_other_names_is_refused(tmp_path):
    root = tmp_path / "pairs"
    for i in range(10):
        hr = image(3, 40, 40, seed=i)
        write_geotiff(root / "HR" / f"{i:04d}.tif", hr)
        write_geotiff(root / "LR_x2" / f"{i:04d}{'_x2' if i == 3 else ''}.tif", np.ascontiguousarray(hr[:, ::2, ::2]))
    refused(
        train("--data", root, "--out", tmp_path / "run", "--max-steps", "1", *TINY),
        1,
        f"{root / 'HR' / '0003.tif'}: no x2 LR image in {root / 'LR_x2'} (looked for 0003.* and 0003x2.*",
        "1 of 8 HR images lack one",
    )
    assert not (tmp_path / "run").exists()


def test_images_with_fewer_bands_than_the_default_are_named_with_the_bands_trained_on(tmp_path, scenes):
    write_geotiff(scenes / "roofs" / "roofs01.tif", image(1, 40, 40))
    refused(
        train("--data", scenes, "--out", tmp_path / "run", "--max-steps", "1", *TINY),
        1,
        "roofs01.tif has 1 band, training takes bands 1,2,3 of each image: remove it from the data, or choose --bands",
    )


def test_resume_of_a_missing_folder_or_a_garbage_state(tmp_path, scenes):
    refused(train("--resume", tmp_path / "nope"), 2, "nope: no such run folder")
    out = tmp_path / "run"
    assert train("--data", scenes, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    (out / "checkpoints" / "state.pt").write_bytes(b"\x80\x02 not a state")
    refused(train("--resume", out, "--max-steps", "2"), 1, "the file is cut short, damaged or no PyTorch file")


def test_resume_over_changed_data_warns(tmp_path, scenes, caplog):
    out = tmp_path / "run"
    assert train("--data", scenes, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    write_geotiff(scenes / "roofs" / "roofs04.tif", image(3, 40, 40, seed=9))  # one more training image
    with caplog.at_level(logging.WARNING, logger="geosr"):
        assert run("train", "--resume", out, "--max-steps", "2").exit_code == 0  # not quiet: its warnings
    assert "9 training and 2 validation images now, 8 and 2 when the run wrote last.safetensors" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geosr"):  # the same data as the last export: no warning
        assert run("train", "--resume", out, "--max-steps", "3").exit_code == 0
    assert "images now" not in caplog.text
