"""Where a process runs: its device, and its place in a ``torchrun`` process group.

``torchrun --nproc-per-node N -m geopsp train|classify ...`` starts N processes and sets
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; :func:`launch` is the only place that reads them.
:func:`setup` resolves ``--device`` (under torchrun ``cuda`` means GPU ``LOCAL_RANK``) and joins
the process group. train uses nccl between GPUs and gloo on CPU; classify always uses gloo
(only CPU probabilities travel between its ranks).

A rank that fails calls :func:`abort`: it records its error in the process group's store and
leaves the group, so a rank waiting for it in a send or receive stops at once and raises
:class:`RankFailed` with that error (see :func:`collective`) instead of waiting for gloo's
30-minute timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from geopsp.core.errors import RankFailed, ResourceError, UsageError

log = logging.getLogger(__name__)
ABORT_KEY = "geopsp/abort"
ACK_KEY = "geopsp/abort-seen"
ABORT_WAIT_S = 5.0  # how long a failed rank waits for the others to read its error


@dataclass(frozen=True)
class Launch:
    """What torchrun told this process (a single process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0


def launch() -> Launch:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by torchrun)."""
    env = os.environ
    return Launch(
        rank=int(env.get("RANK", "0")),
        world=int(env.get("WORLD_SIZE", "1")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
    )


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its device, rank and the number of processes."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _bad_device(request: str | None) -> UsageError:
    return UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {request!r}")


def resolve_device(request: str | None, local_rank: int = 0, world: int = 1) -> torch.device:
    """Turn ``--device auto|cpu|cuda[:N]`` into a torch device.

    ``auto`` and ``cuda`` take GPU ``local_rank`` when ``world > 1`` (one GPU per torchrun
    process), GPU 0 otherwise; ``cuda:N`` is taken as given.

    Raises
    ------
    UsageError
        Not a device name.
    ResourceError
        The device does not exist on this machine.
    """
    req = (request or "auto").strip().lower()
    if req == "auto":
        req = "cuda" if torch.cuda.is_available() else "cpu"
    if req == "cpu":
        return torch.device("cpu")
    if not req.startswith("cuda"):
        raise _bad_device(request)
    index: int | None = None
    if req != "cuda":
        try:
            index = int(req.split(":", 1)[1])
        except (IndexError, ValueError) as exc:
            raise _bad_device(request) from exc
    if not torch.cuda.is_available():
        raise ResourceError(
            f"--device {request} requested but no CUDA GPU is available to PyTorch; "
            "use --device cpu (or auto), or install a CUDA build of PyTorch"
        )
    n = torch.cuda.device_count()
    if index is None:
        index = local_rank if world > 1 else 0
    if index >= n:
        raise ResourceError(
            f"--device {request}: only {n} CUDA device(s) are visible (cuda:0..{n - 1})"
        )
    return torch.device("cuda", index)


def setup(request: str | None, backend: str | None = None) -> Runtime:
    """Resolve the device and join the process group when started by torchrun.

    Parameters
    ----------
    request : str
        ``--device``.
    backend : {"nccl", "gloo"}, optional
        Process-group backend; default nccl on CUDA, gloo on CPU.
    """
    env = launch()
    device = resolve_device(request, env.local_rank, env.world)
    if env.world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    rank = dist.get_rank() if env.world > 1 else 0
    return Runtime(device=device, rank=rank, world=env.world, local_rank=env.local_rank)


def teardown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Sum a tensor over all ranks (in place; returns it)."""
    if rt.distributed:
        with collective(rt):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast(value: object, rt: Runtime) -> object:
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if not rt.distributed:
        return value
    box = [value]
    with collective(rt):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_float(x: float, rt: Runtime) -> float:
    """Rank 0's value of ``x`` on every rank."""
    return float(broadcast(float(x), rt))  # type: ignore[arg-type]


def agree(ok: bool, rt: Runtime) -> bool:
    """True on every rank only when ``ok`` is true on every rank (so all stop together)."""
    if not rt.distributed:
        return ok
    t = torch.tensor([0 if ok else 1], dtype=torch.int64, device=rt.device)
    return int(all_sum(t, rt).item()) == 0


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        with collective(rt):
            dist.barrier()


def _store():
    """The process group's key-value store (None when there is none)."""
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except (ImportError, AttributeError, RuntimeError, ValueError):
        return None


def abort(rt: Runtime, error: BaseException) -> None:
    """Tell the other ranks that this one failed with ``error``, and leave the process group.

    Leaving the group closes this rank's connections, so a rank blocked in a send to or a
    receive from this one fails at once; it then reads ``error`` from the store (see
    :func:`collective`). The first rank to fail names the error every rank reports, and waits
    at most a few seconds for the others to read it (rank 0 may host the store).
    """
    if not rt.distributed or not dist.is_initialized():
        return
    store, first = _store(), False
    if store is not None:
        message = f"rank {rt.rank} failed: {str(error) or type(error).__name__}"
        with contextlib.suppress(Exception):  # atomic: only the first failure is recorded
            first = store.compare_set(ABORT_KEY, "", message).decode() == message
            if not first and not isinstance(error, RankFailed):  # RankFailed: seen already
                store.add(ACK_KEY, 1)  # the first rank may be waiting for us to see its error
    with contextlib.suppress(Exception):
        dist.destroy_process_group()
    if store is None or not first:
        return
    end = time.monotonic() + ABORT_WAIT_S
    with contextlib.suppress(Exception):
        while store.add(ACK_KEY, 0) < rt.world - 1 and time.monotonic() < end:
            time.sleep(0.05)


def failed_peer(timeout: float = ABORT_WAIT_S) -> str | None:
    """The error another rank recorded with :func:`abort` (None if none within ``timeout``)."""
    store = _store()
    if store is None:
        return None
    try:
        store.wait([ABORT_KEY], timedelta(seconds=timeout))
        message = store.get(ABORT_KEY).decode()
        store.add(ACK_KEY, 1)
        return message
    except Exception:  # the store is gone with its rank, or nothing was recorded
        return None


@contextlib.contextmanager
def collective(rt: Runtime) -> Iterator[None]:
    """Turn a failed send, receive or collective into :class:`RankFailed` naming the error of
    the rank that failed first (gloo only says "connection closed")."""
    try:
        yield
    except RuntimeError as exc:  # gloo/nccl errors are RuntimeError (DistBackendError)
        if not rt.distributed:
            raise
        message = failed_peer()
        if message is None:
            raise RankFailed(f"lost contact with the other ranks: {exc}") from exc
        raise RankFailed(message) from exc


@contextlib.contextmanager
def stop_all_on_error(rt: Runtime) -> Iterator[None]:
    """On any error in the block, :func:`abort` (so the other ranks stop too), then re-raise."""
    try:
        yield
    except BaseException as exc:
        abort(rt, exc)
        raise
