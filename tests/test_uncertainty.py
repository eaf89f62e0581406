"""geosr.uncertainty and ``--uncertainty``: the error map's mechanics (grid, georeferencing, nodata, blending, path
rules) with a tiny random-weight model, and its meaning with the bundled degan-x4 on UC Merced val images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geosr.errors import OptionError, OutputExistsError, RasterError
from geosr.options import UpscaleOptions
from geosr.pipeline import upscale_raster
from geosr.predictor import geometric_ensemble, load_predictor
from geosr.radiometry import Radiometry
from geosr.tiling import tile_array
from geosr.uncertainty import block_means, calibration_factor, error_map, ranks, spearman, with_spread

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_model: Path):
    return load_predictor(tiny_model, device="cpu", precision="fp32")


def test_ranks_average_ties_and_spearman_is_pearson_of_ranks():
    np.testing.assert_array_equal(ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.9486833)
    assert np.isnan(spearman(np.ones(4), x[:4]))
    assert block_means(np.arange(16.0).reshape(4, 4), 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_spread_mean_is_the_self_ensemble_and_spread_is_the_mean_absolute_deviation(tiny):
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mean, spread = tiny.run(x, spread=True)
    with torch.inference_mode():
        assert torch.equal(mean, geometric_ensemble(tiny.model, x))
    assert spread.shape == mean.shape and bool((spread >= 0).all()) and float(spread.mean()) > 0


def test_map_is_on_the_output_grid_blended_as_the_output_and_the_output_is_the_self_ensemble(
    tiny, tiny_model: Path, rgb_tif: Path, tmp_path: Path
):
    out, emap, ensemble = tmp_path / "out.tif", tmp_path / "err.tif", tmp_path / "ens.tif"
    upscale_raster(rgb_tif, out, tiny, UpscaleOptions(tile_size=16, overlap=4, uncertainty=emap, consistency=False))
    plain_ensemble = load_predictor(tiny_model, device="cpu", precision="fp32", self_ensemble=True)
    upscale_raster(rgb_tif, ensemble, plain_ensemble, UpscaleOptions(tile_size=16, overlap=4, consistency=False))
    with rasterio.open(out) as o, rasterio.open(emap) as e, rasterio.open(ensemble) as s, rasterio.open(rgb_tif) as i:
        assert (e.width, e.height, e.count) == (o.width, o.height, o.count) == (2 * i.width, 2 * i.height, 3)
        assert e.transform == o.transform and e.crs == o.crs and e.dtypes[0] == "float32"
        assert np.isnan(e.nodata)
        np.testing.assert_array_equal(o.read(), s.read())  # the output is the self-ensemble's, bit for bit
        got = e.read()
        x = i.read().astype(np.float32) / np.float32(127.5) - 1
    # the same blend as tile_array's (the evaluation's) of the same spread, in uint8 units times k
    spread = tile_array(with_spread(tiny), x, scale=2, tile_size=16, overlap=4)[3:]
    want = error_map(
        spread,
        Radiometry("uint8", (0.0,) * 3, (255.0,) * 3, (0.0,) * 3, "uint8"),
        calibration_factor(tiny.card, tiny.model_sha256),
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    assert float(got.mean()) > 0


def test_map_with_consistency_is_nan_where_the_output_is_nodata(tiny, rgb_tif: Path, tmp_path: Path, make_geotiff):
    with rasterio.open(rgb_tif) as src:
        data = src.read()
    data[:, 10:30, 20:50] = 0
    scene = make_geotiff(tmp_path / "holes.tif", data, nodata=0)
    out, emap = tmp_path / "out.tif", tmp_path / "err.tif"
    upscale_raster(scene, out, tiny, UpscaleOptions(tile_size=16, overlap=4, uncertainty=emap))
    with rasterio.open(out) as o, rasterio.open(emap) as e:
        nodata = o.read() == o.nodata
        got = e.read()
    assert nodata.any()
    np.testing.assert_array_equal(np.isnan(got), nodata)


def test_the_map_of_an_alpha_band_is_nan_where_the_output_is_transparent(tiny, rgb_tif: Path, tmp_path: Path,
                                                                       make_geotiff):  # fmt: skip
    with rasterio.open(rgb_tif) as src:
        colour = src.read()
    alpha = np.full((1, *colour.shape[1:]), 255, np.uint8)
    alpha[:, 10:30, 20:50] = 0
    scene = make_geotiff(tmp_path / "rgba.tif", np.concatenate([colour, alpha]), photometric="RGB", alpha="YES")
    out, emap = tmp_path / "out.tif", tmp_path / "err.tif"
    upscale_raster(scene, out, tiny, UpscaleOptions(tile_size=16, overlap=4, uncertainty=emap))
    with rasterio.open(out) as o, rasterio.open(emap) as e:
        transparent = o.read(4) == 0
        got = e.read()
    assert transparent.any() and not transparent.all()
    for band in got:  # the colour bands' and the alpha band's alike
        np.testing.assert_array_equal(np.isnan(band), transparent)
    assert (got[3][~transparent] == 0).all()  # the alpha band is copied, not estimated: no error


def test_map_path_rules(tiny, rgb_tif: Path, tmp_path: Path):
    out = tmp_path / "out.tif"
    with pytest.raises(OptionError, match="also the output"):
        upscale_raster(rgb_tif, out, tiny, UpscaleOptions(tile_size=16, overlap=4, uncertainty=out))
    with pytest.raises(OptionError, match="GeoTIFF"):
        upscale_raster(rgb_tif, out, tiny, UpscaleOptions(tile_size=16, overlap=4, uncertainty=tmp_path / "e.png"))
    with pytest.raises(OptionError, match="rgb.tif: is the input; give the error map another path"):
        upscale_raster(rgb_tif, out, tiny, UpscaleOptions(tile_size=16, overlap=4, uncertainty=rgb_tif, overwrite=True))
    existing = tmp_path / "err.tif"
    existing.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        upscale_raster(rgb_tif, out, tiny, UpscaleOptions(tile_size=16, overlap=4, uncertainty=existing))
    with pytest.raises(RasterError, match="err.tif is a file, not a folder"):
        upscale_raster(rgb_tif, out, tiny, UpscaleOptions(tile_size=16, overlap=4, uncertainty=existing / "e.tif"))
    assert existing.read_bytes() == b"keep" and not out.exists()  # checked before any work
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.tif", "rgb.tif"]


def test_the_map_s_folder_is_made_as_the_output_s_is(tiny, make_geotiff, synthetic_image, tmp_path: Path):
    small = make_geotiff(tmp_path / "small.tif", synthetic_image(3, 16, 16))
    out, emap = tmp_path / "new" / "out.tif", tmp_path / "maps" / "deep" / "err.tif"
    upscale_raster(small, out, tiny, UpscaleOptions(tile_size=16, overlap=4, uncertainty=emap))
    with rasterio.open(out) as o, rasterio.open(emap) as e:
        assert (e.width, e.height, e.transform) == (o.width, o.height, o.transform) == (32, 32, e.transform)


@pytest.mark.slow
def test_map_ranks_the_real_error_better_than_the_bicubic_gradient(ucmerced: Path):
    """The bundled degan-x4 on 10 UC Merced val images, in bf16 where the CPU has it natively (about 60 s on one
    thread with AMX), else fp32 (bf16 emulated would take five times that); on every core (nothing else runs)."""
    from geosr.checkpoint import load_generator
    from geosr.datasets import find_images, spread
    from geosr.device import intra_op_threads, resolve_precision, usable_cores
    from geosr.evaluation import evaluate_images
    from geosr.predictor import select_model
    from geosr.uncertainty import summarise_measures

    path = select_model("degan-x4", 4)
    model, card = load_generator(path, device="cpu")
    items = spread(find_images(ucmerced, "val").items, 10)
    with intra_op_threads(usable_cores()):
        results = evaluate_images(
            items,
            4,
            model,
            bands=[1, 2, 3],
            precision=resolve_precision("auto", torch.device("cpu")),
            tile_size=card.tile_size,
            overlap=card.overlap,
            self_ensemble=True,
            uncertainty_k=7.0,
        )
    m = summarise_measures([r.uncertainty for r in results])
    print(f"spearman_block {m['spearman_block']:.3f}, gradient {m['gradient_spearman_block']:.3f}")
    assert m["spearman_block"] >= 0.5
    assert m["spearman_block"] > m["gradient_spearman_block"]


def test_the_command_line_writes_the_map_for_one_file_and_refuses_it_for_a_batch(
    tiny_model, rgb_tif: Path, tmp_path: Path, make_geotiff
):
    from click.testing import CliRunner

    from geosr.cli.main import cli

    def run(*args):
        return CliRunner().invoke(cli, ["upscale", *map(str, args), "--model", str(tiny_model), "-q"])

    result = run(rgb_tif, "-o", tmp_path / "out.tif", "--uncertainty", tmp_path / "map.tif")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "map.tif") as m, rasterio.open(tmp_path / "out.tif") as o:
        assert (m.width, m.height, m.count, m.transform, m.crs) == (o.width, o.height, o.count, o.transform, o.crs)
        assert m.dtypes[0] == "float32" and np.nanmin(m.read()) >= 0
    folder = tmp_path / "tiles"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        make_geotiff(folder / name, np.full((3, 16, 16), 100, np.uint8))
    result = run(folder, "-o", tmp_path / "sr", "--uncertainty", tmp_path / "maps.tif")
    assert result.exit_code == 2 and "error map of one input file" in result.output
    assert not (tmp_path / "sr").exists() and not (tmp_path / "maps.tif").exists()


def cli_upscale(model: Path, *args):
    from click.testing import CliRunner

    from geosr.cli.main import cli

    return CliRunner().invoke(cli, ["upscale", *map(str, args), "--model", str(model), "-q"])


def test_the_command_line_takes_the_map_s_path_as_the_output_s(tiny_model, make_geotiff, synthetic_image, tmp_path):
    """A missing folder is made (as -o's is); the input as the map is a usage error on --uncertainty (exit 2), as
    the output is, and nothing is written."""
    small = make_geotiff(tmp_path / "small.tif", synthetic_image(3, 16, 16))
    made = cli_upscale(tiny_model, small, "-o", tmp_path / "sr" / "out.tif", "--uncertainty", tmp_path / "nodir/u.tif")
    assert made.exit_code == 0, made.output
    with rasterio.open(tmp_path / "nodir" / "u.tif") as m:
        assert (m.width, m.height, m.dtypes[0]) == (32, 32, "float32")
    before = small.read_bytes()
    for target, message in ((small, "small.tif: is the input"), (tmp_path / "o.tif", "o.tif: is also the output")):
        refused = cli_upscale(tiny_model, small, "-o", tmp_path / "o.tif", "--uncertainty", target, "--overwrite")
        assert refused.exit_code == 2, refused.output
        assert "Invalid value for '--uncertainty'" in refused.output and message in refused.output
    assert small.read_bytes() == before and not (tmp_path / "o.tif").exists()


def test_with_cog_the_map_is_a_cog_too(tiny_model, make_geotiff, synthetic_image, tmp_path):
    small = make_geotiff(tmp_path / "small.tif", synthetic_image(3, 16, 16))
    out, emap = tmp_path / "out.tif", tmp_path / "err.tif"
    result = cli_upscale(tiny_model, small, "-o", out, "--uncertainty", emap, "--cog")
    assert result.exit_code == 0, result.output
    for path in (out, emap):
        with rasterio.open(path) as d:
            assert d.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", path
    with rasterio.open(emap) as e, rasterio.open(out) as o:
        assert e.dtypes[0] == "float32" and np.isnan(e.nodata) and e.transform == o.transform
        assert "GEOSR_UNCERTAINTY" in e.tags()
        # the run's provenance too: geosr info says how the map was made, as for the output
        assert {k: v for k, v in e.tags().items() if k.startswith("GEOSR_") and k != "GEOSR_UNCERTAINTY"} == {
            k: v for k, v in o.tags().items() if k.startswith("GEOSR_")
        }


def test_evaluate_writes_the_map_s_measures_into_a_csv_report_as_into_a_json_one(tiny_model, scene_folder, tmp_path):
    import csv
    import json

    from click.testing import CliRunner

    from geosr.cli.main import cli
    from geosr.uncertainty import MEASURES

    def evaluate(out):
        args = ["-q", "evaluate", "--model", tiny_model, "--data", scene_folder, "--split", "val", "--uncertainty"]
        return CliRunner().invoke(cli, [*map(str, args), "-o", str(out)])

    for name in ("r.json", "r.csv"):
        result = evaluate(tmp_path / name)
        assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    with (tmp_path / "r.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["level"] for r in rows] == ["image"] * 4 + ["class", "class", "mean"]
    images = {r["name"]: r for r in rows if r["level"] == "image"}
    mean = rows[-1]
    for key in MEASURES:
        for image in doc["images"]:
            assert float(images[image["name"]][f"uncertainty_{key}"]) == pytest.approx(image["uncertainty"][key])
        assert float(mean[f"uncertainty_{key}"]) == pytest.approx(doc["uncertainty"][key])
    assert float(mean["uncertainty_laplace_within_1x"]) == pytest.approx(doc["uncertainty"]["laplace_within_1x"])
    fields = [r for r in rows if r["class"] == "fields" and r["level"] == "class"][0]
    want = np.mean([i["uncertainty"]["mean_map"] for i in doc["images"] if i["label"] == "fields"])
    assert float(fields["uncertainty_mean_map"]) == pytest.approx(want)
    again = evaluate(tmp_path / "r.csv")  # still a report of geosr evaluate: replaced without --overwrite
    assert again.exit_code == 0, again.output
