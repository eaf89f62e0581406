"""Bad inputs for the error tests, made fresh in tmp_path: every kind of raster geosr must refuse or survive.

Each builder writes one file and returns its path. The rasters are tiny (tens of pixels) except the huge ones, which
are a VRT or a sparse GeoTIFF: 10^10 pixels described in a few kilobytes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner, Result
from rasterio.rpc import RPC
from testdata import CRS, TRANSFORM, wait_for, write_geotiff  # noqa: F401 - wait_for for the tests here

from geosr.cli.main import cli
from geosr.predictor import Predictor
from geosr.raster import TEMP_SUFFIX

# --- running the command line ---------------------------------------------------------------------------------------


def run(*args) -> Result:
    """geosr ARGS in this process; an exception that escapes the command fails the test (catch_exceptions off)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def refused(result, code: int, *needles: str) -> str:
    """Assert that ``result`` is a refusal: exit ``code``, exactly one 'Error: ...' line holding every needle, no
    traceback. Returns the line."""
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}:\n{result.output}"
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    # click prints a usage line before a usage error; nothing else may accompany the error
    others = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith(("Error:", "Usage:", "Try "))]
    assert not [ln for ln in others if "WARNING" not in ln], result.stderr
    return line


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden ones (temporary files) included, relative and sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def complete(path: Path) -> bool:
    """A raster that opens and reads to the end."""
    with rasterio.open(path) as d:
        d.read()
    return True


def subprocess_env() -> dict[str, str]:
    """The environment for geosr run as a program: one thread, this interpreter's packages."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def geosr_command(*args) -> list[str]:
    """geosr ARGS as a program (for signals): this interpreter, ``python -m geosr.cli.main``."""
    return [sys.executable, "-m", "geosr.cli.main", *map(str, args)]


def recording(predictor: Predictor) -> Recording:
    """``predictor`` as a Recording: the same model, and the shape of every batch of tiles it is given."""
    return Recording(**{f.name: getattr(predictor, f.name) for f in fields(Predictor)})


@dataclass(frozen=True, eq=False)
class Recording(Predictor):
    """A real predictor that also notes the shape (B, C, h, w) of every batch it runs, in ``calls``."""

    calls: list = field(default_factory=list)

    def run(self, tiles):
        self.calls.append(tuple(tiles.shape))
        return super().run(tiles)


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "256k") -> Iterator[Path]:
    """A real file system of ``size`` mounted at ``folder`` (a tmpfs, unmounted after): a disk that fills up. Skips
    the test where this process may not mount (not root, or in a container without the right)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a {size} tmpfs to fill a disk ({done.stderr.strip() or 'mount failed'}); "
            "needs root or CAP_SYS_ADMIN"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# --- rasters (written by testdata.write_geotiff: EPSG:32633 at 10 m unless told otherwise) --------------------------


def image(bands: int = 3, h: int = 40, w: int = 40, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(0.2 * x + b) * np.cos(0.15 * y) for b in range(bands)])
    data = 127 + 100 * base + rng.normal(0, 5, base.shape)
    return np.clip(data, 0, 255).astype(dtype)


def not_a_raster(path: Path) -> Path:
    path.write_text("these are not the pixels you are looking for\n")
    return path


def truncated(path: Path) -> Path:
    """A GeoTIFF cut to 40 % of its bytes: the image data and (GDAL writes it last) the directory are lost."""
    good = write_geotiff(path.with_name("whole_" + path.name), image(3, 64, 64), compress="deflate")
    raw = good.read_bytes()
    good.unlink()
    path.write_bytes(raw[: len(raw) * 2 // 5])
    return path


def corrupt_tiles(path: Path) -> Path:
    """A tiled GeoTIFF whose header and directory are intact but whose last row of tiles is garbage: opening it and
    reading its first tiles work, the failure comes mid-file."""
    write_geotiff(path, image(3, 128, 128), tiled=True, blockxsize=32, blockysize=32, compress="deflate")
    with rasterio.open(path) as ds:
        spans = [
            (
                int(ds.get_tag_item(f"BLOCK_OFFSET_{i}_3", "TIFF", bidx=1)),
                int(ds.get_tag_item(f"BLOCK_SIZE_{i}_3", "TIFF", bidx=1)),
            )
            for i in range(4)
        ]
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for offset, size in spans:
        raw[offset : offset + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))
    return path


def one_pixel(path: Path) -> Path:
    return write_geotiff(path, np.full((3, 1, 1), 120, np.uint8))


def all_nodata(path: Path) -> Path:
    return write_geotiff(path, np.zeros((3, 30, 30), np.uint8), nodata=0)


def nan_inf(path: Path) -> Path:
    """float32 with NaN in one corner and +-Inf in another."""
    data = image(3, 40, 40).astype(np.float32)
    data[:, :5, :5] = np.nan
    data[:, -5:, -5:] = np.inf
    data[0, 20, 20] = -np.inf
    return write_geotiff(path, data)


def many_bands(path: Path, bands: int = 200, size: int = 12) -> Path:
    return write_geotiff(path, image(bands, size, size))


def huge_vrt(path: Path, size: int = 400_000) -> Path:
    """A size x size, 3-band VRT over a 64-pixel GeoTIFF: its x2 output would need about 3 size^2 bytes."""
    small = write_geotiff(path.with_name("small_" + path.stem + ".tif"), image(3, 64, 64))
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{small.name}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="64" ySize="64"/><DstRect xOff="0" yOff="0" xSize="{size}" '
        f'ySize="{size}"/></SimpleSource></VRTRasterBand>'
        for b in (1, 2, 3)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>500000, 1, 0, 4000000, 0, -1</GeoTransform>{bands}</VRTDataset>"
    )
    return path


def huge_sparse_tif(path: Path, size: int = 100_000) -> Path:
    """A size x size, 3-band GeoTIFF of which one tile is written (SPARSE_OK): a few hundred KB on disk."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=512,
        blockysize=512,
        sparse_ok=True,
        crs=CRS,
        transform=TRANSFORM,
    ) as dst:
        dst.write(image(3, 512, 512), window=rasterio.windows.Window(0, 0, 512, 512))
    return path


def rpc_only(path: Path) -> Path:
    """Georeferenced by rational polynomial coefficients only (no geotransform, no GCPs, no CRS)."""
    coeffs = [0.0] * 20
    rpc = RPC(
        height_off=0,
        height_scale=100,
        lat_off=45,
        lat_scale=0.01,
        long_off=10,
        long_scale=0.01,
        line_off=20,
        line_scale=20,
        samp_off=20,
        samp_scale=20,
        line_num_coeff=[0, 0, -1] + coeffs[3:],
        line_den_coeff=[1] + coeffs[1:],
        samp_num_coeff=[0, 1] + coeffs[2:],
        samp_den_coeff=[1] + coeffs[1:],
    )
    return write_geotiff(path, image(3, 40, 40), crs=None, transform=None, rpcs=rpc)


def per_band_nodata_vrt(path: Path, nodata: tuple) -> Path:
    """A VRT over a 3-band GeoTIFF whose bands have their own nodata values (``None``: none): band b holds its nodata
    value in a 4 x 4 corner of its own and nowhere else; a band may hold another band's nodata value as valid data
    (row 10 holds every value 0..31 in every band)."""
    data = image(3, 32, 32)
    data[:, 10, :] = np.arange(32, dtype=np.uint8)
    for b, value in enumerate(nodata):
        data[b][data[b] == (value if value is not None else -1)] = 7
    corners = [(slice(0, 4), slice(0, 4)), (slice(-4, None), slice(-4, None)), (slice(0, 4), slice(-4, None))]
    for b, value in enumerate(nodata):
        if value is not None:
            data[b][corners[b]] = value
    src = write_geotiff(path.with_name("base_" + path.stem + ".tif"), data)
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}">'
        + (f"<NoDataValue>{value}</NoDataValue>" if value is not None else "")
        + f'<SimpleSource><SourceFilename relativeToVRT="1">{src.name}</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for b, value in enumerate(nodata, start=1)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="32" rasterYSize="32"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>500000, 10, 0, 4000000, 0, -10</GeoTransform>{bands}</VRTDataset>"
    )
    return path


BAD_INPUTS = {
    "not_a_raster": not_a_raster,
    "truncated": truncated,
    "corrupt_tiles": corrupt_tiles,
}


def fill_when_written(disk: Path, stop: threading.Event) -> threading.Thread:
    """A thread that, as soon as a temporary output appears on ``disk``, fills the disk with another file: what a
    second process writing there does."""

    def fill() -> None:
        while not stop.is_set() and not any(TEMP_SUFFIX in p.name for p in disk.iterdir()):
            time.sleep(0.002)
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()

    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    return thread
