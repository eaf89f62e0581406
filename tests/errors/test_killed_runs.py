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
import time
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
        token = mine.split(f"-{os.getpid()}-")[1][:8]
        # process ids are reused: this process's own id on a file it did not make (geosr as process 1 of a
        # container, started again), and a live process that started after the file was last written
        names["my_id_not_mine"] = mine.replace(f"-{token}", "-0badf00d")
        names["reused_id"] = dead_one.replace(f"-{dead.pid}-", f"-{alive.pid}-").replace(f"-{token}", "-01d0e0e5")
        for name in names.values():
            (tmp_path / name).write_bytes(b"")
        an_hour_ago = time.time() - 3600
        os.utime(tmp_path / names["reused_id"], (an_hour_ago, an_hour_ago))
        removed = remove_stale_outputs(tmp_path)
        gone = ["dead", "dead_cog", "dead_sidecar", "my_id_not_mine"]
        if Path(f"/proc/{alive.pid}/stat").exists():  # Linux tells when a process started
            gone.append("reused_id")
        assert sorted(p.name for p in removed) == sorted(names[k] for k in gone)
        assert sorted(files_in(tmp_path)) == sorted(names[k] for k in names if k not in gone)
    finally:
        alive.kill()
        alive.wait()


def test_one_file_kept_by_skip_existing_has_its_stale_temporaries_removed_and_a_stranger_is_not_kept(
    tiny_model_x4, tmp_path
):
    src = scenes(tmp_path / "in", 1, size=40) / "t0.tif"
    out = tmp_path / "out" / "t0.tif"
    assert run("upscale", src, "-o", out, "--model", tiny_model_x4).exit_code == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out.parent / temp_path(out).name.replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    stale.write_bytes(b"what a kill -9 left")
    result = run("upscale", src, "-o", out, "--model", tiny_model_x4, "--skip-existing")
    assert result.exit_code == 0 and not stale.exists(), result.output
    write_geotiff(out, image(3, 40, 40))  # a file copied there: no GEOSR_SCALE, not geosr's output
    result = run("upscale", src, "-o", out, "--model", tiny_model_x4, "--skip-existing")
    assert result.exit_code == 1 and f"{out}: exists but geosr did not write it" in result.output
    assert "--overwrite" in result.output
