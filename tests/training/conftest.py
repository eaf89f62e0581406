"""Fixtures shared by the training and evaluation tests: the real imagery in ../shared/data, tiny data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from testdata import require_shared_data, smooth_image, write_image


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_torch_thread):
    """Every training test runs on one torch thread (tests/conftest.py)."""


@pytest.fixture
def ucmerced() -> Path:
    return require_shared_data("ucmerced")


@pytest.fixture
def scene_folder(tmp_path) -> Path:
    """A UC Merced-like folder: 2 classes x 12 images of 64x64 px, numbers 00..11 and 50..51 (val)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "scenes"
    for cls in ("fields", "roofs"):
        for n in list(range(10)) + [50, 51]:
            write_image(root / cls / f"{cls}{n:02d}.tif", smooth_image(3, 64, 64, seed=rng, look="scene"))
    return root
