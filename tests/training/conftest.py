"""Fixtures of the training tests (the data they train on, scene_folder, is in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_torch_thread):
    """Every training test runs on one torch thread (tests/conftest.py)."""
