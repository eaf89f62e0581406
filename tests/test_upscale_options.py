"""geosr.options: UpscaleOptions checks its values when made (OptionError naming the option, with the value and the
rule in the message), and the rule functions that the command line shares with it (its own options are tested in
tests/cli/test_options.py)."""

from __future__ import annotations

import dataclasses

import pytest

from geosr.errors import OptionError
from geosr.limits import COMPRESSIONS
from geosr.options import (
    PANEL_STEP,
    UpscaleOptions,
    check_band_numbers,
    check_batch_size,
    check_compression,
    check_panel_width,
    check_tiling,
    check_value_range,
)


@pytest.mark.parametrize(
    "kwargs, option, message",
    [
        (dict(tile_size=4), "--tile-size", "tile size 4: must be an integer of 8..4096"),
        (dict(tile_size=32, overlap=17), "--overlap", "overlap 17: must be an integer of 0..16"),
        (dict(overlap=-1), "--overlap", "overlap -1"),
        (dict(batch_size=0), "--batch-size", "batch size 0"),
        (dict(bands=(0, 1)), "--bands", "1-based"),
        (dict(bands=[2, 2]), "--bands", "name each band once"),
        (dict(value_range=(1, 1)), "--value-range", "MIN must be below MAX"),
        (dict(value_range=(0, float("inf"))), "--value-range", "finite"),
        (dict(compress="jpeg"), "--compress", "expected one of deflate, zstd, lzw, none"),
        (dict(panel_width=100), None, "multiple of 512"),
        (dict(consistency="no"), "--consistency", "consistency 'no': must be True or False"),  # a string reads as True
        (dict(overwrite=1), "--overwrite", "overwrite 1: must be True or False"),
        (dict(cog=None), "--cog", "cog None: must be True or False"),
    ],
)
def test_options_are_checked_when_made(kwargs, option, message):
    with pytest.raises(OptionError, match=message) as info:
        UpscaleOptions(**kwargs)
    assert info.value.option == option
    assert UpscaleOptions(bands=[3, 1]).bands == (3, 1)


def test_the_defaults_leave_the_tiling_to_the_model_card():
    options = UpscaleOptions()
    assert (options.tile_size, options.overlap, options.bands, options.value_range) == (None, None, None, None)
    assert (options.batch_size, options.compress, options.consistency, options.cog) == (8, "deflate", True, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.batch_size = 2  # type: ignore[misc]


def test_values_are_normalised_when_made():
    options = UpscaleOptions(bands=[4, 3, 2], value_range=[0, 10000], panel_width=2 * PANEL_STEP)
    assert options.bands == (4, 3, 2) and options.value_range == (0.0, 10000.0)
    assert all(isinstance(v, float) for v in options.value_range) and options.panel_width == 1024
    assert check_band_numbers([1]) == (1,) and check_value_range((-1, 1.5)) == (-1.0, 1.5)


@pytest.mark.parametrize(
    "tile_size, overlap, option, message",
    [
        # the overlap alone is checked against the largest tile (its card's tile is not known yet)
        (None, 2049, "--overlap", r"overlap 2049: must be an integer of 0\.\.2048 input pixels, and at most half"),
        (None, -1, "--overlap", r"overlap -1: must be an integer of 0\.\.2048 input pixels, and at most half"),
        (4, None, "--tile-size", r"tile size 4: must be an integer of 8\.\.4096 input pixels"),
        (4097, 16, "--tile-size", "tile size 4097"),
        (64, 33, "--overlap", r"overlap 33: must be an integer of 0\.\.32 \(half the tile size 64\)"),
        (64.0, None, "--tile-size", "tile size 64.0"),
    ],
)
def test_check_tiling_names_the_option_at_fault(tile_size, overlap, option, message):
    with pytest.raises(OptionError, match=message) as info:
        check_tiling(tile_size, overlap)
    assert info.value.option == option


def test_check_tiling_takes_any_usable_pair_and_unknown_values():
    for tile_size, overlap in ((None, None), (None, 2048), (8, None), (8, 4), (4096, 0), (64, 32)):
        assert check_tiling(tile_size, overlap) is None
    assert UpscaleOptions(tile_size=8, overlap=4).overlap == 4


@pytest.mark.parametrize(
    "bands, message",
    [
        ("432", "'432': expected 1-based band numbers, e.g. 4,3,2"),
        ([True, 2], "expected 1-based band numbers"),
        ([1.0, 2], "expected 1-based band numbers"),
        ([], r"bands \(none\): band numbers are 1-based"),
        ([3, 0], "bands 3,0: band numbers are 1-based"),
        ([2, 1, 2], "bands 2,1,2: name each band once"),
    ],
)
def test_check_band_numbers_rejects_what_is_not_a_list_of_distinct_band_numbers(bands, message):
    with pytest.raises(OptionError, match=message) as info:
        check_band_numbers(bands)
    assert info.value.option == "--bands"


@pytest.mark.parametrize(
    "value_range, message",
    [
        ((1, 2, 3), r"value range \(1, 2, 3\): give two numbers, MIN MAX"),
        ((0, float("nan")), "value range 0 nan: give finite numbers"),
        ((5, -5), "value range 5 -5: MIN must be below MAX"),
    ],
)
def test_check_value_range_wants_two_finite_increasing_numbers(value_range, message):
    with pytest.raises(OptionError, match=message) as info:
        check_value_range(value_range)
    assert info.value.option == "--value-range"


def test_check_compression_takes_exactly_the_listed_codecs():
    assert [check_compression(c) for c in COMPRESSIONS] == list(COMPRESSIONS)
    with pytest.raises(OptionError, match="compression 'ZSTD': expected one of deflate, zstd, lzw, none") as info:
        check_compression("ZSTD")
    assert info.value.option == "--compress"


@pytest.mark.parametrize("bad", [0, -8, True, 2.0, "8"])
def test_check_batch_size_wants_a_positive_integer(bad):
    with pytest.raises(OptionError, match=f"batch size {bad!r}: must be an integer of at least 1") as info:
        check_batch_size(bad)
    assert info.value.option == "--batch-size"
    assert check_batch_size(1) == 1


@pytest.mark.parametrize("bad", [0, -512, 100, 513, True, 512.0])
def test_check_panel_width_wants_a_positive_multiple_of_the_panel_step(bad):
    with pytest.raises(OptionError, match=f"panel width {bad!r}: must be a positive multiple of 512 input pixels"):
        check_panel_width(bad)
    for good in (None, PANEL_STEP, 4 * PANEL_STEP):
        assert check_panel_width(good) is None


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_max_pixels_must_be_a_whole_number_of_at_least_one(bad):
    with pytest.raises(OptionError, match=f"max pixels {bad!r}: must be a whole number of at least 1") as info:
        UpscaleOptions(max_pixels=bad)
    assert info.value.option == "--max-pixels"
    assert UpscaleOptions(max_pixels=1).max_pixels == 1
