"""A disk that fills up, or a write that fails: the file fails (exit 1, one line), and nothing of it is left, neither a
temporary file nor a damaged output under its final name that --skip-existing would then keep forever.

The full disk is real: a tmpfs of a few hundred kilobytes mounted for the test (skipped where mounting is not
permitted), filled by another writer once geosr has started its output. The damaged temporary outputs are real
GeoTIFFs with the damage a failed write leaves: blocks never written, or a file cut short.
"""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import rasterio
from badinput import files_in, fill_when_written, image, recording, refused, run, small_disk
from rasterio.windows import Window
from testdata import write_geotiff

from geosr.errors import RasterError, WriteError
from geosr.options import UpscaleOptions
from geosr.pipeline import upscale_raster
from geosr.predictor import load_predictor
from geosr.raster import check_output_room, compressed_fraction, estimate_output_bytes, finish_output
from geosr.raster import writing as raster_writing

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "name, args", [("out.tif", []), ("out.tif", ["--cog"]), ("out.png", [])], ids=["geotiff", "cog", "png"]
)
def test_a_disk_that_fills_during_the_write_fails_the_file_and_keeps_nothing(tiny_model, tmp_path, name, args):
    src = write_geotiff(tmp_path / "scene.tif", image(3, 96, 96))
    with small_disk(tmp_path / "disk", "1m") as disk:
        out = disk / name
        stop = threading.Event()
        filler = fill_when_written(disk, stop)
        result = run("upscale", src, "-o", out, "--model", tiny_model, "-q", *args)
        stop.set()
        filler.join()
        refused(result, 1, str(out), "the disk is full", "nothing was kept")
        assert files_in(disk) == ["filler"]  # no output, no temporary file, no sidecar
        (disk / "filler").unlink()
        # nothing was kept, so --skip-existing does the file again instead of keeping a damaged one forever
        again = run("upscale", src, "-o", out, "--model", tiny_model, "-q", "--skip-existing", *args)
        assert again.exit_code == 0, again.output
        with rasterio.open(out) as d:
            assert d.read().shape == (3, 192, 192)


def test_an_output_the_disk_cannot_hold_is_refused_before_the_model_runs(tiny_model, tmp_path):
    rng = np.random.default_rng(0)
    src = write_geotiff(tmp_path / "noise.tif", rng.integers(0, 256, (3, 200, 200), dtype=np.uint8))
    predictor = recording(load_predictor(tiny_model, device="cpu", precision="fp32"))
    with small_disk(tmp_path / "disk", "256k") as disk:
        with pytest.raises(Exception, match="not enough disk space for the output: about .* needed, .* free"):
            upscale_raster(src, disk / "out.tif", predictor, UpscaleOptions())
        assert predictor.calls == [] and files_in(disk) == []


def test_the_space_check_compresses_a_sample_with_the_outputs_own_codec():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (3, 256, 256), dtype=np.uint8)
    calm = np.full((3, 256, 256), 100, np.uint8)
    profile = {"compress": "deflate", "predictor": 2}
    assert compressed_fraction(noise, profile) > 0.95  # noise does not compress
    assert compressed_fraction(calm, profile) < 0.02
    assert compressed_fraction(noise, {}) == 1.0  # --compress none: the raw size

    class Spec:
        internal_mask = False
        profile = {"width": 4096, "height": 4096, "count": 3, "dtype": "uint8", "compress": "deflate", "predictor": 2}

    raw = 4096 * 4096 * 3
    assert estimate_output_bytes(Spec, cog=False, sample=noise) >= raw  # never the old guess of half
    assert estimate_output_bytes(Spec, cog=False, sample=calm) < raw // 10
    assert estimate_output_bytes(Spec, cog=False, sample=calm, copy=True) == 2 * estimate_output_bytes(
        Spec, cog=False, sample=calm
    )  # a PNG / JPEG and the GeoTIFF it is copied from


def test_the_sample_is_read_only_when_the_raw_size_does_not_fit(tmp_path, monkeypatch):
    class Spec:
        internal_mask = False
        profile = {"width": 4096, "height": 4096, "count": 3, "dtype": "uint8", "compress": "deflate", "predictor": 2}

    calm = np.full((3, 256, 256), 100, np.uint8)
    asked = []

    def sample():
        asked.append(1)
        return calm

    raw = estimate_output_bytes(Spec, cog=False)
    out = tmp_path / "out.tif"
    for free, reads in ((raw, 0), (raw - 1, 1)):  # the raw size fits: no read; one byte less: the compressed size
        monkeypatch.setattr(shutil, "disk_usage", lambda p, free=free: shutil._ntuple_diskusage(10**12, 0, free))
        asked.clear()
        check_output_room(out, Spec, cog=False, sample=sample)
        assert len(asked) == reads
    small = estimate_output_bytes(Spec, cog=False, sample=calm)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 0, small - 1))
    with pytest.raises(RasterError, match="out.tif: not enough disk space for the output"):
        check_output_room(out, Spec, cog=False, sample=sample)


def _sparse_output(path, written_blocks):
    """A tiled GeoTIFF (3 x 64 x 64, 32-pixel blocks) of which only ``written_blocks`` were written, as a failed
    write leaves one: GDAL would read the others as zeros, without an error."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=32,
        blockysize=32,
        sparse_ok=True,
        crs="EPSG:32633",
        transform=rasterio.Affine(5, 0, 500000, 0, -5, 4000000),
    ) as dst:
        for col, row in written_blocks:
            dst.write(image(3, 32, 32), window=Window(32 * col, 32 * row, 32, 32))
    return path


@pytest.mark.parametrize(
    "name, cog", [("out.tif", False), ("out.tif", True), ("out.png", False)], ids=["geotiff", "cog", "png"]
)
def test_an_output_with_blocks_missing_never_takes_its_name(tmp_path, name, cog):
    tmp = _sparse_output(tmp_path / f".{name}.1234.geosr-tmp", [(0, 0), (1, 0), (0, 1)])
    dst = tmp_path / name
    with pytest.raises(WriteError, match=r"cannot write the output \(1 block\(s\) of data are missing"):
        finish_output(tmp, dst, cog=cog, compress="deflate", overwrite=False, shape=(3, 64, 64))
    assert files_in(tmp_path) == []


def test_an_output_cut_short_never_takes_its_name(tmp_path):
    whole = _sparse_output(tmp_path / "whole.tif", [(0, 0), (1, 0), (0, 1), (1, 1)])
    raw = whole.read_bytes()
    whole.unlink()
    tmp = tmp_path / ".out.tif.1234.geosr-tmp"
    tmp.write_bytes(raw[: len(raw) * 3 // 4])
    with pytest.raises(WriteError, match="out.tif: cannot write the output"):
        finish_output(tmp, tmp_path / "out.tif", cog=False, compress="deflate", overwrite=True, shape=(3, 64, 64))
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("read_bytes", [None, 3 * (64 * 32 * 3)], ids=["whole-row", "three-blocks"])
def test_a_damaged_block_inside_a_read_of_many_fails_the_check(tmp_path, monkeypatch, read_bytes):
    """The check reads many blocks at once, decoded on several threads: a block whose compressed bytes are damaged
    still fails it, wherever it lies in the read."""
    if read_bytes is not None:
        monkeypatch.setattr(raster_writing, "VERIFY_READ_BYTES", read_bytes)
    tmp = tmp_path / ".out.tif.1234.geosr-tmp"
    with rasterio.open(
        tmp,
        "w",
        driver="GTiff",
        width=320,
        height=64,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=32,
        blockysize=32,
        compress="deflate",
        interleave="pixel",
    ) as dst:
        dst.write(image(3, 64, 320))
    raster_writing.verify_output(tmp)  # whole, it passes
    with rasterio.open(tmp) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_7_1", "TIFF", bidx=1))
    data = bytearray(tmp.read_bytes())
    data[offset + 8 : offset + 40] = bytes(range(200, 232))
    tmp.write_bytes(bytes(data))
    with pytest.raises(WriteError, match="out.tif: cannot write the output .*does not read back"):
        finish_output(tmp, tmp_path / "out.tif", cog=False, compress="deflate", overwrite=True, shape=(3, 64, 320))
    assert files_in(tmp_path) == []


def test_an_output_of_another_size_than_written_never_takes_its_name(tmp_path):
    tmp = write_geotiff(tmp_path / ".out.tif.1234.geosr-tmp", image(3, 8, 8))
    with pytest.raises(WriteError, match=r"it has 3 x 8 x 8 values where 3 x 16 x 16 were written"):
        finish_output(tmp, tmp_path / "out.tif", cog=False, compress="deflate", shape=(3, 16, 16))
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_an_output_name_near_the_file_systems_limit_is_written_and_its_temporaries_fit(tiny_model, tmp_path, suffix):
    """The temporary name adds a stamp to the output's: a 240-byte name (é counts two) must still be written, by
    its own name, with nothing left beside it but a georeferenced PNG's .aux.xml sidecar."""
    src = write_geotiff(tmp_path / "in" / ("é" * 60 + "x" * 116 + suffix), image())
    assert len(src.name.encode()) == 240
    result = run("upscale", src, "-o", f"{tmp_path / 'out'}/", "--model", tiny_model, "-q")
    assert result.exit_code == 0, result.output
    sidecars = [f"{src.name}.aux.xml"] if suffix == ".png" else []
    assert files_in(tmp_path / "out") == [src.name, *sidecars]
    if suffix == ".png":  # 250 bytes: the output fits, its sidecar would not; refused, nothing published
        longer = write_geotiff(tmp_path / "in2" / ("x" * 246 + suffix), image())
        result = run("upscale", longer, "-o", f"{tmp_path / 'out2'}/", "--model", tiny_model, "-q")
        assert result.exit_code == 1 and "no room for the .aux.xml file" in result.output, result.output
        assert "give the output a shorter name" in result.output and files_in(tmp_path / "out2") == []
