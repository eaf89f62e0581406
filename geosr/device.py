"""Devices and numeric precision: which device runs the model, and in which autocast mode.

Precisions: 'fp32' (no autocast), 'bf16' (bfloat16 autocast: CUDA GPUs from Ampere on, and CPUs; fast on CPUs with
AMX), 'fp16' (float16 autocast, CUDA only; training adds a gradient scaler) and 'auto': bf16 on CUDA GPUs that
support it (fp16 on older ones) and on CPUs with AMX tiles, fp32 on other CPUs.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(spec: str | None = None) -> torch.device:
    """'auto' or None: the first CUDA GPU if there is one, else the CPU; otherwise ``torch.device(spec)``."""
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return device


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (bf16 matrix units): bf16 autocast is then several times faster than fp32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except Exception:  # pragma: no cover - a private probe that may change
            pass
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision ('fp32', 'bf16' or 'fp16') for ``precision`` on ``device``; ValueError if impossible."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_amx() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA GPU; on the CPU use bf16 (fast with AMX) or fp32")
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
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {name}, {torch.get_num_threads()} threads{', AMX' if cpu_has_amx() else ''}"
