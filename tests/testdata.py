"""The test suite's data: synthetic images made on the spot, and the real data beside the repository.

Every test folder imports this module (``from testdata import smooth_image, write_geotiff``): tests/ has no
``__init__.py``, so pytest puts tests/ on sys.path when it loads tests/conftest.py, before any test module. The
fixtures in tests/conftest.py (``synthetic_image``, ``make_geotiff``, ``shared_data``, ...) hand out the same
functions.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geosr.options import UpscaleOptions

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO / ".." / "shared" / "data"
REQUIRE_SHARED_DATA = "GEOSR_REQUIRE_SHARED_DATA"  # set to 1 by .ci/run: absent real data fails instead of skipping

TRANSFORM = Affine(10, 0, 500000, 0, -10, 4000000)  # 10 m pixels in UTM 33N
CRS = "EPSG:32633"


# --- real data --------------------------------------------------------------------------------------------------------


def require_shared_data(sub: str = "") -> Path:
    """``../shared/data/<sub>`` beside the repository, resolved. When it is absent the test is skipped, with the
    reason; it fails instead when GEOSR_REQUIRE_SHARED_DATA=1 (as in .ci/run), where the real data must be there."""
    path = SHARED_DATA / sub
    if path.is_dir():
        return path.resolve()
    reason = f"real test data not found at {path} (a checkout without ../shared/data)"
    if os.environ.get(REQUIRE_SHARED_DATA) == "1":
        pytest.fail(f"{reason}; {REQUIRE_SHARED_DATA}=1 requires it")
    pytest.skip(reason)


# --- synthetic images -------------------------------------------------------------------------------------------------


def smooth_image(
    bands: int,
    height: int,
    width: int,
    seed: int | np.random.Generator = 0,
    dtype=np.uint8,
    lo: float = 0.0,
    hi: float = 255.0,
    look: str = "texture",
) -> np.ndarray:
    """A (bands, height, width) image of smooth waves with some noise, values in [lo, hi], as ``dtype``.

    ``seed``: an int, or a numpy Generator to draw from (it advances, so successive images from one Generator
    differ and a whole data set follows from one seed).

    ``look``:

    * ``"texture"``: waves of fixed periods in pixels (about 40 to 300), the same texture at any size; each image is
      stretched to fill [lo, hi] exactly and cast (truncated) to ``dtype``.
    * ``"scene"``: 1 to 6 waves across the image at random phases, so structure at several scales of the image's own
      size (a training patch has something to learn); mapped to [lo, hi] by one fixed rule for every image, clipped
      at both ends and rounded, so the levels of images of one data set are alike (the look of the training and
      evaluation data sets).
    """
    rng = np.random.default_rng(seed)  # a Generator is used as it is
    if look == "texture":
        y, x = np.mgrid[0:height, 0:width].astype(np.float64)
        out = np.empty((bands, height, width))
        for b in range(bands):
            f = rng.uniform(0.02, 0.15, 4)
            out[b] = (
                np.sin(f[0] * x + b) * np.cos(f[1] * y)
                + 0.5 * np.sin(f[2] * (x + y))
                + 0.2 * rng.standard_normal((height, width))
            )
        out = (out - out.min()) / (np.ptp(out) or 1)
        return (lo + out * (hi - lo)).astype(dtype)
    if look == "scene":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        yy, xx = yy / height, xx / width
        out = []
        for _ in range(bands):
            f = rng.uniform(1, 6, size=2)
            phase = rng.uniform(0, 6.28, size=2)
            band = np.sin(2 * np.pi * f[0] * xx + phase[0]) * np.cos(2 * np.pi * f[1] * yy + phase[1])
            band += 0.3 * rng.normal(size=(height, width))
            out.append(lo + np.clip((band + 1.3) / 2.6, 0, 1) * (hi - lo))
        return np.stack(out).round().astype(dtype)
    raise ValueError(f"unknown look {look!r}: 'texture' or 'scene'")


# --- writing them -----------------------------------------------------------------------------------------------------


def _write(path: Path, data: np.ndarray, **profile) -> Path:
    """Write (bands, h, w) ``data`` with a rasterio profile (None values left out), making the folders above."""
    kwargs = dict(width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype)
    kwargs.update(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **{k: v for k, v in kwargs.items() if v is not None}) as dst:
        dst.write(data)
    return path


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    transform: Affine | None = TRANSFORM,
    crs: str | None = CRS,
    nodata: float | None = None,
    **profile,
) -> Path:
    """Write (bands, h, w) ``data`` as a GeoTIFF, EPSG:32633 at 10 m unless told otherwise: ``transform=None`` or
    ``crs=None`` leaves it out; ``profile`` adds or overrides creation options (a None value leaves the key out)."""
    return _write(path, data, driver="GTiff", transform=transform, crs=crs, nodata=nodata, **profile)


def write_image(path: Path, data: np.ndarray) -> Path:
    """Write (bands, h, w) ``data`` as a plain image (no georeferencing); the driver follows the suffix: .png, .jpg,
    .tif."""
    driver = {".png": "PNG", ".jpg": "JPEG", ".tif": "GTiff"}[path.suffix]
    return _write(path, data, driver=driver)


# --- reading what a run wrote -----------------------------------------------------------------------------------------


def read_raster(path: Path) -> np.ndarray:
    """Every band of the raster at ``path``, (bands, h, w) in its dtype."""
    with rasterio.open(path) as d:
        return d.read()


def file_names(folder: Path) -> list[str]:
    """The names in ``folder``, sorted: what a run left there (its outputs and no temporary file, or nothing)."""
    return sorted(p.name for p in folder.iterdir())


# tile 64, overlap 16: a quarter of the tiles of the tiny models' cards (tile 32, overlap 8), for tests where the
# tiling does not matter
FAST = UpscaleOptions(tile_size=64, overlap=16)


# --- child processes, waiting -----------------------------------------------------------------------------------------


def interruptible() -> None:
    """``preexec_fn`` for a child process that a test stops with SIGINT: Ctrl-C's default action in the child, also
    when the tests themselves run in the background (a non-interactive shell starts background jobs with SIGINT
    ignored, and children inherit that, so the child would never see the signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(predicate, timeout: float, step: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def error_line(result) -> str:
    """The error message of a CliRunner result: exactly one 'Error: ...' line, and no traceback."""
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def consistency_pair(scale: int, h: int = 36, w: int = 28, bands: int = 3, seed: int = 0):
    """(hr, lr): a random output in the model's range, and an input near its degradation (geosr.consistency's
    tests and geosr.rowstream's)."""
    from geosr.consistency import degrade

    rng = np.random.default_rng(seed)
    hr = np.clip(rng.normal(0, 0.5, (bands, scale * h, scale * w)), -1, 1).astype(np.float32)
    lr = np.clip(degrade(hr, scale) + rng.normal(0, 0.05, (bands, h, w)), -1, 1).astype(np.float32)
    return hr, lr


def tiny_train_args(scale: int = 2, patch: int = 32, refiner: tuple[str, ...] = ("--refiner-base", "8")) -> list[str]:
    """``geosr train`` options of a tiny GAN that trains in seconds on the CPU (content and adversarial losses, no
    VGG): x``scale``, ``patch``-px HR patches, batches of 4; ``refiner``: its options ("--refiner", "none": none)."""
    return [
        *("--scale", str(scale), "--channels", "16", "--n-blocks", "1", *refiner, "--d-base", "8", "--d-blocks", "2"),
        *("--patch-size", str(patch), "--batch-size", "4", "--perceptual-weight", "0", "--precision", "fp32"),
        *("--device", "cpu"),
    ]
