"""Devices and DDP: one process, or one process per GPU/CPU under ``torchrun``.

``torchrun --nproc-per-node N -m geopsp train ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
each process then trains on its shard of the chips (nccl between GPUs, gloo on CPU), gradients
are averaged by DDP, validation confusion matrices are summed over ranks, and only rank 0
writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from geopsp.core.errors import ResourceError, UsageError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its device, rank and the number of processes."""

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(request: str | None, local_rank: int = 0) -> torch.device:
    """Turn ``--device auto|cpu|cuda[:N]`` into a torch device, with one clear error when the
    requested device does not exist (under torchrun, each process takes GPU ``LOCAL_RANK``)."""
    req = (request or "auto").strip().lower()
    if req == "auto":
        req = "cuda" if torch.cuda.is_available() else "cpu"
    if req == "cpu":
        return torch.device("cpu")
    if not req.startswith("cuda"):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {request!r}")
    index: int | None = None
    if req != "cuda":
        try:
            index = int(req.split(":", 1)[1])
        except (IndexError, ValueError) as exc:
            raise UsageError(
                f"--device must be auto, cpu, cuda or cuda:N, got {request!r}"
            ) from exc
    if not torch.cuda.is_available():
        raise ResourceError(
            f"--device {request} requested but no CUDA GPU is available to PyTorch; "
            "use --device cpu (or auto), or install a CUDA build of PyTorch"
        )
    n = torch.cuda.device_count()
    if index is None:
        index = local_rank if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    if index >= n:
        raise ResourceError(
            f"--device {request}: only {n} CUDA device(s) are visible (cuda:0..{n - 1})"
        )
    return torch.device("cuda", index)


def setup(request: str | None) -> Runtime:
    """Resolve the device and join the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(request, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device=device, rank=rank, world=world, local_rank=local_rank)


def teardown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Sum a tensor over all ranks (in place; returns it)."""
    if rt.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_float(x: float, rt: Runtime) -> float:
    """Rank 0's value of ``x`` on every rank."""
    if not rt.distributed:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=rt.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def agree(ok: bool, rt: Runtime) -> bool:
    """True on every rank only when ``ok`` is true on every rank (so all stop together)."""
    if not rt.distributed:
        return ok
    t = torch.tensor([0 if ok else 1], dtype=torch.int64, device=rt.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item()) == 0


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()
