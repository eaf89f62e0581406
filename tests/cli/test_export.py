"""`geosr export`: a run's model file as a model to publish (fp16, named, with a geosr evaluate report in its card)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from testdata import error_line

from geosr.checkpoint import load_generator, read_card
from geosr.cli.main import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """One class of 10 smooth 32x32 PNG scenes (folder rule: one of them is in the val split)."""
    root = tmp_path_factory.mktemp("scenes") / "data"
    (root / "Farm").mkdir(parents=True)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(10):
        img = np.stack([127 + 90 * np.sin((0.1 + 0.02 * i) * xx + c) * np.cos(0.15 * yy) for c in range(3)])
        with rasterio.open(
            root / "Farm" / f"farm_{i}.png", "w", driver="PNG", width=32, height=32, count=3, dtype="uint8"
        ) as dst:
            dst.write(img.round().astype(np.uint8))
    return root


def test_export_casts_to_fp16_renames_and_records_the_evaluate_report(tiny_model, scenes, tmp_path):
    out, report = tmp_path / "pub.safetensors", tmp_path / "val.json"
    run = CliRunner().invoke
    r = run(cli, ["export", str(tiny_model), "-o", str(out), "--name", "farm-x2", "--tile-size", "24"])
    assert r.exit_code == 0, r.output
    stored = load_file(str(out))
    assert all(v.dtype == torch.float16 for v in stored.values())
    source, _ = load_generator(tiny_model)
    for k, v in source.state_dict().items():
        assert torch.equal(stored[k], v.half()), k
    card = read_card(out)
    assert card.name == "farm-x2" and card.tile_size == 24 and card.overlap == 6 and card.metrics == {}

    r = run(cli, ["evaluate", "-m", str(out), "-d", str(scenes), "--split", "val", "-o", str(report)])
    assert r.exit_code == 0, r.output
    final = tmp_path / "final.safetensors"
    final.write_bytes(b"an older export")
    r = run(cli, ["export", str(out), "-o", str(final), "--metrics", str(report), "--note", "fp16 export"])
    assert r.exit_code == 1 and "--overwrite" in r.output  # never replaced without asking
    r = run(
        cli, ["export", str(out), "-o", str(final), "--metrics", str(report), "--note", "fp16 export", "--overwrite"]
    )
    assert r.exit_code == 0, r.output
    mean = json.loads(report.read_text())["summary"]["mean"]
    card = read_card(final)
    assert card.metrics["val_psnr"] == pytest.approx(mean["psnr"], abs=1e-4)
    assert card.metrics["val_psnr_bicubic"] == pytest.approx(mean["psnr_bicubic"], abs=1e-4)
    assert card.metrics["val_images"] == 1 and card.metrics["split"] == "val"
    assert card.training["notes"] == ["fp16 export"]
    assert all(torch.equal(load_file(str(final))[k], v) for k, v in stored.items())  # fp16 -> fp16 is exact


def test_export_refuses_a_report_of_another_scale(tiny_model, tmp_path):
    report = tmp_path / "x4.json"
    report.write_text(
        json.dumps(
            {
                "scale": 4,
                "summary": {"mean": {"psnr": 30, "ssim": 0.9, "psnr_bicubic": 28, "ssim_bicubic": 0.8, "images": 3}},
            }
        )
    )
    r = CliRunner().invoke(
        cli, ["export", str(tiny_model), "-o", str(tmp_path / "m.safetensors"), "--metrics", str(report)]
    )
    assert r.exit_code == 1 and "x4 report for a x2 model" in r.output
    assert not (tmp_path / "m.safetensors").exists()


# --- the report must be of the model exported -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured(tmp_path_factory, scenes, make_model):
    """(model, report): a tiny x2 RGB model and its `geosr evaluate` report, made in their folder with relative paths
    (the report records the model as 'model.safetensors')."""
    folder = tmp_path_factory.mktemp("measured")
    model = folder / "model.safetensors"
    shutil.copyfile(make_model("measured-x2", seed=1, scale=2, channels=16, n_blocks=1, refiner="none"), model)
    here = os.getcwd()
    os.chdir(folder)
    try:
        r = CliRunner().invoke(
            cli, ["evaluate", "-m", "model.safetensors", "-d", str(scenes), "--split", "val", "-o", "val.json"]
        )
    finally:
        os.chdir(here)
    assert r.exit_code == 0, r.output
    report = folder / "val.json"
    doc = json.loads(report.read_text())
    assert doc["model"] == "model.safetensors"
    assert doc["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()  # what export matches first
    return model, report


def without_hash(report: Path, tmp_path: Path) -> Path:
    """The report as one written before reports recorded the model's SHA-256: matched by the model path alone."""
    doc = json.loads(report.read_text())
    del doc["model_sha256"]
    legacy = tmp_path / "legacy" / "val.json"
    legacy.parent.mkdir(exist_ok=True)
    legacy.write_text(json.dumps({**doc, "model": str(report.parent / doc["model"])}))
    return legacy


def test_export_refuses_the_report_of_another_model(measured, make_model, tmp_path):
    _, report = measured
    four_bands = make_model("four-bands-x2", scale=2, channels=16, n_blocks=1, refiner="none", in_channels=4)
    same_architecture = make_model("other-x2", seed=7, scale=2, channels=16, n_blocks=1, refiner="none")
    legacy = without_hash(report, tmp_path)
    for other in (four_bands, same_architecture):
        out = tmp_path / f"{other.stem}-pub.safetensors"
        for given, measured_as in (
            (report, "model.safetensors (SHA-256 "),
            (legacy, f"{report.parent}/model.safetensors"),
        ):
            r = CliRunner().invoke(cli, ["export", str(other), "-o", str(out), "--metrics", str(given)])
            assert r.exit_code == 1, r.output
            line = error_line(r)
            assert f"{given}: a report of {measured_as}" in line and f"not of {other}" in line
            assert f"evaluate this model (geosr evaluate -m {other} " in line and "pass its own report" in line
            assert not out.exists()


def test_export_finds_the_reported_model_through_links_and_from_another_folder(measured, tmp_path, monkeypatch):
    model, report = measured
    link = tmp_path / "link.safetensors"
    link.symlink_to(model)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the report's relative 'model.safetensors' is read from the report's folder
    mean = json.loads(report.read_text())["summary"]["mean"]
    for spelling in (model, link, os.path.relpath(model)):  # relpath: another spelling, from elsewhere
        out = tmp_path / "pub.safetensors"
        r = CliRunner().invoke(
            cli, ["export", str(spelling), "-o", str(out), "--metrics", str(report), "--overwrite", "--dtype", "fp32"]
        )
        assert r.exit_code == 0, r.output
        assert read_card(out).metrics["val_psnr"] == pytest.approx(mean["psnr"], abs=1e-4)


def test_a_report_that_records_the_model_hash_is_matched_by_its_hash(measured, tiny_model, tmp_path):
    model, report = measured
    doc = json.loads(report.read_text())
    own, other = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (model, tiny_model))

    # the same path, other bytes (the file was replaced since it was measured): refused
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({**doc, "model": str(model), "model_sha256": other}))
    r = CliRunner().invoke(cli, ["export", str(model), "-o", str(tmp_path / "a.safetensors"), "--metrics", str(stale)])
    assert r.exit_code == 1, r.output
    assert f"a report of {model} (SHA-256 {other[:12]}...), not of {model} (SHA-256 {own[:12]}...)" in error_line(r)
    assert not (tmp_path / "a.safetensors").exists()

    # the same bytes under a path that no longer exists (measured, then moved): accepted
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps({**doc, "model": "/gone/model.safetensors", "model_sha256": own}))
    r = CliRunner().invoke(
        cli, ["export", str(model), "-o", str(tmp_path / "b.safetensors"), "--metrics", str(moved), "--dtype", "fp32"]
    )
    assert r.exit_code == 0, r.output
    assert read_card(tmp_path / "b.safetensors").metrics["val_images"] == 1


# --- the output, the model, the name ----------------------------------------------------------------------------------


def test_export_never_rewrites_its_input_even_with_overwrite(tiny_model, tmp_path):
    model = tmp_path / "model.safetensors"
    shutil.copyfile(tiny_model, model)
    link = tmp_path / "link.safetensors"
    link.symlink_to(model)
    (tmp_path / "sub").mkdir()
    before = model.read_bytes()
    for out in (model, link, tmp_path / "sub" / ".." / "model.safetensors"):
        r = CliRunner().invoke(cli, ["export", str(model), "-o", str(out), "--overwrite"])
        assert r.exit_code == 1, r.output
        assert error_line(r) == f"Error: {out}: the output is the input; choose another output path"
    r = CliRunner().invoke(cli, ["export", str(link), "-o", str(model), "--overwrite"])  # the input through a link
    assert r.exit_code == 1 and "the output is the input" in error_line(r)
    assert model.read_bytes() == before and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.safetensors", "model.safetensors", "sub"]


def test_a_run_folder_as_the_model_names_the_model_files_in_it(tiny_model, rgb_tif, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = tmp_path / "pub.safetensors"
    r = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out)])
    assert r.exit_code == 1
    assert error_line(r) == (
        f"Error: {run_dir}: is a folder, not a model file; give a geosr .safetensors model file or a bundled model's "
        "name (geosr info lists them)"
    )
    shutil.copyfile(tiny_model, run_dir / "last.safetensors")  # a run with no validation yet: last only
    r = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out)])
    assert r.exit_code == 1
    assert error_line(r) == (
        f"Error: {run_dir}: a training run's folder, not a model file; give {run_dir}/last.safetensors (the last step)"
    )
    shutil.copyfile(tiny_model, run_dir / "best.safetensors")
    both = (
        f"Error: {run_dir}: a training run's folder, not a model file; give {run_dir}/best.safetensors (the best by "
        f"validation) or {run_dir}/last.safetensors (the last step)"
    )
    r = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out)])
    assert r.exit_code == 1 and error_line(r) == both
    assert not out.exists()
    # the same words for geosr upscale --model RUN_DIR (the one model-file check of geosr.checkpoint)
    up = tmp_path / "up.tif"
    r = CliRunner().invoke(cli, ["upscale", str(rgb_tif), "-o", str(up), "--model", str(run_dir)])
    assert r.exit_code == 1 and error_line(r) == both
    assert not up.exists()


def test_export_prints_the_size_of_a_small_file_in_kb(tiny_model, tmp_path):
    out = tmp_path / "pub.safetensors"
    r = CliRunner().invoke(cli, ["export", str(tiny_model), "-o", str(out)])
    assert r.exit_code == 0, r.output
    size = out.stat().st_size
    assert 1e3 < size < 1e6  # a tiny model: tens of kB, which "0.0 MB" hid
    assert r.output.strip() == f"{out}: degan, x2, fp16, {size / 1e3:.1f} kB"


@pytest.mark.parametrize("name", ["", "   "])
def test_export_refuses_an_empty_name(tiny_model, tmp_path, name):
    out = tmp_path / "pub.safetensors"
    r = CliRunner().invoke(cli, ["export", str(tiny_model), "-o", str(out), "--name", name])
    assert r.exit_code == 2
    line = error_line(r)
    assert "'--name'" in line and "an empty or blank model name" in line and "leave --name out" in line
    assert not out.exists()


def test_info_without_a_model_lists_the_bundled_models():
    r = CliRunner().invoke(cli, ["info"])
    assert r.exit_code == 0, r.output
    from geosr.bundled import bundled_models

    for name in bundled_models():
        assert name in r.output


def test_a_report_goes_only_onto_weights_it_measured(measured, tmp_path):
    """fp32 weights measured, then cast to fp16 (the default --dtype): the card would hold figures of other weights.
    The widening casts (fp16 -> fp32) and no cast keep every value, so the report holds for them."""
    model, report = measured
    out = tmp_path / "pub.safetensors"
    r = CliRunner().invoke(cli, ["export", str(model), "-o", str(out), "--metrics", str(report)])
    assert r.exit_code == 1, r.output
    assert f"{report}: it measured the F32 weights of {model}, which --dtype fp16 changes; export as fp16 first" in (
        error_line(r)
    )
    assert not out.exists()
    r = CliRunner().invoke(cli, ["export", str(model), "-o", str(out), "--metrics", str(report), "--dtype", "fp32"])
    assert r.exit_code == 0, r.output


def test_metrics_stay_only_with_the_weights_and_tiling_they_measured(measured, tmp_path, caplog):
    """A card's metrics measured on fp32 weights are left out of an fp16 export of them (with a warning); a report
    made in other tiles than the card's is refused; an --overlap above half the tile is a usage error."""
    model, report = measured
    with_metrics = tmp_path / "m32.safetensors"
    assert (
        CliRunner()
        .invoke(cli, ["export", str(model), "-o", str(with_metrics), "--metrics", str(report), "--dtype", "fp32"])
        .exit_code
        == 0
    )
    assert read_card(with_metrics).metrics["report_precision"] == "fp32"
    half = tmp_path / "m16.safetensors"
    with caplog.at_level("WARNING", logger="geosr"):
        r = CliRunner().invoke(cli, ["export", str(with_metrics), "-o", str(half)])  # --dtype fp16: new weights
    assert r.exit_code == 0 and read_card(half).metrics == {}
    assert "the card's metrics were measured on weights that --dtype fp16 changes" in caplog.text
    r = CliRunner().invoke(
        cli,
        [
            "export",
            str(model),
            "-o",
            str(half),
            "--metrics",
            str(report),
            "--dtype",
            "fp32",
            "--tile-size",
            "16",
            "--overwrite",
        ],
    )
    assert r.exit_code == 1 and "measured in tiles of 32 with overlap 8, the card's are 16 and 4" in error_line(r)
    r = CliRunner().invoke(cli, ["export", str(model), "-o", str(tmp_path / "o.safetensors"), "--overlap", "20"])
    assert r.exit_code == 2 and "overlap 20" in r.output and "--overlap" in r.output


def test_an_output_under_a_file_is_refused_before_the_model_is_read(tiny_model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["export", str(tiny_model), "-o", str(tmp_path / "notes.txt" / "x.safetensors")])
    assert r.exit_code == 1 and "notes.txt is a file, not a folder; choose another output path" in error_line(r)
    assert (tmp_path / "notes.txt").read_text() == "mine"
