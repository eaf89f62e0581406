"""geosr.device: device and precision names, what this machine resolves them to, and torchrun's environment."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import geosr.device
from geosr.device import (
    NATIVE_BF16_FLAGS,
    DeviceError,
    Torchrun,
    check_device_spec,
    check_precision,
    cpu_supports_bf16,
    read_cpu_flags,
    resolve_device,
    resolve_precision,
    torchrun_env,
)
from geosr.errors import GeosrError, OptionError

CUDA = torch.cuda.is_available()


# --- names --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, "auto"),
        ("", "auto"),
        (" CPU ", "cpu"),
        ("cuda", "cuda"),
        ("cuda:12", "cuda:12"),
        ("mps", "mps"),
        ("Auto", "auto"),
    ],
)
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


# --- bf16 on CPUs without native bf16 -----------------------------------------------------------------------------

CPU = torch.device("cpu")
AVX2_ONLY = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma", "f16c"})  # a laptop or a cloud VM of a few years ago
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_bf16"}  # Cooper Lake, Zen 4
AMX = AVX512_BF16 | {"amx_tile", "amx_bf16", "amx_int8"}  # Sapphire Rapids and later
THIS_CPU = read_cpu_flags()


@pytest.fixture
def slow_bf16_warnings(monkeypatch, caplog):
    """The slow-bf16 warnings logged during the test (the once-per-process mark cleared first)."""
    monkeypatch.setattr(geosr.device, "_warned_slow_bf16", False)
    caplog.set_level(logging.WARNING, logger="geosr")
    return lambda: [r for r in caplog.records if r.name == "geosr.device" and r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    "flags, native",
    [
        (AVX2_ONLY, False),
        (AVX512_BF16, True),
        (AMX, True),
        ((), False),
        ({"amx_tile", "avx512f"}, False),
        ({"bf16", "asimd"}, False),
    ],
)
def test_native_bf16_means_amx_or_avx512_bf16(flags, native):
    assert cpu_supports_bf16(flags) is native


def test_an_explicit_bf16_on_a_cpu_without_native_bf16_warns_once_and_still_runs_bf16(slow_bf16_warnings):
    for _ in range(3):  # upscale's model, train's --precision and --val-precision: still one warning
        assert resolve_precision("bf16", CPU, cpu_flags=AVX2_ONLY) == "bf16"
    (record,) = slow_bf16_warnings()
    message = record.getMessage()
    assert "\n" not in message
    assert "without native bf16" in message
    assert "AMX" in message and "AVX512-BF16" in message and "reference kernels" in message  # the reason
    assert "--precision fp32 or auto" in message  # the remedy


@pytest.mark.parametrize(
    "precision, flags", [("bf16", AMX), ("bf16", AVX512_BF16), ("fp32", AVX2_ONLY), ("auto", AVX2_ONLY), ("auto", AMX)]
)
def test_no_warning_on_a_native_cpu_nor_for_fp32_or_auto(precision, flags, slow_bf16_warnings):
    expected = "bf16" if precision == "bf16" or (precision == "auto" and flags != AVX2_ONLY) else "fp32"
    assert resolve_precision(precision, CPU, cpu_flags=flags) == expected
    assert slow_bf16_warnings() == []


def test_auto_takes_fp32_exactly_where_bf16_would_warn(slow_bf16_warnings):
    """One test of the CPU decides both: auto's choice and the warning."""
    for flags in (AVX2_ONLY, AVX512_BF16, AMX, ()):
        geosr.device._warned_slow_bf16 = False
        auto = resolve_precision("auto", CPU, cpu_flags=flags)
        before = len(slow_bf16_warnings())
        resolve_precision("bf16", CPU, cpu_flags=flags)
        warned = len(slow_bf16_warnings()) > before
        assert (auto == "fp32") is warned is (not cpu_supports_bf16(flags)), sorted(flags)


def test_cpu_flags_are_read_from_proc_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert read_cpu_flags(x86) == {"fpu", "avx2", "amx_bf16"}
    assert read_cpu_flags(arm) == {"fp", "asimd", "bf16"}
    assert read_cpu_flags(tmp_path / "missing") is None


@pytest.mark.skipif(not THIS_CPU or "avx" not in THIS_CPU, reason="no x86 flags in /proc/cpuinfo here")
def test_this_cpu_is_judged_as_its_flags_say():
    """PyTorch's probes (what cpu_supports_bf16() asks) agree with /proc/cpuinfo, whichever CPU runs the tests."""
    assert cpu_supports_bf16() == cpu_supports_bf16(THIS_CPU)


@pytest.mark.skipif(
    NATIVE_BF16_FLAGS.isdisjoint(THIS_CPU or ()),
    reason="this CPU lists neither amx_bf16 nor avx512_bf16 in /proc/cpuinfo",
)
def test_this_cpu_has_native_bf16(slow_bf16_warnings):
    assert cpu_supports_bf16()
    assert resolve_precision("auto", CPU) == "bf16"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert slow_bf16_warnings() == []


def test_importing_geosr_device_leaves_torch_alone():
    """The command line takes its device and precision choices from geosr.device before any command runs."""
    import subprocess
    import sys

    code = "import sys, geosr.device; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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
