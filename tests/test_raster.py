"""Georeferencing, dtype, bands, nodata, masks and metadata of upscaled rasters: every real GeoTIFF in
../shared/data/geotiff, plus synthetic rasters for the cases real data does not cover (rotation, RPCs, plain images).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp
from rasterio.rpc import RPC
from testdata import SHARED_DATA

from geosr.errors import RasterError
from geosr.inference import UpscaleOptions, load_predictor, upscale_raster

REAL = sorted((SHARED_DATA / "geotiff").glob("*/**/*.tif"))  # empty without ../shared/data: the fixture skips
FAST = UpscaleOptions(tile_size=128, overlap=16)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return load_predictor(tiny_model, device="cpu", precision="fp32")


def up(a: np.ndarray, s: int) -> np.ndarray:
    """Nearest-neighbour upsampling of (..., h, w) by s."""
    return a.repeat(s, axis=-2).repeat(s, axis=-1)


@pytest.fixture(scope="module", params=REAL or [None], ids=lambda p: p and f"{p.parent.name}/{p.name}")
def real_pair(request, predictor, tmp_path_factory, shared_data):
    """(input, output) for every real GeoTIFF, upscaled x2 once per module."""
    src = request.param
    dst = tmp_path_factory.mktemp("real") / f"{src.stem}_x2.tif"
    upscale_raster(src, dst, predictor, FAST)
    return src, dst


@pytest.mark.shared_data
def test_real_georeferencing_is_kept(real_pair):
    src, dst = real_pair
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert (b.count, b.height, b.width) == (a.count, 2 * a.height, 2 * a.width)
        assert b.dtypes == a.dtypes
        assert b.crs == a.crs
        if a.crs is not None:
            assert a.crs.to_wkt() == b.crs.to_wkt()
            assert b.transform.almost_equals(a.transform @ Affine.scale(0.5))
            np.testing.assert_allclose(b.bounds, a.bounds, rtol=0, atol=1e-6 * max(map(abs, a.bounds)))
        if a.gcps[0]:
            pa, pb = a.gcps[0], b.gcps[0]
            assert len(pb) == len(pa) and b.gcps[1] == a.gcps[1]
            for p, q in zip(pa, pb):
                assert (q.row, q.col, q.x, q.y) == pytest.approx((2 * p.row, 2 * p.col, p.x, p.y))


@pytest.mark.shared_data
def test_real_metadata_is_kept(real_pair):
    src, dst = real_pair
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.nodata == a.nodata
        assert b.colorinterp == a.colorinterp
        assert b.descriptions == a.descriptions
        assert b.units == a.units and b.scales == a.scales and b.offsets == a.offsets
        tags = b.tags()
        for k, v in a.tags().items():
            assert tags.get(k) == v, k
        assert tags["GEOSR_SCALE"] == "2" and "tiny-x2" in tags["GEOSR_MODEL"] and "GEOSR_VERSION" in tags
        assert "method" in tags["GEOSR_RADIOMETRY"]
        assert b.profile["tiled"] and b.profile["blockxsize"] == 512 and b.profile["compress"] == "deflate"


@pytest.mark.shared_data
def test_real_nodata_masks_and_alpha_are_upsampled_nearest(real_pair):
    src, dst = real_pair
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        alpha = [i for i, c in enumerate(a.colorinterp) if c == ColorInterp.alpha]
        np.testing.assert_array_equal(b.read_masks(), up(a.read_masks(), 2))
        for i in alpha:
            np.testing.assert_array_equal(b.read(i + 1), up(a.read(i + 1), 2))
        data = b.read()
        assert np.isfinite(data).all() if data.dtype.kind == "f" else True


@pytest.mark.shared_data
def test_real_multiband_rasters_go_through_in_groups(predictor, geotiff_dir, tmp_path):
    src = geotiff_dir / "eo-learn" / "s2_l1c_reference_scene0.tif"
    dst = tmp_path / "s2.tif"
    upscale_raster(src, dst, predictor, FAST)
    with rasterio.open(dst) as b:
        assert b.count == 13 and b.dtypes[0] == "float32"
        assert b.tags()["GEOSR_BAND_GROUPS"].startswith("(band 1, band 2, band 3)")
        assert b.tags()["GEOSR_BAND_GROUPS"].endswith("(band 13, pad, pad)")


# --- synthetic cases ---------------------------------------------------------------------------------------------


def test_rotated_transform_is_scaled_as_a_whole(predictor, tmp_path, make_geotiff, synthetic_image):
    t = Affine(8.66, -5.0, 400000, -5.0, -8.66, 5000000)  # rotated 30 degrees
    src = make_geotiff(tmp_path / "rot.tif", synthetic_image(3, 40, 50), transform=t)
    dst = tmp_path / "out.tif"
    upscale_raster(src, dst, predictor, FAST)
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.transform.almost_equals(t @ Affine.scale(0.5))
        assert b.transform @ (b.width, b.height) == pytest.approx(a.transform @ (a.width, a.height))


def test_custom_proj_crs_is_copied(predictor, tmp_path, make_geotiff, synthetic_image):
    proj = "+proj=geos +h=35785831 +lon_0=-75 +sweep=x +ellps=GRS80 +units=m +no_defs"
    t = Affine(2000, 0, -1e6, 0, -2000, 1e6)
    src = make_geotiff(tmp_path / "geos.tif", synthetic_image(3, 30, 30), crs=proj, transform=t)
    dst = tmp_path / "out.tif"
    upscale_raster(src, dst, predictor, FAST)
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.crs == a.crs and b.crs.to_epsg() is None


def test_gcps_are_moved_to_the_finer_grid(predictor, tmp_path, synthetic_image):
    gcps = [GroundControlPoint(row=r, col=c, x=10 + c / 100, y=50 - r / 100, z=0) for r in (0, 40) for c in (0, 30)]
    src = tmp_path / "gcps.tif"
    with rasterio.open(src, "w", driver="GTiff", width=30, height=40, count=1, dtype="uint16") as d:
        d.write(synthetic_image(1, 40, 30, dtype=np.uint16, lo=100, hi=4000))
        d.gcps = (gcps, rasterio.crs.CRS.from_epsg(4326))
    dst = tmp_path / "out.tif"
    upscale_raster(src, dst, predictor, FAST)
    with rasterio.open(dst) as b:
        points, crs = b.gcps
        assert crs.to_epsg() == 4326
        assert [(p.row, p.col, p.x, p.y) for p in points] == [(2 * p.row, 2 * p.col, p.x, p.y) for p in gcps]
        assert b.transform == Affine.identity()


def test_a_raster_with_only_rpcs_is_refused(predictor, tmp_path, synthetic_image):
    src = tmp_path / "rpc.tif"
    rpc = RPC(
        height_off=0,
        height_scale=100,
        lat_off=10,
        lat_scale=0.1,
        line_den_coeff=[1] + [0] * 19,
        line_num_coeff=[0, 0, -1] + [0] * 17,
        line_off=20,
        line_scale=20,
        long_off=20,
        long_scale=0.1,
        samp_den_coeff=[1] + [0] * 19,
        samp_num_coeff=[0, 1] + [0] * 18,
        samp_off=15,
        samp_scale=15,
    )
    with rasterio.open(src, "w", driver="GTiff", width=30, height=40, count=1, dtype="uint8") as d:
        d.write(synthetic_image(1, 40, 30))
        d.rpcs = rpc
    with pytest.raises(RasterError, match="RPCs only.*orthorectify"):
        upscale_raster(src, tmp_path / "out.tif", predictor, FAST)
    assert not (tmp_path / "out.tif").exists()


def test_band_metadata_follows_the_selected_bands(predictor, tmp_path, make_geotiff, synthetic_image):
    src = make_geotiff(tmp_path / "b.tif", synthetic_image(3, 30, 40, dtype=np.uint16, hi=3000), nodata=0)
    with rasterio.open(src, "r+") as d:
        for i, name in enumerate(("red", "green", "blue"), 1):
            d.set_band_description(i, name)
            d.update_tags(i, WAVELENGTH=str(600 - 100 * i))
        d.units = ["DN", "DN", "DN"]
        d.scales, d.offsets = [0.0001, 0.0002, 0.0003], [0.0, 0.0, -0.1]
        d.update_tags(SENSOR="test")
    dst = tmp_path / "out.tif"
    upscale_raster(src, dst, predictor, UpscaleOptions(bands=(3, 1), tile_size=128, overlap=16))
    with rasterio.open(dst) as b:
        assert b.count == 2 and b.descriptions == ("blue", "red")
        assert b.tags(1)["WAVELENGTH"] == "300" and b.tags(2)["WAVELENGTH"] == "500"
        assert b.scales == (0.0003, 0.0001) and b.offsets == (-0.1, 0.0) and b.units == ("DN", "DN")
        assert b.tags()["SENSOR"] == "test" and b.nodata == 0
        assert "(band 3, band 1, pad)" in b.tags()["GEOSR_BAND_GROUPS"]


def test_plain_images_come_out_without_georeferencing_or_warnings(predictor, tmp_path, synthetic_image):
    data = synthetic_image(3, 33, 47)
    png = tmp_path / "tile.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(png, "w", driver="PNG", width=47, height=33, count=3, dtype="uint8") as d:
            d.write(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        upscale_raster(png, tmp_path / "tile_x2.png", predictor, FAST)
        upscale_raster(png, tmp_path / "tile_x2.tif", predictor, FAST)
    assert not caught, [str(w.message) for w in caught]
    with rasterio.open(tmp_path / "tile_x2.png") as a, rasterio.open(tmp_path / "tile_x2.tif") as b:
        assert a.driver == "PNG" and b.driver == "GTiff"
        assert a.crs is None and b.crs is None and a.transform == b.transform == Affine.identity()
        assert a.shape == b.shape == (66, 94)
        np.testing.assert_array_equal(a.read(), b.read())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tile.png", "tile_x2.png", "tile_x2.tif"]


def test_a_georeferenced_png_keeps_its_georeferencing_beside_it(predictor, tmp_path, make_geotiff, synthetic_image):
    src = make_geotiff(tmp_path / "geo.tif", synthetic_image(3, 30, 40))
    for _ in range(2):  # the second time over an existing output, with its sidecar
        upscale_raster(src, tmp_path / "geo.png", predictor, UpscaleOptions(overwrite=True))
    with rasterio.open(src) as a, rasterio.open(tmp_path / "geo.png") as b:
        assert b.driver == "PNG" and b.crs == a.crs and b.transform == a.transform @ Affine.scale(0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["geo.png", "geo.png.aux.xml", "geo.tif"]


@pytest.mark.shared_data
def test_uc_merced_tile_is_upscaled_like_any_image(predictor, shared_data, tmp_path):
    src = shared_data / "ucmerced" / "agricultural" / "agricultural00.tif"
    dst = tmp_path / "agri.tif"
    upscale_raster(src, dst, predictor, FAST)
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.shape == (2 * a.height, 2 * a.width) and b.crs is None and b.count == 3


def test_the_example_geotiff_ships_with_the_repository():
    example = Path(__file__).resolve().parents[1] / "examples" / "data" / "RGB.byte.tif"
    with rasterio.open(example) as d:
        assert (d.count, d.width, d.height, d.dtypes[0], d.nodata) == (3, 791, 718, "uint8", 0)
        assert d.crs.to_epsg() == 32618
