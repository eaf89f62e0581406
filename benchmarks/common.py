"""Shared pieces of the geosr benchmarks: timing, precision contexts, the machine's peak conv throughput, FLOPs."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

SHARED_GEOTIFFS = Path(__file__).resolve().parents[2] / "shared" / "data" / "geotiff"  # ../shared beside the repo
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    dtype = DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_conv_flops(device: torch.device, precision: str, repeats: int = 5) -> float:
    """Measured FLOP/s of a large 128->128 3x3 conv (the generator's dominant layer) at ``precision``."""
    size, batch = (128, 8) if device.type == "cpu" else (256, 32)
    # Input and weights already in the precision's dtype: the conv alone, not autocast's cast of a 64 MB input,
    # which on a 2-core CPU costs a third of the bf16 conv's own time.
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    conv = nn.Conv2d(128, 128, 3, padding=1).to(device, dtype).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 128, size, size, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    flops = 2 * 128 * 128 * 9 * batch * size * size

    def run():
        with torch.inference_mode():
            conv(x)

    return flops / median_time(run, device, repeats=repeats, warmup=2)


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward of ``model`` on ``x`` (convolutions, matmuls and attention included).

    The fused fast path of nn.TransformerEncoderLayer hides its matmuls from the FLOP counter, so it is switched off
    while counting; the CPU kernel of scaled_dot_product_attention has no formula in torch's counter, so one is given.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    mapping = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        mapping[cpu_sdpa] = _sdpa_flops
    try:
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q K^T and the weighted sum of V: 2 matmuls of 2*B*H*N*M*d FLOPs each."""
    b, h, n, d = query_shape
    m = key_shape[-2]
    dv = value_shape[-1]
    return 2 * b * h * n * m * d + 2 * b * h * n * m * dv
