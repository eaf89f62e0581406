"""What outputs say about themselves: the input's STATISTICS_* tags are not carried to the new pixels, the run's
provenance (consistency, self-ensemble, the model file's SHA-256) is recorded in files and DataArrays alike, and
`geosr info OUT.tif` prints it. On a crop of the real Landsat scene examples/data/RGB.byte.tif, with its own tags."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.windows import Window

import geosr
from geosr.cli.main import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENE = Path(__file__).resolve().parents[1] / "examples" / "data" / "RGB.byte.tif"
STATISTICS = (
    "STATISTICS_MINIMUM",
    "STATISTICS_MAXIMUM",
    "STATISTICS_MEAN",
    "STATISTICS_STDDEV",
    "STATISTICS_VALID_PERCENT",
    "STATISTICS_APPROXIMATE",
)


@pytest.fixture(scope="module")
def model(tiny_model):
    """The tiny x2 RGB model (tile 32, overlap 8) on the CPU in fp32."""
    return geosr.load_model(tiny_model, device="cpu", precision="fp32")


@pytest.fixture
def stats_tif(tmp_path) -> Path:
    """72 x 64 pixels of the real scene (nodata 0, EPSG:32618, 300 m) with its tags, the statistics of these pixels
    in every band's STATISTICS_* tags (as gdalinfo -stats writes them), a band tag of another kind, and a GEOSR_*
    tag as an earlier geosr run would have left it."""
    path = tmp_path / "scene.tif"
    window = Window(330, 300, 72, 64)
    with rasterio.open(SCENE) as ds:
        data = ds.read(window=window)
        profile = {
            "driver": "GTiff",
            "width": 72,
            "height": 64,
            "count": ds.count,
            "dtype": ds.dtypes[0],
            "crs": ds.crs,
            "transform": ds.transform @ Affine.translation(330, 300),
            "nodata": ds.nodata,
        }
        tags, band_tags = ds.tags(), [ds.tags(b) for b in ds.indexes]
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags, GEOSR_ALPHA="bands [4] upscaled nearest (an earlier run's)")
        for b, band in enumerate(data, start=1):
            valid = band[band != 0].astype(np.float64)
            dst.update_tags(b, **band_tags[b - 1])
            dst.update_tags(
                b,
                STATISTICS_MINIMUM=f"{valid.min():g}",
                STATISTICS_MAXIMUM=f"{valid.max():g}",
                STATISTICS_MEAN=f"{valid.mean():.6f}",
                STATISTICS_STDDEV=f"{valid.std():.6f}",
                STATISTICS_VALID_PERCENT=f"{100 * valid.size / band.size:.3f}",
                STATISTICS_APPROXIMATE="NO",
                WAVELENGTH=f"band {b}",
            )
    with rasterio.open(path) as ds:
        assert all(set(STATISTICS) <= set(ds.tags(b)) for b in ds.indexes)
        assert 0 < float(ds.tags(1)["STATISTICS_VALID_PERCENT"]) <= 100
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def statistics_tags(ds) -> list[str]:
    """The STATISTICS_* keys of a dataset's tags and its bands' tags."""
    return [k for tags in (ds.tags(), *(ds.tags(b) for b in ds.indexes)) for k in tags if k.startswith("STATISTICS_")]


def test_an_output_drops_the_inputs_statistics_and_records_its_provenance(stats_tif, model, tiny_model, tmp_path):
    out = tmp_path / "out.tif"
    geosr.upscale(stats_tif, out, model=model)
    with rasterio.open(out) as d:
        tags = d.tags()
        assert statistics_tags(d) == []
        assert d.tags(2)["WAVELENGTH"] == "band 2"  # other band tags are still copied
    assert not Path(f"{out}.aux.xml").exists()  # no sidecar holds them either
    assert tags["GEOSR_MODEL_SHA256"] == sha256(tiny_model)
    assert tags["GEOSR_CONSISTENCY"].startswith("on: ")
    assert tags["GEOSR_SELF_ENSEMBLE"] == "off: one pass of the model per tile"
    assert "GEOSR_ALPHA" not in tags  # the input's own GEOSR_* tags describe another run
    assert tags["AREA_OR_POINT"] == "Area" and tags["GEOSR_SCALE"] == "2"


def test_upscaling_an_output_of_geosr_again_warns(stats_tif, model, tmp_path, caplog):
    out, again = tmp_path / "out.tif", tmp_path / "again.tif"
    geosr.upscale(stats_tif, out, model=model)
    assert "an output of geosr" not in caplog.text  # the input of the first run is not one
    geosr.upscale(out, again, model=model)
    assert f"{out}: an output of geosr (x2, its GEOSR_SCALE tag); upscaling it again" in caplog.text
    with rasterio.open(again) as d:
        assert d.tags()["GEOSR_SCALE"] == "2"  # the new run's own


def test_the_command_line_records_its_switches_replaces_a_stale_sidecar_and_info_prints_them(
    stats_tif, tiny_model, tmp_path
):
    out = tmp_path / "out.tif"
    out.write_bytes(b"an earlier output")
    stale = Path(f"{out}.aux.xml")
    stale.write_text(
        '<PAMDataset><PAMRasterBand band="1"><Metadata><MDI key="STATISTICS_MEAN">3</MDI></Metadata>'
        "</PAMRasterBand></PAMDataset>"
    )
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "upscale",
            str(stats_tif),
            "-o",
            str(out),
            "--model",
            str(tiny_model),
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--no-consistency",
            "--self-ensemble",
            "--overwrite",
        ],
    )
    assert result.exit_code == 0, result.output
    assert not stale.exists()
    with rasterio.open(out) as d:
        tags = d.tags()
        assert statistics_tags(d) == []
    assert tags["GEOSR_CONSISTENCY"].startswith("off: ")
    assert tags["GEOSR_SELF_ENSEMBLE"] == "on: mean of the 8 flips and transposes of each tile"
    assert tags["GEOSR_MODEL_SHA256"] == sha256(tiny_model)

    shown = CliRunner().invoke(cli, ["info", str(out)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert any(line.split() == ["size", "144", "x", "128", "pixels,", "3", "bands", "uint8"] for line in lines)
    assert any(line.split() == ["crs", "EPSG:32618"] for line in lines)
    assert any(line.startswith("pixel size") and line.endswith("metre") and "150.0" in line for line in lines)
    geosr_lines = [line for line in lines if line.startswith("GEOSR_")]
    assert [line.split()[0] for line in geosr_lines] == list(tags_in_order(tags))
    for line in geosr_lines:
        key, value = line.split(maxsplit=1)
        assert value == tags[key]
    as_json = json.loads(CliRunner().invoke(cli, ["info", "--json", str(out)]).output)
    assert as_json["written_by_geosr"] and as_json["tags"]["GEOSR_MODEL_SHA256"] == sha256(tiny_model)
    assert as_json["crs"] == "EPSG:32618" and (as_json["width"], as_json["height"]) == (144, 128)


def tags_in_order(tags: dict[str, str]) -> list[str]:
    from geosr.provenance import TAG_ORDER

    return [k for k in TAG_ORDER if k in tags]


def test_info_on_a_raster_not_written_by_geosr_says_so_in_one_line(stats_tif, tmp_path):
    shown = CliRunner().invoke(cli, ["info", str(stats_tif)])
    assert shown.exit_code == 0, shown.output
    [line] = shown.output.splitlines()
    assert "not written by geosr" in line and "72 x 64 pixels" in line and "EPSG:32618" in line
    assert json.loads(CliRunner().invoke(cli, ["info", "--json", str(stats_tif)]).output)["written_by_geosr"] is False


def test_info_on_what_is_neither_a_model_nor_a_raster_is_one_error_line(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model, not a raster\n")
    for path, says in ((notes, "not a safetensors model file"), (tmp_path / "missing.tif", "no such file")):
        shown = CliRunner().invoke(cli, ["info", str(path)])
        assert shown.exit_code == 1
        [line] = shown.output.strip().splitlines()
        assert line.startswith("Error: ") and path.name in line and says in line


def test_info_refuses_a_raster_cut_short_but_reads_a_sparse_one(stats_tif, tmp_path):
    import rasterio.shutil

    cog = tmp_path / "cog.tif"  # a COG: the headers first, the blocks' data after them
    rasterio.shutil.copy(stats_tif, cog, driver="COG", blocksize=32)
    with rasterio.open(cog) as ds:
        tag = ds.get_tag_item
        ends = [int(tag(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1)) + int(tag(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1))
                for y in range(2) for x in range(3)]  # fmt: skip
    cut = tmp_path / "cut.tif"
    cut.write_bytes(cog.read_bytes()[: max(ends) - 10])  # the headers whole, the last block's data cut short
    shown = CliRunner().invoke(cli, ["info", str(cut)])
    assert shown.exit_code == 1
    [line] = shown.output.strip().splitlines()
    assert "cut.tif: damaged" in line and "cut short" in line and "get the file again" in line

    sparse = tmp_path / "sparse.tif"  # another program's sparse GeoTIFF: blocks never written are no damage
    profile = dict(driver="GTiff", width=64, height=64, count=1, dtype="uint8", tiled=True, blockxsize=16,
                   blockysize=16, sparse_ok=True, crs="EPSG:32618", transform=Affine(30, 0, 0, 0, -30, 0))  # fmt: skip
    with rasterio.open(sparse, "w", **profile) as ds:
        ds.write(np.full((1, 16, 16), 7, np.uint8), window=Window(0, 0, 16, 16))
    shown = CliRunner().invoke(cli, ["info", str(sparse)])
    assert shown.exit_code == 0 and "not written by geosr" in shown.output


def test_info_on_a_model_file_names_its_file_size_weight_type_and_sha256(tiny_model):
    shown = CliRunner().invoke(cli, ["info", str(tiny_model)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert f"file         {tiny_model}" in lines
    assert f"sha256       {hashlib.sha256(tiny_model.read_bytes()).hexdigest()}" in lines  # GEOSR_MODEL_SHA256's
    assert any(line.startswith("size ") and "weights stored as F32" in line for line in lines)


@pytest.mark.shared_data
def test_info_gives_a_custom_crs_whole(geotiff_dir):
    goes = geotiff_dir / "rasterio" / "goes.tif"  # a geostationary CRS whose PROJ string would lose +sweep=x
    shown = CliRunner().invoke(cli, ["info", "--json", str(goes)])
    assert shown.exit_code == 0, shown.output
    crs = json.loads(shown.output)["crs"]
    assert rasterio.crs.CRS.from_wkt(crs) == rasterio.open(goes).crs and "+sweep=x" in crs


def test_a_dataarray_gets_the_provenance_and_loses_the_stale_encoding(stats_tif, model, tiny_model):
    rioxarray = pytest.importorskip("rioxarray")
    da = rioxarray.open_rasterio(stats_tif)
    assert "STATISTICS_MEAN" in da.attrs and {"preferred_chunks", "source"} <= set(da.encoding)
    sr = geosr.upscale_dataarray(da, model=model, consistency=False)
    assert not [k for k in sr.attrs if k.startswith("STATISTICS_")] and "GEOSR_ALPHA" not in sr.attrs
    assert sr.attrs["GEOSR_MODEL_SHA256"] == sha256(tiny_model)
    assert sr.attrs["GEOSR_CONSISTENCY"].startswith("off: ")
    assert sr.attrs["GEOSR_SELF_ENSEMBLE"].startswith("off: ")
    assert sr.attrs["GEOSR_TILING"] == "tile 32, overlap 8 input pixels" and sr.attrs["GEOSR_SCALE"] == "2"
    assert sr.encoding == {"grid_mapping": "spatial_ref"}
    assert sr.rio.crs == da.rio.crs and sr.rio.nodata == 0 and sr.attrs["AREA_OR_POINT"] == "Area"

    masked = rioxarray.open_rasterio(stats_tif, masked=True)  # float32 with NaN; nodata 0 in the encoding only
    assert masked.encoding["_FillValue"] == 0 and masked.encoding["dtype"] == "uint8"
    sr = geosr.upscale_dataarray(masked, model=model)
    assert sr.encoding == {"grid_mapping": "spatial_ref"} and sr.dtype == np.float32
    assert np.isnan(sr.rio.nodata) and np.isnan(sr.values).any()  # the NaN pixels are still declared nodata
    assert sr.attrs["GEOSR_CONSISTENCY"].startswith("on: ")
