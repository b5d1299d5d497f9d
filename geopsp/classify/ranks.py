"""Batches of tiles and how they are shared between torchrun ranks in ``geopsp classify``.

Batch ``m`` holds tiles ``m * batch_size`` .. ``(m + 1) * batch_size - 1`` of the grid's
processing order and is computed by rank ``m % world``; ranks other than 0 send their
probabilities to rank 0 (gloo), which blends and writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from geopsp.classify.tiling import Tile, TileGrid


@dataclass
class Dist:
    """Rank and world size of a torch.distributed run (``world == 1``: single process)."""

    rank: int = 0
    world: int = 1

    def owner(self, batch: int) -> int:
        return batch % self.world


class Batches:
    """Consecutive groups of ``batch_size`` tiles in grid order (the same for every rank).

    Batches are computed on demand, so a huge raster does not need a list of all its tiles.
    """

    def __init__(self, grid: TileGrid, batch_size: int) -> None:
        self.grid, self.size = grid, int(batch_size)

    def __len__(self) -> int:
        return -(-len(self.grid) // self.size)

    def __getitem__(self, m: int) -> list[Tile]:
        if not 0 <= m < len(self):
            raise IndexError(m)
        return self.grid.tile_range(m * self.size, (m + 1) * self.size)

    def __iter__(self) -> Iterator[list[Tile]]:
        return (self[m] for m in range(len(self)))


def batches(grid: TileGrid, batch_size: int) -> Batches:
    """The batches of ``grid`` (see :class:`Batches`)."""
    return Batches(grid, batch_size)


def send_batch(keep, valid, probs) -> None:
    import torch
    import torch.distributed as tdist

    tdist.send(torch.from_numpy(keep.astype(np.uint8)), dst=0)
    tdist.send(torch.from_numpy(valid.astype(np.uint8)), dst=0)
    if probs is not None and len(probs):
        tdist.send(torch.from_numpy(np.ascontiguousarray(probs)), dst=0)


def recv_batch(src: int, n: int, tile: int, k: int):
    import torch
    import torch.distributed as tdist

    keep = torch.empty(n, dtype=torch.uint8)
    tdist.recv(keep, src=src)
    valid = torch.empty((n, tile, tile), dtype=torch.uint8)
    tdist.recv(valid, src=src)
    nk = int(keep.sum())
    probs = torch.empty((nk, k, tile, tile), dtype=torch.float32)
    if nk:
        tdist.recv(probs, src=src)
    return keep.numpy().astype(bool), valid.numpy().astype(bool), probs.numpy()


def broadcast(value: object, dist: Dist) -> object:
    """Rank 0's ``value`` on every rank (the value itself in a single process)."""
    if dist.world <= 1:
        return value
    import torch.distributed as tdist

    box = [value]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def init_distributed() -> Dist:
    """Join the torchrun process group (gloo) when ``WORLD_SIZE > 1``; else a single process.

    gloo works for CPU tensors on every platform; only probabilities (on the CPU anyway)
    travel between ranks, so it is used even when the model runs on CUDA.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist

    if not tdist.is_initialized():
        tdist.init_process_group("gloo")
    return Dist(rank=tdist.get_rank(), world=tdist.get_world_size())
