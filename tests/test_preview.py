"""`geosr upscale --preview`: the picture's panels, its window, its stretch and the rules of its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.windows import Window

from geosr.cli.main import cli
from geosr.pictures import LABEL_HEIGHT
from geosr.preview import GAP, busiest_window

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RGB16 = Path("/work/shared/data/geotiff/rio-color/rgb16.tif")


def run(*args):
    return CliRunner().invoke(cli, ["upscale", *map(str, args)], catch_exceptions=False)


def read_png(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        assert ds.driver == "PNG"
        return ds.read()


@pytest.mark.parametrize("uncertainty, panels", [(False, 3), (True, 4)])
def test_the_preview_has_a_panel_per_picture(tiny_model, rgb_tif, tmp_path, uncertainty, panels):
    extra = ["--uncertainty", tmp_path / "err.tif"] if uncertainty else []
    result = run(rgb_tif, "-o", tmp_path / "out.tif", "--model", tiny_model, "--preview", tmp_path / "p.png", *extra)
    assert result.exit_code == 0, result.output
    png = read_png(tmp_path / "p.png")
    side = 64 * 2  # the 70 x 90 input holds a 64 x 64 window; x2
    assert png.shape == (3, LABEL_HEIGHT + side, panels * side + (panels - 1) * GAP)
    assert (png[:, :LABEL_HEIGHT] == 0).any()  # the labels' letters
    gaps = png[:, :, [side + i * (side + GAP) for i in range(panels - 1)]]
    assert (gaps == 255).all()
    assert not list(tmp_path.glob(".p.png.*"))  # no temporary file left


def test_the_window_is_honoured_and_the_output_panel_is_the_output(tiny_model, rgb_tif, tmp_path):
    out = tmp_path / "out.tif"
    result = run(
        rgb_tif, "-o", out, "--model", tiny_model, "--preview", tmp_path / "p.png", "--preview-window", "10,20,16,8"
    )
    assert result.exit_code == 0, result.output
    png = read_png(tmp_path / "p.png")
    assert png.shape == (3, LABEL_HEIGHT + 16, 3 * 32 + 2 * GAP)
    with rasterio.open(rgb_tif) as ds:
        lr = ds.read(window=Window(10, 20, 16, 8)).astype(float)
    lo, hi = np.percentile(lr.reshape(3, -1), [2, 98], axis=1)
    expected = np.clip((lr - lo[:, None, None]) / (hi - lo)[:, None, None] * 255, 0, 255).round()
    panel = png[:, LABEL_HEIGHT:, :32]
    assert np.array_equal(panel[:, ::2, ::2], expected.astype(np.uint8))  # the input, nearest-neighbour x2
    with rasterio.open(out) as ds:
        sr = ds.read(window=Window(20, 40, 32, 16)).astype(float)
    expected_sr = np.clip((sr - lo[:, None, None]) / (hi - lo)[:, None, None] * 255, 0, 255).round()
    assert np.array_equal(png[:, LABEL_HEIGHT:, 2 * (32 + GAP) :], expected_sr.astype(np.uint8))


def test_a_16_bit_raster_is_visible(tiny_model, tmp_path):
    if not RGB16.exists():
        pytest.skip(f"{RGB16} is not on this machine (the shared test data)")
    src = tmp_path / "rgb16.tif"
    with rasterio.open(RGB16) as ds:
        window = Window(150, 150, 72, 72)
        profile = ds.profile | dict(width=72, height=72, transform=ds.transform @ Affine.translation(150, 150))
        with rasterio.open(src, "w", **profile) as dst:
            dst.write(ds.read(window=window))
    result = run(src, "-o", tmp_path / "out.tif", "--model", tiny_model, "--preview", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    panels = read_png(tmp_path / "p.png")[:, LABEL_HEIGHT:]
    assert int(panels.max()) - int(panels.min()) > 128


def test_the_automatic_window_is_the_most_detailed():
    values = np.zeros((1, 40, 60))
    values[0, 20:30, 30:40] = np.indices((10, 10)).sum(0) % 2 * 100  # a checkerboard in a flat scene
    col, row = busiest_window(values, 2, 20, 20)
    assert col <= 60 <= col + 20 + 2 and row <= 40 <= row + 20 + 2


def test_the_preview_path_rules(tiny_model, rgb_tif, tmp_path, make_geotiff, synthetic_image):
    out = tmp_path / "out.tif"
    result = run(rgb_tif, "-o", out, "--model", tiny_model, "--preview", rgb_tif)
    assert result.exit_code == 2 and "is an input of this run" in result.output
    existing = tmp_path / "p.png"
    existing.write_bytes(b"mine")
    result = run(rgb_tif, "-o", out, "--model", tiny_model, "--preview", existing)
    assert result.exit_code != 0 and "already exists" in result.output
    assert existing.read_bytes() == b"mine" and not out.exists()  # checked before any work
    folder = tmp_path / "tiles"
    make_geotiff(folder / "a.tif", synthetic_image(3, 40, 60))
    result = run(folder, "-o", tmp_path / "sr", "--model", tiny_model, "--preview", tmp_path / "q.png")
    assert result.exit_code == 2 and "one input file" in result.output
    assert not (tmp_path / "sr").exists()
    result = run(
        rgb_tif, "-o", out, "--model", tiny_model, "--preview", tmp_path / "q.png", "--preview-window", "1,2,0,4"
    )
    assert result.exit_code == 2 and "COL,ROW,WIDTH,HEIGHT" in result.output
    if Path("/proc/self").is_dir():  # Linux: a folder no process may create a file in, whoever runs the test
        result = run(rgb_tif, "-o", out, "--model", tiny_model, "--preview", "/proc/self/p.png")
        assert result.exit_code == 1 and "/proc/self/p.png: cannot write in /proc/self" in result.output
        assert not out.exists()  # refused before the run, not after it


@pytest.mark.parametrize(
    "window, extra, cover",
    [
        ("200,200,10,10", [], "the 90 x 70 input pixels at 0,0"),
        ("40,40,8,8", ["--bbox", "500100,3999700,500300,3999900"], "the 20 x 20 input pixels at 10,10"),
    ],
)
def test_a_window_outside_what_the_output_covers_is_refused_before_any_work(
    tiny_model, rgb_tif, tmp_path, window, extra, cover
):
    """Outside the raster, or outside the area of interest's window: a usage error, and no output written."""
    out = tmp_path / "out.tif"
    result = run(
        rgb_tif, "-o", out, "--model", tiny_model, "--preview", tmp_path / "p.png", "--preview-window", window, *extra
    )
    assert result.exit_code == 2, result.output
    assert f"--preview-window {window} lies outside {cover}" in result.output
    assert not out.exists() and not (tmp_path / "p.png").exists()


def test_a_window_partly_outside_what_the_output_covers_is_cut_with_a_warning(tiny_model, rgb_tif, tmp_path, caplog):
    result = run(rgb_tif, "-o", tmp_path / "out.tif", "--model", tiny_model, "--preview", tmp_path / "p.png",
                 "--preview-window", "80,60,20,20")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--preview-window 80,60,20,20 reaches beyond the 90 x 70 input pixels at 0,0" in caplog.text
    assert "shows its part inside them, 80,60,10,10" in caplog.text and (tmp_path / "p.png").exists()


def test_the_edge_of_nodata_is_no_detail():
    """A flat scene with a nodata half (NaN) and a small checkerboard: the window goes to the checkerboard, not to the
    long border of the nodata."""
    values = np.full((1, 40, 60), 50.0)
    values[0, :, :30] = np.nan
    values[0, 25:30, 45:50] = np.indices((5, 5)).sum(0) % 2 * 10
    col, row = busiest_window(values, 1, 10, 10)
    assert 36 <= col <= 50 and 16 <= row <= 30


def test_a_preview_is_a_png_and_nodata_is_black_on_every_panel(tiny_model, tmp_path, make_geotiff, synthetic_image):
    data = synthetic_image(3, 40, 60)
    data[:, :, :20] = 0
    src = make_geotiff(tmp_path / "in.tif", data, nodata=0)
    result = run(src, "-o", tmp_path / "out.tif", "--model", tiny_model, "--preview", tmp_path / "p.jpg")
    assert result.exit_code == 2 and "name ending .png" in result.output
    assert not (tmp_path / "out.tif").exists()
    result = run(
        src, "-o", tmp_path / "out.tif", "--model", tiny_model, "--preview", tmp_path / "p.png",
        "--preview-window", "0,0,40,40",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    png = read_png(tmp_path / "p.png")[:, LABEL_HEIGHT:]
    side = 40 * 2
    for k in range(3):  # input, bicubic, geosr: the 20 nodata columns (40 output columns) black
        panel = png[:, :, k * (side + GAP) : k * (side + GAP) + side]
        assert (panel[:, :, :40] == 0).all(), k
        assert panel[:, :, 42:].any(), k


@pytest.mark.parametrize("col, row, side", [(700, 600, 5), (0, 0, 3)])
def test_a_small_aoi_of_a_large_raster_gets_its_preview(
    tiny_model, tmp_path, make_geotiff, synthetic_image, col, row, side
):
    # 1100 x 1100 input pixels: the window search reads it decimated 4 times, coarser than the box
    src = make_geotiff(tmp_path / "in.tif", synthetic_image(3, 1100, 1100))
    with rasterio.open(src) as ds:
        (x0, x1), (y1, y0) = ds.xy([row, row + side], [col, col + side], offset="ul")
    result = run(
        src, "-o", tmp_path / "out.tif", "--model", tiny_model, "--bbox", f"{x0},{y0},{x1},{y1}",
        "--preview", tmp_path / "p.png",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    png = read_png(tmp_path / "p.png")
    assert png.shape == (3, LABEL_HEIGHT + side * 2, 3 * side * 2 + 2 * GAP)  # the whole box, x2


def test_the_automatic_window_lies_where_the_aoi_keeps_the_output(tiny_model, tmp_path, make_geotiff, synthetic_image):
    data = synthetic_image(3, 200, 200)
    noise = np.random.default_rng(0).integers(0, 256, (3, 80, 80), dtype=np.uint8)
    data[:, :80, :80] = noise  # the most detail: the north-west corner, outside the AOI below
    src = make_geotiff(tmp_path / "in.tif", data)
    with rasterio.open(src) as ds:
        corners = [ds.xy(r, c, offset="ul") for r, c in ((200, 0), (200, 200), (0, 200))]  # the south-east half
    ring = ", ".join(f"{x} {y}" for x, y in [*corners, corners[0]])
    result = run(src, "-o", tmp_path / "out.tif", "--model", tiny_model, "--aoi", f"POLYGON(({ring}))",
                 "--preview", tmp_path / "p.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    png = read_png(tmp_path / "p.png")[:, LABEL_HEIGHT:]
    side = 64 * 2
    geosr_panel = png[:, :, 2 * (side + GAP) : 2 * (side + GAP) + side]
    assert (geosr_panel.max(axis=0) > 0).mean() > 0.5  # mostly inside the AOI, not the masked noisy corner
