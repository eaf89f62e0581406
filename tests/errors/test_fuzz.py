"""Fuzzing: mutated GeoTIFF headers and random option combinations never give a traceback or a partial output.
Every run ends in exit 0 with a complete output, or in one error line (exit 1 or 2) with no output at all.

Bounded for CI: a fixed number of examples, derandomized (the same examples every run), no example database.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
from badinput import files_in, image, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testdata import write_geotiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def seed_tif(tmp_path_factory) -> bytes:
    """A small tiled, compressed GeoTIFF: the bytes the mutations start from."""
    path = write_geotiff(
        tmp_path_factory.mktemp("seed") / "seed.tif",
        image(3, 24, 24),
        tiled=True,
        blockxsize=16,
        blockysize=16,
        compress="deflate",
    )
    return path.read_bytes()


def check_outcome(result, out: Path) -> None:
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 0:
        with rasterio.open(out) as d:  # complete: opens and reads to the end
            d.read()
        assert set(files_in(out.parent)) <= {out.name, f"{out.name}.aux.xml"}  # a PNG's georeferencing sidecar
    else:
        assert result.exit_code in (1, 2), result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.stderr
        assert not out.parent.exists() or files_in(out.parent) == [], files_in(out.parent)


@FUZZ
@given(mutations=st.lists(st.tuples(st.integers(0, 399), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_geotiff_headers(tiny_model, seed_tif, tmp_path_factory, mutations):
    folder = tmp_path_factory.mktemp("mutant")
    raw = bytearray(seed_tif)
    for pos, value in mutations:
        raw[pos % len(raw)] = value
    src = folder / "mutant.tif"
    src.write_bytes(bytes(raw))
    out = folder / "out" / "x2.tif"
    result = run("upscale", src, "-o", out, "--model", tiny_model, "-q", "--tile-size", "16", "--overlap", "4")
    check_outcome(result, out)


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "--tile-size": st.integers(-10, 5000).map(str),
        "--overlap": st.integers(-5, 40).map(str),
        "--batch-size": st.integers(-1, 20).map(str),
        "--bands": st.lists(st.integers(-1, 5), min_size=0, max_size=4).map(lambda b: ",".join(map(str, b))),
        "--scale": st.sampled_from(["1", "2", "3", "4", "x"]),
        "--value-range": st.tuples(
            st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True)
        ),
        "--bbox": st.sampled_from(["500000,3999700,500200,4000000", "0,0,1,1", "1,1,0,0", "a,b,c,d", "1,2,3"]),
        "--aoi": st.sampled_from(
            [
                "POLYGON ((500000 3999700, 500200 3999700, 500200 4000000, 500000 3999700))",
                "POLYGON ((0 0, 1 1, 2 2, 0 0))",
                "LINESTRING (0 0, 1 1)",
                "POLYGON ((",
                "",
            ]
        ),
        "--aoi-crs": st.sampled_from(["EPSG:32633", "EPSG:4326", "EPSG:0", "nonsense"]),
        "--compress": st.sampled_from(["deflate", "zstd", "none", "jpeg"]),
        "--device": st.sampled_from(["cpu", "auto", "tpu"]),
        "--precision": st.sampled_from(["fp32", "bf16", "int8"]),
        "--cog": st.just(None),
        "--overwrite": st.just(None),
        "--skip-existing": st.just(None),
    },
)


@FUZZ
@given(options=OPTIONS, suffix=st.sampled_from([".tif", ".png", ".jpg", ".jp2"]))
def test_random_option_combinations(tiny_model, tmp_path_factory, options, suffix):
    folder = tmp_path_factory.mktemp("options")
    src = write_geotiff(folder / "in.tif", image(3, 30, 20))
    out = folder / "out" / f"x{suffix}"
    args = []
    for flag, value in options.items():
        if value is None:
            args.append(flag)
        elif isinstance(value, tuple):
            args += [flag, *map(str, value)]
        else:
            args += [flag, value]
    result = run("upscale", src, "-o", out, "--model", tiny_model, "-q", *args)
    check_outcome(result, out)
