"""Devices and numeric precision: which device runs the model, and in which autocast mode.

Devices: 'auto' takes CUDA (the GPU of this process's LOCAL_RANK under torchrun), then Apple's MPS, then the CPU;
'cpu', 'cuda', 'cuda:N' and 'mps' name one.
Precisions: 'fp32' (no autocast), 'bf16' (bfloat16 autocast: CUDA GPUs from Ampere on, and CPUs; several times faster
than fp32 on CPUs with AMX), 'fp16' (float16 autocast, CUDA and MPS; training adds a gradient scaler) and 'auto': bf16
on CUDA GPUs that support it and on CPUs with AMX or AVX-512-BF16, fp32 elsewhere.

Under torchrun, ``torchrun_env()`` reads this process's place in the job (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE): ``geosr upscale`` shares the files out by rank, ``geosr train`` joins a process group.

Importing this module does not import PyTorch (the functions that need it do): the command line's options take their
choices and checks from here while ``geosr --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from geosr.errors import GeosrError, OptionError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("geosr.device")

DEVICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DEVICE_SPEC = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# The CPU features (as /proc/cpuinfo names them) that compute bf16 natively; without one of them PyTorch runs bf16
# convolutions in reference kernels, 10-60x slower than fp32.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
SLOW_BF16_WARNING = (
    "--precision bf16 on a CPU without native bf16 (it lacks AMX and AVX512-BF16): bf16 convolutions "
    "run in slow reference kernels, often 10x or more slower than fp32; use --precision fp32 or auto"
)
_warned_slow_bf16 = False  # SLOW_BF16_WARNING is logged once per process


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class DeviceError(GeosrError, ValueError):
    """A device or precision that does not exist on this machine (``option`` names the setting)."""


def check_device_spec(spec: str | None) -> str:
    """``spec`` normalised ('auto' for None; lower case); raises OptionError unless it is auto, cpu, cuda, cuda:N or
    mps. Whether that device exists here is resolve_device's question."""
    text = (spec or "auto").strip().lower()
    if not _DEVICE_SPEC.match(text):
        raise OptionError(f"{spec!r}: expected {DEVICES}", option="--device")
    return text


def check_precision(precision: str) -> str:
    """``precision`` in lower case; raises OptionError unless it is one of PRECISIONS."""
    text = precision.strip().lower()
    if text not in PRECISIONS:
        raise OptionError(f"{precision!r}: expected one of {', '.join(PRECISIONS)}", option="--precision")
    return text


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(spec: str | None = "auto", local_rank: int | None = None) -> torch.device:
    """The torch device for ``spec`` (see the module docstring).

    Raises OptionError for a spec that names no kind of device, DeviceError for a device this machine lacks.
    """
    import torch

    spec = check_device_spec(spec)
    cuda = torch.cuda.is_available()
    if spec == "auto":
        if cuda:
            return torch.device("cuda", (local_rank or 0) % torch.cuda.device_count())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise DeviceError("--device mps: no Apple GPU (MPS) is available here; use cpu or auto", option="--device")
        return torch.device("mps")
    # cuda or cuda:N
    if not cuda:
        raise DeviceError(f"--device {spec}: PyTorch sees no CUDA GPU here; use cpu or auto", option="--device")
    index = (local_rank or 0) if spec == "cuda" else int(spec.split(":", 1)[1])
    n = torch.cuda.device_count()
    if not 0 <= index < n:
        raise DeviceError(f"--device {spec}: this machine has {n} CUDA GPU(s), cuda:0..cuda:{n - 1}", option="--device")
    return torch.device("cuda", index)


def read_cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags as Linux's /proc/cpuinfo lists them ('flags' on x86, 'Features' on ARM), None where
    the file is missing or lists none (another system)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def cpu_supports_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively: AMX (amx_bf16) or AVX512-BF16 (avx512_bf16). The one test behind
    ``--precision auto`` on the CPU (bf16 only here) and the warning for an explicit bf16 elsewhere.

    flags: the CPU's feature flags as /proc/cpuinfo names them (another CPU's, in tests); None asks PyTorch's probes
    for this CPU, or reads /proc/cpuinfo with a PyTorch that lacks them.
    """
    if flags is None:
        import torch

        try:
            return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
        except AttributeError:  # a torch without the probes: read the flags
            flags = read_cpu_flags() or ()
    return not NATIVE_BF16_FLAGS.isdisjoint(flags)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (bf16 matrix units)."""
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return "amx_bf16" in (read_cpu_flags() or ())


def resolve_precision(precision: str, device: torch.device, *, cpu_flags: Iterable[str] | None = None) -> str:
    """The concrete precision ('fp32', 'bf16' or 'fp16') for ``precision`` on ``device``.

    On a CPU without native bf16 (cpu_supports_bf16), 'auto' is fp32 and an explicit 'bf16' stays bf16 (as asked) but
    logs SLOW_BF16_WARNING, once per process. cpu_flags: the CPU's feature flags for that test (None: this CPU's).
    Raises OptionError for a name that is no precision, DeviceError for one that ``device`` cannot compute in.
    """
    import torch

    global _warned_slow_bf16
    precision = check_precision(precision)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device.type == "cpu":
            return "bf16" if cpu_supports_bf16(cpu_flags) else "fp32"
        return "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError(
            "--precision fp16 needs a GPU; on the CPU use bf16 (fast with AMX) or fp32", option="--precision"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(
            f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32",
            option="--precision",
        )
    if precision == "bf16" and device.type == "mps":
        raise DeviceError("--precision bf16 is not available on MPS; use fp16 or fp32", option="--precision")
    if precision == "bf16" and device.type == "cpu" and not _warned_slow_bf16 and not cpu_supports_bf16(cpu_flags):
        _warned_slow_bf16 = True
        log.warning(SLOW_BF16_WARNING)
    return precision


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``: a CPU tensor goes to a GPU through pinned memory without blocking the host (the copy is
    queued before the kernels that use it); elsewhere a plain move, or ``t`` itself when it is there already."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def use_intra_op_threads(n: int) -> None:
    """The calling thread's PyTorch intra-op threads set to ``n`` for good: a thread pool's initializer.

    PyTorch gives a thread, at its first use, the process's latest torch.set_num_threads value, over anything set
    before; that first use comes first here."""
    import torch

    torch.get_num_threads()  # the thread's first use
    torch.set_num_threads(n)


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """PyTorch's intra-op threads (torch.set_num_threads) set to ``n`` inside the block, then as they were."""
    import torch

    was = torch.get_num_threads()
    if n == was:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(was)


def autocast(device: torch.device, precision: str):
    """The autocast context for a concrete precision (a no-op context for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe_hardware(device: torch.device) -> str:
    """The device in words for provenance, e.g. 'cuda: NVIDIA H100 80GB HBM3' or 'cpu: x86_64, 16 threads, AMX'."""
    import torch

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


# --- torchrun ----------------------------------------------------------------------------------------------------


class Torchrun(NamedTuple):
    """This process's place in a torchrun job; the defaults describe a process started without torchrun.

    local_rank is None without torchrun (no GPU is implied); local_world_size: processes on this node.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def torchrun_env(environ: Mapping[str, str] | None = None) -> Torchrun:
    """Read RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE as torchrun sets them (``os.environ`` by default).

    Without WORLD_SIZE (or with 1) this is a single process. Raises GeosrError for values that are not integers, a
    RANK outside WORLD_SIZE, or a job of several processes without RANK.
    """
    env = os.environ if environ is None else environ
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = env.get("LOCAL_RANK")
        local_rank = int(local) if local is not None else None
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError:
        found = ", ".join(f"{k}={env[k]!r}" for k in names if k in env)
        raise GeosrError(f"{', '.join(names)} must be integers, as torchrun sets them; got {found}") from None
    if world > 1 and "RANK" not in env:
        raise GeosrError(f"WORLD_SIZE is {world} but RANK is not set; start the processes with torchrun")
    if world < 1 or not 0 <= rank < world:
        raise GeosrError(f"RANK {rank} is outside WORLD_SIZE {world}")
    if local_rank is not None and local_rank < 0:
        raise GeosrError(f"LOCAL_RANK {local_rank} is negative")
    return Torchrun(rank, world, local_rank, max(1, local_world))


WAIT_FOR_RANKS = 7 * 24 * 3600.0  # seconds a torchrun process waits for the others in sum_over_ranks


def sum_over_ranks(world_size: int, *counts: int) -> tuple[int, ...]:
    """``counts`` summed over the processes of a torchrun run, once every process has given its own (a process that
    ends early waits here, so that its exit, non-zero on which torchrun stops them all, comes after the others'
    work); ``counts`` as they are for one process. Uses the running process group, or one of its own (gloo)."""
    if world_size <= 1:
        return counts
    import datetime

    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=WAIT_FOR_RANKS))
    try:
        gathered: list = [None] * world_size
        dist.all_gather_object(gathered, counts)
    finally:
        if own:
            dist.destroy_process_group()
    return tuple(sum(g[i] for g in gathered) for i in range(len(counts)))
