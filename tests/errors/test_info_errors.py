"""`geosr info` on files that are not model files: one line, exit 1, only the header read.

The model-file faults shared with upscale and evaluate (pickles, truncation, bad cards) are in test_model_files.py.
"""

from __future__ import annotations

import struct

import pytest
from badinput import image, refused, run
from testdata import write_geotiff


def test_a_geotiff_not_written_by_geosr_is_described_not_taken_for_a_model(tmp_path):
    tif = write_geotiff(tmp_path / "scene.tif", image(3, 8, 8))
    result = run("info", tif)
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "scene.tif: not written by geosr" in result.output and "8 x 8 pixels" in result.output


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "only 0 bytes"),
        (struct.pack("<Q", 2**60) + b"{}", "not a safetensors model file"),
        (struct.pack("<Q", 4) + b"{\xff\xfe}", "unreadable header"),
        (struct.pack("<Q", 2) + b"[]", "bad header"),
        (struct.pack("<Q", 4000) + b"{" + b"[" * 3999, "unreadable header"),
    ],
    ids=["empty", "header-length-absurd", "header-not-utf8", "header-a-list", "header-deeply-nested"],
)
def test_files_that_only_look_like_safetensors(tmp_path, raw, message):
    path = tmp_path / "odd.safetensors"
    path.write_bytes(raw)
    refused(run("info", path), 1, "odd.safetensors", message)
    refused(run("info", "--json", path), 1, "odd.safetensors", message)


def test_a_bundled_name_that_does_not_exist(tmp_path):
    refused(run("info", "degan-x9"), 1, "degan-x9", "no such model file")


def test_a_named_pipe_is_refused_without_being_read(tmp_path):
    """Opening a FIFO to read it would block until a writer comes: the kind of file is checked first."""
    import os

    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    refused(run("info", fifo), 1, "model.safetensors: is a named pipe (FIFO), not a file", "give a file")
