"""The benchmark scripts' measuring code, run small: a benchmark that silently stops counting is worse than none.

The figures themselves are measured by running the scripts (benchmarks/README: results/); these tests only check
that what they count is there to count.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from geosr.inference import load_predictor

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"geosr_benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("files", [0, 3])
def test_model_share_counts_every_model_call(tiny_model, tmp_path, files):
    """model_share.py times the pipeline's model calls (one tile per 24 x 24 file at tile 32), and leaves the
    predictor as it found it."""
    share = _benchmark("model_share")
    predictor = load_predictor(tiny_model, device="cpu", precision="fp32")
    run = type(predictor).run
    r = share.model_share(predictor, tmp_path, size=24, files=files, batch=4)
    assert r["model_tiles"] == max(files, 1)
    assert 0 < r["model_s"] < r["total_s"]
    assert r["share"] == pytest.approx(r["model_s"] / r["total_s"], abs=0.01)
    assert type(predictor).run is run
    if files:
        assert len(list((tmp_path / "out").glob("*.tif"))) == files
