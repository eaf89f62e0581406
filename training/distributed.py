"""Distributed data-parallel training under torchrun.

``torchrun --nproc_per_node N [--nnodes M ...] -m geosr.cli.main train ...`` starts one process per GPU (or N CPU
processes); torchrun's environment is read by geosr.device.torchrun_env (RANK, WORLD_SIZE, LOCAL_RANK) and by
torch.distributed (MASTER_ADDR, MASTER_PORT).
The backend is NCCL on GPUs and gloo on CPUs. Without torchrun (WORLD_SIZE unset or 1), training runs in this one
process and every helper below is a no-op. Rank 0 alone logs, draws the progress bar and writes files.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from geosr.device import resolve_device, torchrun_env


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank, world size, local rank on its node, its device and the backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistContext:
    """Join the torchrun job if there is one (initialising the process group) and pick this process's device."""
    job = torchrun_env()
    if not job.distributed:
        return DistContext(device=resolve_device(device))
    local_rank = job.local_rank or 0
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistContext(job.rank, job.world_size, local_rank, job.local_world_size, dev, backend)


def cleanup(ctx: DistContext) -> None:
    """End the process group, if this run started one."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every process (nothing to wait for in a single process)."""
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``t`` over all processes (in place; ``t`` itself when not distributed)."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj``, in rank order."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
