"""Fixtures shared by the test suite: the real data beside the repository, tiny model files, synthetic GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from testdata import require_shared_data, smooth_image, write_geotiff, write_image

from geosr.checkpoint import ModelCard, save_generator
from geosr.device import intra_op_threads
from geosr.models.generator import Generator, GeneratorConfig
from geosr.predictor import Predictor, load_predictor

# --- real data ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data); see testdata.require_shared_data."""
    return require_shared_data()


@pytest.fixture(scope="session")
def geotiff_dir() -> Path:
    """../shared/data/geotiff: real GeoTIFFs of several sources."""
    return require_shared_data("geotiff")


@pytest.fixture(scope="session")
def ucmerced() -> Path:
    """../shared/data/ucmerced: the UC Merced land-use scenes (numbers 00-59 of each class)."""
    return require_shared_data("ucmerced")


# --- torch --------------------------------------------------------------------------------------------------------


@pytest.fixture
def one_torch_thread():
    """Tiny models on one torch thread, for each test that asks (a module: pytestmark = usefixtures): on a small CPU
    shared with other work, a second thread mostly waits."""
    with intra_op_threads(1):
        yield


# --- model files --------------------------------------------------------------------------------------------------


def make_model_file(path: Path, seed: int = 0, tile_size: int = 32, overlap: int = 8, **config) -> Path:
    """A random-weight generator saved as a geosr model file."""
    torch.manual_seed(seed)
    cfg = GeneratorConfig(**config)
    model = Generator(cfg)
    bands = ["red", "green", "blue"][: cfg.in_channels] + [f"b{i}" for i in range(3, cfg.in_channels)]
    card = ModelCard(config=cfg, bands=bands, tile_size=tile_size, overlap=overlap, description="random test model")
    return save_generator(path, model, card)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(models_dir: Path) -> Path:
    """x2, RGB, 16 channels, 1 block, CBAM, no refiner: fast; tile 32, overlap 8."""
    return make_model_file(models_dir / "tiny-x2.safetensors", scale=2, channels=16, n_blocks=1, refiner="none")


@pytest.fixture(scope="session")
def tiny_model_x4(models_dir: Path) -> Path:
    """x4, RGB, the default architecture shrunk (16 channels, 1 block, transformer refiner with base 8)."""
    return make_model_file(
        models_dir / "tiny-x4.safetensors", scale=4, channels=16, n_blocks=1, refiner_base=8, tile_size=32, overlap=8
    )


@pytest.fixture(scope="session")
def local_model(models_dir: Path) -> Path:
    """A purely local conv net (no attention pooling, no refiner): receptive field 9 input pixels, under overlap / 4."""
    return make_model_file(
        models_dir / "local-x2.safetensors",
        scale=2,
        channels=16,
        n_blocks=1,
        attention="none",
        refiner="none",
        tile_size=80,
        overlap=40,
    )


@pytest.fixture(scope="module")
def predictor(tiny_model: Path) -> Predictor:
    """tiny_model loaded on the CPU at fp32, once per test module."""
    return load_predictor(tiny_model, device="cpu", precision="fp32")


# --- synthetic rasters --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def make_geotiff():
    """testdata.write_geotiff: make_geotiff(path, data, transform=..., crs=..., nodata=..., **profile)."""
    return write_geotiff


@pytest.fixture(scope="session")
def synthetic_image():
    """testdata.smooth_image: synthetic_image(bands, height, width, seed=0, dtype=np.uint8, lo=0, hi=255, look=...)."""
    return smooth_image


@pytest.fixture(scope="session")
def make_model(models_dir: Path):
    """A factory of random-weight model files: make_model(name, seed=0, tile_size=32, overlap=8, **config)."""

    def make(name: str, **kwargs) -> Path:
        return make_model_file(models_dir / f"{name}.safetensors", **kwargs)

    return make


@pytest.fixture
def rgb_tif(tmp_path: Path) -> Path:
    """A 3-band uint8 GeoTIFF, 70 x 90 pixels, EPSG:32633, 10 m."""
    return write_geotiff(tmp_path / "rgb.tif", smooth_image(3, 70, 90))


@pytest.fixture
def scene_folder(tmp_path: Path) -> Path:
    """A UC Merced-like folder: 2 classes x 12 plain 64 x 64 GeoTIFFs, numbers 00..09 (train) and 50, 51 (val)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "scenes"
    for cls in ("fields", "roofs"):
        for n in list(range(10)) + [50, 51]:
            write_image(root / cls / f"{cls}{n:02d}.tif", smooth_image(3, 64, 64, seed=rng, look="scene"))
    return root
