"""Progress where stderr is not a terminal: plain lines (one per file written, and while a long file runs one every
LINE_INTERVAL seconds), never tqdm's carriage returns, which would fill a log file with overwritten bars."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from geosr.cli.progress import Lines, file_line, on_terminal

GEOSR = Path(sys.executable).parent / "geosr"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_write_at_most_one_line_per_interval_and_one_at_the_end(capsys):
    clock = Clock()
    lines = Lines(total=100, desc="scene.tif", unit="tile", interval=10.0, clock=clock)
    for _ in range(40):  # 40 updates in 20 s: a line at 10 s and at 20 s
        clock.now += 0.5
        lines.update(1)
    lines.set_postfix_str("0.52 MP/s")
    clock.now = 25.0
    lines.update(60)  # the end: no line of its own, the closing line says it
    lines.close()
    lines.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [
        "scene.tif: 20/100 tiles (20%), 10.0 s, 2.00 tiles/s",
        "scene.tif: 40/100 tiles (40%), 20.0 s, 2.00 tiles/s",
        "scene.tif: 100/100 tiles (100%), 25.0 s, 4.00 tiles/s, 0.52 MP/s",
    ]


def test_lines_take_tqdms_arguments_and_keep_quiet_when_disabled(capsys):
    clock = Clock()
    steps = Lines(
        total=None,
        initial=50,
        unit="step",
        dynamic_ncols=True,
        position=0,
        leave=False,
        final=False,
        clock=clock,
        interval=1.0,
    )
    clock.now = 2.0
    steps.update(10)
    steps.set_postfix({"mse": "0.01"}, refresh=False)
    steps.close()
    quiet = Lines(total=3, disable=True, clock=clock, interval=1.0)
    clock.now = 5.0
    quiet.update(3)
    quiet.close()
    assert capsys.readouterr().err.splitlines() == ["60 steps, 2.0 s, 5.00 steps/s"]


def test_a_file_line_gives_the_time_and_the_speed():
    assert (
        file_line(Path("out/a.tif"), 2.0, 1_000_000, 48, 3, 10) == "[3/10] out/a.tif: 48 tiles, 1.00 MP in 2.0 s "
        "(0.50 MP/s)"
    )
    assert file_line("b.tif", 0.0, 0, 0) == "b.tif: 0 tiles, 0.00 MP in 0.0 s"
    assert file_line("c.tif", 0.0, 0, 153, blank=29) == (  # the bar counted 182: the line says where 29 went
        "c.tif: 153 tiles (and 29 with nothing to compute, skipped), 0.00 MP in 0.0 s"
    )


def test_a_closed_or_missing_stderr_is_no_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)
    assert on_terminal() is False


@pytest.mark.parametrize("extra", [[], ["--files-in-flight", "2"]], ids=["one-at-a-time", "two-in-flight"])
def test_upscale_writes_lines_not_bars_to_a_log_file(tiny_model, tmp_path, make_geotiff, synthetic_image, extra):
    folder = tmp_path / "tiles"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        make_geotiff(folder / name, synthetic_image(3, 40, 48))
    log = tmp_path / "run.log"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log, "w") as stderr:
        done = subprocess.run(
            [
                str(GEOSR),
                "upscale",
                str(folder),
                "-o",
                str(tmp_path / "sr"),
                "--model",
                str(tiny_model),
                "--threads",
                "1",
                *extra,
            ],
            stderr=stderr,
            env=env,
            timeout=300,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    for i, name in ((1, "a.tif"), (2, "b.tif")):
        assert sum(line.startswith(f"[{i}/2] ") for line in lines) == 1, text
        assert any(f"{name}: " in line and " tiles, " in line and " MP/s)" in line for line in lines), text
    assert lines[-1].startswith("2 done, 0 skipped, 0 failed in "), text


def test_a_single_file_gets_its_line_and_quiet_gets_none(tiny_model, tmp_path, make_geotiff, synthetic_image):
    src = make_geotiff(tmp_path / "scene.tif", synthetic_image(3, 40, 48))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for quiet in ([], ["-q"]):
        out = tmp_path / f"sr{len(quiet)}.tif"
        done = subprocess.run(
            [str(GEOSR), "upscale", str(src), "-o", str(out), "--model", str(tiny_model), *quiet],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        if quiet:
            assert lines == []
        else:
            assert "\r" not in done.stderr and len(lines) == 1, done.stderr
            assert lines[0].startswith(f"{out}: ") and " tiles, 0.01 MP in " in lines[0], done.stderr
