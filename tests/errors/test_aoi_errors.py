"""Areas of interest that are not simple polygons or live in a CRS that cannot reach the raster's: a self-intersecting
polygon keeps all its area (repaired with shapely.make_valid, with a warning), coordinates that are no numbers and
GeoJSON nested too deeply are refused by name, and an --aoi-crs on a raster in a local (engineering) CRS is one line
that says to give the AOI in the raster's coordinates.
"""

from __future__ import annotations

import json

import pytest
import rasterio
from badinput import image, refused, run
from testdata import write_geotiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def upscale(model, *args):
    return run("upscale", *args, "--model", model, "-q")


def test_a_self_intersecting_aoi_keeps_all_its_area_and_says_it_was_repaired(tiny_model, good_tif, tmp_path, caplog):
    """A bowtie over the 48 x 40-pixel raster: both triangles are processed, with a warning."""
    bowtie = "POLYGON ((500000 3999600, 500400 4000000, 500400 3999600, 500000 4000000, 500000 3999600))"
    result = run("upscale", good_tif, "-o", tmp_path / "out.tif", "--model", tiny_model, "--aoi", bowtie)
    assert result.exit_code == 0, result.output
    assert "not valid (Self-intersection" in caplog.text and "keep all its area" in caplog.text
    with rasterio.open(tmp_path / "out.tif") as d:
        mask = d.dataset_mask() > 0  # 80 x 80: the AOI's 40 x 40 input pixels
    assert mask.shape == (80, 80) and mask.mean() == pytest.approx(0.5, abs=0.03)
    assert mask[40, 10] and mask[40, 70] and not mask[10, 40]  # the left and the right triangle, not the gap
    assert mask[:, :40].sum() == pytest.approx(mask[:, 40:].sum(), rel=0.1)


def test_a_geojson_bowtie_keeps_all_its_area(tiny_model, good_tif, tmp_path):
    ring = [[500000, 3999600], [500400, 4000000], [500400, 3999600], [500000, 4000000], [500000, 3999600]]
    gj = tmp_path / "bowtie.geojson"
    gj.write_text(
        json.dumps(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
            }
        )
    )
    result = upscale(tiny_model, good_tif, "-o", tmp_path / "out.tif", "--aoi", gj)
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out.tif") as d:
        assert (d.dataset_mask() > 0).mean() == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(
    "text, code, message",
    [
        ("POLYGON ((500000 3999600, NaN 4000000, 500400 3999600, 500000 3999600))", 2, "not finite numbers"),
        ("POLYGON ((500000 3999600, inf 4000000, 500400 3999600, 500000 3999600))", 2, "not finite numbers"),
    ],
    ids=["nan", "inf"],
)
def test_aoi_coordinates_that_are_not_numbers(tiny_model, good_tif, tmp_path, text, code, message):
    refused(upscale(tiny_model, good_tif, "-o", tmp_path / "out.tif", "--aoi", text), code, message)
    assert not (tmp_path / "out.tif").exists()


def test_a_geojson_with_nan_or_nested_too_deeply(tiny_model, good_tif, tmp_path):
    nan = tmp_path / "nan.geojson"
    nan.write_text('{"type": "Polygon", "coordinates": [[[10, 40], [NaN, 41], [11, 41], [10, 40]]]}')
    refused(
        upscale(tiny_model, good_tif, "-o", tmp_path / "out.tif", "--aoi", nan), 1, "nan.geojson", "not finite numbers"
    )
    deep = tmp_path / "deep.geojson"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    refused(
        upscale(tiny_model, good_tif, "-o", tmp_path / "out.tif", "--aoi", deep), 1, "deep.geojson", "nested too deeply"
    )
    coords = tmp_path / "coords.geojson"
    coords.write_text('{"type": "Polygon", "coordinates": ' + "[" * 5000 + "]" * 5000 + "}")
    refused(upscale(tiny_model, good_tif, "-o", tmp_path / "out.tif", "--aoi", coords), 1, "coords.geojson")
    assert not (tmp_path / "out.tif").exists()


LOCAL_CRS = (
    'LOCAL_CS["Site grid",LOCAL_DATUM["site",32767],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)


def test_an_aoi_crs_on_a_raster_in_a_local_crs(tiny_model, tmp_path):
    src = write_geotiff(tmp_path / "site.tif", image(3, 40, 48), crs=rasterio.crs.CRS.from_wkt(LOCAL_CRS))
    line = refused(
        upscale(tiny_model, src, "-o", tmp_path / "out.tif", "--bbox", "10,40,11,41", "--aoi-crs", "EPSG:4326"),
        1,
        "site.tif",
        "Site grid",
        "local (engineering) CRS",
        "without --aoi-crs",
    )
    assert "{" not in line  # no PROJJSON dump
    result = upscale(tiny_model, src, "-o", tmp_path / "out.tif", "--bbox", "500000,3999700,500200,4000000")
    assert result.exit_code == 0, result.output  # in its own coordinates it works
