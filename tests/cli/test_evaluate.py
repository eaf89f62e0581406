"""`geosr evaluate`: the table, machine-readable output, images and previews, and its errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from testdata import write_image

from geosr.checkpoint import ModelCard, save_generator
from geosr.cli.main import cli
from geosr.models import Generator, GeneratorConfig
from geosr.pictures import LABEL_HEIGHT


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes x 10 images of 48x48 (folder rule: 8 train, 1 val, 1 test per class)."""
    root = tmp_path_factory.mktemp("data") / "scenes"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    for cls in ("Farm", "Port"):
        for i in range(10):
            f = rng.uniform(0.05, 0.3, size=3)
            img = np.stack([127 + 100 * np.sin(f[c] * xx + c) * np.cos(f[c] * yy) for c in range(3)])
            write_image(root / cls / f"{cls.lower()}_{i}.png", img.round().astype(np.uint8))
    return root


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model_file(path, scale=2):
    torch.manual_seed(0)
    cfg = GeneratorConfig(scale=scale, channels=16, n_blocks=1, refiner_base=8)
    return save_generator(path, Generator(cfg), ModelCard(config=cfg, name="tiny", tile_size=16, overlap=4))


def run(*args):
    return CliRunner().invoke(cli, ["-q", "evaluate", *map(str, args)])


def test_table_json_csv_images_and_previews(folder, tmp_path):
    model = model_file(tmp_path / "tiny.safetensors")
    result = run(
        "--model",
        model,
        "--data",
        folder,
        "--split",
        "val",
        "--out",
        tmp_path / "r.json",
        "--save-images",
        tmp_path / "sr",
        "--preview",
        tmp_path / "prev",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "(folders, val split, 2 images)" in lines[0]
    assert lines[1].split() == [
        "class",
        "images",
        "bicubic",
        "PSNR",
        "SSIM",
        "model",
        "PSNR",
        "SSIM",
        "gain",
        "dB",
        "residual",
    ]
    assert [line.split()[0] for line in lines[3:] if not line.startswith("-")] == ["Farm", "Port", "mean"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["scale"] == 2 and report["split"] == "val" and len(report["images"]) == 2
    mean = report["summary"]["mean"]
    assert mean["images"] == 2 and 10 < mean["psnr_bicubic"] < 60 and 0 < mean["ssim"] <= 1
    assert report["consistency"] is True and mean["residual"] >= 0
    assert sorted(p.relative_to(tmp_path / "sr").as_posix() for p in (tmp_path / "sr").rglob("*.png")) == [
        "Farm/farm_8.png",
        "Port/port_8.png",
    ]
    with rasterio.open(tmp_path / "sr" / "Farm" / "farm_8.png") as src:
        assert (src.count, src.height, src.width, src.dtypes[0]) == (3, 48, 48, "uint8")
    with rasterio.open(tmp_path / "prev" / "Farm_farm_8.png") as src:
        assert src.count == 3 and src.width == 3 * 48 * 2 + 2 * 4  # HR | bicubic | model, zoomed x2, 4-px gaps
        assert src.height == LABEL_HEIGHT + 48 * 2  # the labels above the panels
        labels = src.read(1)[:LABEL_HEIGHT]
    for k in range(3):  # each panel's label: black letters on white
        assert labels[:, k * (96 + 4) : k * (96 + 4) + 96].min() == 0
    result = run("--model", model, "--data", folder, "--split", "all", "--max-images", "4", "--out", tmp_path / "r.csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["level"] for r in rows] == ["image"] * 4 + ["class", "class", "mean"]


def test_self_ensemble_is_measured_and_recorded(folder, tmp_path):
    """--self-ensemble: the report says so, the figures differ from the plain run's, and export refuses to put them on
    a card (a card's metrics are those of upscale's default)."""
    model = model_file(tmp_path / "tiny.safetensors")
    for name, extra in (("plain", ()), ("ens", ("--self-ensemble",))):
        result = run("--model", model, "--data", folder, "--split", "val", "--out", tmp_path / f"{name}.json", *extra)
        assert result.exit_code == 0, result.output
    plain, ens = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("plain", "ens"))
    assert plain["self_ensemble"] is False and ens["self_ensemble"] is True
    assert ens["summary"]["mean"]["psnr"] != plain["summary"]["mean"]["psnr"]
    assert ens["summary"]["mean"]["psnr_bicubic"] == plain["summary"]["mean"]["psnr_bicubic"]
    r = CliRunner().invoke(
        cli, ["export", str(model), "-o", str(tmp_path / "m.safetensors"), "--metrics", str(tmp_path / "ens.json")]
    )
    assert r.exit_code == 1 and "measured with --self-ensemble" in r.output and "\n" not in r.output.strip()
    assert not (tmp_path / "m.safetensors").exists()


def test_errors_are_one_line_and_name_the_remedy(folder, tmp_path):
    model = model_file(tmp_path / "tiny.safetensors")
    result = run("--model", model, "--data", tmp_path / "missing", "--split", "val")
    assert result.exit_code == 1 and "no such data folder" in result.output
    empty = tmp_path / "few"
    write_image(empty / "a" / "a.png", np.zeros((3, 32, 32), np.uint8))  # 1 image: all train, no test
    result = run("--model", model, "--data", empty)
    assert result.exit_code == 1 and "the test split has no images" in result.output and "--split" in result.output
    result = run("--model", model, "--data", folder, "--scale", "4")
    assert result.exit_code == 1 and "is a x2 model but --scale=4 asks for x4" in result.output
    result = run("--model", tmp_path / "nope.safetensors", "--data", folder)
    assert result.exit_code == 1 and "no such model file" in result.output
    result = run("--model", model, "--data", folder, "-o", tmp_path / "r.txt")
    assert result.exit_code == 2 and ".json or .csv" in result.output and "'-o' / '--output'" in result.output
    result = run("--model", model, "--data", "")  # an unset variable: never the current folder
    assert result.exit_code == 2 and "'--data' / '-d': an empty path" in result.output


def test_saved_images_are_what_upscale_writes_for_the_same_lr_image(tmp_path):
    """A paired data set (HR/ + LR_x2/): evaluate's SR image of an LR file equals geosr upscale of that file, with the
    model card's tiling (16 px, overlap 4: not evaluation's default) and the same precision."""
    torch.manual_seed(1)
    cfg = GeneratorConfig(scale=2, channels=16, n_blocks=1, refiner_base=8)
    model = save_generator(
        tmp_path / "t16.safetensors", Generator(cfg), ModelCard(config=cfg, name="t16", tile_size=16, overlap=4)
    )
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (3, 80, 96)).astype(np.uint8)
    write_image(tmp_path / "data" / "HR" / "scene.png", hr)
    write_image(tmp_path / "data" / "LR_x2" / "scene.png", hr[:, ::2, ::2].copy())
    result = run(
        "-m", model, "-d", tmp_path / "data", "--split", "all", "--precision", "fp32", "--save-images", tmp_path / "sr"
    )
    assert result.exit_code == 0, result.output
    up = CliRunner().invoke(
        cli,
        [
            "upscale",
            str(tmp_path / "data" / "LR_x2" / "scene.png"),
            "-o",
            str(tmp_path / "up.png"),
            "-m",
            str(model),
            "--precision",
            "fp32",
            "-q",
        ],
    )
    assert up.exit_code == 0, up.output
    (saved,) = (tmp_path / "sr").rglob("scene.*")
    with rasterio.open(saved) as a, rasterio.open(tmp_path / "up.png") as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_an_existing_file_is_replaced_only_when_it_is_an_earlier_report_or_with_overwrite(folder, tmp_path):
    """-o over a file of the user's: refused before any work, the file kept; over an earlier report (JSON or CSV):
    replaced; --overwrite replaces any file."""
    model = model_file(tmp_path / "tiny.safetensors")
    for name in ("notes.json", "mine.csv"):
        mine = tmp_path / name
        mine.write_text('{"my": "notes"}\n' if name.endswith(".json") else "a,b\n1,2\n")
        kept = mine.read_bytes()
        result = run("--model", model, "--data", folder, "--split", "val", "-o", mine)
        assert result.exit_code == 1, result.output
        assert f"{mine}: already exists (and is not the evaluation report of an earlier run)" in result.output
        assert "--overwrite" in result.output and len(result.output.strip().splitlines()) == 1
        assert mine.read_bytes() == kept
        result = run("--model", model, "--data", folder, "--split", "val", "-o", mine, "--overwrite")
        assert result.exit_code == 0, result.output
        earlier = mine.read_bytes()
        assert earlier != kept
        result = run("--model", model, "--data", folder, "--split", "val", "--max-images", "1", "-o", mine)
        assert result.exit_code == 0, result.output  # an earlier report: replaced without --overwrite
        assert mine.read_bytes() != earlier
    result = run("--model", model, "--data", folder, "--split", "val", "-o", model.with_suffix(".json"))
    assert result.exit_code == 0, result.output


def test_image_folders_are_checked_before_any_work(folder, tmp_path):
    """--save-images and --preview: never inside the data set, never two images to one file, never over an existing
    image without --overwrite."""
    model = model_file(tmp_path / "tiny.safetensors")
    for option in ("--save-images", "--preview"):
        result = run("--model", model, "--data", folder, "--split", "val", option, folder / "sr")
        assert result.exit_code == 2 and f"lies in the data set {folder}" in result.output, result.output
        assert not (folder / "sr").exists()
    twins = tmp_path / "twins"
    for suffix in (".png", ".tif"):
        write_image(twins / "c" / f"img_1{suffix}", np.full((3, 32, 32), 7, np.uint8))
    result = run("--model", model, "--data", twins, "--split", "all", "--save-images", tmp_path / "sv")
    assert result.exit_code == 2 and "would both be written to" in result.output, result.output
    assert not (tmp_path / "sv").exists()
    assert run("--model", model, "--data", twins, "--split", "all", "--preview", tmp_path / "pv").exit_code == 2
    args = ("--model", model, "--data", folder, "--split", "val", "--save-images", tmp_path / "sr")
    assert run(*args).exit_code == 0
    saved = tmp_path / "sr" / "Farm" / "farm_8.png"
    saved.write_bytes(b"mine")
    result = run(*args)
    assert result.exit_code == 1 and f"{saved}: already exists" in result.output and "--overwrite" in result.output
    assert saved.read_bytes() == b"mine"
    assert run(*args, "--overwrite").exit_code == 0 and saved.read_bytes() != b"mine"
    if Path("/proc/self").is_dir():  # Linux: a folder no process may create a file in, whoever runs the test
        for option, where in (
            ("-o", "/proc/self/e.json"),
            ("--save-images", "/proc/self/sr"),
            ("--preview", "/proc/self"),
        ):
            result = run("--model", model, "--data", folder, "--split", "val", option, where)
            assert result.exit_code == 1 and "cannot write in /proc/self" in result.output, (option, result.output)


def test_images_that_cannot_be_measured_are_found_before_the_model_runs(tmp_path):
    """A 1-band image among RGB ones, an image too small for the scale: one line naming it before any work; images
    with transparent pixels are left out and counted; none left to measure is an error."""
    model = model_file(tmp_path / "tiny.safetensors")
    rgb = np.full((3, 48, 48), 90, np.uint8)
    rgb[:, ::2] = 140
    mixed = tmp_path / "mixed"
    write_image(mixed / "a.png", rgb)
    write_image(mixed / "b_gray.png", rgb[:1])
    result = run("--model", model, "--data", mixed, "--split", "all", "--save-images", tmp_path / "sr")
    assert result.exit_code == 1 and "b_gray.png has 1 band, " in result.output and "a.png (the first" in result.output
    assert "evaluate images of different band counts apart, or pass --bands" in result.output
    assert not (tmp_path / "sr").exists()  # nothing measured, nothing written
    small = tmp_path / "small"
    write_image(small / "a.png", rgb)
    write_image(small / "z.png", rgb[:, :12, :12])
    result = run("--model", model, "--data", small, "--split", "all")
    assert result.exit_code == 1 and "z.png: 12x12 pixels is too small for x2" in result.output
    assert "PSNR" not in result.output  # no table: the check came first
    alpha = tmp_path / "alpha"
    rgba = np.concatenate([rgb, np.full((1, 48, 48), 255, np.uint8)])
    write_image(alpha / "a.png", rgba)
    rgba[3, :4, :4] = 0
    write_image(alpha / "b.png", rgba)
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--data", str(alpha), "--split", "all"])
    assert result.exit_code == 0 and "all split, 1 image; 1 left out)" in result.output, result.output
    write_image(alpha / "a.png", rgba)
    result = run("--model", model, "--data", alpha, "--split", "all")
    assert result.exit_code == 1 and "none of the 2 images can be measured" in result.output
    sixteen = tmp_path / "u16"
    write_image(sixteen / "a.tif", rgb.astype(np.uint16) * 40)
    result = run("--model", model, "--data", sixteen, "--split", "all")
    assert result.exit_code == 0 and "Images of uint16 are measured on each band's percentile range" in result.output
