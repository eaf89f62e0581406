"""Faults during a batch: a failing file does not stop the others, Ctrl-C leaves only complete files (exit 130) and
--skip-existing resumes, and two processes writing into one folder never clobber each other's files."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
from badinput import complete, corrupt_tiles, files_in, geosr_command, image, run, subprocess_env, wait_for
from testdata import interruptible, write_geotiff, write_image

from geosr.errors import OutputExistsError
from geosr.raster import finish_output

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiles(folder: Path, n: int, size: int) -> Path:
    for i in range(n):
        write_geotiff(folder / f"t{i}.tif", image(3, size, size, seed=i))
    return folder


def test_a_file_failing_mid_read_does_not_stop_the_batch(tiny_model, tmp_path):
    src = tiles(tmp_path / "in", 3, 40)
    corrupt_tiles(src / "t1.tif")  # header fine, the last tile row garbage
    out = tmp_path / "out"
    result = run("upscale", src, "-o", out, "--model", tiny_model, "--tile-size", 32, "--overlap", 8)
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "t1.tif" in errors[0]
    assert "2 done, 0 skipped, 1 failed" in result.stderr
    assert files_in(out) == ["t0.tif", "t2.tif"] and all(complete(out / f) for f in files_in(out))


def test_an_unforeseen_failure_of_one_file_is_named_as_such_and_the_batch_goes_on(tiny_model, tmp_path, monkeypatch):
    from geosr import batch

    real = batch.upscale_raster

    def failing(src, *args, **kwargs):
        if Path(src).name == "t1.tif":
            raise RuntimeError("a bug\nover two lines")
        return real(src, *args, **kwargs)

    monkeypatch.setattr(batch, "upscale_raster", failing)
    src = tiles(tmp_path / "in", 3, 24)
    result = run("upscale", src, "-o", tmp_path / "out", "--model", tiny_model)
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    why = "unexpected error: RuntimeError: a bug over two lines (-v shows where; please report it)"
    assert errors == [f"error: {src / 't1.tif'}: {why}"]
    assert files_in(tmp_path / "out") == ["t0.tif", "t2.tif"]


def test_ctrl_c_in_a_batch_leaves_only_complete_files_and_skip_existing_resumes(tiny_model_x4, tmp_path):
    src = tiles(tmp_path / "in", 4, 160)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        geosr_command(
            "upscale",
            str(src),
            "-o",
            str(out),
            "--model",
            str(tiny_model_x4),
            "-q",
            "--tile-size",
            "32",
            "--overlap",
            "8",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        preexec_fn=interruptible,
    )
    try:
        assert wait_for(lambda: (out / "t0.tif").exists(), 120), "the first file never finished"
        wait_for(lambda: any(p.name.startswith(".t1") for p in out.glob(".*")), 20)  # the next one under way
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Interrupted." in stderr and "Traceback" not in stderr
    done = files_in(out)
    assert done and all(not f.startswith(".") for f in done) and len(done) < 4
    assert all(complete(out / f) for f in done)
    before = {f: (out / f).stat().st_mtime_ns for f in done}
    again = run(
        "upscale", src, "-o", out, "--model", tiny_model_x4, "--skip-existing", "--tile-size", 32, "--overlap", 8
    )
    assert again.exit_code == 0, again.output
    assert f"{4 - len(done)} done, {len(done)} skipped, 0 failed" in again.stderr
    assert files_in(out) == ["t0.tif", "t1.tif", "t2.tif", "t3.tif"]
    assert all((out / f).stat().st_mtime_ns == t for f, t in before.items())  # what was done is left alone


def test_ctrl_c_with_files_in_flight_reports_every_output_written_as_done(tiny_model, tmp_path):
    """Files under way when the batch stops either end whole (their output published: reported done) or leave
    nothing; the report never calls an output on disk interrupted (the retry recipe would then refuse it)."""
    src = tiles(tmp_path / "in", 12, 64)
    out, report = tmp_path / "out", tmp_path / "r.json"
    command = geosr_command("upscale", str(src), "-o", str(out), "--model", str(tiny_model), "-q", "--report",
                            str(report), "--files-in-flight", "3")  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(), preexec_fn=interruptible)  # fmt: skip
    try:
        assert wait_for(lambda: len(files_in(out)) >= 2, 120), "no file finished"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    if proc.returncode == 0:
        pytest.skip("the batch ended before the signal came")
    assert proc.returncode == 130
    doc = json.loads(report.read_text())
    done = {Path(f["output"]).name for f in doc["files"] if f["status"] == "done"}
    assert done == set(files_in(out)) and doc["summary"]["done"] == len(done)


def test_skip_existing_reports_an_existing_output_that_something_else_damaged(tiny_model, tmp_path):
    """An output cut short (a copy interrupted) or replaced by other bytes is neither skipped as done nor replaced:
    it fails with what is wrong and the remedy; the intact ones are skipped, and --overwrite redoes all."""
    src = tiles(tmp_path / "in", 4, 40)
    out = tmp_path / "out"
    assert run("-q", "upscale", src, "-o", out, "--model", tiny_model).exit_code == 0
    (out / "t1.tif").write_bytes((out / "t1.tif").read_bytes()[:500])
    (out / "t2.tif").write_text("not a raster\n")
    damaged = {name: (out / name).read_bytes() for name in ("t1.tif", "t2.tif")}
    result = run("upscale", src, "-o", out, "--model", tiny_model, "--skip-existing")
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = sorted(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert len(errors) == 2 and all(
        "exists but is damaged" in e and "delete it to redo it, or pass --overwrite" in e for e in errors
    )
    assert "of a file of 500 bytes: it was cut short" in errors[0] and "not a raster GDAL reads" in errors[1]
    assert "0 done, 2 skipped, 2 failed" in result.stderr
    assert {name: (out / name).read_bytes() for name in damaged} == damaged  # nothing replaced
    assert run("-q", "upscale", src, "-o", out, "--model", tiny_model, "--overwrite").exit_code == 0
    assert all(complete(out / f) for f in files_in(out))


def test_skip_existing_fails_a_png_cut_short_and_outputs_of_another_scale(tiny_model, tiny_model_x4, tmp_path):
    """A PNG output (no block index to check) is decoded whole; a GeoTIFF geosr made at another scale (its
    GEOSR_SCALE) is no output of this run. Both fail with the remedy; nothing is replaced."""
    src = tmp_path / "in"
    for i in range(2):
        write_image(src / f"p{i}.png", image(3, 40, 40, seed=i))
    out = tmp_path / "out"
    assert run("-q", "upscale", src, "-o", out, "--model", tiny_model).exit_code == 0
    (out / "p1.png").write_bytes((out / "p1.png").read_bytes()[:3000])
    result = run("upscale", src, "-o", out, "--model", tiny_model, "--skip-existing")
    assert result.exit_code == 1 and "0 done, 1 skipped, 1 failed" in result.stderr
    assert "p1.png: exists but is damaged (it does not decode to its end" in result.stderr

    x2 = tiles(tmp_path / "tif", 2, 40)
    out2 = tmp_path / "out2"
    assert run("-q", "upscale", x2, "-o", out2, "--model", tiny_model).exit_code == 0  # x2 outputs
    kept = {f: (out2 / f).read_bytes() for f in files_in(out2)}
    result = run("upscale", x2, "-o", out2, "--model", tiny_model_x4, "--skip-existing")
    assert result.exit_code == 1 and "0 done, 0 skipped, 2 failed" in result.stderr
    assert "exists, made at x2 (its GEOSR_SCALE), and this run upscales x4; give -o another folder" in result.stderr
    assert {f: (out2 / f).read_bytes() for f in files_in(out2)} == kept


def test_two_processes_writing_one_folder_do_not_clobber_each_other(tiny_model, tmp_path):
    src = tiles(tmp_path / "in", 8, 48)
    out = tmp_path / "out"
    args = geosr_command("upscale", str(src), "-o", str(out), "--model", str(tiny_model), "--skip-existing")
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
        for _ in range(2)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert "Traceback" not in err
    assert files_in(out) == [f"t{i}.tif" for i in range(8)]  # no temporary file left
    assert all(complete(out / f) for f in files_in(out))
    done = [int(re.search(r"(\d+) done", err).group(1)) for _, err in results]
    assert sum(done) == 8  # every file written exactly once: a file finished by the other process is skipped


def test_the_final_name_is_never_taken_from_a_file_that_appeared_meanwhile(tmp_path):
    """Without --overwrite the finished temporary file takes its name atomically and only if it is still free."""
    tmp = write_geotiff(tmp_path / ".out.tif.1234.geosr-tmp", image(3, 8, 8))
    dst = tmp_path / "out.tif"
    dst.write_bytes(b"written by another process")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        finish_output(tmp, dst, cog=False, compress="deflate", overwrite=False)
    assert dst.read_bytes() == b"written by another process" and not tmp.exists()
    tmp = write_geotiff(tmp_path / ".out.tif.5678.geosr-tmp", image(3, 8, 8))
    finish_output(tmp, dst, cog=False, compress="deflate", overwrite=True)
    assert complete(dst) and files_in(tmp_path) == ["out.tif"]
