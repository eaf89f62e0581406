"""geosr.pipethreads: the writer thread writes rows as they come in whole 512-row blocks, and hands its failure on."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio

from geosr.blocks import Block
from geosr.errors import WriteError
from geosr.pipethreads import Writer
from geosr.raster import BLOCK


def _output(path, width: int, height: int):
    return rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=2,
        dtype="uint16",
        tiled=True,
        blockxsize=BLOCK,
        blockysize=BLOCK,
        compress="deflate",
    )


def test_rows_of_any_height_and_panels_of_columns_are_written_where_they_belong(tmp_path):
    """Rows arrive in uneven pieces and in two column panels; the file holds each value once, where it belongs."""
    width, height = 700, 1100
    expected = np.random.default_rng(0).integers(0, 60000, (2, height, width), dtype=np.uint16)
    writer = Writer(
        SimpleNamespace(dst=tmp_path / "out.tif"), _output(tmp_path / "tmp.tif", width, height), threading.Event()
    )
    writer.thread.start()
    for c0, c1 in ((0, 512), (512, width)):  # one panel after the other, as the strip loop sends them
        r0 = 0
        for h in (37, 600, 1, 462):
            writer.put(Block(r0, c0, expected[:, r0 : r0 + h, c0:c1].copy(), None))
            r0 += h
    writer.close()
    with rasterio.open(tmp_path / "tmp.tif") as ds:
        np.testing.assert_array_equal(ds.read(), expected)


def test_a_failed_write_is_raised_by_put_or_close_and_the_file_is_closed(tmp_path):
    """A block that does not fit the file fails in the writer thread; the main thread hears of it, as a WriteError
    that names the output (not its temporary file)."""
    dst = _output(tmp_path / "tmp.tif", 64, 64)
    writer = Writer(SimpleNamespace(dst=tmp_path / "out.tif"), dst, threading.Event())
    writer.thread.start()
    with pytest.raises(WriteError, match=f"^{tmp_path / 'out.tif'}: cannot write the output"):  # the output named
        writer.put(Block(0, 0, np.zeros((2, 64, 64), np.uint16), None))
        writer.put(Block(64, 0, np.zeros((2, 8, 64), np.uint16), None))  # rows beyond the file's height
        writer.close()
    writer.thread.join(timeout=10)
    assert not writer.thread.is_alive() and dst.closed


def test_a_stop_ends_the_writer_without_writing_what_is_left(tmp_path):
    stop = threading.Event()
    writer = Writer(SimpleNamespace(dst=tmp_path / "out.tif"), _output(tmp_path / "tmp.tif", 64, 64), stop)
    writer.thread.start()
    writer.put(Block(0, 0, np.ones((2, 10, 64), np.uint16), None))
    stop.set()
    writer.thread.join(timeout=10)
    assert not writer.thread.is_alive() and writer.dst.closed
