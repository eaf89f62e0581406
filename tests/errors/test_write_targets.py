"""Where geosr writes: never over an input or another output of the run, never an existing file without --overwrite
(an earlier report aside), never a special file renamed over; names of any bytes; what a folder search leaves out;
the work-size guard. Every case builds its own hostile paths and checks that nothing of the user's changed."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import pytest
from badinput import files_in, huge_sparse_tif, image, refused, run
from testdata import write_geotiff

from geosr.device import usable_cores
from geosr.limits import day_of_work
from geosr.worksize import WorkTooLarge, check_work_size

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def upscale(model, *args):
    return run("upscale", *args, "--model", model, "-q")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def scene(tmp_path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", image(h=24, w=24))


# --- the report -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_report_named_as_the_input_is_refused_and_the_input_kept(tiny_model, scene, tmp_path, overwrite):
    before = digest(scene)
    extra = ["--overwrite"] if overwrite else []
    refused(
        upscale(tiny_model, scene, "-o", tmp_path / "out.tif", "--report", scene, *extra),
        2,
        "scene.tif",
        "is an input of this run",
        "--report",
    )
    assert digest(scene) == before and not (tmp_path / "out.tif").exists()


def test_a_report_reaching_the_input_through_dots_or_a_hard_link_is_refused(tiny_model, scene, tmp_path):
    (tmp_path / "sub").mkdir()
    os.link(scene, tmp_path / "hard.tif")
    before = digest(scene)
    for report in (tmp_path / "sub" / ".." / "scene.tif", tmp_path / "hard.tif"):
        refused(
            upscale(tiny_model, scene, "-o", tmp_path / "out.tif", "--report", report, "--overwrite"),
            2,
            "is an input of this run",
        )
    assert digest(scene) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_report_inside_the_input_folder_named_as_one_of_its_rasters_is_refused(tiny_model, tmp_path, overwrite):
    folder = tmp_path / "tiles"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        write_geotiff(folder / name, image(h=16, w=16))
    before = {name: digest(folder / name) for name in ("a.tif", "b.tif")}
    extra = ["--overwrite"] if overwrite else []
    refused(
        upscale(tiny_model, folder, "-o", tmp_path / "sr", "--report", folder / "b.tif", *extra),
        2,
        "b.tif",
        "is an input of this run",
    )
    assert {name: digest(folder / name) for name in before} == before and not (tmp_path / "sr").exists()


def test_a_report_named_as_the_output_is_refused_even_with_overwrite(tiny_model, scene, tmp_path):
    out = tmp_path / "out.tif"
    out.write_bytes(b"the user's earlier result")
    refused(
        upscale(tiny_model, scene, "-o", out, "--report", out, "--overwrite"),
        2,
        "out.tif",
        "is also an output raster of this run",
    )
    assert out.read_bytes() == b"the user's earlier result"


def test_an_existing_file_is_no_report_to_replace_without_overwrite(tiny_model, scene, tmp_path):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    refused(
        upscale(tiny_model, scene, "-o", tmp_path / "out.tif", "--report", notes),
        1,
        "notes.json",
        "already exists",
        "--overwrite",
    )
    assert notes.read_text() == '{"mine": true}' and not (tmp_path / "out.tif").exists()


def test_an_earlier_report_is_replaced_by_the_next_run(tiny_model, scene, tmp_path):
    report = tmp_path / "report.json"
    assert upscale(tiny_model, scene, "-o", tmp_path / "a.tif", "--report", report).exit_code == 0
    assert upscale(tiny_model, scene, "-o", tmp_path / "b.tif", "--report", report).exit_code == 0
    assert json.loads(report.read_text())["files"][0]["output"].endswith("b.tif")


def test_a_report_into_a_named_pipe_is_written_into_it_and_the_pipe_stays(tiny_model, scene, tmp_path):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = upscale(tiny_model, scene, "-o", tmp_path / "out.tif", "--report", fifo)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    doc = json.loads(got[0])  # one document, the final one
    assert doc["state"] == "finished" and doc["summary"]["done"] == 1


def test_a_report_into_a_character_device_keeps_the_device(tiny_model, scene, tmp_path):
    before = os.stat("/dev/null")
    assert upscale(tiny_model, scene, "-o", tmp_path / "out.tif", "--report", "/dev/null").exit_code == 0
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


# --- outputs --------------------------------------------------------------------------------------------------------


def test_an_output_that_is_a_named_pipe_is_refused_even_with_overwrite(tiny_model, scene, tmp_path):
    fifo = tmp_path / "out.tif"
    os.mkfifo(fifo)
    refused(upscale(tiny_model, scene, "-o", fifo, "--overwrite"), 1, "out.tif", "named pipe", "not a file")
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_an_output_on_a_virtual_file_system_is_refused(tiny_model, scene):
    refused(upscale(tiny_model, scene, "-o", "/vsimem/out.tif"), 2, "/vsimem/out.tif", "local files")


def test_export_refuses_a_name_it_would_not_write(tiny_model, tmp_path):
    result = run("export", tiny_model, "-o", tmp_path / "model.txt")
    refused(result, 2, "model.txt", ".safetensors", ".onnx")
    assert files_in(tmp_path) == []


# --- names of any bytes ---------------------------------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_refused_in_one_line(tiny_model, scene, tmp_path):
    odd = os.fsdecode(bytes(tmp_path) + b"/sc\xe9ne.tif")
    os.link(scene, odd)
    line = refused(upscale(tiny_model, odd, "-o", tmp_path / "out.tif"), 1, "sc\\xe9ne.tif", "not valid UTF-8")
    assert "unexpected" not in line and not (tmp_path / "out.tif").exists()


def test_in_a_folder_a_name_that_is_not_utf8_fails_alone(tiny_model, tmp_path):
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_geotiff(folder / "good.tif", image(h=16, w=16))
    os.link(folder / "good.tif", os.fsdecode(bytes(folder) + b"/b\xffd.tif"))
    result = run("upscale", folder, "-o", tmp_path / "sr", "--model", tiny_model, "--report", tmp_path / "r.json")
    assert result.exit_code == 1 and "unexpected" not in result.output
    files = {Path(f["input"]).name: f for f in json.loads((tmp_path / "r.json").read_text())["files"]}
    assert files["good.tif"]["status"] == "done"
    bad = next(f for name, f in files.items() if name != "good.tif")
    assert bad["status"] == "failed" and "not valid UTF-8" in bad["message"]


# --- what a folder search leaves out ---------------------------------------------------------------------------------


def test_the_output_folder_may_hold_the_input_folder(tiny_model, tmp_path):
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_geotiff(folder / "a.tif", image(h=16, w=16))
    result = upscale(tiny_model, folder, "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.tif").is_file()


def test_left_out_files_are_counted_and_named(tiny_model, tmp_path):
    folder = tmp_path / "tiles"
    (folder / "out").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_geotiff(folder / "out" / "old.tif", image(h=16, w=16))
    write_geotiff(elsewhere / "far.tif", image(h=16, w=16))
    (folder / "linked").symlink_to(elsewhere)
    (folder / "gone.tif").symlink_to(tmp_path / "missing.tif")
    line = refused(upscale(tiny_model, folder, "-o", folder / "out"), 1, "no rasters found")
    for needle in (
        "1 broken link(s)",
        "gone.tif",
        "1 link(s) to folders, not followed",
        "linked",
        "1 file(s) under the output folder",
        "old.tif",
    ):
        assert needle in line, (needle, line)


def test_a_folder_or_file_that_cannot_be_read_is_named_with_the_remedy(tiny_model, tmp_path, monkeypatch):
    folder = tmp_path / "tiles"
    (folder / "locked").mkdir(parents=True)
    write_geotiff(folder / "ok.tif", image(h=16, w=16))
    write_geotiff(folder / "locked" / "x.tif", image(h=16, w=16))
    # as a user without the right to read them sees them (the tests may run as root, who reads every mode)
    real_scandir, real_access = os.scandir, os.access

    def scandir(path="."):
        if Path(path) == folder / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p).name != "ok.tif" and real_access(p, mode, **kw))
    result = upscale(tiny_model, folder, "-o", tmp_path / "out")  # a batch: the file fails, one line, exit 1
    assert (
        result.exit_code == 1 and "ok.tif: cannot be read (permission denied); check its permissions" in result.output
    )
    monkeypatch.setattr(os, "access", real_access)
    monkeypatch.setattr(os, "scandir", scandir)
    # a folder whose rasters cannot be listed: refused before any work, not a batch that looks complete without them
    refused(upscale(tiny_model, folder, "-o", tmp_path / "out2"), 1, "1 folder(s) under it cannot be read", "locked")
    assert not (tmp_path / "out2").exists()


# --- the work-size guard --------------------------------------------------------------------------------------------


def test_a_sparse_raster_declaring_days_of_work_needs_yes(tiny_model, tmp_path):
    src = huge_sparse_tif(tmp_path / "sparse.tif", size=100_000)
    refused(upscale(tiny_model, src, "-o", tmp_path / "out.tif"), 1, "sparse.tif", "a day's work", "--yes")
    assert files_in(tmp_path) == ["sparse.tif"]


def test_the_day_of_work_follows_the_arithmetic_and_the_scale():
    """fp32 on a CPU without native bf16 is about 4 times slower than bf16 with AMX, and an x2 model does more work
    per output pixel than an x4 one: a day's work is smaller for both, and the estimate in the message says so."""
    bf16 = day_of_work("cpu", 2, native_bf16=True)
    fp32 = day_of_work("cpu", 2)
    assert 3.5 < bf16 / fp32 < 4.5
    assert day_of_work("cpu", 2, scale=2) < fp32 < day_of_work("cpu", 4)
    assert day_of_work("cpu", 2, True) * 8 == pytest.approx(fp32, rel=1e-6)
    cores = usable_cores()
    two_days = 2 * day_of_work("cpu", cores)
    word = f"{cores} CPU core{'s' if cores != 1 else ''} in fp32"
    with pytest.raises(WorkTooLarge, match=rf"s\.tif: .* about 2 days on {word} at geosr's usual rate.*--yes"):
        check_work_size("s.tif", two_days, "cpu", precision="fp32")
    check_work_size("s.tif", two_days // 3, "cpu", precision="fp32")  # under a day: no question
    with pytest.raises(WorkTooLarge, match=r"about 3 days"):
        check_work_size("s.tif", two_days, "cpu", precision="fp32", scale=2)


def test_max_pixels_asks_for_yes_and_yes_goes_on(tiny_model, scene, tmp_path):
    refused(
        upscale(tiny_model, scene, "-o", tmp_path / "out.tif", "--max-pixels", "100"),
        1,
        "scene.tif",
        "the output would have 2,304 pixels, past --max-pixels 100",
        "--yes",
    )
    assert not (tmp_path / "out.tif").exists()
    assert upscale(tiny_model, scene, "-o", tmp_path / "out.tif", "--max-pixels", "100", "--yes").exit_code == 0


def test_a_path_through_a_folder_that_does_not_exist_yet_and_back_is_the_input(tiny_model, scene, tmp_path):
    """missing/../scene.tif is scene.tif once a write creates missing/: refused as the report and as the output, even
    with --overwrite, and missing/ is not created."""
    before = digest(scene)
    back = tmp_path / "missing" / ".." / "scene.tif"
    refused(
        upscale(tiny_model, scene, "-o", tmp_path / "out.tif", "--report", back, "--overwrite"),
        2,
        "is an input of this run",
    )
    refused(upscale(tiny_model, scene, "-o", back, "--overwrite"), 1, "the output is the input")
    assert digest(scene) == before and not (tmp_path / "missing").exists()


def test_a_jpeg_output_wider_than_libjpeg_takes_is_refused_before_the_work(tiny_model, tmp_path):
    src = write_geotiff(tmp_path / "strip.tif", image(h=4, w=32_800))  # x2: 65600 columns, over 65500
    refused(
        upscale(tiny_model, src, "-o", tmp_path / "strip.jpg"), 1, "JPEG holds at most 65500 pixels a side",
        "65600 x 8", "name the output .tif or .png",
    )  # fmt: skip
    assert files_in(tmp_path) == ["strip.tif"]
