"""Fixtures shared by the training and evaluation tests: the real imagery in ../shared/data, tiny data sets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from synthetic_images import smooth_image, write_image

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def shared_data_path(sub: str = "") -> Path:
    """``../shared/data/<sub>`` beside the repository; skip (or fail with GEOSR_REQUIRE_SHARED_DATA=1) when absent."""
    path = (SHARED_DATA / sub).resolve()
    if not path.exists():
        reason = f"{path} is absent (the shared real imagery beside the repository)"
        if os.environ.get("GEOSR_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(reason + " and GEOSR_REQUIRE_SHARED_DATA=1")
        pytest.skip(reason)
    return path


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_torch_thread):
    """Every training test runs on one torch thread (tests/conftest.py)."""


@pytest.fixture
def ucmerced() -> Path:
    return shared_data_path("ucmerced")


@pytest.fixture
def scene_folder(tmp_path) -> Path:
    """A UC Merced-like folder: 2 classes x 12 images of 64x64 px, numbers 00..11 and 50..51 (val)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "scenes"
    for cls in ("fields", "roofs"):
        for n in list(range(10)) + [50, 51]:
            write_image(root / cls / f"{cls}{n:02d}.tif", smooth_image(rng, 64))
    return root
