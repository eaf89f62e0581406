"""Fixtures shared by the test suite: the real data beside the repository, tiny model files, synthetic GeoTIFFs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geosr.checkpoint import ModelCard, save_generator
from geosr.models.generator import Generator, GeneratorConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO / ".." / "shared" / "data"


# --- real data ----------------------------------------------------------------------------------------------------


def require_shared_data() -> Path:
    """../shared/data beside the repository; skips the test when absent (fails if GEOSR_REQUIRE_SHARED_DATA=1)."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA.resolve()
    reason = f"real test data not found at {SHARED_DATA} (a checkout without ../shared/data)"
    if os.environ.get("GEOSR_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(reason + "; GEOSR_REQUIRE_SHARED_DATA=1 requires it")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data); see require_shared_data."""
    return require_shared_data()


@pytest.fixture(scope="session")
def geotiff_dir(shared_data: Path) -> Path:
    return shared_data / "geotiff"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny models on one thread: on a small, shared CPU, two threads are slower for such models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
        models_dir / "local-x2.safetensors", scale=2, channels=16, n_blocks=1, attention="none", refiner="none",
        tile_size=80, overlap=40,
    )


# --- synthetic rasters ------------------------------------------------------------------------------------------


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    transform: Affine | None = Affine(10, 0, 500000, 0, -10, 4000000),
    crs: str | None = "EPSG:32633",
    nodata: float | None = None,
    **profile,
) -> Path:
    """Write (bands, h, w) ``data`` as a GeoTIFF with a real CRS and transform (both optional)."""
    kwargs = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype)
    if transform is not None:
        kwargs["transform"] = transform
    if crs is not None:
        kwargs["crs"] = crs
    if nodata is not None:
        kwargs["nodata"] = nodata
    kwargs.update(profile)
    with rasterio.open(path, "w", **kwargs) as dst:
        dst.write(data)
    return path


def smooth_image(bands: int, height: int, width: int, seed: int = 0, dtype=np.uint8, lo=0.0, hi=255.0) -> np.ndarray:
    """A smooth random image with some texture, in [lo, hi], as ``dtype``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    out = np.empty((bands, height, width))
    for b in range(bands):
        f = rng.uniform(0.02, 0.15, 4)
        out[b] = np.sin(f[0] * x + b) * np.cos(f[1] * y) + 0.5 * np.sin(f[2] * (x + y)) + 0.2 * rng.standard_normal(
            (height, width)
        )
    out = (out - out.min()) / (np.ptp(out) or 1)
    return (lo + out * (hi - lo)).astype(dtype)


@pytest.fixture(scope="session")
def make_geotiff():
    """The write_geotiff factory: make_geotiff(path, data, transform=..., crs=..., nodata=..., **profile)."""
    return write_geotiff


@pytest.fixture(scope="session")
def synthetic_image():
    """The smooth_image factory: synthetic_image(bands, height, width, seed=0, dtype=np.uint8, lo=0, hi=255)."""
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
def one_torch_thread():
    """Tiny models on one torch thread: on a small CPU shared with other work, a second thread mostly waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
