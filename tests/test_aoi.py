"""geosr.aoi: areas of interest from WKT, GeoJSON and boxes, their window on a raster, and the errors that name the
option they came from (usage errors for text that does not parse, file errors for GeoJSON files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import box as shapely_box

from geosr.aoi import AOI, AOIError, AOIMissError, AOITextError, aoi_window, bbox_aoi, load_aoi, parse_bbox
from geosr.errors import OptionError, RasterError

T = Affine(10, 0, 500000, 0, -10, 4000000)  # EPSG:32633, 10 m pixels


@pytest.fixture
def raster(tmp_path, make_geotiff, synthetic_image):
    """100 x 100 pixels, EPSG:32633, 500000..501000 E, 3999000..4000000 N."""
    return make_geotiff(tmp_path / "r.tif", synthetic_image(3, 100, 100), transform=T)


def window_of(aoi, path):
    with rasterio.open(path) as ds:
        return aoi_window(aoi, ds, path)


# --- what an AOI is -------------------------------------------------------------------------------------------------


def test_wkt_is_in_the_rasters_crs_and_a_box_in_any(raster):
    wkt = load_aoi("POLYGON((500100 3999900, 500300 3999900, 500300 3999700, 500100 3999700, 500100 3999900))")
    assert (wkt.crs, wkt.source, wkt.option) == (None, "WKT", "--aoi")
    window, _ = window_of(wkt, raster)
    assert window == Window(10, 10, 20, 20)
    box = bbox_aoi((500100, 3999700, 500300, 3999900))
    assert box.option == "--bbox" and window_of(box, raster)[0] == Window(10, 10, 20, 20)


def test_a_box_on_pixel_edges_takes_those_pixels_despite_rounding():
    """A box made from a window's bounds (rasterio.windows.bounds) of a raster whose pixel size is no round number
    comes back from the inverse transform a rounding error off the pixel edges: not a pixel more on either side."""
    path = Path(__file__).resolve().parents[1] / "examples" / "data" / "RGB.byte.tif"  # pixels of 300.0379... m
    with rasterio.open(path) as ds:
        for window in (Window(400, 300, 32, 32), Window(17, 5, 9, 31)):
            box = bbox_aoi(rasterio.windows.bounds(window, ds.transform))
            assert aoi_window(box, ds, path)[0] == window


def test_geojson_is_lon_lat_unless_it_names_its_crs(tmp_path, raster):
    ring = [[500100, 3999900], [500300, 3999900], [500100, 3999700], [500100, 3999900]]
    legacy = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
    }
    (tmp_path / "a.geojson").write_text(json.dumps(legacy))
    aoi = load_aoi(str(tmp_path / "a.geojson"))
    assert aoi.crs == "EPSG:32633" and aoi.source == str(tmp_path / "a.geojson")
    window, px = window_of(aoi, raster)
    assert window == Window(10, 10, 20, 20) and px.area == pytest.approx(200)  # a triangle of 20 x 20 pixels
    plain = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": legacy["geometry"]}]}
    (tmp_path / "b.geojson").write_text(json.dumps(plain))
    assert load_aoi(str(tmp_path / "b.geojson")).crs == "EPSG:4326"


# --- errors name the option they are about --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, option, message",
    [
        (lambda: load_aoi("POLYGON((0 0, 1 0"), "--aoi", "neither a GeoJSON file nor valid WKT"),
        (lambda: load_aoi("LINESTRING (0 0, 1 1)"), "--aoi", "must be a polygon"),
        (lambda: load_aoi("POLYGON ((0 0, 1 1, 2 2, 0 0))"), "--aoi", "encloses no area"),
        (lambda: load_aoi("POLYGON ((0 0, 1 0, 1 1, 0 0))", "not a crs"), "--aoi-crs", "not a CRS"),
        (lambda: bbox_aoi((3, 0, 1, 1)), "--bbox", "minx < maxx"),
        (lambda: bbox_aoi((179.9, -17, -179.9, -16.9), "EPSG:4326"), "--bbox", "give maxx past 180"),
        (lambda: parse_bbox("1,2,3"), "--bbox", "four numbers"),
        (lambda: parse_bbox("a,b,c,d"), "--bbox", "four numbers"),
        (lambda: parse_bbox("0,0,inf,1"), "--bbox", "finite"),
    ],
    ids=[
        "wkt-broken",
        "wkt-line",
        "wkt-no-area",
        "crs-unknown",
        "bbox-inverted",
        "bbox-antimeridian",
        "bbox-three",
        "bbox-letters",
        "bbox-inf",
    ],
)
def test_text_that_is_no_area_is_a_usage_error_naming_its_option(make, option, message):
    with pytest.raises(AOITextError, match=message) as info:
        make()
    assert isinstance(info.value, OptionError) and isinstance(info.value, ValueError)
    assert info.value.option == option


def test_a_geojson_file_that_cannot_be_used_is_a_file_error(tmp_path):
    with pytest.raises(AOIError, match="no such file") as info:
        load_aoi(str(tmp_path / "missing.geojson"))
    assert info.value.option == "--aoi" and not isinstance(info.value, OptionError)
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(AOIError, match="not a GeoJSON file") as info:
        load_aoi(str(tmp_path / "bad.geojson"))
    assert "\n" not in str(info.value) and not isinstance(info.value, OptionError)


def test_an_aoi_that_misses_the_raster_names_the_option_it_came_from(raster):
    with pytest.raises(AOIMissError, match="does not meet the raster") as info:
        window_of(bbox_aoi((0, 0, 1, 1)), raster)
    assert info.value.option == "--bbox"
    with pytest.raises(AOIMissError) as info:
        window_of(load_aoi("POLYGON((0 0, 1 0, 1 1, 0 0))"), raster)
    assert info.value.option == "--aoi"


def test_a_plain_image_cannot_take_an_aoi(tmp_path, synthetic_image):
    png = tmp_path / "plain.png"
    with rasterio.open(png, "w", driver="PNG", width=20, height=20, count=3, dtype="uint8") as d:
        d.write(synthetic_image(3, 20, 20))
    with pytest.raises(RasterError, match="no geotransform") as info:
        window_of(AOI(bbox_aoi((0, 0, 5, 5)).geometry, None, "bbox 0,0,5,5", "--bbox"), png)
    assert info.value.option == "--bbox"


def test_rasters_an_aoi_cannot_be_placed_on_say_what_would_place_it(tmp_path, make_geotiff, synthetic_image):
    from rasterio.control import GroundControlPoint

    gcps = tmp_path / "gcps.tif"
    points = [GroundControlPoint(r, c, 500000 + 10 * c, 4000000 - 10 * r) for r, c in ((0, 0), (0, 20), (20, 0))]
    with rasterio.open(gcps, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8", gcps=points,
                       crs="EPSG:32633") as d:  # fmt: skip
        d.write(synthetic_image(1, 20, 20))
    with pytest.raises(RasterError, match="has only ground control points") as info:
        window_of(bbox_aoi((500000, 3999900, 500100, 4000000)), gcps)
    assert "gdalwarp" in str(info.value)

    no_crs = make_geotiff(tmp_path / "no_crs.tif", synthetic_image(1, 20, 20), transform=T, crs=None)
    area = tmp_path / "area.geojson"  # lon/lat by default: nothing to reproject it to
    area.write_text(json.dumps({"type": "Polygon", "coordinates": [[[15, 36], [15.1, 36], [15, 36.1], [15, 36]]]}))
    with pytest.raises(RasterError, match="give the AOI as WKT or --bbox in the raster's own coordinates"):
        window_of(load_aoi(str(area)), no_crs)
    with pytest.raises(RasterError, match="give the AOI without --aoi-crs in the raster's own coordinates"):
        window_of(bbox_aoi((0, 0, 1, 1), "EPSG:4326"), no_crs)


def test_the_aoi_file_is_an_input_no_report_or_preview_replaces(tmp_path, raster, tiny_model):
    from click.testing import CliRunner

    from geosr.cli.main import cli

    area = tmp_path / "area.json"
    ring = [[500100, 3999900], [500300, 3999900], [500300, 3999700], [500100, 3999700], [500100, 3999900]]
    area.write_text(json.dumps({"type": "Polygon", "coordinates": [ring], "crs": {"type": "name",
                    "properties": {"name": "EPSG:32633"}}}))  # fmt: skip
    kept = area.read_bytes()
    base = ["upscale", str(raster), "--model", str(tiny_model), "--aoi", str(area), "-o", str(tmp_path / "o.tif")]
    for extra in (["--report", str(area)], ["--preview", str(area)]):
        result = CliRunner().invoke(cli, [*base, *extra, "--overwrite"])
        assert result.exit_code != 0 and "is an input of this run" in result.output, result.output
        assert area.read_bytes() == kept and not (tmp_path / "o.tif").exists()
    result = CliRunner().invoke(cli, [*base, "--preview-window", "0,0,8,8"])
    assert result.exit_code == 2 and "--preview-window needs --preview" in result.output


def test_an_aoi_that_leaves_no_valid_output_pixel_is_warned_about(tmp_path, make_geotiff, synthetic_image, tiny_model,
                                                                   caplog):  # fmt: skip
    from click.testing import CliRunner

    from geosr.cli.main import cli

    data = synthetic_image(3, 100, 100)
    data[:, :, :50] = 0  # the western half nodata
    src = make_geotiff(tmp_path / "half.tif", data, transform=T, nodata=0)
    cases = [
        ("500101,3999901,500102,3999902", "no valid pixel inside the area of interest"),  # 1 m: no pixel centre
        ("500100,3999500,500300,3999700", "no valid pixel inside the area of interest"),  # all nodata
    ]
    for k, (bbox, says) in enumerate(cases):
        caplog.clear()
        out = tmp_path / f"o{k}.tif"
        result = CliRunner().invoke(
            cli, ["upscale", str(src), "--model", str(tiny_model), "--bbox", bbox, "-o", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert any(says in r.getMessage() and "all nodata" in r.getMessage() for r in caplog.records), caplog.text
        with rasterio.open(out) as ds:
            assert not ds.read_masks(1).any()
    caplog.clear()
    result = CliRunner().invoke(cli, ["upscale", str(src), "--model", str(tiny_model), "--bbox",
                                      "500600,3999500,500800,3999700", "-o", str(tmp_path / "fine.tif")])  # fmt: skip
    assert result.exit_code == 0 and "all nodata" not in caplog.text


def test_an_area_that_covers_the_raster_takes_it_whole_even_beyond_its_crs(tmp_path, raster, make_geotiff,
                                                                           synthetic_image):  # fmt: skip
    # the world in lon/lat: reprojected to UTM or to a polar CRS it leaves their domain (refused, or a ring of
    # 1e23 m that masked every pixel); it covers the raster, so the raster is taken whole
    world = bbox_aoi((-180, -90, 180, 90), "EPSG:4326")
    assert window_of(world, raster)[0] == Window(0, 0, 100, 100)
    polar = make_geotiff(tmp_path / "pole.tif", synthetic_image(1, 64, 64), crs="EPSG:3031",
                         transform=Affine(1000, 0, -32000, 0, -1000, 32000))  # fmt: skip  # the South Pole inside
    window, px = window_of(world, polar)
    assert window == Window(0, 0, 64, 64) and px.equals(shapely_box(0, 0, 64, 64))
    # an area with a hole is not taken whole on sampled points: reprojected as before
    (lon,), (lat,) = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [500500], [3999500])  # the raster's centre
    around = shapely_box(lon - 0.1, lat - 0.1, lon + 0.1, lat + 0.1)
    holed = AOI(around.difference(shapely_box(lon - 0.001, lat - 0.001, lon + 0.001, lat + 0.001)), "EPSG:4326", "h")
    window, px = window_of(holed, raster)
    assert window == Window(0, 0, 100, 100) and px.intersection(shapely_box(0, 0, 100, 100)).area < 100 * 100


def test_an_area_that_reaches_beyond_the_rasters_crs_is_cut_to_where_it_converts(
    tmp_path, make_geotiff, synthetic_image, caplog
):
    # a UTM 18N raster (its west edge near 78.56 W) and lon/lat boxes that end at 78.5 W: from 90 W the box converts
    # whole; from 180 W its west half lies beyond the zone's domain (refused before), and the part that converts is
    # the same area near the raster
    utm = make_geotiff(tmp_path / "utm.tif", synthetic_image(1, 64, 64), crs="EPSG:32618",
                       transform=Affine(100, 0, 145000, 0, -100, 2826000))  # fmt: skip
    near = window_of(bbox_aoi((-90, 0, -78.5, 40), "EPSG:4326"), utm)
    assert not caplog.records and 0 < near[0].width < 64  # the box cuts the raster
    far = window_of(bbox_aoi((-180, 0, -78.5, 40), "EPSG:4326"), utm)
    assert far[0] == near[0]
    # the same edge within the densification of the boxes' edges (64 points a side: 1.6 degrees apart, not 0.6)
    inside = shapely_box(0, 0, 64, 64)
    assert far[1].intersection(inside).hausdorff_distance(near[1].intersection(inside)) < 0.5
    assert "the part that converts is used" in caplog.text


@pytest.mark.parametrize("consistency", [False, True])
def test_an_aois_pixels_are_the_whole_rasters(tmp_path, make_geotiff, synthetic_image, tiny_model_x4, consistency):
    # the AOI's tiles are the whole raster's tiles (its context read around it up to where they start and end), so
    # adjacent AOIs mosaic without seams: exactly without the consistency correction, within a level with it (its
    # windows fall elsewhere: float32 sums in another order). Tiles of 32 with an overlap of 8: the columns' last
    # tile moves inward to 138, its ramp with the tile at 120 lies at 143-147; AOIs ending and starting there
    # need both tiles. A raster no larger than a tile is one tile, whatever the AOI.
    from click.testing import CliRunner

    from geosr.cli.main import cli

    src = make_geotiff(tmp_path / "in.tif", synthetic_image(3, 150, 170, seed=3), transform=T)
    run = ["upscale", str(src), "--model", str(tiny_model_x4), "--precision", "fp32", "--device", "cpu"]
    run += [] if consistency else ["--no-consistency"]
    assert CliRunner().invoke(cli, [*run, "-o", str(tmp_path / "full.tif")]).exit_code == 0
    with rasterio.open(tmp_path / "full.tif") as full:
        boxes = [(37, 41, 101, 97), (0, 0, 30, 20), (120, 100, 170, 150), (146, 20, 170, 60), (100, 20, 144, 60)]
        for k, (c0, r0, c1, r1) in enumerate(boxes):
            (x0, y0), (x1, y1) = T * (c0, r1), T * (c1, r0)
            out = tmp_path / f"aoi{k}.tif"
            result = CliRunner().invoke(cli, [*run, "--bbox", f"{x0},{y0},{x1},{y1}", "-o", str(out)])
            assert result.exit_code == 0, result.output
            with rasterio.open(out) as crop:
                window = rasterio.windows.from_bounds(*crop.bounds, transform=full.transform)
                a, b = full.read(window=window).astype(int), crop.read().astype(int)
            assert a.shape == b.shape == (3, 4 * (r1 - r0), 4 * (c1 - c0))
            diff = np.abs(a - b)
            assert diff.max() <= (1 if consistency else 0) and (diff > 0).mean() < 1e-3, (k, diff.max())


def test_an_aoi_of_a_raster_smaller_than_a_tile_is_cut_from_its_one_tile(tmp_path, make_geotiff, synthetic_image,
                                                                         tiny_model_x4):  # fmt: skip
    from click.testing import CliRunner

    from geosr.cli.main import cli

    src = make_geotiff(tmp_path / "in.tif", synthetic_image(3, 30, 28, seed=4), transform=T)  # tiles of 32
    run = ["upscale", str(src), "--model", str(tiny_model_x4), "--device", "cpu", "--no-consistency", "-o"]
    assert CliRunner().invoke(cli, [*run, str(tmp_path / "full.tif")]).exit_code == 0
    (x0, y0), (x1, y1) = T * (12, 20), T * (22, 9)
    assert CliRunner().invoke(cli, [*run, str(tmp_path / "aoi.tif"), "--bbox", f"{x0},{y0},{x1},{y1}"]).exit_code == 0
    with rasterio.open(tmp_path / "full.tif") as full, rasterio.open(tmp_path / "aoi.tif") as crop:
        window = rasterio.windows.from_bounds(*crop.bounds, transform=full.transform)
        assert crop.shape == (44, 40)
        np.testing.assert_array_equal(full.read(window=window), crop.read())  # the model saw the same tile


@pytest.mark.parametrize("consistency", [False, True])
def test_tiles_far_from_every_polygon_of_an_aoi_are_not_run(tmp_path, make_geotiff, synthetic_image, tiny_model_x4,
                                                            monkeypatch, consistency):  # fmt: skip
    import re

    from click.testing import CliRunner

    import geosr.plan
    from geosr.cli.main import cli

    src = make_geotiff(tmp_path / "in.tif", synthetic_image(3, 300, 300, seed=5), transform=T)

    def square(c: int, r: int, n: int) -> str:
        (x0, y0), (x1, y1) = T * (c, r + n), T * (c + n, r)
        return f"(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"

    fields = f"MULTIPOLYGON({square(20, 30, 12)},{square(250, 240, 15)})"  # two fields far apart
    run = ["upscale", str(src), "--model", str(tiny_model_x4), "--precision", "fp32", "--device", "cpu"]
    run += ["--aoi", fields] + ([] if consistency else ["--no-consistency"])
    results = []
    for name in ("near", "all"):
        if name == "all":  # every tile of the fields' bounding box, as before
            monkeypatch.setattr(geosr.plan, "_tiles_needed", lambda *args: None)
        result = CliRunner().invoke(cli, [*run, "-o", str(tmp_path / f"{name}.tif")])
        assert result.exit_code == 0, result.output
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            results.append((int(re.search(r"(\d+) tiles", result.output).group(1)), ds.read(), ds.read_masks(1)))
    (near, a, mask_a), (every, b, mask_b) = results
    assert near < every / 3  # 8 of 110 tiles without the correction, 32 of 132 with it
    assert (mask_a == mask_b).all() and mask_a.any() and (a[:, mask_a > 0] == b[:, mask_b > 0]).all()


def test_points_beside_polygons_are_left_out_with_a_warning(tmp_path, caplog):
    ring = [[15, 36], [15.1, 36], [15.1, 36.1], [15, 36]]
    features = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [15.2, 36.2]}, "properties": {}},
    ]
    path = tmp_path / "mixed.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    aoi = load_aoi(str(path))
    assert aoi.geometry.geom_type == "Polygon" and aoi.file == path
    assert "its Point features enclose no area and are left out" in caplog.text
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None}]}))
    with pytest.raises(AOIError, match="holds no geometry .*give polygons"):
        load_aoi(str(path))


def test_the_halves_of_a_polygon_split_at_the_antimeridian_join_without_a_warning(caplog):
    from shapely.geometry import MultiPolygon

    from geosr.aoi import _repaired

    halves = MultiPolygon([shapely_box(179.5, -17, 180, -16), shapely_box(180, -17, 180.5, -16)])  # as reprojected
    joined = _repaired(halves, "--aoi fields.geojson")
    assert joined.geom_type == "Polygon" and joined.area == pytest.approx(1.0) and "not valid" not in caplog.text
    overlapping = MultiPolygon([shapely_box(0, 0, 1.5, 1), shapely_box(1, 0, 2, 1)])
    assert _repaired(overlapping, "--aoi x").area == pytest.approx(2.0) and "not valid" in caplog.text
