"""geosr.device: device and precision names, what this machine resolves them to, and torchrun's environment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geosr.device import (
    DeviceError,
    Torchrun,
    check_device_spec,
    check_precision,
    cpu_supports_bf16,
    resolve_device,
    resolve_precision,
    torchrun_env,
)
from geosr.errors import GeosrError, OptionError

CUDA = torch.cuda.is_available()


# --- names --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [(None, "auto"), ("", "auto"), (" CPU ", "cpu"), ("cuda", "cuda"),
                                            ("cuda:12", "cuda:12"), ("mps", "mps"), ("Auto", "auto")])
def test_device_names_are_normalised(spec, expected):
    assert check_device_spec(spec) == expected


@pytest.mark.parametrize("spec", ["tpu", "cuda:", "cuda:x", "gpu", "cpu:0"])
def test_a_name_that_is_no_device_is_an_option_error(spec):
    with pytest.raises(OptionError, match="expected auto, cpu, cuda, cuda:N or mps") as info:
        check_device_spec(spec)
    assert info.value.option == "--device"
    with pytest.raises(OptionError):
        resolve_device(spec)  # the same rule where the device is resolved


def test_precision_names():
    assert check_precision(" BF16") == "bf16"
    with pytest.raises(OptionError, match="expected one of auto, fp32, bf16, fp16") as info:
        check_precision("int8")
    assert info.value.option == "--precision"


# --- what this machine has ----------------------------------------------------------------------------------------


def test_the_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == "cuda" if CUDA else resolve_device("auto").type in ("mps", "cpu")
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_supports_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"


def test_a_device_this_machine_lacks_is_a_device_error_not_a_usage_error():
    with pytest.raises(DeviceError, match="--device cuda:99") as info:
        resolve_device("cuda:99")
    assert info.value.option == "--device" and not isinstance(info.value, OptionError)
    with pytest.raises(DeviceError, match="fp16 needs a GPU") as info:
        resolve_precision("fp16", torch.device("cpu"))
    assert info.value.option == "--precision" and not isinstance(info.value, OptionError)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_follows_the_local_rank():
    n = torch.cuda.device_count()
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=n + 1) == torch.device("cuda", (n + 1) % n)
    assert resolve_device(f"cuda:{n - 1}") == torch.device("cuda", n - 1)
    dev = resolve_device("cuda")
    assert resolve_precision("auto", dev) in ("bf16", "fp32")
    assert resolve_precision("fp16", dev) == "fp16"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_a_predictor_on_the_gpu_matches_the_cpu(tiny_model):
    from geosr.predictor import load_predictor

    tiles = np.random.default_rng(0).uniform(-1, 1, (4, 3, 24, 24)).astype(np.float32)
    cpu = load_predictor(tiny_model, device="cpu", precision="fp32")(tiles)
    gpu = load_predictor(tiny_model, device="cuda", precision="fp32")(tiles)
    assert gpu.shape == (4, 3, 48, 48) and gpu.dtype == np.float32
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)
    half = load_predictor(tiny_model, device="cuda", precision="fp16")(tiles)
    assert np.abs(half - cpu).max() < 0.05


# --- torchrun -----------------------------------------------------------------------------------------------------


def test_without_torchrun_this_is_one_process():
    job = torchrun_env({})
    assert job == Torchrun(0, 1, None, 1) and not job.distributed


def test_torchrun_variables_are_read():
    job = torchrun_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert job == Torchrun(rank=3, world_size=4, local_rank=1, local_world_size=2) and job.distributed
    assert torchrun_env({"RANK": "1", "WORLD_SIZE": "2"}).local_world_size == 2  # one node by default


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, "must be integers"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK 2 is outside WORLD_SIZE 2"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "outside WORLD_SIZE 0"),
        ({"WORLD_SIZE": "2"}, "RANK is not set"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "-1"}, "LOCAL_RANK -1 is negative"),
    ],
)
def test_a_broken_torchrun_environment_is_named(env, message):
    with pytest.raises(GeosrError, match=message):
        torchrun_env(env)


def test_the_process_environment_is_the_default(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert torchrun_env() == Torchrun(1, 2, None, 2)


def test_training_joins_the_job_torchrun_describes(monkeypatch):
    """training.distributed.setup reads the same function: a single process needs no process group."""
    from geosr.training.distributed import setup

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    ctx = setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.device) == (0, 1, False, torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(GeosrError, match="RANK is not set"):
        setup("cpu")
