"""Fixtures of the error tests; the builders of bad inputs are in badinput.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from badinput import image
from testdata import write_geotiff


@pytest.fixture
def good_tif(tmp_path) -> Path:
    return write_geotiff(tmp_path / "in" / "scene.tif", image(3, 40, 48))
