"""Runs that are stopped from outside: SIGTERM (what `timeout`, `kill` and batch schedulers send) ends like Ctrl-C,
with nothing of the file under way left; after kill -9, which no process can handle, the next run into the folder
removes the temporary files the killed one left, with or without --skip-existing.

The signals are real, sent to geosr running as a program.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from badinput import complete, files_in, geosr_command, image, run, subprocess_env, wait_for
from testdata import interruptible, write_geotiff

from geosr.raster import TEMP_SUFFIX, remove_stale_outputs, temp_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scenes(folder: Path, n: int, size: int = 160) -> Path:
    for i in range(n):
        write_geotiff(folder / f"t{i}.tif", image(3, size, size, seed=i))
    return folder


def temporaries(folder: Path) -> list[str]:
    return [f for f in files_in(folder) if TEMP_SUFFIX in f]


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        geosr_command("upscale", *args, "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        preexec_fn=interruptible,
    )


def stop_mid_file(proc: subprocess.Popen, out: Path, sig: int) -> str:
    """Send ``sig`` to ``proc`` once it is writing a file into ``out``; its stderr."""
    try:
        assert wait_for(lambda: out.is_dir() and temporaries(out), 120), "no file was started"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return err


def test_sigterm_mid_file_ends_like_ctrl_c_with_nothing_left(tiny_model_x4, tmp_path):
    src = write_geotiff(tmp_path / "scene.tif", image(3, 200, 200))
    out = tmp_path / "out"
    proc = start(src, "-o", out / "scene_x4.tif", "--model", tiny_model_x4, "--tile-size", 32, "--overlap", 8)
    err = stop_mid_file(proc, out, signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "Terminated." in err and "Traceback" not in err
    assert files_in(out) == []  # neither the output nor its temporary file


@pytest.mark.parametrize("again", [[], ["--skip-existing"]], ids=["rerun", "skip-existing"])
def test_after_kill_9_the_next_run_removes_the_stale_temporary_files(tiny_model_x4, tmp_path, again):
    src = scenes(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = [src, "-o", out, "--model", tiny_model_x4, "--tile-size", 32, "--overlap", 8]
    proc = start(*args)
    stop_mid_file(proc, out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    stale = temporaries(out)
    assert stale  # what kill -9 leaves: no handler runs
    if (out / "t0.tif").exists() and not again:
        (out / "t0.tif").unlink()  # a plain rerun would refuse an existing output
    result = run("upscale", *args, *again)
    assert result.exit_code == 0, result.output
    assert files_in(out) == ["t0.tif", "t1.tif"] and all(complete(out / f) for f in files_in(out))


def test_only_temporary_files_of_dead_processes_of_this_machine_are_removed(tmp_path):
    out = tmp_path / "scene.tif"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its process id is free
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = temp_path(out).name  # .scene.tif.HOST-PID-RANDOM.geosr-tmp
        host = mine.split(".")[-2].split("-")[0]
        dead_one = mine.replace(f"-{os.getpid()}-", f"-{dead.pid}-")
        names = {
            "mine": mine,
            "alive": mine.replace(f"-{os.getpid()}-", f"-{alive.pid}-"),
            "dead": dead_one,
            "dead_cog": temp_path(out, ".cog").name.replace(f"-{os.getpid()}-", f"-{dead.pid}-"),
            "other_machine": dead_one.replace(f".{host}-", ".0000abcd-"),  # its process may well run there
            "unrelated": ".notes.txt",
        }
        names["dead_sidecar"] = names["dead_cog"] + ".aux.xml"
        for name in names.values():
            (tmp_path / name).write_bytes(b"")
        removed = remove_stale_outputs(tmp_path)
        assert sorted(p.name for p in removed) == sorted([names["dead"], names["dead_cog"], names["dead_sidecar"]])
        assert sorted(files_in(tmp_path)) == sorted(names[k] for k in ("mine", "alive", "other_machine", "unrelated"))
    finally:
        alive.kill()
        alive.wait()
