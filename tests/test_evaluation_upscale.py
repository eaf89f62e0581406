"""`geosr evaluate` measures what `geosr upscale` produces: for one LR image and one model, the SR image evaluate saves
equals the one upscale writes, pixel for pixel.

Both map the LR by the same radiometry, run the same forward pass (geosr.predictor.Predictor) on the same tiles
(geosr.tiling's grid, tiles clamped to the raster and blend weights, the same batches) and accumulate in float32 in
the same order, so the pixels are identical here (CPU, fp32). The tests still allow one grey level at a few pixels:
on a GPU upscale turns on cuDNN's autotuner, which may pick another convolution algorithm from one run to the next,
and the last bits of a float that lands near a half may then round the other way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from testdata import write_geotiff, write_image

from geosr.checkpoint import load_generator
from geosr.cli.main import cli
from geosr.datasets import find_images
from geosr.evaluation import evaluate_images
from geosr.inference import UpscaleOptions, load_predictor, upscale_raster
from geosr.pictures import to_dtype

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture
def paired(tmp_path, synthetic_image) -> Path:
    """HR/a.png (140 x 180) and its LR LR_x2/a.png (70 x 90): several 64- or 32-pixel tiles, blended."""
    root = tmp_path / "data"
    hr = synthetic_image(3, 140, 180, seed=3)
    write_image(root / "HR" / "a.png", hr)
    write_image(root / "LR_x2" / "a.png", np.ascontiguousarray(hr[:, ::2, ::2]))
    return root


def assert_same_pixels(evaluated: np.ndarray, upscaled: np.ndarray) -> None:
    assert evaluated.shape == upscaled.shape and evaluated.dtype == upscaled.dtype == np.uint8
    diff = np.abs(evaluated.astype(int) - upscaled.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999, (diff.max(), (diff == 0).mean())


def test_evaluate_save_images_equals_upscale_output(paired, tmp_path, make_model):
    # The card's tile (64, overlap 16) is also evaluate's default, so this holds whether or not the command passes
    # the card's tiling to the library (see evaluate_images).
    model = make_model(
        "skip-x2-t64", scale=2, channels=16, n_blocks=1, refiner="none", global_skip=True, tile_size=64, overlap=16
    )
    runner = CliRunner()
    args = ["--device", "cpu", "--precision", "fp32"]
    result = runner.invoke(
        cli,
        [
            "-q",
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(paired),
            "--split",
            "all",
            "--save-images",
            str(tmp_path / "sr"),
            *args,
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli,
        [
            "-q",
            "upscale",
            str(paired / "LR_x2" / "a.png"),
            "-o",
            str(tmp_path / "up.png"),
            "--model",
            str(model),
            *args,
        ],
    )
    assert result.exit_code == 0, result.output
    assert_same_pixels(read(tmp_path / "sr" / "a.png"), read(tmp_path / "up.png"))


def test_evaluation_with_other_tiles_still_matches_upscale(paired, tmp_path, make_model):
    path = make_model(
        "skip-x2-t64", scale=2, channels=16, n_blocks=1, refiner="none", global_skip=True, tile_size=64, overlap=16
    )
    model, _ = load_generator(path)
    saved = {}

    def keep(result, outputs):
        saved[result.name] = to_dtype(outputs.sr, outputs.pair.dtype)

    items = find_images(paired).items
    (res,) = evaluate_images(items, 2, model, tile_size=32, overlap=8, batch_size=3, on_image=keep)
    predictor = load_predictor(path, device="cpu", precision="fp32")
    upscale_raster(
        paired / "LR_x2" / "a.png",
        tmp_path / "up.tif",
        predictor,
        UpscaleOptions(tile_size=32, overlap=8, batch_size=3),
    )
    assert_same_pixels(saved["a"], read(tmp_path / "up.tif"))
    assert saved["a"].std() > 20  # not a trivial agreement: the output has the image's structure


@pytest.mark.parametrize("bands", [1, 2, 4])
def test_images_of_other_band_counts_are_measured_as_upscale_runs_them(bands, tmp_path, synthetic_image, make_model):
    """A 3-channel model on a 1- or 2-band image (panchromatic, a band pair) runs it repeated, on a 4-band one (RGB and
    near infrared) in the groups (1, 2, 3), (4, 4, 4): evaluate measures the very pixels upscale writes, by default
    and with --bands naming every band."""
    root = tmp_path / "data"
    hr = synthetic_image(bands, 140, 180, seed=5)
    plain = dict(transform=None, crs=None, photometric="MINISBLACK")  # 4 bands: not RGBA, a fourth measurement
    write_geotiff(root / "HR" / "a.tif", hr, **plain)
    write_geotiff(root / "LR_x2" / "a.tif", np.ascontiguousarray(hr[:, ::2, ::2]), **plain)
    model = make_model(
        "skip-x2-t64", scale=2, channels=16, n_blocks=1, refiner="none", global_skip=True, tile_size=64, overlap=16
    )
    args = ["--model", str(model), "--device", "cpu", "--precision", "fp32"]
    runner = CliRunner()
    up = runner.invoke(cli, ["-q", "upscale", str(root / "LR_x2" / "a.tif"), "-o", str(tmp_path / "up.tif"), *args])
    assert up.exit_code == 0, up.output
    upscaled = read(tmp_path / "up.tif")
    assert upscaled.shape == (bands, 140, 180)
    every = ["--bands", ",".join(str(b) for b in range(1, bands + 1))]
    for name, extra in (("default", [] if bands < 3 else every), ("named", every)):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(
            cli,
            ["-q", "evaluate", "--data", str(root), "--split", "all", "--save-images", str(tmp_path / name),
             "-o", str(out), *extra, *args],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert_same_pixels(read(tmp_path / name / "a.png"), upscaled)  # uint8: saved as PNG
        assert np.isfinite(json.loads(out.read_text())["summary"]["mean"]["psnr"])
