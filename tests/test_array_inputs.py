"""In-memory inputs never have their layout or georeferencing guessed: band-last numpy arrays and DataArrays, masked
arrays, and DataArrays whose x/y coordinates are irregular, repeated or single give the right answer (the band-first,
nodata-valued equivalent, bit for bit) or a one-line error that names the dimension and the remedy."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

import geosr

xr = pytest.importorskip("xarray")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 24, 30
X = 500000.0 + 10.0 * (np.arange(W) + 0.5)  # pixel centres of a 10 m grid
Y = 4100000.0 - 10.0 * (np.arange(H) + 0.5)


@pytest.fixture(scope="module")
def model(tiny_model):
    """The tiny x2 RGB model (tile 32, overlap 8) on the CPU in fp32."""
    return geosr.load_model(tiny_model, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def rgb(synthetic_image):
    return synthetic_image(3, H, W, seed=11, dtype=np.uint16, lo=300, hi=5000)


def grid_array(data, x=X, y=Y, dims=("band", "y", "x")):
    return xr.DataArray(data, dims=dims, coords={"band": [1, 2, 3], "y": y, "x": x})


# --- band-last numpy arrays -------------------------------------------------------------------------------------------


def test_a_band_last_array_is_refused_unless_band_axis_says_so(rgb, model):
    hwc = np.ascontiguousarray(rgb.transpose(1, 2, 0))
    with pytest.raises(geosr.RasterError, match=r"looks band-last \(H, W, 3\): pass band_axis=-1") as err:
        geosr.upscale_array(hwc, model=model)
    assert err.value.option == "band_axis" and "\n" not in str(err.value)
    band_first = geosr.upscale_array(rgb, model=model, nodata=65535)
    for axis in (-1, 2):
        out = geosr.upscale_array(hwc, model=model, nodata=65535, band_axis=axis)
        assert out.shape == (2 * H, 2 * W, 3) and out.dtype == np.uint16  # band-last in, band-last out
        np.testing.assert_array_equal(out, band_first.transpose(1, 2, 0))
    # bands between the rows and columns, and bands picked from a band-last array
    hbw = np.ascontiguousarray(rgb.transpose(1, 0, 2))
    np.testing.assert_array_equal(
        geosr.upscale_array(hbw, model=model, band_axis=1), geosr.upscale_array(rgb, model=model).transpose(1, 0, 2)
    )
    np.testing.assert_array_equal(
        geosr.upscale_array(hwc, model=model, band_axis=-1, bands=[3, 1]),
        geosr.upscale_array(rgb, model=model, bands=[3, 1]).transpose(1, 2, 0),
    )


def test_band_axis_values(rgb, model, synthetic_image):
    for bad in (3, -4, 1.0, "last", True):
        with pytest.raises(geosr.OptionError, match="band_axis"):
            geosr.upscale_array(rgb, model=model, band_axis=bad)
    # an explicit band_axis=0 is taken at its word: 17 bands of 20 x 4 pixels
    cube = synthetic_image(17, 20, 4, seed=12)
    assert geosr.upscale_array(cube, model=model, band_axis=0).shape == (17, 40, 8)
    # a 2-D array is one band, whatever band_axis, but a band_axis that is no axis is refused there too
    np.testing.assert_array_equal(
        geosr.upscale_array(rgb[0], model=model, band_axis=-1), geosr.upscale_array(rgb[:1], model=model)[0]
    )
    with pytest.raises(geosr.OptionError, match="band_axis 5: expected an axis of a 3-D array"):
        geosr.upscale_array(rgb[0], model=model, band_axis=5)


# --- masked arrays ----------------------------------------------------------------------------------------------------


def hostile_mask(shape_bhw):
    """A hole in all bands, one pixel of one band, an edge: a (bands, H, W) bool mask."""
    mask = np.zeros(shape_bhw, bool)
    mask[:, 4:9, 6:15] = True
    mask[1, 15, 20] = True
    mask[:, :, -3:] = True
    return mask


def test_masked_pixels_are_nodata_pixels(rgb, model):
    mask = hostile_mask(rgb.shape)
    garbage = rgb.copy()
    garbage[mask] = np.where(np.arange(mask.sum()) % 2, 0, 60000)  # what lies under a mask is no data
    masked = geosr.upscale_array(np.ma.MaskedArray(garbage, mask=mask), model=model)
    with_nodata = rgb.copy()
    with_nodata[mask] = 65535
    expected = geosr.upscale_array(with_nodata, model=model, nodata=65535)
    up_mask = mask.repeat(2, axis=1).repeat(2, axis=2)
    assert isinstance(masked, np.ma.MaskedArray) and masked.dtype == np.uint16
    np.testing.assert_array_equal(np.ma.getmaskarray(masked), up_mask)  # each masked pixel masks its 2 x 2 block
    np.testing.assert_array_equal(masked.filled(65535), expected)  # the same valid pixels, bit for bit
    assert (masked.data[up_mask] == 0).all()  # an integer array without nodata: 0 under the mask
    valid = masked.compressed()
    assert valid.min() >= 300 and valid.max() <= 5000  # 0 and 60000 under the mask never leak
    # with a nodata value too: masked pixels hold it, and both kinds of invalid pixel stay invalid
    both = geosr.upscale_array(np.ma.MaskedArray(with_nodata, mask=mask), model=model, nodata=65535)
    np.testing.assert_array_equal(both.data, expected)


def test_a_masked_band_last_float_array_equals_nan(rgb, model):
    data = rgb.astype(np.float32).transpose(1, 2, 0)  # (H, W, 3) float32, a view
    mask = hostile_mask(rgb.shape).transpose(1, 2, 0)
    garbage = data.copy()
    garbage[mask] = -1e4
    masked = geosr.upscale_array(np.ma.MaskedArray(garbage, mask=mask), model=model, band_axis=-1, bands=[3, 2])
    with_nan = data.copy()
    with_nan[mask] = np.nan
    expected = geosr.upscale_array(with_nan, model=model, band_axis=-1, bands=[3, 2])
    assert masked.shape == (2 * H, 2 * W, 2)
    np.testing.assert_array_equal(masked.data, expected)  # NaN under the mask, as for NaN pixels
    np.testing.assert_array_equal(masked.mask, mask[:, :, [2, 1]].repeat(2, axis=0).repeat(2, axis=1))


def test_a_masked_array_without_masked_pixels_gives_the_plain_result(rgb, model):
    plain = geosr.upscale_array(rgb, model=model)
    for mask in (np.ma.nomask, np.zeros(rgb.shape, bool)):
        out = geosr.upscale_array(np.ma.MaskedArray(rgb, mask=mask), model=model)
        assert isinstance(out, np.ma.MaskedArray) and not np.ma.is_masked(out)
        np.testing.assert_array_equal(out.data, plain)


# --- DataArray layout -------------------------------------------------------------------------------------------------


def test_a_band_last_dataarray_keeps_its_dims(rgb, model):
    band_first = geosr.upscale_dataarray(grid_array(rgb), model=model)
    hwc = grid_array(rgb.transpose(1, 2, 0), dims=("y", "x", "band"))
    out = geosr.upscale_dataarray(hwc, model=model)
    assert out.dims == ("y", "x", "band") and out.shape == (2 * H, 2 * W, 3)
    np.testing.assert_array_equal(out.values, band_first.values.transpose(1, 2, 0))
    np.testing.assert_array_equal(out.x.values, band_first.x.values)
    np.testing.assert_array_equal(out.y.values, band_first.y.values)
    # other names, other orders: (channel, lon, lat) and a 2-D (x, y)
    named = xr.DataArray(rgb.transpose(0, 2, 1), dims=("channel", "lon", "lat"), coords={"lon": X, "lat": Y})
    out = geosr.upscale_dataarray(named, model=model)
    assert out.dims == ("channel", "lon", "lat")
    np.testing.assert_array_equal(out.values, band_first.values.transpose(0, 2, 1))
    flat = geosr.upscale_dataarray(xr.DataArray(rgb[0].T, dims=("x", "y"), coords={"x": X, "y": Y}), model=model)
    np.testing.assert_array_equal(flat.values, geosr.upscale_array(rgb[0], model=model).T)


def test_dims_it_cannot_tell_apart_are_refused(rgb, model):
    cases = [
        (xr.DataArray(rgb), r"dims \('dim_0', 'dim_1', 'dim_2'\)"),
        (xr.DataArray(rgb, dims=("time", "y", "x")), r"'time': \?"),
        (xr.DataArray(rgb[0], dims=("band", "x")), r"'band': band, 'x': x"),
        (xr.DataArray(rgb, dims=("y", "lat", "x")), "dims"),
    ]
    for da, message in cases:
        with pytest.raises(geosr.RasterError, match=message) as err:
            geosr.upscale_dataarray(da, model=model)
        assert "rename" in str(err.value)
    series = xr.DataArray(np.stack([rgb, rgb]), dims=("time", "band", "y", "x"))
    with pytest.raises(geosr.RasterError, match=r"select one slice of each other dim \(da.isel\(time=0\)\)"):
        geosr.upscale_dataarray(series, model=model)


# --- DataArray georeferencing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", ["x", "y"])
def test_irregular_and_repeated_coordinates_are_refused(rgb, model, dim):
    regular = {"x": X, "y": Y}[dim]
    irregular = regular.copy()
    irregular[7:] += 3.5  # one step of 13.5 (or 6.5) units among steps of 10
    repeated = regular.copy()
    repeated[5] = repeated[4]
    cases = [
        (irregular, rf"the {dim} coordinate is not a regular grid: .* by up to 2\.\d+ \(at {dim}\["),
        (np.zeros_like(regular), rf"the {dim} coordinate repeats one value \(0\.0\) for all"),
        (repeated, rf"the {dim} coordinate repeats values \({dim}\[4\] == {dim}\[5\]"),
    ]
    for values, message in cases:
        da = grid_array(rgb, **{dim: values})
        with pytest.raises(geosr.RasterError, match=message) as err:
            geosr.upscale_dataarray(da, model=model)
        assert "write_transform" in str(err.value) and "\n" not in str(err.value)
    # within 1e-6 of a step is regular; float32 latitudes are regular to their precision
    geosr.upscale_dataarray(grid_array(rgb, **{dim: regular + 1e-6 * np.sin(np.arange(regular.size))}), model=model)
    lat = (45.0 + 0.0001 * np.arange(H)).astype(np.float32)
    out = geosr.upscale_dataarray(
        xr.DataArray(rgb, dims=("band", "latitude", "x"), coords={"latitude": lat}), model=model
    )
    np.testing.assert_allclose(out.latitude.values[::2] + 0.0001 / 4, lat, rtol=0, atol=1e-5)


def test_a_single_coordinate_needs_a_stored_transform(rgb, model):
    column = grid_array(rgb[:, :, :1], x=X[:1])
    with pytest.raises(geosr.RasterError, match=r"the x coordinate has one value \(500005\.0\).*write_transform"):
        geosr.upscale_dataarray(column, model=model)
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4100000.0)
    with_attr = column.assign_attrs(transform=tuple(transform)[:6])
    out = geosr.upscale_dataarray(with_attr, model=model)
    np.testing.assert_array_equal(out.x.values, [500002.5, 500007.5])  # the one pixel's two halves
    np.testing.assert_array_equal(out.y.values, 4100000.0 - 5.0 * (np.arange(2 * H) + 0.5))
    assert Affine(*out.attrs["transform"]) == transform @ Affine.scale(0.5)
    rioxarray = pytest.importorskip("rioxarray")  # noqa: F841  (registers .rio)
    written = column.rio.write_transform(transform)
    out = geosr.upscale_dataarray(written, model=model)
    assert out.rio.transform() == transform @ Affine.scale(0.5)
    np.testing.assert_array_equal(out.x.values, [500002.5, 500007.5])


def test_coordinates_place_the_pixels_when_a_stored_transform_is_stale(rgb, model):
    """Every other column of a grid whose GeoTransform still says 10 m: the coordinates (20 m) are the truth."""
    pytest.importorskip("rioxarray")
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4100000.0)
    da = grid_array(rgb).rio.write_transform(transform)
    assert da.rio.transform() == transform  # stored and coordinates agree: the stored numbers are kept
    assert geosr.upscale_dataarray(da, model=model).rio.transform() == transform @ Affine.scale(0.5)
    sub = da.isel(x=slice(1, None, 2))  # its spatial_ref still holds the 10 m GeoTransform
    out = geosr.upscale_dataarray(sub, model=model)
    # centres 500015, 500035, ...: 20 m pixels from 500005, halved
    np.testing.assert_allclose(out.x.values, 500005.0 + 10.0 * (np.arange(W) + 0.5), rtol=0, atol=1e-9)
    assert out.rio.transform().almost_equals(Affine(10.0, 0.0, 500005.0, 0.0, -5.0, 4100000.0))
