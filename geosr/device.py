"""Devices and numeric precision: which device runs the model, and in which autocast mode.

Devices: 'auto' takes CUDA (the GPU of this process's LOCAL_RANK under torchrun), then Apple's MPS, then the CPU;
'cpu', 'cuda', 'cuda:N' and 'mps' name one.
Precisions: 'fp32' (no autocast), 'bf16' (bfloat16 autocast: CUDA GPUs from Ampere on, and CPUs; several times faster
than fp32 on CPUs with AMX), 'fp16' (float16 autocast, CUDA and MPS; training adds a gradient scaler) and 'auto': bf16
on CUDA GPUs that support it and on CPUs with AMX or AVX-512-BF16, fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

from geosr.errors import GeosrError

DEVICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class DeviceError(GeosrError, ValueError):
    """A device or precision that does not exist on this machine."""


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(spec: str | None = "auto", local_rank: int | None = None) -> torch.device:
    """The torch device for ``spec`` (see the module docstring); raises DeviceError for one that does not exist."""
    spec = (spec or "auto").strip().lower()
    cuda = torch.cuda.is_available()
    if spec == "auto":
        if cuda:
            return torch.device("cuda", (local_rank or 0) % torch.cuda.device_count())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise DeviceError("--device mps: no Apple GPU (MPS) is available here; use cpu or auto")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not cuda:
            raise DeviceError(f"--device {spec}: PyTorch sees no CUDA GPU here; use cpu or auto")
        index = (local_rank or 0) if spec == "cuda" else spec.split(":", 1)[1]
        try:
            index = int(index)
        except ValueError:
            raise DeviceError(f"--device {spec}: expected cuda:N with N a GPU number") from None
        n = torch.cuda.device_count()
        if not 0 <= index < n:
            raise DeviceError(f"--device {spec}: this machine has {n} CUDA GPU(s), cuda:0..cuda:{n - 1}")
        return torch.device("cuda", index)
    raise DeviceError(f"--device {spec!r}: expected {DEVICES}")


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX tiles or AVX-512-BF16)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without the probes: read the flags
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (bf16 matrix units)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:
        try:
            return "amx_bf16" in Path("/proc/cpuinfo").read_text()
        except OSError:
            return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision ('fp32', 'bf16' or 'fp16') for ``precision`` on ``device``; DeviceError if impossible."""
    precision = precision.strip().lower()
    if precision not in PRECISIONS:
        raise DeviceError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device.type == "cpu":
            return "bf16" if cpu_supports_bf16() else "fp32"
        return "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError("--precision fp16 needs a GPU; on the CPU use bf16 (fast with AMX) or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32")
    if precision == "bf16" and device.type == "mps":
        raise DeviceError("--precision bf16 is not available on MPS; use fp16 or fp32")
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context for a concrete precision (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe_hardware(device: torch.device) -> str:
    """The device in words for provenance, e.g. 'cuda: NVIDIA H100 80GB HBM3' or 'cpu: x86_64, 16 threads, AMX'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps: Apple GPU"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {name}, {torch.get_num_threads()} threads{', AMX' if cpu_has_amx() else ''}"
