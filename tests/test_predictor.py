"""geosr.predictor: a Predictor maps (B, C, h, w) model-range tiles to (B, C, s*h, s*w) float32, batched or not,
with numpy in and out too; the self-ensemble over the square's 8 symmetries; running out of memory names the option
to lower; load_predictor checks the model's scale and records where the model came from; bf16 stays close to fp32."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from testdata import FAST, read_raster

from geosr.checkpoint import model_sha256
from geosr.device import cpu_supports_bf16
from geosr.errors import ModelFileError, NotEnoughMemory
from geosr.pipeline import upscale_raster
from geosr.predictor import is_out_of_memory, load_predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- running tiles ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (4, 3, 32, 32), (2, 3, 12, 20)])
def test_run_gives_scale_times_the_pixels_in_float32(predictor, shape):
    tiles = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = predictor.run(tiles)
    b, c, h, w = shape
    assert out.shape == (b, c, 2 * h, 2 * w) and out.dtype == torch.float32
    assert out.device == predictor.device and out.is_contiguous() and torch.isfinite(out).all()


def test_a_batch_gives_what_its_tiles_give_one_at_a_time(predictor):
    tiles = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    batched = predictor.run(tiles)
    alone = torch.cat([predictor.run(tiles[i : i + 1]) for i in range(len(tiles))])
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # different tiles, different outputs


def test_calling_a_predictor_takes_and_gives_numpy(predictor):
    tiles = np.random.default_rng(2).uniform(-1, 1, (2, 3, 10, 14))  # float64: converted to float32
    out = predictor(tiles)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 3, 20, 28)
    np.testing.assert_array_equal(out, predictor.run(torch.from_numpy(tiles.astype(np.float32))).numpy())
    assert out.flags.c_contiguous


def test_the_predictor_describes_its_model(predictor, tiny_model):
    assert (predictor.scale, predictor.channels, predictor.precision) == (2, 3, "fp32")
    assert predictor.device == torch.device("cpu") and not predictor.channels_last  # fp32 on the CPU: NCHW
    assert predictor.source == "tiny-x2.safetensors" and predictor.model_sha256 == model_sha256(tiny_model)
    assert not predictor.self_ensemble and not predictor.model.training
    with pytest.raises(dataclasses.FrozenInstanceError):
        predictor.precision = "bf16"  # type: ignore[misc]


# --- running out of memory --------------------------------------------------------------------------------------------


class _Failing(torch.nn.Module):
    """A model that raises ``exc`` when called."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def forward(self, x):
        raise self.exc


def test_out_of_memory_names_the_batch_the_tile_and_what_to_lower(predictor):
    oom = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123456 bytes")
    failing = dataclasses.replace(predictor, model=_Failing(oom))
    with pytest.raises(
        NotEnoughMemory,
        match=r"out of memory running the model on cpu for 4 tile\(s\) of 16 x 24 "
        r"input pixels at x2 \(.*can't allocate memory.*\); use a smaller "
        r"--batch-size or --tile-size",
    ) as info:
        failing.run(torch.zeros(4, 3, 16, 24))
    assert info.value.option == "--batch-size"
    with pytest.raises(NotEnoughMemory) as info:
        failing.run(torch.zeros(1, 3, 16, 24))
    assert info.value.option == "--tile-size"  # one tile: only a smaller tile helps


def test_other_errors_of_the_model_pass_through(predictor):
    failing = dataclasses.replace(predictor, model=_Failing(RuntimeError("expected 3 channels, got 4")))
    with pytest.raises(RuntimeError, match="expected 3 channels, got 4"):
        failing.run(torch.zeros(1, 3, 8, 8))


def test_is_out_of_memory_knows_the_allocators_messages():
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    for text in (
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        "[enforce fail] Cannot allocate memory",
        "DefaultCPUAllocator: can't allocate memory",
        "could not create a primitive",
    ):
        assert is_out_of_memory(RuntimeError(text)), text
    assert not is_out_of_memory(RuntimeError("Given groups=1, weight of size [16, 3, 3, 3]"))
    assert not is_out_of_memory(ValueError("bad value"))


# --- the self-ensemble ------------------------------------------------------------------------------------------------


def test_the_self_ensemble_is_the_mean_over_the_squares_eight_symmetries(predictor):
    """Each of the 8 flips and transposes is undone by its inverse, all 8 differ, and the ensemble is the mean of the
    model's turned-back outputs: exact for a model that commutes with them (nearest upsampling), not the plain output
    for one that does not (a random generator)."""
    from geosr.predictor import _dihedral, geometric_ensemble

    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    assert all(torch.equal(_dihedral(_dihedral(x, k), k, inverse=True), x) for k in range(8))
    assert len({tuple(_dihedral(x[:, :, :5, :5], k).flatten().tolist()) for k in range(8)}) == 8
    nearest = torch.nn.Upsample(scale_factor=2, mode="nearest")
    assert torch.equal(geometric_ensemble(nearest, x), nearest(x))
    tiles = torch.rand(2, 3, 12, 20) * 2 - 1
    model = predictor.model
    with torch.inference_mode():
        expected = sum(_dihedral(model(_dihedral(tiles, k)), k, inverse=True) for k in range(8)) / 8
        plain = model(tiles)
    ensembled = dataclasses.replace(predictor, self_ensemble=True).run(tiles)
    assert ensembled.shape == (2, 3, 24, 40) and torch.allclose(ensembled, expected, atol=1e-5)
    assert not torch.allclose(ensembled, plain, atol=1e-3)


# --- loading models, precision ----------------------------------------------------------------------------------------


def test_model_scale_must_match(tiny_model):
    with pytest.raises(ModelFileError, match="x2 model but --scale=4"):
        load_predictor(tiny_model, scale=4, device="cpu")
    with pytest.raises(ModelFileError, match="pass --model"):
        load_predictor(None, scale=3, device="cpu")  # no x3 model ships


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has neither AMX nor AVX-512-BF16")
def test_bf16_output_is_close_to_fp32(tiny_model, tmp_path, rgb_tif):
    a = upscale_raster(rgb_tif, tmp_path / "a.tif", load_predictor(tiny_model, device="cpu", precision="fp32"), FAST)
    b = upscale_raster(rgb_tif, tmp_path / "b.tif", load_predictor(tiny_model, device="cpu", precision="bf16"), FAST)
    diff = np.abs(read_raster(a.dst).astype(int) - read_raster(b.dst).astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 8
