"""geosr.plan: what is decided for one file before its first tile. The model card's tiling and the options that do
not fit it, the band groups of a model with fewer channels than the raster has bands, the panel width, the windows
of an AOI (widened by the model's context, masked outside the AOI), the global radiometry and its tag, and what a
Plan carries to the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform as warp
from rasterio.windows import Window
from testdata import FAST, file_names

from geosr.aoi import AOIMissError, bbox_aoi, load_aoi
from geosr.consistency import DEFAULT_HALO
from geosr.errors import GeosrError, OptionError
from geosr.options import UpscaleOptions
from geosr.pipeline import upscale_raster
from geosr.plan import ACCUMULATOR_BYTES, MAX_PANEL_WIDTH, auto_panel_width, band_groups, card_tiling, make_plan
from geosr.predictor import Predictor
from geosr.raster import open_raster
from geosr.tiling import AxisTiling, tile_starts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the model card's tiling, band groups, panel width ----------------------------------------------------------------


def test_card_tiling_fills_in_the_model_cards_values(predictor):
    card, source = predictor.card, predictor.source  # tile 32, overlap 8
    assert card_tiling(card, source) == (32, 8)
    assert card_tiling(card, source, tile_size=64) == (64, 8)
    assert card_tiling(card, source, overlap=16) == (32, 16)
    assert card_tiling(card, source, 16, 4) == (16, 4)  # both given: the card's values play no part


def test_card_tiling_names_the_option_that_does_not_fit_the_card(predictor):
    card = predictor.card
    with pytest.raises(OptionError, match=r"overlap 17: .*; 32 is the tile size of the model card \(tiny-x2") as info:
        card_tiling(card, "tiny-x2.safetensors", overlap=17)
    assert info.value.option == "--overlap" and "lower --overlap or give --tile-size" in str(info.value)
    with pytest.raises(OptionError, match=r"8 is the overlap of the model card \(m\.safetensors\)") as info:
        card_tiling(card, "m.safetensors", tile_size=14)
    assert info.value.option == "--tile-size" and "give --overlap with --tile-size 14" in str(info.value)


def test_band_groups_pad_the_last_group_by_repeating_its_last_band():
    assert band_groups(3, 3) == (((0, 1, 2),), (3,))
    assert band_groups(5, 3) == (((0, 1, 2), (3, 4, 4)), (3, 2))
    assert band_groups(7, 3) == (((0, 1, 2), (3, 4, 5), (6, 6, 6)), (3, 3, 1))
    assert band_groups(1, 3) == (((0, 0, 0),), (1,))  # one band through an RGB model
    assert band_groups(2, 4) == (((0, 1, 1, 1),), (2,))
    for n, c in ((1, 1), (4, 3), (13, 3), (12, 4)):
        groups, real = band_groups(n, c)
        assert all(len(g) == c for g in groups) and sum(real) == n
        assert [i for g, r in zip(groups, real) for i in g[:r]] == list(range(n))  # every band once, in order


def test_auto_panel_width_keeps_the_accumulator_within_its_budget():
    for bands, scale, tile in ((3, 2, 32), (3, 4, 64), (4, 4, 128), (13, 4, 256)):
        width = auto_panel_width(bands, scale, tile)
        assert width % 512 == 0 and 512 <= width <= MAX_PANEL_WIDTH
        if width > 512:
            assert bands * scale * tile * scale * width * 4 <= ACCUMULATOR_BYTES
    assert auto_panel_width(3, 2, 32) == MAX_PANEL_WIDTH  # small tiles: the widest panel
    assert auto_panel_width(3, 4, 64) == 1024
    assert auto_panel_width(13, 4, 512) == 512  # never below one step, whatever it holds


# --- make_plan --------------------------------------------------------------------------------------------------------


def test_a_raster_with_more_bands_than_the_model_runs_in_padded_groups(
    predictor, tmp_path, make_geotiff, synthetic_image
):
    src = make_geotiff(tmp_path / "five.tif", synthetic_image(5, 40, 50))
    with open_raster(src) as ds:
        plan = make_plan(ds, src, tmp_path / "out.tif", predictor, UpscaleOptions())
    assert plan.bands == plan.colour == (1, 2, 3, 4, 5) and plan.alpha == ()
    assert plan.groups == ((0, 1, 2), (3, 4, 4)) and plan.real == (3, 2)
    assert plan.spec.tags["GEOSR_BAND_GROUPS"] == "(band 1, band 2, band 3); (band 4, band 5, pad)"
    assert (plan.tile_size, plan.overlap, plan.scale, plan.batch_size) == (32, 8, 2, 8)  # the card's, the default


def test_alpha_bands_go_beside_the_model_in_the_order_asked(predictor, tmp_path, make_geotiff, synthetic_image):
    rgba = np.concatenate([synthetic_image(3, 40, 50), np.full((1, 40, 50), 255, np.uint8)])
    src = make_geotiff(tmp_path / "rgba.tif", rgba, photometric="RGB", alpha="YES")
    with open_raster(src) as ds:
        plan = make_plan(ds, src, tmp_path / "out.tif", predictor, UpscaleOptions(bands=(4, 3, 1, 2)))
    assert plan.bands == (4, 3, 1, 2) and plan.colour == (3, 1, 2) and plan.alpha == (4,)
    assert plan.layout == (("a", 0), ("c", 0), ("c", 1), ("c", 2))
    assert plan.groups == ((0, 1, 2),) and "GEOSR_BAND_GROUPS" not in plan.spec.tags
    assert "GEOSR_ALPHA" in plan.spec.tags and plan.spec.profile["count"] == 4


@pytest.mark.parametrize("consistency", [True, False])
def test_an_aoi_window_is_widened_by_the_model_context_within_the_raster(
    predictor, tmp_path, make_geotiff, synthetic_image, consistency
):
    src = make_geotiff(tmp_path / "r.tif", synthetic_image(3, 70, 90))  # 10 m pixels from (500000, 4000000)
    near_corner = bbox_aoi((500050, 3999850, 500150, 3999950), "EPSG:32633")  # input columns and rows 5..15
    inside = bbox_aoi((500300, 3999500, 500500, 3999700), "EPSG:32633")  # input columns and rows 30..50
    with open_raster(src) as ds:
        corner = make_plan(
            ds, src, tmp_path / "a.tif", predictor, UpscaleOptions(aoi=near_corner, consistency=consistency)
        )
        middle = make_plan(ds, src, tmp_path / "b.tif", predictor, UpscaleOptions(aoi=inside, consistency=consistency))
    context = 8 + (DEFAULT_HALO if consistency else 0)  # the card's overlap and the consistency correction's halo
    # the whole raster's tiles (32 px, overlap 8): rows start at 0, 24, 38 (70 rows), columns at 0, 24, 48, 58
    rows, cols = tile_starts(70, 32, 8), tile_starts(90, 32, 8)
    s = predictor.scale

    def span(o0: int, o1: int, starts: tuple[int, ...], size: int) -> tuple[int, int]:
        """The whole raster's tiles whose blend weight reaches [o0 - context, o1 + context): from the first's start to
        the last's end. The columns' last tile (58) overlaps the one at 48 by 22 pixels, their ramp lies at 67-71."""
        axis = AxisTiling(size, 32, 8, s)
        reach = axis.tiles_for(s * max(0, o0 - context), s * min(size, o1 + context))
        return starts[reach[0]], starts[reach[-1]] + 32

    assert middle.out == Window(30, 30, 20, 20)
    (r0, r1), (c0, c1) = span(30, 50, rows, 70), span(30, 50, cols, 90)
    assert middle.proc == Window(c0, r0, c1 - c0, r1 - r0) and r0 <= 30 - context and r1 >= min(70, 50 + context)
    # with the halo the context reaches column 67, where the last tile's weight starts: all 90 columns
    assert middle.proc == Window(0, 0, 90 if consistency else 80, 70)
    assert middle.offset == (30 - r0, 30 - c0) and middle.aoi_px is None  # a box on the pixel grid: nothing masked
    assert (middle.grid.height, middle.grid.width) == (r1 - r0, c1 - c0)
    assert all(r0 + t in rows for t in middle.grid.rows.starts) and all(c0 + t in cols for t in middle.grid.cols.starts)
    assert middle.spec.profile["width"] == middle.spec.profile["height"] == 40
    assert middle.spec.profile["transform"] == Affine(5, 0, 500300, 0, -5, 3999700)
    (r0, r1), (c0, c1) = span(5, 15, rows, 70), span(5, 15, cols, 90)
    assert corner.out == Window(5, 5, 10, 10) and corner.proc == Window(0, 0, c1, r1) and (r0, c0) == (0, 0)
    assert corner.offset == (5, 5)


def test_the_plan_carries_the_destination_and_the_batch_size(predictor, tmp_path, rgb_tif):
    dst = tmp_path / "out.tif"
    options = UpscaleOptions(tile_size=16, overlap=4, batch_size=3, compress="zstd")
    with open_raster(rgb_tif) as ds:
        plan = make_plan(ds, rgb_tif, dst, predictor, options)
    assert (plan.src, plan.dst, plan.batch_size, plan.tile_size, plan.overlap) == (rgb_tif, dst, 3, 16, 4)
    assert (plan.compress, plan.cog, plan.overwrite, plan.scale) == ("zstd", False, False, 2)

    sizes = []

    class Recording(Predictor):
        def run(self, tiles):
            sizes.append(len(tiles))
            return super().run(tiles)

    recording = Recording(predictor.model, predictor.card, predictor.device, predictor.precision, predictor.source)
    result = upscale_raster(rgb_tif, dst, recording, options)
    assert max(sizes) <= 3 and sum(sizes) == result.tiles > 3


def test_an_overlap_beyond_the_model_cards_tile_names_the_option(predictor, tmp_path, rgb_tif):
    with pytest.raises(GeosrError, match="overlap 20: .* 32 is the tile size of the model card") as info:
        upscale_raster(rgb_tif, tmp_path / "a.tif", predictor, UpscaleOptions(overlap=20))
    assert info.value.option == "--overlap" and isinstance(info.value, OptionError)  # as --tile-size 32 --overlap 20
    with pytest.raises(GeosrError, match="8 is the overlap of the model card") as info:
        upscale_raster(rgb_tif, tmp_path / "a.tif", predictor, UpscaleOptions(tile_size=12))
    assert info.value.option == "--tile-size" and isinstance(info.value, OptionError)
    assert file_names(tmp_path) == ["rgb.tif"]


# --- radiometry -------------------------------------------------------------------------------------------------------


def test_radiometry_is_global_and_recorded(predictor, tmp_path, make_geotiff, synthetic_image):
    data = synthetic_image(3, 100, 150, dtype=np.uint16, lo=6000, hi=36000)
    src = make_geotiff(tmp_path / "u16.tif", data)
    upscale_raster(src, tmp_path / "p.tif", predictor, FAST)
    upscale_raster(src, tmp_path / "v.tif", predictor, UpscaleOptions(value_range=(0, 65535), tile_size=64, overlap=16))
    with rasterio.open(tmp_path / "p.tif") as p, rasterio.open(tmp_path / "v.tif") as v:
        rp, rv = json.loads(p.tags()["GEOSR_RADIOMETRY"]), json.loads(v.tags()["GEOSR_RADIOMETRY"])
        assert "percentiles" in rp["method"] and 6000 <= rp["low"][0] < rp["high"][0] <= 36000
        assert rv["low"] == [0, 0, 0] and rv["high"] == [65535] * 3 and "given" in rv["method"]
        assert p.dtypes[0] == v.dtypes[0] == "uint16"
        out = p.read()
        # the model's range maps back onto low..high, and what the clip to it took comes back: the output's values
        # stay within the input's, and reach beyond the percentiles where the input does
        assert data.min() <= out.min() < min(rp["low"]) and max(rp["high"]) < out.max() <= data.max()


# --- area of interest -------------------------------------------------------------------------------------------------


def test_aoi_in_another_crs_limits_the_output_and_masks_outside(predictor, tmp_path, make_geotiff, synthetic_image):
    t = Affine(10, 0, 700000, 0, -10, 4000000)  # EPSG:32633, 10 m, 2 degrees east of the central meridian
    src = make_geotiff(tmp_path / "utm.tif", synthetic_image(3, 200, 200), transform=t)
    # a lon/lat box around the raster's centre (about 600 x 600 m), not aligned with the UTM grid
    lon, lat = warp("EPSG:32633", "EPSG:4326", [700700, 701300], [3999300, 3998700])
    aoi = bbox_aoi((min(lon), min(lat), max(lon), max(lat)), "EPSG:4326")
    dst = tmp_path / "aoi.tif"
    upscale_raster(src, dst, predictor, UpscaleOptions(aoi=aoi, tile_size=64, overlap=16))
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert 110 <= b.width <= 140 and 110 <= b.height <= 140  # about 60 input pixels x2
        assert b.transform.a == 5 and b.transform.e == -5
        assert (b.transform.c - t.c) % 10 == 0 and (t.f - b.transform.f) % 10 == 0  # on the input's pixel grid
        left, bottom, right, top = b.bounds
        assert a.bounds.left < left <= 700700 < 701300 <= right < a.bounds.right
        mask = b.dataset_mask()
        assert mask[b.height // 2, b.width // 2] == 255
        # the lon/lat box is not aligned with the UTM grid: some corner pixels of the window are outside it
        assert (mask == 0).any() and (mask == 255).mean() > 0.9


def test_aoi_from_geojson_and_wkt(predictor, tmp_path, make_geotiff, synthetic_image):
    src = make_geotiff(tmp_path / "r.tif", synthetic_image(3, 100, 100, lo=1), nodata=0)
    geojson = tmp_path / "aoi.geojson"
    ring = [[500100, 3999900], [500300, 3999900], [500100, 3999700], [500100, 3999900]]
    poly = {"type": "Polygon", "coordinates": [ring]}
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": poly}]}))
    aoi = load_aoi(str(geojson), "EPSG:32633")
    upscale_raster(src, tmp_path / "tri.tif", predictor, UpscaleOptions(aoi=aoi, tile_size=64, overlap=16))
    with rasterio.open(tmp_path / "tri.tif") as b:
        assert b.shape == (40, 40) and b.nodata == 0
        m = b.read_masks(1)
        assert m[2, 2] == 255 and m[-3, -3] == 0  # the triangle's corner is in, the opposite corner out
    wkt = "POLYGON((500000 4000000, 500500 4000000, 500500 3999500, 500000 3999500, 500000 4000000))"
    upscale_raster(src, tmp_path / "sq.tif", predictor, UpscaleOptions(aoi=load_aoi(wkt), tile_size=64, overlap=16))
    with rasterio.open(tmp_path / "sq.tif") as b:
        assert b.shape == (100, 100) and b.read_masks().all()


def test_an_aoi_that_misses_the_raster_is_an_error(predictor, tmp_path, rgb_tif):
    aoi = bbox_aoi((0, 0, 1, 1), "EPSG:4326")
    with pytest.raises(AOIMissError, match="does not meet the raster"):
        upscale_raster(rgb_tif, tmp_path / "out.tif", predictor, UpscaleOptions(aoi=aoi))
    assert not (tmp_path / "out.tif").exists()
